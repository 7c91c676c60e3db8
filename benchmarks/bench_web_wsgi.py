"""Web benchmark: a Flask app on greenbridge's WSGI server paths against the usual ones, one run.

Contenders (each one server process, started in turn; the app is
benchmarks/web_wsgi_app.py):
  greenbridge WSGIMiddleware   uvicorn + greenbridge.integrations.wsgi.WSGIMiddleware
  greenbridge gunicorn Worker  gunicorn -k greenbridge.integrations.gunicorn.Worker, 1 worker
  ..., 32 at once / --threads 32
                               the same, at most 32 requests in the app at once
                               (``WSGIMiddleware(app, concurrency=32)``; the worker's
                               ``--threads 32``), as many as the thread pools' threads
  uvicorn + a2wsgi             a2wsgi's thread pool (32 threads)
  gunicorn gthread             1 worker, 32 threads
  gunicorn gevent              1 worker, psycogreen; only with --gevent-python (a separate
                               venv with gevent, gunicorn, flask, requests, sqlalchemy,
                               psycopg2-binary, psycogreen: gevent patches the whole process)
Workloads:
  upstream  GET /upstream/<i>: one `requests` call to an upstream answering after 50 ms
  hello     GET /hello/<i>: no I/O, a small JSON answer (what the servers themselves cost)
  db        GET /db/<i>: SELECT pg_sleep(0.05) on SQLAlchemy's pool of 20 psycopg2
            connections, then a Jinja template (needs PostgreSQL at 127.0.0.1:5432)
The load: --clients keep-alive connections (a small raw asyncio client in this
process) for --seconds after a 1 s warm-up; requests/s, p50 and p99 latency,
the server's CPU time per request (all its processes), and each contender's
requests/s as a ratio to the best anchor (non-greenbridge).

Run: python benchmarks/bench_web_wsgi.py [--workload upstream|db|both]
     [--clients 200] [--seconds 10] [--gevent-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _http import cpu_seconds, free_port, get, server_process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
UPSTREAM = ROOT / "examples" / "asgi_app" / "upstream.py"


@contextmanager
def process(args: list[str], port: int, env: dict[str, str]) -> Iterator[int]:
    with server_process(args, port, env, HERE) as pid:
        yield pid


def contenders(python: str, gevent_python: str | None) -> list[tuple[str, str, str, list[str]]]:
    """(name, mode, python, server arguments with {port})."""
    uvicorn = [python, "-m", "uvicorn", "--port", "{port}", "--log-level", "warning"]
    uvicorn += ["--backlog", "2048", "--no-access-log"]
    gunicorn = [python, "-m", "gunicorn", "--bind", "127.0.0.1:{port}", "--workers", "1"]
    gunicorn += ["--log-level", "warning", "--backlog", "2048", "--keep-alive", "30"]
    found = [
        ("greenbridge WSGIMiddleware", "green", python, [*uvicorn, "web_wsgi_app:green_asgi"]),
        (
            "greenbridge gunicorn Worker",
            "green",
            python,
            [*gunicorn, "-k", "greenbridge.integrations.gunicorn.Worker", "web_wsgi_app:app"],
        ),
        (
            "greenbridge WSGIMiddleware, 32 at once",
            "green",
            python,
            [*uvicorn, "web_wsgi_app:green_asgi_32"],
        ),
        (
            "greenbridge gunicorn Worker --threads 32",
            "green",
            python,
            [
                *gunicorn,
                *("-k", "greenbridge.integrations.gunicorn.Worker", "--threads", "32"),
                "web_wsgi_app:app",
            ],
        ),
        ("uvicorn + a2wsgi (32)", "thread", python, [*uvicorn, "web_wsgi_app:a2wsgi_asgi"]),
        (
            "gunicorn gthread (32)",
            "thread",
            python,
            [*gunicorn, "-k", "gthread", "--threads", "32", "web_wsgi_app:app"],
        ),
    ]
    if gevent_python:
        gevent = [gevent_python, *gunicorn[1:], "-k", "gevent", "--worker-connections", "1000"]
        found.append(("gunicorn gevent", "gevent", gevent_python, [*gevent, "web_wsgi_app:app"]))
    return found


async def drive(port: int, prefix: str, clients: int, seconds: float) -> tuple[list[float], int]:
    """``clients`` connections GET ``prefix/<i>`` in a loop: (latencies, errors)."""
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            i = n
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                status = await get(reader, writer, f"{prefix}/{i % 100}")
                if status != 200:
                    errors[0] += 1
                latencies.append(time.perf_counter() - start)
                i += clients
        except (OSError, asyncio.IncompleteReadError):
            errors[0] += 1
        finally:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, errors[0]


GEVENT_NEEDS = "gevent gunicorn packaging flask requests sqlalchemy psycopg2-binary psycogreen"


def check_gevent(python: str) -> None:
    """Exit with the fix if ``python`` cannot run the gevent contender."""
    code = "import gevent, gunicorn.workers.ggevent, flask, requests, sqlalchemy, psycogreen"
    found = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if found.returncode:
        error = found.stderr.strip().splitlines()[-1:] or ["?"]
        sys.exit(
            f"--gevent-python {python} cannot run gunicorn's gevent worker ({error[0]}): "
            f"`{python} -m pip install {GEVENT_NEEDS}`"
        )


def percentile(values: list[float], q: float) -> float:
    index = min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))
    return values[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", choices=["upstream", "db", "hello", "both"], default="both")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--delay", type=float, default=0.05, help="upstream delay (s)")
    parser.add_argument("--gevent-python", default=os.environ.get("GB_BENCH_GEVENT_PYTHON"))
    parser.add_argument("--only", help="run the contenders whose name contains this")
    args = parser.parse_args()

    if args.gevent_python:
        check_gevent(args.gevent_python)
    workloads = ["upstream", "db"] if args.workload == "both" else [args.workload]
    up_port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(HERE), env.get("PYTHONPATH", "")])
    env["GB_BENCH_UPSTREAM"] = f"http://127.0.0.1:{up_port}"
    upstream = [sys.executable, str(UPSTREAM), "--port", str(up_port), "--delay", str(args.delay)]
    with process(upstream, up_port, env):
        for workload in workloads:
            rows = []
            for name, mode, _python, server in contenders(sys.executable, args.gevent_python):
                if args.only and args.only not in name:
                    continue
                port = free_port()
                argv = [a.replace("{port}", str(port)) for a in server]
                with process(argv, port, dict(env, GB_BENCH_MODE=mode)) as pid:
                    prefix = f"/{workload}"
                    asyncio.run(drive(port, prefix, args.clients, 1.0))  # warm-up
                    cpu = cpu_seconds(pid)
                    lat, errors = asyncio.run(drive(port, prefix, args.clients, args.seconds))
                    cpu = cpu_seconds(pid) - cpu
                lat.sort()
                rows.append((name, len(lat) / args.seconds, lat, errors, cpu / max(1, len(lat))))
            anchors = [r[1] for r in rows if not r[0].startswith("greenbridge")]
            best = max(anchors) if anchors else None
            print(f"\n{workload}: {args.clients} clients, {args.seconds:g} s, delay 50 ms")
            print(
                f"  {'':40s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s}"
                f" {'CPU ms/req':>10s}  ratio"
            )
            for name, rps, lat, errors, cpu in rows:
                ratio = f"x{rps / best:.2f}" if best else ""
                p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
                print(
                    f"  {name:40s} {rps:8.0f} {p50:8.1f} {p99:8.1f} {errors:7d}"
                    f" {cpu * 1000:10.2f}  {ratio}"
                )


if __name__ == "__main__":
    main()
