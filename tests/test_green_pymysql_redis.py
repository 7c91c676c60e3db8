"""pymysql and redis-py (pure-Python sync clients) on the loop under patch_blocking().

Both use plain sockets, so they need no driver of their own: imported inside
``greenbridge.patch_blocking()`` they bind the green ``socket``/``select``
modules and wait on the event loop from bridged code.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import greenbridge

from .helpers import (
    Backend,
    count_greenlets,
    registered_fds,
    require_mariadb,
    require_redis,
    run_concurrently,
)

pytest.importorskip("pymysql")
pytest.importorskip("redis")

_FRESH = ("pymysql", "redis")


def _ours(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _FRESH)


@pytest.fixture(scope="module")
def green() -> Iterator[dict[str, ModuleType]]:
    """pymysql and redis imported afresh under patch_blocking(); sys.modules restored after."""
    saved = {name: mod for name, mod in sys.modules.items() if _ours(name)}
    for name in saved:
        del sys.modules[name]
    try:
        with greenbridge.patch_blocking():
            mods = {name: importlib.import_module(name) for name in _FRESH}
        yield mods
    finally:
        for name in [n for n in sys.modules if _ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def mysql(green: dict[str, ModuleType], **kwargs: Any) -> Any:
    return green["pymysql"].connect(
        host="127.0.0.1", port=3306, user="root", database="test", **kwargs
    )


@pytest.fixture
def mariadb() -> None:
    require_mariadb()


@pytest.fixture
def redis_server() -> None:
    require_redis()


def test_pymysql_select_sleep_concurrently(
    backend: Backend, green: dict[str, ModuleType], mariadb: None
) -> None:
    # Connecting costs CPU (pymysql builds an SSL context per connection, tens of
    # ms): open the connections first (concurrently too), then time the queries.
    conns = run_concurrently(backend, [lambda: mysql(green)] * 10)[0]

    def query(i: int) -> int:
        with conns[i].cursor() as cur:
            cur.execute("SELECT SLEEP(0.2), %s", (i,))
            return cur.fetchone()[1]  # type: ignore[no-any-return]

    try:
        results, elapsed, max_gap = run_concurrently(
            backend, [lambda i=i: query(i) for i in range(10)]
        )
    finally:
        for conn in conns:
            conn.close()
    assert results == list(range(10))
    assert elapsed < 0.5, elapsed  # one after the other: 2 s
    assert max_gap < 0.1, max_gap


def test_pymysql_errors_roll_back(
    aio: Backend, green: dict[str, ModuleType], mariadb: None
) -> None:
    pymysql = green["pymysql"]

    def work() -> int:
        conn = mysql(green)
        try:
            with conn.cursor() as cur:
                cur.execute("DROP TABLE IF EXISTS gb_my_rollback")
                cur.execute("CREATE TABLE gb_my_rollback (id int PRIMARY KEY) ENGINE=InnoDB")
            conn.commit()
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO gb_my_rollback VALUES (1)")
                    cur.execute("INSERT INTO gb_my_rollback VALUES (1)")
                conn.commit()
            except pymysql.err.IntegrityError:
                conn.rollback()
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM gb_my_rollback")
                return cur.fetchone()[0]  # type: ignore[no-any-return]
        finally:
            conn.close()

    async def main() -> int:
        return await greenbridge.async_(work)()

    assert aio.run(main) == 0


def test_pymysql_killed_connection(
    aio: Backend, green: dict[str, ModuleType], mariadb: None
) -> None:
    pymysql = green["pymysql"]

    def work() -> str:
        conn = mysql(green)
        killer = mysql(green)
        try:
            with killer.cursor() as cur:
                cur.execute("KILL %s", (conn.thread_id(),))
            with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
                cur.execute("SELECT 1")
            return type(info.value).__module__
        finally:
            killer.close()

    async def main() -> str:
        return await greenbridge.async_(work)()

    assert aio.run(main) == "pymysql.err"


def test_pymysql_cancelled_mid_query(green: dict[str, ModuleType], mariadb: None) -> None:
    """Cancelling a task blocked in a pymysql query, as documented in docs/drivers.md.

    The CancelledError reaches the caller at once, pymysql closes the
    connection (it force-closes on any BaseException while reading), nothing
    stays registered on the loop, and the server ends the statement on its
    own (MariaDB notices the closed connection when the statement ends; it
    is not killed).
    """

    async def main() -> tuple[float, bool, set[int], set[int], int, float]:
        loop = asyncio.get_running_loop()
        conn = await greenbridge.async_(mysql)(green)
        watcher = await greenbridge.async_(mysql)(green)
        thread_id = conn.thread_id()
        fds = registered_fds(loop)

        def slow() -> Any:
            with conn.cursor() as cur:
                cur.execute("SELECT SLEEP(2)")
                return cur.fetchone()

        def running() -> int:
            with watcher.cursor() as cur:
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    "WHERE ID = %s AND INFO LIKE 'SELECT SLEEP%%'",
                    (thread_id,),
                )
                return int(cur.fetchone()[0])

        task = asyncio.ensure_future(greenbridge.async_(slow)())
        await asyncio.sleep(0.3)
        assert await greenbridge.async_(running)() == 1
        task.cancel()
        start = time.perf_counter()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancel_took = time.perf_counter() - start
        fds_after = registered_fds(loop)
        still_running = await greenbridge.async_(running)()
        ended = time.perf_counter()
        while await greenbridge.async_(running)():
            assert time.perf_counter() - ended < 10, "the server never ended the statement"
            await asyncio.sleep(0.05)
        ended_after = time.perf_counter() - start
        await greenbridge.async_(watcher.close)()
        return cancel_took, conn.open, fds, fds_after, still_running, ended_after

    cancel_took, is_open, fds, fds_after, still_running, ended_after = asyncio.run(main())
    assert cancel_took < 0.5, cancel_took
    assert not is_open
    assert fds_after == fds
    # Not killed: the statement runs to its end (about 1.7 s after the cancellation).
    assert still_running == 1
    assert ended_after < 10


def test_pymysql_no_leaks_after_10000_queries(green: dict[str, ModuleType], mariadb: None) -> None:
    def work(conn: Any) -> int:
        total = 0
        with conn.cursor() as cur:
            for _ in range(1000):
                cur.execute("SELECT 1")
                total += cur.fetchone()[0]
        return total

    async def main() -> tuple[int, set[int], set[int], int, int]:
        loop = asyncio.get_running_loop()
        conns = [await greenbridge.async_(mysql)(green) for _ in range(10)]
        fds, greenlets = registered_fds(loop), count_greenlets()
        total = sum(await asyncio.gather(*(greenbridge.async_(work)(c) for c in conns)))
        fds_after, greenlets_after = registered_fds(loop), count_greenlets()
        for conn in conns:
            await greenbridge.async_(conn.close)()
        return total, fds, fds_after, greenlets, greenlets_after

    total, fds, fds_after, greenlets, greenlets_after = asyncio.run(main())
    assert total == 10_000
    assert fds_after == fds
    assert greenlets_after <= greenlets + 10


def test_redis_blpop_with_timeout_concurrently(
    backend: Backend, green: dict[str, ModuleType], redis_server: None
) -> None:
    client = green["redis"].Redis(host="127.0.0.1", port=6379, max_connections=20)
    prefix = f"gb:blpop:{uuid.uuid4().hex}"

    def pop(i: int) -> Any:
        return client.blpop([f"{prefix}:{i}"], timeout=0.2)  # nothing comes: waits 0.2 s

    def push_then_pop() -> Any:
        key = f"{prefix}:pushed"
        client.rpush(key, "value")
        return client.blpop([key], timeout=1)

    try:
        calls = [lambda i=i: pop(i) for i in range(10)] + [push_then_pop]
        results, elapsed, max_gap = run_concurrently(backend, calls)
    finally:
        client.close()
    assert results[:10] == [None] * 10
    assert results[10] == (f"{prefix}:pushed".encode(), b"value")
    assert elapsed < 0.5, elapsed
    assert max_gap < 0.1, max_gap


def test_redis_killed_connection(
    aio: Backend, green: dict[str, ModuleType], redis_server: None
) -> None:
    redis = green["redis"]
    retry = importlib.import_module("redis.retry")
    backoff = importlib.import_module("redis.backoff")
    name = f"gb-victim-{uuid.uuid4().hex[:8]}"
    client = redis.Redis(host="127.0.0.1", port=6379, retry=retry.Retry(backoff.NoBackoff(), 0))
    admin = redis.Redis(host="127.0.0.1", port=6379)

    def blocked() -> str:
        client.client_setname(name)
        with pytest.raises(redis.exceptions.ConnectionError) as info:
            client.blpop([f"gb:never:{name}"], timeout=5)  # killed while waiting
        return type(info.value).__module__

    def kill() -> int:
        greenbridge._hub.sleep(0.2)
        victims = [c for c in admin.client_list() if c.get("name") == name]
        assert len(victims) == 1
        return admin.client_kill_filter(_id=victims[0]["id"])  # type: ignore[no-any-return]

    try:
        results, elapsed, _ = run_concurrently(aio, [blocked, kill])
    finally:
        client.close()
        admin.close()
    assert results == ["redis.exceptions", 1]
    assert elapsed < 3, elapsed


def test_redis_no_leaks_after_10000_commands(
    green: dict[str, ModuleType], redis_server: None
) -> None:
    client = green["redis"].Redis(host="127.0.0.1", port=6379, max_connections=10)
    key = f"gb:leak:{uuid.uuid4().hex}"

    def work() -> int:
        for _ in range(1000):
            client.incr(key)
        return 1000

    async def main() -> tuple[int, set[int], set[int], int, int]:
        loop = asyncio.get_running_loop()
        fds, greenlets = registered_fds(loop), count_greenlets()
        total = sum(await asyncio.gather(*(greenbridge.async_(work)() for _ in range(10))))
        fds_after, greenlets_after = registered_fds(loop), count_greenlets()
        return total, fds, fds_after, greenlets, greenlets_after

    start = time.perf_counter()
    try:
        total, fds, fds_after, greenlets, greenlets_after = asyncio.run(main())
        assert int(client.get(key)) == 10_000  # outside the loop: plain blocking
        connections = (
            len(client.connection_pool._created_connections_by_pid())
            if hasattr(client.connection_pool, "_created_connections_by_pid")
            else client.connection_pool._created_connections
        )
        client.delete(key)
    finally:
        client.close()
    assert total == 10_000
    assert fds_after == fds
    assert greenlets_after <= greenlets + 10
    assert connections <= 10
    assert time.perf_counter() - start < 30
