"""Database benchmark: greenbridge + psycopg2 against the usual alternatives, in one run.

Workloads (PostgreSQL on 127.0.0.1:5432, user postgres, db test):
  sleep:  100 x SELECT pg_sleep(0.05), all at once (100 connections)
  select: 5,000 x SELECT 1 over 20 connections (20 workers x 250 queries)
Contenders: greenbridge + psycopg2 (patch_psycopg2), greenbridge + psycopg 3's sync
API (patch_psycopg), psycopg2 in a thread pool,
asyncpg, psycopg 3 async (each if installed). Prints seconds and the ratio
to the fastest. Run: python benchmarks/bench_db.py [--only sleep|select] [--uvloop]
(the sleep workload needs 100 free connections: PostgreSQL's default max_connections is 100).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from typing import Any

import greenbridge

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
URL = "postgresql://postgres@127.0.0.1:5432/test"


def run_sync_jobs(n: int, sql: str) -> Callable[[Any], None]:
    def job(conn: Any) -> None:
        with conn.cursor() as cur:
            for _ in range(n):
                cur.execute(sql)
                cur.fetchone()

    return job


async def greenbridge_driver(
    connect: Callable[[str], Any], workers: int, n: int, sql: str
) -> float:
    """Sync connections of a patched driver, each worked by one bridged call."""
    conns = [await greenbridge.async_(connect)(DSN) for _ in range(workers)]
    job = run_sync_jobs(n, sql)
    start = time.perf_counter()
    await asyncio.gather(*(greenbridge.async_(job)(c) for c in conns))
    took = time.perf_counter() - start
    for c in conns:
        await greenbridge.async_(c.close)()
    return took


async def greenbridge_psycopg2(workers: int, n: int, sql: str) -> float:
    import psycopg2

    greenbridge.patch_psycopg2()
    return await greenbridge_driver(psycopg2.connect, workers, n, sql)


async def greenbridge_psycopg3(workers: int, n: int, sql: str) -> float:
    import psycopg

    greenbridge.patch_psycopg()
    return await greenbridge_driver(psycopg.connect, workers, n, sql)


async def threadpool_psycopg2(workers: int, n: int, sql: str) -> float:
    import psycopg2
    import psycopg2.extensions

    psycopg2.extensions.set_wait_callback(None)
    conns = [psycopg2.connect(DSN) for _ in range(workers)]
    job = run_sync_jobs(n, sql)
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        await asyncio.gather(*(loop.run_in_executor(pool, job, c) for c in conns))
        took = time.perf_counter() - start
    for c in conns:
        c.close()
    greenbridge.patch_psycopg2()
    return took


async def asyncpg_(workers: int, n: int, sql: str) -> float:
    import asyncpg

    conns = [await asyncpg.connect(URL) for _ in range(workers)]

    async def job(conn: Any) -> None:
        for _ in range(n):
            await conn.fetchrow(sql)

    start = time.perf_counter()
    await asyncio.gather(*(job(c) for c in conns))
    took = time.perf_counter() - start
    for c in conns:
        await c.close()
    return took


async def psycopg3_async(workers: int, n: int, sql: str) -> float:
    import psycopg

    conns = [await psycopg.AsyncConnection.connect(DSN) for _ in range(workers)]

    async def job(conn: Any) -> None:
        for _ in range(n):
            await (await conn.execute(sql)).fetchone()

    start = time.perf_counter()
    await asyncio.gather(*(job(c) for c in conns))
    took = time.perf_counter() - start
    for c in conns:
        await c.close()
    return took


CONTENDERS: dict[str, Callable[[int, int, str], Awaitable[float]]] = {
    "greenbridge + psycopg2": greenbridge_psycopg2,
    "greenbridge + psycopg 3 sync": greenbridge_psycopg3,
    "psycopg2 in a thread pool": threadpool_psycopg2,
    "asyncpg": asyncpg_,
    "psycopg 3 async": psycopg3_async,
}

WORKLOADS = {
    "sleep": ("100 x pg_sleep(0.05) at once", 100, 1, "SELECT pg_sleep(0.05)"),
    "select": ("5,000 x SELECT 1 over 20 connections", 20, 250, "SELECT 1"),
}


async def main(only: str | None) -> None:
    for key, (title, workers, n, sql) in WORKLOADS.items():
        if only is not None and key != only:
            continue
        print(f"\n{title}")
        results: dict[str, float] = {}
        for name, fn in CONTENDERS.items():
            try:
                await fn(workers, min(n, 10), sql)  # warm-up
                results[name] = min([await fn(workers, n, sql) for _ in range(3)])
            except ImportError as exc:
                print(f"  {name:28s} skipped ({exc.name} not installed)")
        best = min(results.values())
        for name, took in results.items():
            print(f"  {name:28s} {took * 1000:8.1f} ms   x{took / best:5.2f} of the fastest")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(WORKLOADS), help="run one workload")
    parser.add_argument("--uvloop", action="store_true", help="run every contender on uvloop")
    args = parser.parse_args()
    print(f"event loop: {'uvloop' if args.uvloop else 'asyncio'}")
    if args.uvloop:
        import uvloop

        uvloop.run(main(args.only))
    else:
        asyncio.run(main(args.only))
