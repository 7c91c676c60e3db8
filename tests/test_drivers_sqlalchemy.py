"""SQLAlchemy's sync ORM (psycopg2 and pymysql engines) called from async code via async_."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import greenbridge

from .helpers import Backend, require_mariadb, require_postgres, with_heartbeat

sa = pytest.importorskip("sqlalchemy")
orm = pytest.importorskip("sqlalchemy.orm")
pytest.importorskip("psycopg2")
pytest.importorskip("pymysql")

from greenbridge.drivers.sqlalchemy import GreenQueuePool, create_engine  # noqa: E402


class Base(orm.DeclarativeBase):  # type: ignore[name-defined,misc]
    pass


class Item(Base):
    __tablename__ = f"gb_orm_items_{uuid.uuid4().hex[:8]}"
    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(50), unique=True, nullable=False)


@pytest.fixture(scope="module")
def green_pymysql() -> Iterator[ModuleType]:
    """pymysql imported afresh under patch_blocking(); sys.modules restored afterwards."""
    saved = {n: m for n, m in sys.modules.items() if n == "pymysql" or n.startswith("pymysql.")}
    for name in saved:
        del sys.modules[name]
    try:
        with greenbridge.patch_blocking():
            yield importlib.import_module("pymysql")
    finally:
        for name in [n for n in sys.modules if n == "pymysql" or n.startswith("pymysql.")]:
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.fixture(params=["psycopg2", "pymysql"])
def engine(request: pytest.FixtureRequest, green_pymysql: ModuleType) -> Iterator[Any]:
    if request.param == "psycopg2":
        require_postgres()
        greenbridge.patch_psycopg2()
        eng = create_engine(
            "postgresql+psycopg2://postgres@127.0.0.1:5432/test", pool_size=5, max_overflow=0
        )
    else:
        require_mariadb()
        eng = sa.create_engine(
            "mysql+pymysql://root@127.0.0.1:3306/test",
            module=green_pymysql,
            poolclass=GreenQueuePool,
            pool_size=5,
            max_overflow=0,
        )
    Base.metadata.create_all(eng)  # no loop running: plain blocking calls
    try:
        yield eng
    finally:
        Base.metadata.drop_all(eng)
        eng.dispose()


def sleep_sql(engine: Any, seconds: float) -> Any:
    if engine.dialect.name == "postgresql":
        return sa.text(f"SELECT pg_sleep({seconds})")
    return sa.text(f"SELECT SLEEP({seconds})")


def test_sessions_transactions_and_rollback(engine: Any) -> None:
    Session = orm.sessionmaker(engine)

    def add(name: str) -> int:
        with Session.begin() as session:
            item = Item(name=name)
            session.add(item)
            session.flush()
            return int(item.id)

    def add_then_fail(name: str) -> None:
        with Session.begin() as session:
            session.add(Item(name=name))
            session.flush()
            raise RuntimeError("application error: the transaction rolls back")

    def names() -> list[str]:
        with Session() as session:
            return [i.name for i in session.scalars(sa.select(Item).order_by(Item.name))]

    async def main() -> list[str]:
        await greenbridge.async_(add)("a")
        with pytest.raises(RuntimeError):
            await greenbridge.async_(add_then_fail)("b")
        with pytest.raises(sa.exc.IntegrityError):
            await greenbridge.async_(add)("a")  # duplicate: the database refuses, rolls back
        await greenbridge.async_(add)("c")
        return await greenbridge.async_(names)()

    assert asyncio.run(main()) == ["a", "c"]


def test_pool_under_concurrency(engine: Any) -> None:
    """50 requests at once share a pool of 5 connections; the loop never stalls.

    No semaphore: 45 requests wait in GreenQueuePool's checkout, each
    suspending only its own greenlet.
    """
    assert isinstance(engine.pool, GreenQueuePool)
    Session = orm.sessionmaker(engine)

    def request(i: int) -> int:
        with Session.begin() as session:
            session.execute(sleep_sql(engine, 0.05))
            session.add(Item(name=f"item {i}"))
        with Session() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(Item)))

    async def main() -> tuple[list[int], float, float]:
        return await with_heartbeat(
            asyncio.gather(*(greenbridge.async_(request)(i) for i in range(50)))
        )

    counts, elapsed, max_gap = asyncio.run(main())
    assert max(counts) == 50
    # 50 x 0.05 s through 5 connections: about 0.5 s; one after the other: 2.5 s.
    assert elapsed < 1.5, elapsed
    assert max_gap < 0.1, max_gap
    assert engine.pool.checkedout() == 0
    assert engine.pool.size() == 5


def test_pool_timeout_raises_on_time(engine: Any) -> None:
    """A checkout from an exhausted pool raises SQLAlchemy's TimeoutError after pool_timeout."""
    small = sa.create_engine(
        engine.url,
        module=engine.dialect.dbapi,
        poolclass=GreenQueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.3,
    )

    def hold(seconds: float) -> None:
        with small.connect() as conn:
            conn.execute(sleep_sql(small, seconds))

    def checkout() -> float:
        start = time.perf_counter()
        try:
            with small.connect():
                pass
        except sa.exc.TimeoutError:
            return time.perf_counter() - start
        raise AssertionError("the checkout did not time out")

    async def main() -> tuple[Any, float, float]:
        holder = asyncio.ensure_future(greenbridge.async_(hold)(1.0))
        await asyncio.sleep(0.2)  # the holder has the only connection
        waited, elapsed, max_gap = await with_heartbeat(greenbridge.async_(checkout)())
        await holder
        return waited, elapsed, max_gap

    try:
        waited, _, max_gap = asyncio.run(main())
        assert 0.25 <= waited < 0.8, waited
        assert max_gap < 0.1, max_gap
        assert small.pool.checkedout() == 0
        # The pool still works once the holder is done.
        with small.connect() as conn:
            assert conn.scalar(sa.text("SELECT 1")) == 1
    finally:
        small.dispose()


def test_green_pool_in_plain_threads(engine: Any) -> None:
    """With no loop running, GreenQueuePool behaves like QueuePool across OS threads."""
    import threading

    results: list[int] = []

    def work() -> None:
        with engine.connect() as conn:
            results.append(int(conn.scalar(sa.text("SELECT 1"))))

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [1] * 12
    assert engine.pool.checkedout() == 0


def test_create_engine_refuses_a_pool_class() -> None:
    with pytest.raises(TypeError, match="sets the pool itself"):
        create_engine("sqlite://", poolclass=sa.pool.StaticPool)


def test_cancelled_request_returns_its_connection(engine: Any, aio: Backend) -> None:
    Session = orm.sessionmaker(engine)

    def slow() -> None:
        with Session.begin() as session:
            session.execute(sleep_sql(engine, 5))

    def count() -> int:
        with Session() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(Item)))

    async def main() -> int:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(greenbridge.async_(slow)(), 0.3)
        return await greenbridge.async_(count)()

    assert aio.run(main) == 0
    assert engine.pool.checkedout() == 0


# Run in a child process: without green exec-once mutexes the loop blocks for
# good on a real threading.Lock, and a blocked loop cannot time itself out.
FIRST_CONNECT_SCRIPT = r"""
import asyncio, json, sys, time

import sqlalchemy as sa

import greenbridge
from greenbridge.drivers.sqlalchemy import GreenQueuePool, create_engine
from greenbridge.green import threading as green_threading

db, loop_name = sys.argv[1], sys.argv[2]
if db == "postgresql":
    greenbridge.patch_psycopg2()

    def new_engine():
        return create_engine(
            "postgresql+psycopg2://postgres@127.0.0.1:5432/test", pool_size=5, max_overflow=0
        )

    sleep = sa.text("SELECT pg_sleep(0.01)")
    listener_sql = "SELECT pg_sleep(0.05)"
else:
    with greenbridge.patch_blocking():
        import pymysql

    def new_engine():
        return sa.create_engine(
            "mysql+pymysql://root@127.0.0.1:3306/test",
            module=pymysql, poolclass=GreenQueuePool, pool_size=5, max_overflow=0,
        )

    sleep = sa.text("SELECT SLEEP(0.01)")
    listener_sql = "SELECT SLEEP(0.05)"


def slow_setup(dbapi_conn, record):
    # A connect listener with a query, as applications add (SET ...): SQLAlchemy
    # runs it under the same exec-once mutex as the dialect's initialisation,
    # which widens the race (and repeats it on the pool dispose() makes).
    cursor = dbapi_conn.cursor()
    cursor.execute(listener_sql)
    cursor.fetchall()
    cursor.close()
    dbapi_conn.rollback()


def green_mutexes(engine):
    return [
        isinstance(
            getattr(getattr(engine.pool.dispatch, name), "_exec_once_mutex", None),
            green_threading.Lock,
        )
        for name in ("connect", "first_connect")
    ]


async def burst(engine):
    # 40 units of work at once on a pool nobody has connected yet: five
    # greenlets open the first connections together.
    def work(i):
        with engine.connect() as conn:
            conn.execute(sleep)
        return i

    return await asyncio.wait_for(
        asyncio.gather(*(greenbridge.async_(work)(i) for i in range(40))), 20
    )


async def main():
    report = []
    for _ in range(3):  # a fresh engine each round: the race is timing-dependent
        engine = new_engine()
        sa.event.listen(engine, "connect", slow_setup)
        try:
            for stage in ("fresh", "disposed"):
                before = green_mutexes(engine)
                start = time.perf_counter()
                done = await burst(engine)
                report.append({
                    "stage": stage,
                    "ok": done == list(range(40)),
                    "green_before": before,
                    "green_after": green_mutexes(engine),
                    "checkedout": engine.pool.checkedout(),
                    "seconds": round(time.perf_counter() - start, 3),
                })
                engine.dispose()  # a new GreenQueuePool: its first connections again
        finally:
            engine.dispose()
    return report


if loop_name == "uvloop":
    import uvloop

    loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()
try:
    print(json.dumps(loop.run_until_complete(main())))
finally:
    loop.close()
"""


@pytest.mark.parametrize("db", ["postgresql", "mysql"])
def test_concurrent_first_connections_do_not_block_the_loop(
    db: str, aio: Backend, tmp_path: Any
) -> None:
    """Issue 5 regression: greenlets opening a fresh engine's first connections together.

    SQLAlchemy runs the dialect's first-connect initialisation (server
    queries) under an exec-once mutex; as a real ``threading.Lock`` the second
    greenlet to connect blocked the loop forever while the first waited on it.
    """
    if db == "postgresql":
        require_postgres()
    else:
        require_mariadb()
    if aio.name == "uvloop":
        pytest.importorskip("uvloop")
    script = tmp_path / "first_connect.py"
    script.write_text(FIRST_CONNECT_SCRIPT)
    try:
        proc = subprocess.run(
            [sys.executable, "-W", "error", str(script), db, aio.name],
            capture_output=True,
            text=True,
            timeout=90,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the event loop deadlocked on the first connections ({db}, {aio.name}): {exc}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["stage"] for r in report] == ["fresh", "disposed"] * 3
    for round_ in report:
        assert round_["ok"], round_
        assert round_["green_before"] == [True, True], round_  # before the first connect
        assert round_["green_after"] == [True, True], round_
        assert round_["checkedout"] == 0, round_


def test_exec_once_mutexes_are_green_from_the_start() -> None:
    """The pool's connect/first_connect collections hold a green lock before any connect.

    Also after listeners are added later, and on the new pool ``dispose()`` makes.
    """
    from greenbridge.green import threading as green_threading

    def mutexes(eng: Any) -> list[Any]:
        return [
            getattr(eng.pool.dispatch, name)._exec_once_mutex
            for name in ("connect", "first_connect")
        ]

    eng = create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    try:
        first = mutexes(eng)
        assert all(isinstance(m, green_threading.Lock) for m in first), first
        sa.event.listen(eng, "connect", lambda dbapi_conn, record: None)
        sa.event.listen(eng, "first_connect", lambda dbapi_conn, record: None)
        assert mutexes(eng) == first  # the same collections: no new mutex
        old_pool = eng.pool
        eng.dispose()
        assert eng.pool is not old_pool
        assert isinstance(eng.pool, GreenQueuePool)
        second = mutexes(eng)
        assert all(isinstance(m, green_threading.Lock) for m in second), second
        assert all(a is not b for a, b in zip(first, second))
    finally:
        eng.dispose()


def test_pool_queue_hands_items_to_waiters_in_order(aio: Backend) -> None:
    # No database needed: the queue under GreenQueuePool.  A get() that had
    # to wait is served before code that asks later, even code that runs
    # first after the put() (here: the putter itself, right after putting).
    from greenbridge.drivers.sqlalchemy import _GreenQueue

    queue = _GreenQueue(maxsize=1)
    got: list[str] = []

    def waiter(name: str) -> None:
        item = queue.get(True, 5)
        got.append(f"{name}:{item}")
        queue.put(item)

    def putter() -> str:
        queue.put("conn")
        try:
            queue.get(False)  # a latecomer: the waiters come first
        except sa.util.queue.Empty:
            return "latecomer waited"
        return "latecomer barged in"

    async def main() -> None:
        first = greenbridge.spawn(waiter, "first")
        second = greenbridge.spawn(waiter, "second")
        await asyncio.sleep(0.01)  # both wait in get()
        assert await greenbridge.async_(putter)() == "latecomer waited"
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert got == ["first:conn", "second:conn"]
        assert queue.get(False) == "conn"

    aio.run(main)


def test_pool_queue_get_times_out_and_a_cancelled_getter_passes_its_item_on(
    aio: Backend,
) -> None:
    from greenbridge.drivers.sqlalchemy import _GreenQueue

    queue = _GreenQueue(maxsize=1)

    def timed_get() -> str:
        try:
            queue.get(True, 0.05)
        except sa.util.queue.Empty:
            return "empty"
        return "item"

    async def main() -> None:
        assert await greenbridge.async_(timed_get)() == "empty"
        assert not queue._getters
        # A getter cancelled after the item was handed to it gives the item on.
        cancelled = greenbridge.spawn(queue.get, True, 5)
        later = greenbridge.spawn(queue.get, True, 5)
        await asyncio.sleep(0.01)
        await greenbridge.async_(queue.put)("conn")  # handed to `cancelled`
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await asyncio.wait_for(later, 5) == "conn"
        assert not queue._getters

    aio.run(main)
