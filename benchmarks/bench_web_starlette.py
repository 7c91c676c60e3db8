"""FastAPI ``def`` code over a sync SQLAlchemy session: stock, ``install()``ed, ``async def``.

Each contender is one uvicorn server process (started by this script) serving
the same FastAPI app: a ``def`` path operation with a ``def`` yield dependency
that opens a sync SQLAlchemy session (psycopg2) and runs
``SELECT pg_sleep(0.05)``.

- ``stock``: FastAPI as it is: the ``def`` code runs in anyio's 40 threads,
  SQLAlchemy's usual ``QueuePool``.
- ``green``: the same app after ``greenbridge.integrations.starlette.install()``,
  with ``greenbridge.patch_psycopg2()`` and ``GreenQueuePool``
  (``greenbridge.drivers.sqlalchemy.create_engine``): the ``def`` code runs in
  greenlets on the loop and the query waits green.
- ``asyncpg``: ``async def`` path operation, an asyncpg pool (if installed).

Workloads:

- ``pool``: 200 concurrent keep-alive clients for ``--seconds`` seconds, pool of
  20 connections: requests/s, p50 and p99 latency, the server's CPU time per
  request, ratios to stock; once with
  no response model (``/item``) and once with a return annotation
  (``/item-typed``, whose result FastAPI validates in its thread pool); and
  with the asyncpg contender's shape (``/item-release``: the connection goes
  back to the pool right after the query, not at the request's teardown).
- ``upstream``: the same 200 clients, a ``def`` path operation that calls a
  50 ms upstream HTTP service with ``requests`` (``examples/asgi_app/upstream.py``;
  imported under ``greenbridge.patch_blocking()`` in the green server).
- ``3205``: the FastAPI #3205 set-up: pool of 5 (``pool_timeout`` 20 s), an
  outer ``def`` dependency that queries too, 100 requests at once: how many
  succeed and how long the last one takes.

The load generator is a small raw-socket HTTP/1.1 client in this process.
Needs PostgreSQL at 127.0.0.1:5432 (user postgres, database test).

Run: ``python benchmarks/bench_web_starlette.py [--only pool|upstream|3205] [--seconds 10]
[--no-trust-env] [--loop asyncio|uvloop]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from _http import cpu_seconds, free_port, get, profile_if_asked, wait_for_port

URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
DSN = "postgresql://postgres@127.0.0.1:5432/test"
QUERY = "SELECT pg_sleep(0.05)"


# ---------------------------------------------------------------- the app (server side)


def build_app(mode: str, pool: int, pool_timeout: float) -> Any:
    """The FastAPI app one server process serves (``mode``: stock, green or asyncpg)."""
    from fastapi import Depends, FastAPI

    if mode == "asyncpg":
        import asyncpg

        state: dict[str, Any] = {}

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with asyncpg.create_pool(DSN, min_size=pool, max_size=pool) as the_pool:
                state["pool"] = the_pool
                yield

        app = FastAPI(lifespan=lifespan)

        @app.get("/item")
        async def item_async() -> Any:
            async with state["pool"].acquire() as conn:
                await conn.execute(QUERY)
            return {"ok": "yes"}

        return app

    app = FastAPI()
    import sqlalchemy as sa
    from sqlalchemy import orm

    if mode == "green":
        import greenbridge
        from greenbridge.drivers.sqlalchemy import create_engine
        from greenbridge.integrations import starlette as gs

        # requests (urllib3, http.client) bind the green socket, ssl, queue...
        with greenbridge.patch_blocking():
            import requests
            import requests.adapters

        greenbridge.patch_psycopg2()
        gs.install()
    else:
        import requests
        import requests.adapters

        create_engine = sa.create_engine
    engine = create_engine(URL, pool_size=pool, max_overflow=0, pool_timeout=pool_timeout)
    Session = orm.sessionmaker(engine)
    query = sa.text(QUERY)

    def get_db() -> Iterator[orm.Session]:
        db = Session()
        try:
            yield db
        finally:
            db.close()

    db_session = Depends(get_db)

    def current_user(db: orm.Session = db_session) -> str:
        # The #3205 shape: an outer def dependency that queries too; the
        # session holds its connection until the request's teardown.
        db.execute(query)
        return "user"

    # No response model: the result is not validated.
    @app.get("/item", response_model=None)
    def item(db: orm.Session = db_session) -> Any:
        db.execute(query)
        return {"ok": "yes"}

    # With a return annotation FastAPI validates the result, and for a def
    # path operation it does so in the thread pool, while the session still
    # holds its connection (until the teardown).  With more clients than
    # threads + connections, stock FastAPI starves: its 40 threads wait in the
    # pool for connections held by requests that wait for a thread, until
    # pool_timeout.
    @app.get("/item-typed")
    def item_typed(db: orm.Session = db_session) -> dict[str, str]:
        db.execute(query)
        return {"ok": "yes"}

    http = requests.Session()
    # requests looks for proxy settings in os.environ on every call (a scan of
    # the whole environment): --no-trust-env turns that off, for both servers.
    http.trust_env = os.environ.get("GB_BENCH_TRUST_ENV", "1") == "1"
    http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=256))
    upstream = os.environ.get("GB_BENCH_UPSTREAM", "http://127.0.0.1:8765")

    @app.get("/upstream", response_model=None)
    def call_upstream() -> Any:
        return http.get(f"{upstream}/item?x=1", timeout=30).json()

    # FastAPI's own cost per request, without and with the hop to sync code
    # (a thread in stock, a greenlet once installed): see bench_web_callgrind.py.
    @app.get("/noop", response_model=None)
    def noop() -> Any:
        return {"ok": "yes"}

    @app.get("/async-noop", response_model=None)
    async def async_noop() -> Any:
        return {"ok": "yes"}

    # The asyncpg contender's shape: the connection goes back to the pool as
    # soon as the query is done, not at the request's teardown.
    @app.get("/item-release", response_model=None)
    def item_release() -> Any:
        with engine.connect() as conn:
            conn.execute(query)
        return {"ok": "yes"}

    user_dependency = Depends(current_user)

    @app.get("/user-item")
    def user_item(user: str = user_dependency, db: orm.Session = db_session) -> Any:
        db.execute(query)
        return {"user": user}

    return app


def app_from_env() -> Any:
    """``build_app`` for ``uvicorn --factory``: the mode in ``GB_BENCH_APP_MODE``, pool of 20."""
    return build_app(os.environ["GB_BENCH_APP_MODE"], 20, 20)


def serve(mode: str, port: int, pool: int, pool_timeout: float) -> None:
    import uvicorn

    app = build_app(mode, pool, pool_timeout)
    loop = os.environ.get("GB_BENCH_LOOP", "asyncio")
    profile_if_asked()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="critical", loop=loop)


# ---------------------------------------------------------------- servers and the client


@contextmanager
def server(mode: str, pool: int, pool_timeout: float = 20) -> Iterator[tuple[int, int]]:
    """A server process for ``mode``: (its port, its pid)."""
    port = free_port()
    args = [sys.executable, __file__, "--serve", mode, "--port", str(port)]
    args += ["--pool", str(pool), "--pool-timeout", str(pool_timeout)]
    proc = subprocess.Popen(args, env=dict(os.environ))
    try:
        wait_for_port(port, proc)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


async def load(port: int, path: str, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` keep-alive connections sending requests back to back for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                status = await get(reader, writer, path)
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1
        finally:
            writer.close()

    begin = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - begin
    latencies.sort()
    n = len(latencies)
    return {
        "n": n,
        "rps": n / elapsed,
        "p50": latencies[n // 2] if n else float("nan"),
        "p99": latencies[min(n - 1, int(n * 0.99))] if n else float("nan"),
        "errors": errors,
    }


def measured_load(port: int, pid: int, path: str, clients: int, seconds: float) -> dict[str, float]:
    """`load` after a 1 s warm-up, plus the server's CPU milliseconds per request."""
    asyncio.run(load(port, path, 20, 1.0))  # warm-up: connections, imports
    cpu = cpu_seconds(pid)
    result = asyncio.run(load(port, path, clients, seconds))
    result["cpu"] = (cpu_seconds(pid) - cpu) * 1000 / max(1, result["n"] + result["errors"])
    return result


def row(name: str, r: dict[str, float]) -> str:
    """One line of results."""
    return (
        f"  {name:12s} {r['rps']:7.1f} req/s  p50 {r['p50'] * 1000:6.0f} ms  "
        f"p99 {r['p99'] * 1000:6.0f} ms  errors {r['errors']:.0f}  CPU {r['cpu']:.2f} ms/req"
    )


async def burst(port: int, path: str, n: int) -> tuple[int, float]:
    """``n`` requests at once, one connection each: (successes, seconds for all)."""

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await get(reader, writer, path)
        finally:
            writer.close()

    start = time.perf_counter()
    statuses = await asyncio.gather(*(one() for _ in range(n)))
    return sum(s == 200 for s in statuses), time.perf_counter() - start


def have_asyncpg() -> bool:
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return False
    return True


def bench_pool(clients: int, seconds: float) -> None:
    print(f"pool-bound: {clients} clients, {seconds:.0f} s, pool of 20, {QUERY}")
    runs = [
        ("stock", "stock", "/item"),
        ("stock-typed", "stock", "/item-typed"),
        ("green", "green", "/item"),
        ("green-typed", "green", "/item-typed"),
        ("stock-release", "stock", "/item-release"),
        ("green-release", "green", "/item-release"),
    ]
    if have_asyncpg():
        runs.append(("asyncpg", "asyncpg", "/item"))
    modes = [name for name, _, _ in runs]
    results = {}
    for name, mode, path in runs:
        with server(mode, pool=20) as (port, pid):
            results[name] = r = measured_load(port, pid, path, clients, seconds)
        print(row(name, r))
    pairs = [("green", "stock"), ("green-typed", "stock-typed"), ("green-release", "stock-release")]
    if "asyncpg" in modes:
        pairs += [("green", "asyncpg"), ("green-release", "asyncpg")]
    for mine, anchor in pairs:
        r, base = results[mine], results[anchor]
        print(
            f"  {mine} / {anchor}: {r['rps'] / base['rps']:.2f}x req/s, "
            f"p99 {r['p99'] / base['p99']:.2f}x"
        )


@contextmanager
def upstream_server(delay: float = 0.05) -> Iterator[str]:
    """examples/asgi_app/upstream.py: every reply takes ``delay`` seconds."""
    port = free_port()
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "asgi_app", "upstream.py")
    args = [sys.executable, script, "--port", str(port), "--delay", str(delay)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def bench_upstream(clients: int, seconds: float) -> None:
    print(f"upstream-bound: {clients} clients, {seconds:.0f} s, requests.get() of a 50 ms upstream")
    results = {}
    with upstream_server() as url:
        os.environ["GB_BENCH_UPSTREAM"] = url
        for mode in ("stock", "green"):
            with server(mode, pool=20) as (port, pid):
                results[mode] = r = measured_load(port, pid, "/upstream", clients, seconds)
            print(row(mode, r))
    r, base = results["green"], results["stock"]
    ratio = r["rps"] / base["rps"]
    print(
        f"  green / stock: {ratio:.2f}x req/s, p99 {r['p99'] / base['p99']:.2f}x, "
        f"CPU per request {r['cpu'] / base['cpu']:.2f}x"
    )


def bench_3205(n: int) -> None:
    print(f"FastAPI #3205: pool of 5 (pool_timeout 20 s), outer def dependency, {n} at once")
    for mode in ("stock", "green"):
        with server(mode, pool=5, pool_timeout=20) as (port, _):
            ok, elapsed = asyncio.run(burst(port, "/user-item", n))
        print(f"  {mode:8s} {ok}/{n} succeeded in {elapsed:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["pool", "upstream", "3205"])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--no-trust-env",
        action="store_true",
        help="requests.Session.trust_env = False in the upstream workload",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the servers' event loop (every contender alike)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--pool-timeout", type=float, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_trust_env:
        os.environ["GB_BENCH_TRUST_ENV"] = "0"
    os.environ.setdefault("GB_BENCH_LOOP", args.loop)
    if args.serve:
        serve(args.serve, args.port, args.pool, args.pool_timeout)
        return
    if args.only in (None, "pool"):
        bench_pool(args.clients, args.seconds)
    if args.only in (None, "upstream"):
        bench_upstream(args.clients, args.seconds)
    if args.only in (None, "3205"):
        bench_3205(100)


if __name__ == "__main__":
    main()
