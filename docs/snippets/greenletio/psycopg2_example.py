"""greenletio's patch_psycopg2, on greenbridge: psycopg2 queries wait on the loop."""

import asyncio
import time

import psycopg2

import greenbridge

greenbridge.patch_psycopg2()


def nap(dsn, seconds):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_sleep(%s), 1", (seconds,))
        row = cur.fetchone()
    conn.close()
    return row[1]


async def main(dsn):
    start = time.perf_counter()
    rows = await asyncio.gather(*(greenbridge.async_(nap)(dsn, 0.2) for _ in range(5)))
    return rows, time.perf_counter() - start


if __name__ == "__main__":
    print(asyncio.run(main("host=127.0.0.1 user=postgres dbname=test")))
