"""Instructions per request of a web benchmark's server process, counted by callgrind.

Wall-clock figures need a quiet machine; callgrind's instruction counts do
not (they vary by about 1 % from run to run).  The server runs under
``valgrind --tool=callgrind --instr-atstart=no``; after 200 requests of
warm-up, ``callgrind_control -i on`` switches counting on for ``--requests``
requests from ``--clients`` keep-alive connections, then off.  Counted: the
server's own user-space instructions, not the kernel's work (which is most
of what a thread pool adds: the benchmarks' CPU per request shows that).
gunicorn forks its workers, which callgrind_control cannot reach: its
targets are counted another way.  The whole server (master and worker) runs
under callgrind from its start, twice, serving ``--requests`` and three
times as many; the difference of the two totals, divided by the difference
of the requests, is the cost of a request (start-up and shutdown cancel
out, to about 1 %).

Targets (the apps of bench_web_wsgi.py, bench_web_starlette.py and bench_django.py):
  wsgi-hello, wsgi-upstream, wsgi-db   Flask through WSGIMiddleware
  fastapi-green-<route>, fastapi-stock-<route>
                                       route: upstream, noop (def), async-noop; the
                                       FastAPI app installed (green) or not (stock)
  gunicorn-green-<route>, gunicorn-gevent-<route>
                                       the Flask app of bench_web_wsgi.py under
                                       gunicorn (one worker): greenbridge's Worker or
                                       gunicorn's gevent worker (--gevent-python: a
                                       venv with gevent, as for bench_web_wsgi.py);
                                       route: hello, upstream
  django-green-<db>, django-stock-<db> examples/django_app's view (its query waits
                                       50 ms) under greenbridge's get_asgi_application()
                                       or Django's own (without the benchmark's probe);
                                       db: pool (Django's psycopg 3 pool) or conn
                                       (a connection per request); PostgreSQL needed

Run: python benchmarks/bench_web_callgrind.py TARGET... [--requests 1000]
     [--clients 20] [--loop asyncio|uvloop]
Needs valgrind; the upstream routes start examples/asgi_app/upstream.py.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _http import free_port, get, wait_for_port

HERE = Path(__file__).resolve().parent
UPSTREAM = HERE.parent / "examples" / "asgi_app" / "upstream.py"
DJANGO_SITE = HERE.parent / "examples" / "django_app"


def server(target: str, port: int, loop: str) -> tuple[list[str], dict[str, str], str]:
    """(uvicorn's command line, extra environment, the path to GET) for ``target``."""
    args = [sys.executable, "-m", "uvicorn", "--port", str(port), "--loop", loop]
    args += ["--log-level", "warning", "--no-access-log"]
    kind, _, rest = target.partition("-")
    if kind == "wsgi":
        return [*args, "web_wsgi_app:green_asgi"], {"GB_BENCH_MODE": "green"}, f"/{rest}/{{i}}"
    mode, _, route = rest.partition("-")
    if kind == "django" and mode in ("green", "stock") and route in ("pool", "conn"):
        module = "green_asgi" if mode == "green" else "asgi"
        django = [*args, "--app-dir", str(DJANGO_SITE), f"bench_site.{module}:django_application"]
        return django, {"GB_EXAMPLE_DJANGO_DB": route}, "/item/{i}"
    if kind != "fastapi" or mode not in ("green", "stock") or not route:
        raise SystemExit(f"unknown target {target!r}: see --help")
    factory = [*args, "--factory", "bench_web_starlette:app_from_env"]
    return factory, {"GB_BENCH_APP_MODE": mode}, f"/{route}"


async def drive(port: int, path: str, requests: int, clients: int) -> None:
    """``requests`` GETs from ``clients`` keep-alive connections; a status but 200 fails."""
    left = [requests]

    async def client(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while left[0] > 0:
                left[0] -= 1
                status = await get(reader, writer, path.replace("{i}", str(n % 100)))
                if status != 200:
                    raise RuntimeError(f"GET {path} answered {status}")
                n += clients
        finally:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))


def gunicorn_count(
    target: str, requests: int, clients: int, env: dict[str, str], gevent_python: str | None
) -> float:
    """Instructions per request of a gunicorn server: whole runs, by difference."""
    _kind, mode, route = target.split("-", 2)
    if mode == "gevent":
        if not gevent_python:
            raise SystemExit(f"{target} needs --gevent-python")
        python, worker, extra = gevent_python, "gevent", {"GB_BENCH_MODE": "gevent"}
    else:
        python, worker = sys.executable, "greenbridge.integrations.gunicorn.Worker"
        extra = {"GB_BENCH_MODE": "green"}
    totals = []
    for n in (requests, 3 * requests):
        port = free_port()
        args = [python, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        args += ["--log-level", "warning", "--keep-alive", "30", "-k", worker, "web_wsgi_app:app"]
        with tempfile.TemporaryDirectory() as out:
            proc = _under_callgrind(args, out, dict(env, **extra), at_start=True)
            try:
                wait_for_port(port, proc, timeout=300)
                asyncio.run(drive(port, f"/{route}/{{i}}", n, clients))
            finally:
                proc.terminate()
                proc.wait(300)
            totals.append(_totals(out))
    return (totals[1] - totals[0]) / (2 * requests)


def _under_callgrind(
    args: list[str], out: str, env: dict[str, str], at_start: bool
) -> subprocess.Popen[bytes]:
    """Start ``args`` under callgrind, its counts written in the directory ``out``."""
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.%p"]
    if not at_start:
        valgrind.append("--instr-atstart=no")
    return subprocess.Popen(
        [*valgrind, *args],
        env=env,
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _totals(out: str) -> int:
    total = 0
    for name in glob.glob(f"{out}/callgrind.*"):
        with open(name) as f:
            total += sum(int(line.split()[1]) for line in f if line.startswith("totals:"))
    return total


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def count(target: str, requests: int, clients: int, loop: str, env: dict[str, str]) -> float:
    """Instructions per request of ``target``'s server."""
    port = free_port()
    args, extra, path = server(target, port, loop)
    with tempfile.TemporaryDirectory() as out:
        proc = _under_callgrind(args, out, dict(env, **extra), at_start=False)
        try:
            wait_for_port(port, proc, timeout=300)
            asyncio.run(drive(port, path, 200, clients))  # warm-up
            callgrind_control("-i", "on", str(proc.pid))
            asyncio.run(drive(port, path, requests, clients))
            callgrind_control("-i", "off", str(proc.pid))
            callgrind_control("-d", str(proc.pid))
        finally:
            proc.terminate()
            proc.wait(120)
        total = _totals(out)
    return total / requests


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--gevent-python", help="a venv's python with gevent (gunicorn-gevent-*)")
    args = parser.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    up_port = free_port()
    env["GB_BENCH_UPSTREAM"] = f"http://127.0.0.1:{up_port}"
    upstream = subprocess.Popen(
        [sys.executable, str(UPSTREAM), "--port", str(up_port)], stdout=subprocess.DEVNULL
    )
    try:
        wait_for_port(up_port, upstream)
        for target in args.targets:
            if target.startswith("gunicorn-"):
                per_request = gunicorn_count(
                    target, args.requests, args.clients, env, args.gevent_python
                )
            else:
                per_request = count(target, args.requests, args.clients, args.loop, env)
            print(f"{target:28s} {per_request / 1000:9.1f} k instructions per request", flush=True)
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
