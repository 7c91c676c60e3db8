"""psycopg 3's sync API waiting through greenbridge, against the real PostgreSQL server."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import pytest

import greenbridge

from .helpers import (
    PG_DSN,
    Backend,
    count_greenlets,
    registered_fds,
    require_postgres,
    run_concurrently,
    run_green,
)

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(autouse=True)
def _postgres() -> None:
    require_postgres()
    greenbridge.patch_psycopg()


def connect(**kwargs: Any) -> Any:
    return psycopg.connect(PG_DSN, **kwargs)


def _active(marker: str) -> int:
    with connect(autocommit=True) as conn:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND query LIKE %s AND pid <> pg_backend_pid()",
            (f"%{marker}%",),
        ).fetchone()[0]


def test_patch_is_idempotent() -> None:
    from greenbridge.drivers import psycopg as driver

    greenbridge.patch_psycopg()
    greenbridge.patch_psycopg()
    assert psycopg.waiting.wait is driver.wait
    assert psycopg.waiting.wait_conn is driver.wait_conn
    assert psycopg.Connection.wait.__greenbridge__
    assert not getattr(psycopg.Connection.wait.__wrapped__, "__greenbridge__", False)


def test_quick_queries_answered_without_waiting_still_share_the_loop(backend: Backend) -> None:
    """Back-to-back short queries: the first read of each is tried before waiting.

    A query answered that way never waits; share_turn() still gives the loop
    its turns: the heartbeat keeps ticking while two greenlets run 2,000
    queries each.
    """

    def many(conn: Any) -> int:
        total = 0
        for i in range(2000):
            total += conn.execute("SELECT %s::int", (i,)).fetchone()[0]
        return total

    conns = [connect(autocommit=True), connect(autocommit=True)]
    try:
        calls = [lambda c=c: many(c) for c in conns]
        results, _, max_gap = run_concurrently(backend, calls)
    finally:
        for conn in conns:
            conn.close()
    assert results == [sum(range(2000))] * 2
    assert max_gap < 0.1, max_gap


def test_connect_and_queries_do_not_block_the_loop(backend: Backend) -> None:
    def query(i: int) -> int:
        with connect() as conn:  # connecting waits on the loop too
            return conn.execute("SELECT %s FROM pg_sleep(0.2)", (i,)).fetchone()[0]  # type: ignore[no-any-return]

    results, elapsed, max_gap = run_concurrently(backend, [lambda i=i: query(i) for i in range(10)])
    assert results == list(range(10))
    assert elapsed < 0.5, elapsed
    assert max_gap < 0.1, max_gap


def test_outside_a_loop_it_blocks_as_usual() -> None:
    with connect() as conn:
        assert conn.execute("SELECT 40 + 2").fetchone()[0] == 42


def test_connect_timeout_is_honoured(aio: Backend) -> None:
    # A listening socket that never answers: libpq waits for the server's reply.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]

    def attempt() -> str:
        with pytest.raises(psycopg.OperationalError, match="timeout"):
            psycopg.connect(f"host=127.0.0.1 port={port} user=postgres connect_timeout=2")
        return "timed out"

    start = time.perf_counter()
    try:
        result, max_gap = run_green(aio, attempt, heartbeat=True)
    finally:
        silent.close()
    assert result == "timed out"
    assert 1.5 < time.perf_counter() - start < 10
    assert max_gap < 0.1, max_gap


def test_errors_roll_back(aio: Backend) -> None:
    with connect(autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS gb_pg3_rollback")
        conn.execute("CREATE TABLE gb_pg3_rollback (id int PRIMARY KEY)")

    def work() -> int:
        with connect() as conn:
            with pytest.raises(RuntimeError), conn.transaction():
                conn.execute("INSERT INTO gb_pg3_rollback VALUES (1)")
                raise RuntimeError("application error")
            with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
                conn.execute("INSERT INTO gb_pg3_rollback VALUES (2)")
                conn.execute("INSERT INTO gb_pg3_rollback VALUES (2)")
            return conn.execute("SELECT count(*) FROM gb_pg3_rollback").fetchone()[0]  # type: ignore[no-any-return]

    async def main() -> int:
        return await greenbridge.async_(work)()

    assert aio.run(main) == 0


def test_cancel_cancels_on_the_server_and_the_connection_stays_usable(aio: Backend) -> None:
    marker = f"gb-pg3-cancel-{uuid.uuid4().hex}"
    outcome: list[str] = []

    async def main() -> tuple[int, Any, Any]:
        conn = await greenbridge.async_(connect)(autocommit=True)

        def blocked() -> None:
            try:
                conn.execute(f"SELECT pg_sleep(30) -- {marker}")
            except asyncio.CancelledError:
                outcome.append("CancelledError")
                raise

        task = greenbridge.spawn(blocked)
        await asyncio.sleep(0.3)
        assert await greenbridge.async_(_active)(marker) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        still = await greenbridge.async_(_active)(marker)
        after = await greenbridge.async_(lambda: conn.execute("SELECT 7").fetchone()[0])()
        status = conn.info.transaction_status
        await greenbridge.async_(conn.close)()
        return still, after, status

    still, after, status = aio.run(main)
    assert outcome == ["CancelledError"]
    assert still == 0
    assert after == 7
    assert status == psycopg.pq.TransactionStatus.IDLE


def test_timeout_in_a_transaction_leaves_it_to_roll_back(aio: Backend) -> None:
    def work() -> Any:
        with connect() as conn:
            with pytest.raises(asyncio.TimeoutError):
                greenbridge.await_(
                    asyncio.wait_for(
                        greenbridge.async_(conn.execute)("SELECT pg_sleep(30)"), timeout=0.2
                    )
                )
            failed = conn.info.transaction_status
            conn.rollback()
            return failed, conn.execute("SELECT 1").fetchone()[0]

    async def main() -> Any:
        return await greenbridge.async_(work)()

    failed, one = aio.run(main)
    assert failed == psycopg.pq.TransactionStatus.INERROR
    assert one == 1


def test_timeout_under_trio_cancels_the_query() -> None:
    trio = pytest.importorskip("trio")
    marker = f"gb-pg3-trio-{uuid.uuid4().hex}"

    async def main() -> tuple[int, int]:
        conn = await greenbridge.async_(connect)(autocommit=True)
        with trio.move_on_after(0.3) as scope:
            await greenbridge.async_(conn.execute)(f"SELECT pg_sleep(30) -- {marker}")
        assert scope.cancelled_caught
        still = await greenbridge.async_(_active)(marker)
        one = await greenbridge.async_(lambda: conn.execute("SELECT 1").fetchone()[0])()
        await greenbridge.async_(conn.close)()
        return still, one

    assert trio.run(main) == (0, 1)


def test_listen_notify(backend: Backend) -> None:
    channel = f"gb_{uuid.uuid4().hex[:10]}"

    def listen() -> list[str]:
        with connect(autocommit=True) as conn:
            conn.execute(f"LISTEN {channel}")
            got = [n.payload for n in conn.notifies(timeout=5, stop_after=3)]
            return got

    def notify() -> None:
        greenbridge._hub.sleep(0.2)
        with connect(autocommit=True) as conn:
            for i in range(3):
                conn.execute("SELECT pg_notify(%s, %s)", (channel, f"payload {i}"))

    results, _, max_gap = run_concurrently(backend, [listen, notify])
    assert results[0] == [f"payload {i}" for i in range(3)]
    assert max_gap < 0.1, max_gap


def test_server_side_cursor_and_copy(backend: Backend) -> None:
    def stream() -> tuple[int, int]:
        with connect() as conn:
            with conn.cursor(name="gb_named") as cur:
                cur.itersize = 100
                cur.execute("SELECT g FROM generate_series(1, 1000) AS g")
                values = [row[0] for row in cur]
            with (
                conn.cursor() as cur,
                cur.copy("COPY (SELECT 1 UNION ALL SELECT 2) TO STDOUT") as copy,
            ):
                copied = sum(int(bytes(row).strip()) for row in copy)
            return len(values) + copied, sum(values)

    results, _, _ = run_concurrently(backend, [stream, stream])
    assert results == [(1003, 500500), (1003, 500500)]


def test_killed_connection_raises_the_drivers_error(aio: Backend) -> None:
    def work() -> bool:
        with connect() as conn:
            pid = conn.info.backend_pid
            with connect(autocommit=True) as killer:
                killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
            return bool(conn.closed)

    async def main() -> bool:
        return await greenbridge.async_(work)()

    assert aio.run(main) is True


def test_no_leaks_after_10000_queries() -> None:
    app = f"gb-leak3-{uuid.uuid4().hex[:12]}"

    def work(conn: Any) -> int:
        return sum(conn.execute("SELECT 1").fetchone()[0] for _ in range(500))

    async def main() -> tuple[int, set[int], set[int], int, int]:
        loop = asyncio.get_running_loop()
        conns = [
            await greenbridge.async_(connect)(autocommit=True, application_name=app)
            for _ in range(10)
        ]
        fds_before = registered_fds(loop)
        greenlets_before = count_greenlets()
        total = 0
        for _ in range(2):
            total += sum(await asyncio.gather(*(greenbridge.async_(work)(c) for c in conns)))
        greenlets_after = count_greenlets()
        fds_after = registered_fds(loop)
        for conn in conns:
            await greenbridge.async_(conn.close)()
        return total, fds_before, fds_after, greenlets_before, greenlets_after

    total, fds_before, fds_after, g_before, g_after = asyncio.run(main())
    assert total == 10_000
    assert fds_after == fds_before
    assert g_after <= g_before + 10
    with connect(autocommit=True) as conn:
        for _ in range(100):
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchone()[0]
            if left == 0:
                break
            time.sleep(0.01)
    assert left == 0
