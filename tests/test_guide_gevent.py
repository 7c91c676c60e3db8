"""docs/migrating-gevent.md: every "after" snippet of the gevent/eventlet guide, run.

The snippets live in ``docs/snippets/gevent/`` (the guide includes the
files).  Each ``*_after.py`` is run here and its result checked against what
the matching ``*_before.py`` gives under gevent.  The "before" files are run
too, each in a fresh interpreter, when gevent is importable (it is not a test
dependency: gevent patches the whole process).
"""

from __future__ import annotations

import asyncio
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import greenbridge

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = ROOT / "docs" / "snippets" / "gevent"
SQUARES = [n * n for n in range(10)]


def load(name: str) -> dict[str, Any]:
    """The snippet's globals, run as a module (its ``__main__`` block is skipped)."""
    return runpy.run_path(str(SNIPPETS / name), run_name="snippet")


def run_bridged(name: str) -> Any:
    """``asyncio.run(greenbridge.async_(main)())`` for the snippet's ``main``."""
    return asyncio.run(greenbridge.async_(load(name)["main"])())


def run_python(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=SNIPPETS,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_spawn_and_sleep() -> None:
    start = time.perf_counter()
    assert run_bridged("spawn_after.py") == SQUARES
    assert time.perf_counter() - start < 0.5  # ten sleeps of 0.1 s, together


def test_queue() -> None:
    assert run_bridged("queue_after.py") == sum(range(100))


def test_locks_events_and_async_result() -> None:
    assert run_bridged("locks_after.py") == (list(range(6)), 2, 42, None)


def test_pool() -> None:
    start = time.perf_counter()
    in_order, as_done = run_bridged("pool_after.py")
    elapsed = time.perf_counter() - start
    assert in_order == as_done == SQUARES[:9]
    # 9 calls of 0.1 s, 3 at a time: 3 rounds per map, 6 in all.
    assert 0.55 < elapsed < 1.2, elapsed


def test_pool_limit_holds() -> None:
    snippet = load("pool_after.py")
    running: list[int] = []
    peak: list[int] = []

    def tracked(n: int) -> int:
        running.append(n)
        peak.append(len(running))
        greenbridge.await_(asyncio.sleep(0.01))
        running.remove(n)
        return n

    def main() -> list[int]:
        return list(snippet["pool_map"](tracked, range(20), 4))

    assert asyncio.run(greenbridge.async_(main)()) == list(range(20))
    assert max(peak) == 4


def test_timeout() -> None:
    snippet = load("timeout_after.py")
    start = time.perf_counter()
    assert asyncio.run(greenbridge.async_(snippet["main"])()) == "timed out"
    assert time.perf_counter() - start < 1.0
    assert snippet["cleaned"] == ["slow"]  # its finally block ran, as under gevent.Timeout


def test_timeout_returns_the_result_in_time() -> None:
    snippet = load("timeout_after.py")

    def quick() -> str:
        return snippet["call_with_timeout"](1.0, lambda: "finished")

    assert asyncio.run(greenbridge.async_(quick)()) == "finished"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is Python 3.11+")
def test_timeout_with_asyncio_timeout() -> None:
    assert run_bridged("timeout_311_after.py") == "timed out"


def test_monkey_patch_all_becomes_the_cli() -> None:
    count, elapsed, threads = run_python("-m", "greenbridge", "patch_all_after.py").split()
    assert count == "50"
    assert float(elapsed) < 0.6  # 50 threads sleeping 0.2 s, on one loop
    assert threads == "1"  # every thread finished


def test_monkey_patch_in_code() -> None:
    count, elapsed, _ = run_python("monkey_patch_after.py").split()
    assert count == "50"
    assert float(elapsed) < 0.6


def test_celery_task_body() -> None:
    snippet = load("celery_after.py")
    start = time.perf_counter()
    assert snippet["fetch_all"](10) == SQUARES  # no loop running, as in a pool thread
    assert time.perf_counter() - start < 0.5


def test_gunicorn_worker() -> None:
    pytest.importorskip("gunicorn")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from .web_servers import Gunicorn

    async def get_all(url: str) -> list[bytes]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            responses = await asyncio.gather(*(client.get("/") for _ in range(20)))
            return [r.content for r in responses]

    worker = "greenbridge.integrations.gunicorn.Worker"
    with Gunicorn("-k", worker, "--workers", "1", "wsgi_after:app", cwd=SNIPPETS) as server:
        start = time.perf_counter()
        assert asyncio.run(get_all(server.url)) == [b"slept"] * 20
        elapsed = time.perf_counter() - start
        code, output = server.stop()
    assert code == 0, output
    assert elapsed < 2.0, elapsed  # 20 requests of 0.2 s on one worker, together


# What each "before" program prints under gevent: the "after" results above.
BEFORE = {
    "spawn_before.py": str(SQUARES),
    "queue_before.py": str(sum(range(100))),
    "locks_before.py": str((list(range(6)), 2, 42)),
    "pool_before.py": str((SQUARES[:9], SQUARES[:9])),
    "timeout_before.py": "timed out ['slow']",
    "celery_before.py": str(SQUARES),
    "patch_all_before.py": "50",
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_before_snippets_under_gevent(name: str) -> None:
    """The "before" code gives what the "after" code gives (only where gevent is installed)."""
    pytest.importorskip("gevent")
    assert run_python(name).startswith(BEFORE[name])
