"""docs/migrating-greenletio.md: greenletio's documented examples, rewritten for greenbridge, run.

The examples live in ``docs/snippets/greenletio/`` (the guide includes those
files, so what the page shows is what runs here).  The second half pins each
behaviour the guide says differs from greenletio.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue as stdlib_queue
import runpy
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import greenbridge
from greenbridge.green import queue as green_queue
from greenbridge.green import threading as green_threading

from .helpers import require_postgres

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = ROOT / "docs" / "snippets" / "greenletio"


def load(name: str) -> dict[str, Any]:
    """The snippet's globals, run as a module (its ``__main__`` block is skipped)."""
    return runpy.run_path(str(SNIPPETS / name), run_name="snippet")


def run_script(name: str) -> str:
    """Run a snippet in a fresh interpreter (it patches process-wide state)."""
    done = subprocess.run(
        [sys.executable, str(SNIPPETS / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# ---------------------------------------------------------------- the examples


def test_async_call_and_decorator() -> None:
    snippet = load("async_call.py")
    assert asyncio.run(snippet["async_function"]()) == (84, 43)


def test_await_call_and_decorator_under_a_loop_and_without() -> None:
    snippet = load("await_call.py")
    assert asyncio.run(greenbridge.async_(snippet["sync_function"])()) == (15, 4)
    assert snippet["sync_function"]() == (15, 4)  # no loop: the private loop


def test_spawn_returns_a_task() -> None:
    snippet = load("spawn_example.py")
    assert asyncio.run(snippet["main"]()) == ["a", "b"]

    async def kind() -> bool:
        task = greenbridge.spawn(snippet["job"], "c", 0)
        result = isinstance(task, asyncio.Task)
        await task
        return result

    assert asyncio.run(kind())


def test_the_two_sleep_examples() -> None:
    snippet = load("sleep_examples.py")
    assert asyncio.run(snippet["async_to_sync"]()) == list(range(5))
    assert snippet["sync_to_async"]() == list(range(5))


def test_green_modules() -> None:
    snippet = load("green_modules.py")
    assert asyncio.run(greenbridge.async_(snippet["main"])()) == [b"GREEN", b"IO"]


def test_requests_under_patch_blocking() -> None:
    pytest.importorskip("requests")
    codes, elapsed = run_script("async_requests.py").rsplit(" ", 1)
    assert codes == "[200, 200, 200, 200, 200]"
    assert float(elapsed) < 0.8  # five pages of 0.2 s each, fetched together


def test_patch_psycopg2() -> None:
    pytest.importorskip("psycopg2")
    require_postgres()
    rows, elapsed = run_script("psycopg2_example.py").strip()[1:-1].rsplit(", ", 1)
    assert rows == "[1, 1, 1, 1, 1]"
    assert float(elapsed) < 0.8  # five pg_sleep(0.2) at once


# ---------------------------------------------------------------- what differs


def test_modules_first_imported_in_patch_blocking_stay_imported(tmp_path: Path) -> None:
    """greenletio drops them from sys.modules on exit; greenbridge keeps them."""
    (tmp_path / "guide_uses_socket.py").write_text("import socket\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with greenbridge.patch_blocking():
            import guide_uses_socket  # type: ignore[import-not-found]
        assert sys.modules["guide_uses_socket"] is guide_uses_socket
        assert guide_uses_socket.socket.__name__ == "greenbridge.green.socket"
        import socket

        assert socket.__name__ == "socket"  # the block restored the original
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("guide_uses_socket", None)


def test_with_no_loop_a_green_thread_is_an_os_thread() -> None:
    seen: list[int] = []
    t = green_threading.Thread(target=lambda: seen.append(threading.get_native_id()))
    t.start()
    t.join()
    assert seen and seen[0] != threading.get_native_id()


def test_under_a_loop_a_green_thread_runs_on_it_and_gets_a_task_when_it_awaits() -> None:
    async def in_task() -> bool:
        return asyncio.current_task() is not None

    def body(seen: list[bool]) -> None:
        seen.append(asyncio.current_task() is None)  # no task while it needs none
        seen.append(greenbridge.await_(in_task()))  # asyncio code sees a task

    def main() -> bool:
        seen: list[bool] = []
        t = green_threading.Thread(target=body, args=(seen,))
        t.start()
        t.join()
        return seen == [True, True]

    assert asyncio.run(greenbridge.async_(main)())


def test_context_is_shared_by_default_and_copied_on_request() -> None:
    """greenletio's default runs fn in an empty context; greenbridge's, in the caller's."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("guide_var", default="unset")

    def read_and_set() -> str:
        seen = var.get()
        var.set("set by sync code")
        return seen

    async def main() -> tuple[str, str, str, str]:
        var.set("caller")
        shared = await greenbridge.async_(read_and_set)()
        after_shared = var.get()
        var.set("caller")
        copied = await greenbridge.async_(read_and_set, with_context=False)()
        return shared, after_shared, copied, var.get()

    assert asyncio.run(main()) == ("caller", "set by sync code", "caller", "caller")


def test_await_in_a_coroutine_raises_missing_bridge() -> None:
    """greenletio raised RuntimeError("await_ cannot be called from the asyncio task")."""

    async def main() -> None:
        greenbridge.await_(asyncio.sleep(0))

    with pytest.raises(greenbridge.MissingBridge) as caught:
        asyncio.run(main())
    assert isinstance(caught.value, RuntimeError)


def test_spawn_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running asyncio event loop"):
        greenbridge.spawn(print)


def test_await_takes_any_awaitable() -> None:
    class Answer:
        def __await__(self) -> Any:
            yield from asyncio.sleep(0).__await__()
            return 42

    assert asyncio.run(greenbridge.async_(lambda: greenbridge.await_(Answer()))()) == 42


def test_queue_empty_is_the_stdlib_class() -> None:
    """greenletio's green queue raised asyncio.QueueEmpty; greenbridge's raises queue.Empty."""
    assert green_queue.Empty is stdlib_queue.Empty
    with pytest.raises(stdlib_queue.Empty):
        green_queue.Queue().get(timeout=0.01)


def test_wait_to_read_becomes_green_select() -> None:
    """greenletio.io.wait_to_read(fd) -> the green select.select([fd], [], [])."""
    from greenbridge.green import select, socket

    def main() -> tuple[bool, bytes]:
        ours, theirs = socket.socketpair()
        with ours, theirs:

            def write_later() -> None:
                greenbridge.await_(asyncio.sleep(0.05))
                theirs.sendall(b"ready")

            writer = greenbridge.spawn(write_later)
            readable, _, _ = select.select([ours.fileno()], [], [])  # waits on the loop
            greenbridge.await_(writer)
            return readable == [ours.fileno()], ours.recv(10)

    assert asyncio.run(greenbridge.async_(main)()) == (True, b"ready")
