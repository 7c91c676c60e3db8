"""SQLAlchemy's sync ORM (psycopg2 and pymysql engines) called from async code via async_."""

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

from .conftest import Backend, require_service

sa = pytest.importorskip("sqlalchemy")
orm = pytest.importorskip("sqlalchemy.orm")
pytest.importorskip("psycopg2")
pytest.importorskip("pymysql")


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
        require_service("PostgreSQL", "127.0.0.1", 5432)
        greenbridge.patch_psycopg2()
        eng = sa.create_engine(
            "postgresql+psycopg2://postgres@127.0.0.1:5432/test", pool_size=5, max_overflow=0
        )
    else:
        require_service("MariaDB", "127.0.0.1", 3306)
        eng = sa.create_engine(
            "mysql+pymysql://root@127.0.0.1:3306/test",
            module=green_pymysql,
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
    """20 requests share a pool of 5 connections; the loop never stalls.

    SQLAlchemy's pool waits for a free connection with a thread lock, which
    would block the whole loop: a semaphore as large as the pool keeps tasks
    waiting on the loop instead (see docs/drivers.md).
    """
    Session = orm.sessionmaker(engine)

    def request(i: int) -> int:
        with Session.begin() as session:
            session.execute(sleep_sql(engine, 0.1))
            session.add(Item(name=f"item {i}"))
        with Session() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(Item)))

    async def main() -> tuple[list[int], float, float]:
        gaps = [0.0]
        done = [False]

        async def beat() -> None:
            last = time.perf_counter()
            while not done[0]:
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = asyncio.ensure_future(beat())
        start = time.perf_counter()
        slots = asyncio.Semaphore(engine.pool.size())

        async def limited(i: int) -> int:
            async with slots:
                return await greenbridge.async_(request)(i)

        counts = await asyncio.gather(*(limited(i) for i in range(20)))
        elapsed = time.perf_counter() - start
        done[0] = True
        await ticker
        return counts, elapsed, max(gaps)

    counts, elapsed, max_gap = asyncio.run(main())
    assert max(counts) == 20
    # 20 x 0.1 s through 5 connections: about 0.4 s; one after the other: 2 s.
    assert elapsed < 1.2, elapsed
    assert max_gap < 0.1, max_gap
    assert engine.pool.checkedout() == 0
    assert engine.pool.size() == 5


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
