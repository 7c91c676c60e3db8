"""psycopg2 with greenbridge's wait callback, against the real PostgreSQL server."""

from __future__ import annotations

import asyncio
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
)

psycopg2 = pytest.importorskip("psycopg2")
errors = pytest.importorskip("psycopg2.errors")


@pytest.fixture(autouse=True)
def _postgres() -> None:
    require_postgres()
    greenbridge.patch_psycopg2()


def connect(**kwargs: Any) -> Any:
    return psycopg2.connect(PG_DSN, **kwargs)


def scalar(conn: Any, sql: str, params: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def test_patch_is_idempotent_and_installs_the_callback() -> None:
    from greenbridge.drivers.psycopg2 import wait_callback

    greenbridge.patch_psycopg2()
    greenbridge.patch_psycopg2()
    assert psycopg2.extensions.get_wait_callback() is wait_callback


def test_concurrent_queries_do_not_block_the_loop(backend: Backend) -> None:
    def query(i: int) -> int:
        conn = connect()
        try:
            return scalar(conn, "SELECT %s FROM pg_sleep(0.2)", (i,))  # type: ignore[no-any-return]
        finally:
            conn.close()

    calls = [lambda i=i: query(i) for i in range(10)]
    results, elapsed, max_gap = run_concurrently(backend, calls)
    assert results == list(range(10))
    assert elapsed < 0.5, elapsed  # one after the other: 2 s
    assert max_gap < 0.1, max_gap


def test_quick_queries_answered_without_waiting_still_share_the_loop(backend: Backend) -> None:
    """Back-to-back short queries (often answered by the read tried before waiting).

    The callback reads once before waiting for the answer; a query answered
    that way never waits, so the loop gets its turn through share_turn():
    the heartbeat keeps ticking while two greenlets run 2,000 queries each.
    """

    def many(conn: Any) -> int:
        total = 0
        with conn.cursor() as cur:
            for i in range(2000):
                cur.execute("SELECT %s", (i,))
                total += cur.fetchone()[0]
        return total

    conns = [connect(), connect()]
    try:
        calls = [lambda c=c: many(c) for c in conns]
        results, _, max_gap = run_concurrently(backend, calls)
    finally:
        for conn in conns:
            conn.close()
    assert results == [sum(range(2000))] * 2
    assert max_gap < 0.1, max_gap


def test_outside_a_loop_it_blocks_as_usual() -> None:
    conn = connect()
    try:
        assert scalar(conn, "SELECT 40 + 2") == 42
    finally:
        conn.close()


def test_unbridged_code_in_a_running_loop_gets_missing_bridge() -> None:
    conn = connect()

    async def main() -> None:
        with pytest.raises(greenbridge.MissingBridge, match="async_"):
            # A query that must wait (a fast one may be answered without waiting).
            scalar(conn, "SELECT pg_sleep(0.05)")

    asyncio.run(main())
    conn.close()


def test_errors_roll_back(aio: Backend) -> None:
    setup = connect()
    with setup, setup.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS gb_pg2_rollback")
        cur.execute("CREATE TABLE gb_pg2_rollback (id int PRIMARY KEY)")
    setup.close()

    def work() -> tuple[str, int]:
        conn = connect()
        try:
            with pytest.raises(RuntimeError), conn, conn.cursor() as cur:
                cur.execute("INSERT INTO gb_pg2_rollback VALUES (1)")
                raise RuntimeError("application error inside the transaction")
            with pytest.raises(errors.UniqueViolation), conn, conn.cursor() as cur:
                cur.execute("INSERT INTO gb_pg2_rollback VALUES (2)")
                cur.execute("INSERT INTO gb_pg2_rollback VALUES (2)")
            status = conn.info.transaction_status
            return (
                "idle" if status == psycopg2.extensions.TRANSACTION_STATUS_IDLE else str(status),
                scalar(conn, "SELECT count(*) FROM gb_pg2_rollback"),
            )
        finally:
            conn.close()

    async def main() -> tuple[str, int]:
        return await greenbridge.async_(work)()

    assert aio.run(main) == ("idle", 0)


def _active_sleeps(marker: str) -> int:
    conn = connect()
    try:
        return scalar(  # type: ignore[no-any-return]
            conn,
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
            "AND pid <> pg_backend_pid()",
            (f"%{marker}%",),
        )
    finally:
        conn.close()


def test_cancel_cancels_the_query_on_the_server(aio: Backend) -> None:
    conn = connect()
    outcome: list[str] = []
    marker = f"gb-cancel-{uuid.uuid4().hex}"

    def blocked() -> None:
        try:
            scalar(conn, f"SELECT pg_sleep(30) -- {marker}")
        except asyncio.CancelledError:
            outcome.append("CancelledError")
            raise

    async def main() -> tuple[float, int]:
        task = greenbridge.spawn(blocked)
        await asyncio.sleep(0.3)
        assert await greenbridge.async_(_active_sleeps)(marker) == 1
        start = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.perf_counter() - start
        return took, await greenbridge.async_(_active_sleeps)(marker)

    took, still_running = aio.run(main)
    assert outcome == ["CancelledError"]
    assert still_running == 0  # the server stopped the query
    assert took < 3, took
    # psycopg2 closes a connection whose wait callback raised (documented).
    assert conn.closed


def test_timeout_under_trio_cancels_the_query() -> None:
    trio = pytest.importorskip("trio")
    conn = connect()
    marker = f"gb-trio-{uuid.uuid4().hex}"

    async def main() -> int:
        with trio.move_on_after(0.3) as scope:
            await greenbridge.async_(scalar)(conn, f"SELECT pg_sleep(30) -- {marker}")
        assert scope.cancelled_caught
        return await greenbridge.async_(_active_sleeps)(marker)

    assert trio.run(main) == 0
    assert conn.closed


def test_listen_notify(backend: Backend) -> None:
    from greenbridge.drivers.psycopg2 import wait_notifies

    def listen() -> list[tuple[str, str]]:
        conn = connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("LISTEN gb_channel")
            got: list[tuple[str, str]] = []
            while len(got) < 3:
                notes = wait_notifies(conn, timeout=5)
                assert notes, "no notification within 5 s"
                got.extend((n.channel, n.payload) for n in notes)
            assert wait_notifies(conn, timeout=0.05) == []
            return got
        finally:
            conn.close()

    def notify() -> None:
        greenbridge._hub.sleep(0.2)  # let the listener start listening
        conn = connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for i in range(3):
                    cur.execute("SELECT pg_notify('gb_channel', %s)", (f"payload {i}",))
                    greenbridge._hub.sleep(0.02)
        finally:
            conn.close()

    results, _, max_gap = run_concurrently(backend, [listen, notify])
    assert results[0] == [("gb_channel", f"payload {i}") for i in range(3)]
    assert max_gap < 0.1, max_gap


def test_server_side_cursor(backend: Backend) -> None:
    def stream() -> tuple[int, int]:
        conn = connect()
        try:
            with conn, conn.cursor(name="gb_named") as cur:
                cur.itersize = 100
                cur.execute("SELECT g FROM generate_series(1, 1000) AS g")
                total = count = 0
                for (value,) in cur:
                    total += value
                    count += 1
                return count, total
        finally:
            conn.close()

    results, _, _ = run_concurrently(backend, [stream, stream])
    assert results == [(1000, 500500), (1000, 500500)]


def test_killed_connection_raises_the_drivers_error(aio: Backend) -> None:
    def work() -> str:
        conn = connect()
        try:
            pid = conn.get_backend_pid()
            killer = connect()
            assert scalar(killer, "SELECT pg_terminate_backend(%s)", (pid,)) is True
            killer.close()
            with pytest.raises(psycopg2.OperationalError) as info:
                scalar(conn, "SELECT 1")
            return type(info.value).__module__.split(".")[0]
        finally:
            conn.close()

    async def main() -> str:
        return await greenbridge.async_(work)()

    assert aio.run(main) == "psycopg2"


def test_no_leaks_after_10000_queries() -> None:
    per_task = 500

    def work(conn: Any) -> int:
        total = 0
        with conn.cursor() as cur:
            for _ in range(per_task):
                cur.execute("SELECT 1")
                total += cur.fetchone()[0]
        return total

    async def main() -> tuple[int, set[int], set[int], int, int]:
        loop = asyncio.get_running_loop()
        conns = [await greenbridge.async_(connect)(application_name=app) for _ in range(10)]
        fds_before = registered_fds(loop)
        greenlets_before = count_greenlets()
        total = 0
        for _ in range(2):  # 2 x 10 tasks x 500 = 10,000 queries
            totals = await asyncio.gather(*(greenbridge.async_(work)(c) for c in conns))
            total += sum(totals)
        greenlets_after = count_greenlets()
        fds_after = registered_fds(loop)
        for conn in conns:
            conn.close()
        return total, fds_before, fds_after, greenlets_before, greenlets_after

    app = f"gb-leak-{uuid.uuid4().hex[:12]}"
    total, fds_before, fds_after, greenlets_before, greenlets_after = asyncio.run(main())
    assert total == 10_000
    assert fds_after == fds_before  # no reader/writer left registered
    # Parked worker greenlets are reused: at most one per concurrent task stays.
    assert greenlets_after <= greenlets_before + 10
    assert _backend_count(app) == 0  # every server connection was closed


def _backend_count(app: str) -> int:
    conn = connect()
    conn.autocommit = True  # pg_stat_activity is a snapshot per transaction
    try:
        for _ in range(100):  # the server ends a backend shortly after its client left
            count = scalar(
                conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
            )
            if count == 0:
                break
            time.sleep(0.01)
        return count  # type: ignore[no-any-return]
    finally:
        conn.close()
