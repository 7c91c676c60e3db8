"""async_, await_ and spawn: results, errors, nesting, bad input, the greenlet pool."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import sys
import traceback
import types
import weakref
from typing import Any

import greenlet
import pytest

import greenbridge
from greenbridge import MissingBridge, async_, await_, spawn

from .helpers import Backend

# -- async_ -------------------------------------------------------------------


def add(a: int, b: int = 2, *, c: int = 3) -> int:
    """Add three numbers."""
    return a + b + c


def test_async_returns_a_real_coroutine_function() -> None:
    wrapped = async_(add)
    assert inspect.iscoroutinefunction(wrapped)
    assert asyncio.iscoroutinefunction(wrapped)
    assert wrapped.__name__ == "add"
    assert wrapped.__doc__ == "Add three numbers."
    assert inspect.signature(wrapped) == inspect.signature(add)
    coro = wrapped(1)
    assert inspect.iscoroutine(coro)
    coro.close()


def test_async_decorator_forms(backend: Backend) -> None:
    @async_
    def plain(x: int) -> int:
        return x + 1

    @async_()
    def called(x: int) -> int:
        return x + 2

    @async_(with_context=False)
    def copied(x: int) -> int:
        return x + 3

    async def main() -> list[int]:
        return [await plain(1), await called(1), await copied(1)]

    assert backend.run(main) == [2, 3, 4]


def test_async_passes_args_and_kwargs(backend: Backend) -> None:
    async def main() -> int:
        return await async_(add)(1, 10, c=100)

    assert backend.run(main) == 111


def test_async_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="sync callable"):
        async_(42)  # type: ignore[call-overload]

    async def already() -> None:
        pass

    with pytest.raises(TypeError, match="already a coroutine function"):
        async_(already)


def test_async_raises_with_the_sync_traceback(backend: Backend) -> None:
    def inner() -> None:
        raise KeyError("boom")

    def outer() -> None:
        inner()

    async def main() -> None:
        await async_(outer)()

    with pytest.raises(KeyError, match="boom") as info:
        backend.run(main)
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "outer" in names and "inner" in names
    assert names.index("outer") < names.index("inner")


def test_async_runs_calls_concurrently(backend: Backend) -> None:
    """50 sync calls that each wait 0.2 s finish in about 0.2 s, not 10 s."""
    import time

    def slow(i: int) -> int:
        await_(backend.sleep(0.2))
        return i

    async def main() -> tuple[list[int], float]:
        t0 = time.perf_counter()
        if backend.is_asyncio:
            results = list(await asyncio.gather(*(async_(slow)(i) for i in range(50))))
        else:
            import trio

            results = [0] * 50

            async def one(i: int) -> None:
                results[i] = await async_(slow)(i)

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
        return results, time.perf_counter() - t0

    results, elapsed = backend.run(main)
    assert results == list(range(50))
    assert elapsed < 2.0  # sequential would be 10 s


def test_base_exceptions_propagate(backend: Backend) -> None:
    def stop() -> None:
        raise SystemExit(3)

    async def main() -> None:
        await async_(stop)()

    with pytest.raises(SystemExit) as info:
        backend.run(main)
    assert info.value.code == 3


# -- await_ -------------------------------------------------------------------


class Custom:
    """An awaitable object that is neither a coroutine nor a Future."""

    def __init__(self, value: int, suspend: bool) -> None:
        self.value = value
        self.suspend = suspend

    def __await__(self) -> Any:
        if self.suspend:
            yield from asyncio.sleep(0).__await__()
        return self.value


@types.coroutine
def generator_based(value: int) -> Any:
    yield from asyncio.sleep(0).__await__()
    return value


def test_await_accepts_every_kind_of_awaitable(aio: Backend) -> None:
    async def coro(x: int) -> int:
        await asyncio.sleep(0)
        return x

    def sync() -> list[Any]:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        done.set_result("done")
        later = loop.create_future()
        loop.call_later(0.01, later.set_result, "later")
        task = asyncio.ensure_future(coro(5))
        return [
            await_(coro(1)),
            await_(done),
            await_(later),
            await_(task),
            await_(Custom(7, suspend=False)),
            await_(Custom(8, suspend=True)),
            await_(generator_based(9)),
            await_(asyncio.gather(coro(10), coro(11))),
        ]

    async def main() -> list[Any]:
        return await async_(sync)()

    assert aio.run(main) == [1, "done", "later", 5, 7, 8, 9, [10, 11]]


def test_await_raises_the_awaitables_exception_with_traceback(backend: Backend) -> None:
    async def failing() -> None:
        await backend.sleep(0)
        raise ValueError("from async")

    def sync() -> None:
        await_(failing())

    async def main() -> None:
        await async_(sync)()

    with pytest.raises(ValueError, match="from async") as info:
        backend.run(main)
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "sync" in names and "failing" in names


def test_await_of_a_failed_future(aio: Backend) -> None:
    def sync() -> None:
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(LookupError("failed future"))
        await_(fut)

    async def main() -> None:
        await async_(sync)()

    with pytest.raises(LookupError, match="failed future"):
        aio.run(main)


def test_await_as_decorator(backend: Backend) -> None:
    @await_
    async def double(x: int) -> int:
        await backend.sleep(0)
        return 2 * x

    assert double.__name__ == "double"
    assert not inspect.iscoroutinefunction(double)

    async def main() -> int:
        return await async_(double)(21)

    assert backend.run(main) == 42
    # With no loop running, the decorated function runs on the private loop.
    if backend.is_asyncio:
        assert double(4) == 8


def test_nesting_to_any_depth(backend: Backend) -> None:
    """sync -> async -> sync -> async ... 60 levels deep, each suspending."""

    def sync_level(n: int) -> int:
        if n == 0:
            return 0
        return await_(async_level(n - 1)) + 1

    async def async_level(n: int) -> int:
        await backend.sleep(0)
        if n == 0:
            return 0
        return await async_(sync_level)(n - 1) + 1

    async def main() -> int:
        return await async_(sync_level)(60)

    assert backend.run(main) == 60


def test_await_rejects_non_awaitables(aio: Backend) -> None:
    class BadIterator:
        def __await__(self) -> int:
            return 3

    def sync() -> list[str]:
        errors = []
        for bad in (42, BadIterator()):
            try:
                await_(bad)
            except TypeError as exc:
                errors.append(str(exc))
        return errors

    async def main() -> list[str]:
        return await async_(sync)()

    errors = aio.run(main)
    assert errors[0] == "object int can't be used in 'await' expression"
    assert "non-iterator" in errors[1]
    with pytest.raises(TypeError, match="can't be used in 'await' expression"):
        await_(42)


def test_completing_awaitables_take_no_greenlet_switch(aio: Backend) -> None:
    """The design point: an awaitable that does not suspend costs no switch."""

    async def instant() -> int:
        return 1

    def sync() -> list[tuple[str, Any, Any]]:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(2)
        events: list[tuple[str, Any, Any]] = []

        def trace(event: str, args: Any) -> None:
            events.append((event, *args))

        old = greenlet.settrace(trace)
        try:
            total = await_(instant()) + await_(fut) + await_(Custom(3, suspend=False))
        finally:
            greenlet.settrace(old)
        assert total == 6
        return events

    async def main() -> list[tuple[str, Any, Any]]:
        return await async_(sync)()

    assert aio.run(main) == []


def test_a_suspending_await_takes_exactly_two_switches(aio: Backend) -> None:
    def sync() -> int:
        count = 0

        def trace(event: str, args: Any) -> None:
            nonlocal count
            count += 1

        old = greenlet.settrace(trace)
        try:
            await_(asyncio.sleep(0))
        finally:
            greenlet.settrace(old)
        return count

    async def main() -> int:
        return await async_(sync)()

    assert aio.run(main) == 2


# -- where await_ may run -------------------------------------------------------


def test_missing_bridge_in_a_running_loop(aio: Backend) -> None:
    def sync() -> None:
        await_(asyncio.sleep(0))

    async def main() -> MissingBridge:
        with pytest.raises(MissingBridge) as info:
            sync()  # called directly from a coroutine: no bridge, no portal
        return info.value

    with _no_never_awaited_warning():
        error = aio.run(main)
        gc.collect()
    assert isinstance(error, RuntimeError)
    message = str(error)
    assert (
        "async_" in message and "ensure_portal" in message and "install_portal_factory" in message
    )


def test_missing_bridge_in_a_loop_callback(aio: Backend) -> None:
    async def main() -> BaseException | None:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[BaseException | None] = loop.create_future()

        def callback() -> None:
            try:
                await_(asyncio.sleep(0))
            except BaseException as exc:  # noqa: BLE001
                result.set_result(exc)
            else:
                result.set_result(None)

        loop.call_soon(callback)
        return await result

    error = aio.run(main)
    assert isinstance(error, MissingBridge)


def test_missing_bridge_under_trio() -> None:
    trio = pytest.importorskip("trio")

    async def main() -> None:
        with pytest.raises(MissingBridge):
            await_(trio.sleep(0))

    with _no_never_awaited_warning():
        trio.run(main)
        gc.collect()


class _no_never_awaited_warning:
    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self._log = self._cm.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)
        never = [w for w in self._log if "never awaited" in str(w.message)]
        assert not never, never


# -- spawn ----------------------------------------------------------------------


def test_spawn_returns_a_task_running_concurrently(aio: Backend) -> None:
    order: list[str] = []

    def worker(name: str, delay: float) -> str:
        order.append(f"start {name}")
        await_(asyncio.sleep(delay))
        order.append(f"end {name}")
        return name.upper()

    async def main() -> list[str]:
        first = spawn(worker, "a", 0.05)
        second = spawn(worker, name="b", delay=0.01)
        assert isinstance(first, asyncio.Task)
        return [await first, await second]

    assert aio.run(main) == ["A", "B"]
    assert order == ["start a", "start b", "end b", "end a"]


def test_spawn_from_sync_code(aio: Backend) -> None:
    def child() -> int:
        await_(asyncio.sleep(0))
        return 7

    def parent() -> int:
        return await_(spawn(child)) + 1

    async def main() -> int:
        return await async_(parent)()

    assert aio.run(main) == 8


def test_spawn_exception_and_bad_input(aio: Backend) -> None:
    def fails() -> None:
        raise OSError("spawned failure")

    async def main() -> None:
        with pytest.raises(OSError, match="spawned failure"):
            await spawn(fails)

        async def coro_fn() -> None:
            pass

        with pytest.raises(TypeError, match="sync callable"):
            spawn(coro_fn)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            spawn(None)  # type: ignore[arg-type]

    aio.run(main)
    with pytest.raises(RuntimeError, match="running asyncio event loop"):
        spawn(print)


# -- the greenlet pool ---------------------------------------------------------------


def test_workers_are_reused_and_keep_nothing(aio: Backend) -> None:
    class Payload:
        pass

    seen: list[greenlet.greenlet] = []
    refs: list[weakref.ref[Payload]] = []

    def first() -> Payload:
        seen.append(greenlet.getcurrent())
        payload = Payload()
        refs.append(weakref.ref(payload))
        try:
            raise ValueError("handled inside")
        except ValueError:
            pass
        return payload

    def second() -> Any:
        seen.append(greenlet.getcurrent())
        return sys.exc_info()

    async def main() -> Any:
        await async_(first)()  # the result is dropped at once
        return await async_(second)()

    exc_info = aio.run(main)
    gc.collect()
    assert seen[0] is seen[1], "the second call should reuse the parked worker"
    assert refs[0]() is None, "a parked worker must not keep its last result"
    assert exc_info == (None, None, None)
    assert seen[0].gr_context is None, "a parked worker must not keep a Context"


def test_pool_is_bounded(aio: Backend) -> None:
    from greenbridge import _trampoline

    def wait() -> None:
        await_(asyncio.sleep(0.01))

    async def main() -> None:
        await asyncio.gather(*(async_(wait)() for _ in range(_trampoline.POOL_SIZE * 3)))

    aio.run(main)
    assert len(_trampoline.thread_pools()) <= _trampoline.MAX_DEPTHS
    assert all(len(pool) <= _trampoline.POOL_SIZE for pool in _trampoline.thread_pools().values())


def test_functools_partial_and_methods(backend: Backend) -> None:
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def bump(self, by: int) -> int:
            await_(backend.sleep(0))
            self.n += by
            return self.n

    counter = Counter()

    async def main() -> list[int]:
        return [await async_(counter.bump)(2), await async_(functools.partial(counter.bump, 3))()]

    assert backend.run(main) == [2, 5]


def test_public_api_is_exported() -> None:
    for name in greenbridge.__all__:
        assert hasattr(greenbridge, name)
    for name in ("async_", "await_", "spawn"):
        assert getattr(greenbridge, name).__doc__


def test_await_from_code_run_between_our_bytecodes(aio: Backend) -> None:
    """Code that runs in the worker between await_'s own bytecodes may await_ too.

    Finalizers, signal handlers and trace functions run wherever the
    interpreter happens to be.  Here a trace function fires inside await_
    while the outer awaitable is suspended on a trap; its own await_ must
    get a stepper of its own and leave the outer one alone.
    """
    from greenbridge import _trampoline

    log: list[Any] = []
    armed: list[bool] = []

    async def instant(value: str) -> str:
        return value

    class Outer:
        def __await__(self) -> Any:
            armed.append(True)
            yield from asyncio.sleep(0).__await__()
            value = yield from asyncio.sleep(0, "outer result").__await__()
            return value

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is _trampoline.step.__code__:
            return local_tracer
        return None

    def local_tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and armed and not log:
            log.append(await_(instant("from tracer")))
        return local_tracer

    def sync() -> str:
        old = sys.gettrace()
        sys.settrace(tracer)
        try:
            return await_(Outer())
        finally:
            sys.settrace(old)

    async def main() -> str:
        return await async_(sync)()

    assert aio.run(main) == "outer result"
    assert log == ["from tracer"]


def test_clearing_a_tracebacks_frames_does_not_break_later_awaits(aio: Backend) -> None:
    """unittest's assertRaises clears the frames of the traceback it caught."""

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("to be cleared")

    def sync() -> int:
        for _ in range(3):
            try:
                await_(fails())
            except ValueError as exc:
                traceback.clear_frames(exc.__traceback__)
        return await_(asyncio.sleep(0, 5))

    async def main() -> int:
        return await async_(sync)()

    assert aio.run(main) == 5
