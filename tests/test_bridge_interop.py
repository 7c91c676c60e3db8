"""greenbridge next to SQLAlchemy's greenlet bridge, and in several OS threads at once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import greenbridge
from greenbridge import async_, await_, spawn

from .helpers import Backend

concurrency = pytest.importorskip("sqlalchemy.util.concurrency")
greenlet_spawn = concurrency.greenlet_spawn
sa_await = getattr(concurrency, "await_only", None) or concurrency.await_


async def double_later(x: int) -> int:
    await asyncio.sleep(0.001)
    return 2 * x


def test_sqlalchemy_bridge_inside_a_greenbridge_call(aio: Backend) -> None:
    def sa_sync(x: int) -> int:
        # SQLAlchemy's await_only inside SQLAlchemy's greenlet_spawn...
        return int(sa_await(double_later(x))) + 1

    def gb_sync(x: int) -> int:
        # ...itself awaited by greenbridge's await_ in a greenbridge worker.
        return await_(greenlet_spawn(sa_sync, x)) + await_(double_later(x))

    async def main() -> list[int]:
        return list(await asyncio.gather(*(async_(gb_sync)(i) for i in range(10))))

    assert aio.run(main) == [2 * i + 1 + 2 * i for i in range(10)]


def test_greenbridge_inside_a_sqlalchemy_greenlet(aio: Backend) -> None:
    def gb_inner(x: int) -> int:
        return await_(double_later(x)) + 100

    def sa_sync(x: int) -> int:
        # greenbridge's await_ in SQLAlchemy's greenlet: handed to its driver.
        direct = await_(double_later(x))
        # and a greenbridge call from there, also through SQLAlchemy's driver.
        nested = await_(async_(gb_inner)(x))
        mixed = int(sa_await(double_later(x)))
        return direct + nested + mixed

    async def main() -> list[int]:
        return list(await asyncio.gather(*(greenlet_spawn(sa_sync, i) for i in range(10))))

    assert aio.run(main) == [2 * i + (2 * i + 100) + 2 * i for i in range(10)]


def test_green_io_inside_a_sqlalchemy_greenlet(aio: Backend) -> None:
    # The hub's waits from SQLAlchemy's greenlet (not a greenbridge worker):
    # they wait on a Future through SQLAlchemy's driver instead of parking.
    import socket as std_socket

    from greenbridge import _hub
    from greenbridge.green import socket as gsocket
    from greenbridge.green import time as gtime

    def sa_sync(sock: Any) -> tuple[bytes, bool]:
        gtime.sleep(0.01)
        data = bytes(sock.recv(8))
        timed_out = not _hub.wait_readable(sock.fileno(), 0.01)
        return data, timed_out

    async def main() -> None:
        a, b = std_socket.socketpair()
        sock = gsocket.socket(fileno=a.detach())
        with sock, b:
            task = asyncio.ensure_future(greenlet_spawn(sa_sync, sock))
            await asyncio.sleep(0.05)
            b.send(b"payload")
            assert await asyncio.wait_for(task, 5) == (b"payload", True)
            reg = _hub._registries.get(asyncio.get_running_loop())
            assert reg is None or not (reg.readers or reg.writers)

    aio.run(main)


def test_sqlalchemy_errors_cross_both_bridges(aio: Backend) -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("deep")

    def sa_sync() -> None:
        await_(fails())

    def gb_sync() -> None:
        await_(greenlet_spawn(sa_sync))

    async def main() -> None:
        await async_(gb_sync)()

    with pytest.raises(KeyError, match="deep"):
        aio.run(main)


def test_real_sqlalchemy_async_engine_from_sync_code(aio: Backend) -> None:
    """The async ORM layer (greenlet based itself) driven from greenbridge sync code."""
    pytest.importorskip("aiosqlite")
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    def sync_work(engine: Any) -> list[int]:
        async def query() -> list[int]:
            async with engine.connect() as conn:
                result = await conn.execute(text("select 1 union all select 2"))
                return [row[0] for row in result]

        return await_(query())

    async def main() -> list[int]:
        engine = create_async_engine("sqlite+aiosqlite:///:memory:")
        try:
            return await async_(sync_work)(engine)
        finally:
            await engine.dispose()

    assert aio.run(main) == [1, 2]


def test_many_threads_each_with_their_own_loop(backend: Backend) -> None:
    """Eight OS threads run greenbridge on their own loops at once, without interference."""
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def sync(thread_no: int, i: int) -> tuple[int, int, int]:
        await_(backend.sleep(0.001))
        return thread_no, i, threading.get_ident()

    def thread_main(thread_no: int) -> None:
        async def main() -> list[tuple[int, int, int]]:
            out = []
            for i in range(50):
                out.append(await async_(sync)(thread_no, i))
            return out

        try:
            results[thread_no] = backend.run(main)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=thread_main, args=(n,)) for n in range(8)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert time.perf_counter() - t0 < 30
    for n in range(8):
        rows = results[n]
        assert [(r[0], r[1]) for r in rows] == [(n, i) for i in range(50)]
        assert len({r[2] for r in rows}) == 1  # each stayed on its own thread


def test_spawn_in_threads(aio: Backend) -> None:
    def work(x: int) -> int:
        await_(asyncio.sleep(0.001))
        return x + 1

    def thread_main(out: list[int]) -> None:
        async def main() -> list[int]:
            return list(await asyncio.gather(*(spawn(work, i) for i in range(20))))

        out.extend(aio.run(main))

    outs: list[list[int]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=thread_main, args=(o,)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outs == [list(range(1, 21))] * 4


# SQLAlchemy's greenlets can suspend (greenbridge._where.can_suspend): what
# greenbridge does in its own workers because await_ can suspend there, it does
# there too.


def test_reentrant_run_inside_a_sqlalchemy_greenlet(aio: Backend) -> None:
    """allow_reentrant_run(): asyncio.run() in SQLAlchemy's greenlet waits on the
    running loop (through SQLAlchemy's driver), as in sync code run by async_."""

    def sa_sync(x: int) -> int:
        return asyncio.run(double_later(x))

    async def main() -> int:
        with greenbridge.allow_reentrant_run():
            return int(await greenlet_spawn(sa_sync, 21))

    assert aio.run(main) == 42


def test_sync_iter_closed_early_inside_a_sqlalchemy_greenlet(aio: Backend) -> None:
    """A sync_iter() loop left early in SQLAlchemy's greenlet closes the async
    generator at once (its finally block runs before the next statement), as
    ``async for`` with aclose() would, and as in sync code run by async_."""
    log: list[str] = []

    async def numbers() -> Any:
        try:
            for i in range(10):
                yield i
        finally:
            await asyncio.sleep(0)
            log.append("closed")

    def sa_sync() -> list[str]:
        for n in greenbridge.sync_iter(numbers()):
            if n == 2:
                break
        log.append("after the loop")
        return list(log)

    async def main() -> list[str]:
        return list(await greenlet_spawn(sa_sync))

    assert aio.run(main) == ["closed", "after the loop"]
