"""examples/django_app: the example's view answers in every set-up, so its benchmark cannot rot.

Django's settings are per process, so each check runs the example in a
subprocess of its own (the rest of the suite may configure Django otherwise).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from .helpers import require_postgres


def _installed(name: str) -> bool:
    # Found, not imported: this process must not import psycopg_pool (the
    # Django integration's tests need it imported green, or not at all).
    return importlib.util.find_spec(name) is not None


if not (_installed("django") and _installed("psycopg")):
    pytest.skip("needs Django and psycopg 3", allow_module_level=True)

# Django's own pool (OPTIONS={"pool": ...}) came with Django 5.1.
HAS_POOL = tuple(int(part) for part in metadata.version("django").split(".")[:2]) >= (5, 1)

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "django_app"
BENCH = ROOT / "benchmarks" / "bench_django.py"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(APP)])
    env["DJANGO_SETTINGS_MODULE"] = "bench_site.settings"
    env.pop("GB_EXAMPLE_DJANGO_DRIVER", None)
    env.update(extra)
    return env


def _run(code: str, **extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=APP,
        env=_env(**extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_manage_py_check() -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=APP,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout


@pytest.mark.parametrize("db", ["conn", "pool"])
def test_view_under_the_test_client_and_wsgi(db: str) -> None:
    require_postgres()
    if db == "pool":
        if not HAS_POOL:
            pytest.skip("Django's own pool needs Django 5.1+")
        if not _installed("psycopg_pool"):
            pytest.skip("needs psycopg_pool")
    out = _run(
        """
        import io, json, wsgiref.util
        import django
        django.setup()
        from django.db import connection
        from django.test import Client

        answer = Client().get("/item/7")
        print(json.dumps([answer.status_code, answer.content.decode()]))

        from bench_site.wsgi import application

        def call(path):
            environ = {"PATH_INFO": path, "wsgi.input": io.BytesIO()}
            wsgiref.util.setup_testing_defaults(environ)
            status = []
            body = b"".join(application(environ, lambda s, h: status.append(s)))
            return status[0], body.decode()

        print(json.dumps(call("/item/8")))
        print(json.dumps(call("/__bench/heartbeat")))
        if getattr(connection, "pool", None):  # (Django 5.1+)
            connection.close_pool()
        """,
        GB_EXAMPLE_DJANGO_DB=db,
    )
    client, wsgi, beat = (json.loads(line) for line in out.splitlines())
    assert client[0] == 200 and "<title>item 7</title>" in client[1]
    assert "<p>Item 7 of 100.</p>" in client[1]
    assert wsgi[0].startswith("200") and "<title>item 8</title>" in wsgi[1]
    # No gevent here: no loop to probe (as under gunicorn's gthread worker).
    assert beat[0].startswith("200") and json.loads(beat[1]) == {"worst_ms": None, "beats": 0}


def test_benchmark_runs_greenbridge(tmp_path: Path) -> None:
    """A tiny run of the benchmark itself: greenbridge under uvicorn, both set-ups."""
    require_postgres()
    if not _installed("uvicorn"):
        pytest.skip("needs uvicorn")
    setups = ["conn"]
    if HAS_POOL and _installed("psycopg_pool"):
        setups.append("pool")
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--modes", "greenbridge", "--clients", "8"]
        + ["--setups", ",".join(setups)]
        + ["--duration", "0.5", "--warmup", "0.3", "--json", str(out)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert [(r["setup"], r["mode"]) for r in results] == [(s, "greenbridge") for s in setups]
    for r in results:
        assert r["errors"] == 0 and r["requests"] > 0, r
        # The probe measured the heartbeat of uvicorn's event loop.
        assert r["loop_gap_ms"] is not None, r
    assert "greenbridge (uvicorn)" in done.stdout
