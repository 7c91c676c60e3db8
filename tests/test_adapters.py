"""sync_cm / sync_iter: async context managers and iterators in plain sync code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import greenbridge
from greenbridge import MissingBridge, SyncIterator, await_, sync_cm, sync_iter

from .helpers import Backend


def run_sync(backend: Backend, fn: Any, *args: Any) -> Any:
    """Run sync ``fn`` under async_ on ``backend``."""

    async def main() -> Any:
        return await greenbridge.async_(fn)(*args)

    return backend.run(main)


# -- sync_cm ---------------------------------------------------------------


def make_acm(backend: Backend, log: list[Any], suppress: bool = False) -> Any:
    @asynccontextmanager
    async def resource(name: str) -> AsyncIterator[str]:
        await backend.sleep(0.001)  # really suspends on the loop
        log.append(("enter", name))
        try:
            yield name.upper()
        except Exception as exc:
            log.append(("exit-with", type(exc).__name__))
            await backend.sleep(0.001)
            if not suppress:
                raise
        else:
            await backend.sleep(0.001)
            log.append(("exit", name))

    return resource


def test_sync_cm_enter_exit(backend: Backend) -> None:
    log: list[Any] = []
    resource = make_acm(backend, log)

    def sync_code() -> str:
        with sync_cm(resource("db")) as value:
            log.append(("body", value))
        return value

    assert run_sync(backend, sync_code) == "DB"
    assert log == [("enter", "db"), ("body", "DB"), ("exit", "db")]


def test_sync_cm_passes_the_exception(backend: Backend) -> None:
    log: list[Any] = []
    resource = make_acm(backend, log)

    def sync_code() -> None:
        with sync_cm(resource("db")):
            raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        run_sync(backend, sync_code)
    assert log == [("enter", "db"), ("exit-with", "KeyError")]


def test_sync_cm_can_suppress(backend: Backend) -> None:
    log: list[Any] = []
    resource = make_acm(backend, log, suppress=True)

    def sync_code() -> str:
        with sync_cm(resource("db")):
            raise ValueError("swallowed by __aexit__")
        return "after"

    assert run_sync(backend, sync_code) == "after"
    assert log == [("enter", "db"), ("exit-with", "ValueError")]


def test_sync_cm_real_asyncio_lock(aio: Backend) -> None:
    async def main() -> list[str]:
        lock = asyncio.Lock()
        order: list[str] = []

        def sync_holder() -> None:
            with sync_cm(lock):
                order.append("sync holds")
                await_(asyncio.sleep(0.02))  # the coroutine below must wait
                order.append("sync releases")

        async def other() -> None:
            await asyncio.sleep(0.005)
            async with lock:
                order.append("coroutine holds")

        await asyncio.gather(greenbridge.async_(sync_holder)(), other())
        assert not lock.locked()
        return order

    assert aio.run(main) == ["sync holds", "sync releases", "coroutine holds"]


def test_sync_cm_from_a_portal_task(aio: Backend) -> None:
    log: list[Any] = []
    resource = make_acm(aio, log)

    def plain_sync() -> str:
        with sync_cm(resource("p")) as value:
            return value

    async def main() -> str:
        await greenbridge.ensure_portal()
        return plain_sync()

    assert aio.run(main) == "P"
    assert log == [("enter", "p"), ("exit", "p")]


def test_sync_cm_no_reentry(aio: Backend) -> None:
    resource = make_acm(aio, [])

    def sync_code() -> None:
        cm = sync_cm(resource("x"))
        with cm, cm:
            pass

    with pytest.raises(RuntimeError, match="entered already"):
        run_sync(aio, sync_code)


# -- sync_iter ---------------------------------------------------------------


def make_agen(backend: Backend, log: list[Any], n: int = 5) -> AsyncGenerator[int, Any]:
    async def numbers() -> AsyncGenerator[int, Any]:
        try:
            for i in range(n):
                await backend.sleep(0.001)
                yield i
        finally:
            await backend.sleep(0.001)  # an async cleanup step
            log.append("closed")

    return numbers()


def test_sync_iter_full(backend: Backend) -> None:
    log: list[Any] = []

    def sync_code() -> list[int]:
        return [x for x in sync_iter(make_agen(backend, log))]

    assert run_sync(backend, sync_code) == [0, 1, 2, 3, 4]
    assert log == ["closed"]


def test_sync_iter_break_closes(backend: Backend) -> None:
    log: list[Any] = []

    def sync_code() -> list[Any]:
        seen = []
        for x in sync_iter(make_agen(backend, log)):
            seen.append(x)
            if x == 1:
                break
        seen.append(list(log))  # aclose() already ran, right after the loop
        return seen

    assert run_sync(backend, sync_code) == [0, 1, ["closed"]]


def test_sync_iter_exception_in_body_closes(backend: Backend) -> None:
    log: list[Any] = []

    def sync_code() -> None:
        try:
            for x in sync_iter(make_agen(backend, log)):
                if x == 2:
                    raise LookupError("stop here")
        finally:
            log.append("after loop")

    with pytest.raises(LookupError, match="stop here"):
        run_sync(backend, sync_code)
    assert log == ["closed", "after loop"]


def test_sync_iter_with_block_closes(backend: Backend) -> None:
    log: list[Any] = []

    def sync_code() -> int:
        with sync_iter(make_agen(backend, log)) as it:
            first = next(it)
            kept = it  # still referenced: only the with block closes it
        assert log == ["closed"]
        with pytest.raises(StopIteration):
            next(kept)
        return first

    assert run_sync(backend, sync_code) == 0


async def echo(backend: Backend, log: list[Any]) -> AsyncGenerator[str, str]:
    received = "start"
    try:
        while True:
            try:
                received = yield f"got {received}"
                await backend.sleep(0.001)
            except ValueError as exc:
                received = f"handled {exc}"
    finally:
        log.append("closed")


def test_sync_iter_send_throw_close(backend: Backend) -> None:
    log: list[Any] = []

    def sync_code() -> list[str]:
        gen: SyncIterator[str, str] = sync_iter(echo(backend, log))
        out = [next(gen), gen.send("a"), gen.send("b"), gen.throw(ValueError("v"))]
        out.append(next(gen))  # next() sends None
        with pytest.raises(KeyError):
            gen.throw(KeyError("unhandled"))  # not caught: ends the async generator
        assert log == ["closed"]
        with pytest.raises(StopIteration):
            next(gen)
        gen.close()  # closing a finished one is a no-op
        return out

    assert run_sync(backend, sync_code) == [
        "got start",
        "got a",
        "got b",
        "got handled v",
        "got None",
    ]


def test_sync_iter_close(backend: Backend) -> None:
    log: list[Any] = []

    def sync_code() -> None:
        gen = sync_iter(echo(backend, log))
        next(gen)
        gen.close()
        assert log == ["closed"]
        gen.close()

    run_sync(backend, sync_code)


class Countdown:
    """A plain async iterator: no aclose, asend or athrow."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __aiter__(self) -> Countdown:
        return self

    async def __anext__(self) -> int:
        await asyncio.sleep(0)
        if self.n == 0:
            raise StopAsyncIteration
        self.n -= 1
        return self.n


def test_sync_iter_plain_async_iterator(aio: Backend) -> None:
    def sync_code() -> list[int]:
        it = sync_iter(Countdown(3))
        first = next(it)
        with pytest.raises(TypeError, match="not an async generator"):
            it.send(5)
        return [first, *sync_iter(Countdown(2))]

    assert run_sync(aio, sync_code) == [2, 1, 0]


def test_without_a_loop_uses_the_private_loop() -> None:
    log: list[Any] = []
    backend = Backend("asyncio", lambda main: None, asyncio.sleep)
    resource = make_acm(backend, log)
    with sync_cm(resource("x")) as value:
        pass
    assert value == "X"
    assert [x for x in sync_iter(make_agen(backend, log, 3))] == [0, 1, 2]
    assert log == [("enter", "x"), ("exit", "x"), "closed"]
    greenbridge.close_private_loop()


def test_await_as_decorator_makes_a_sync_function(backend: Backend) -> None:
    @await_
    async def add(a: int, b: int) -> int:
        await backend.sleep(0.001)
        return a + b

    assert not asyncio.iscoroutinefunction(add)
    assert run_sync(backend, add, 2, 3) == 5


# -- misuse -------------------------------------------------------------------


def test_missing_bridge_is_a_clear_error(aio: Backend) -> None:
    log: list[Any] = []
    resource = make_acm(aio, log)

    async def main() -> None:
        # Plain sync code called from a coroutine without a portal.
        with pytest.raises(MissingBridge, match="async_"), sync_cm(resource("x")):
            pass
        agen = make_agen(aio, log)
        with pytest.raises(MissingBridge, match="ensure_portal"):
            next(sync_iter(agen))
        await agen.aclose()

    aio.run(main)
    assert log == []  # neither was started, so there was nothing to clean up


def test_type_errors() -> None:
    with pytest.raises(TypeError, match="expects an async context manager.*plain `with`"):
        sync_cm(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects an async iterable.*plain `for`"):
        sync_iter([1, 2])  # type: ignore[arg-type]
