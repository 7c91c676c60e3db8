"""greenbridge.compat.greenback: greenback's API, each name as greenback documents it.

Every test runs under asyncio, uvloop and trio (the ``backend`` fixture)
unless the behaviour belongs to one loop family.  Where a greenback helper
stands for native async syntax (``async with``, ``async for``, ``await``),
the test runs both and compares.
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

import greenbridge
import greenbridge.compat.greenback as greenback
from greenbridge import MissingBridge

from .helpers import BACKENDS, Backend

# ---------------------------------------------------------------- helpers


def fetch(backend: Backend, value: Any) -> Any:
    """Plain sync code that waits: works wherever its caller has a portal."""
    greenback.await_(backend.sleep(0.001))
    return value


def current_task(backend: Backend) -> Any:
    if backend.is_asyncio:
        return asyncio.current_task()
    import trio

    return trio.lowlevel.current_task()


def run_with_other(
    backend: Backend,
    main: Callable[[Any], Awaitable[Any]],
    other: Callable[[], Coroutine[Any, Any, Any]],
) -> Any:
    """Run ``main(task)`` with ``other()`` running as a second task (``task``)."""

    async def go() -> Any:
        if backend.is_asyncio:
            task = asyncio.create_task(other())
            await asyncio.sleep(0)
            result = await main(task)
            await task
            return result
        import trio

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            (task,) = nursery.child_tasks  # scheduled, not started yet
            await trio.sleep(0)
            return await main(task)

    return backend.run(go)


def new_event(backend: Backend) -> Any:
    if backend.is_asyncio:
        return asyncio.Event()
    import trio

    return trio.Event()


# ---------------------------------------------------------------- ensure_portal / await_


def test_ensure_portal_lets_sync_code_await(backend: Backend) -> None:
    async def main() -> list[Any]:
        assert not greenback.has_portal()
        await greenback.ensure_portal()
        assert greenback.has_portal()
        results = [fetch(backend, 1)]
        await backend.sleep(0)  # the task's own awaits keep working
        results.append(fetch(backend, 2))
        await greenback.ensure_portal()  # again: a no-op but for the checkpoint
        results.append(fetch(backend, 3))
        return results

    assert backend.run(main) == [1, 2, 3]


def test_ensure_portal_is_a_checkpoint_even_with_a_portal(backend: Backend) -> None:
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async def main() -> list[str]:
        await greenback.ensure_portal()
        # A schedule point lets the new task run (trio may pick either
        # first: a few rounds).  Without one it never would.
        if backend.is_asyncio:
            task = asyncio.create_task(other())
            for _ in range(20):
                if not ran:
                    await greenback.ensure_portal()
            await task
            return ran
        import trio

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            for _ in range(20):
                if not ran:
                    await greenback.ensure_portal()
            return ran

    assert backend.run(main) == ["other"]


def test_ensure_portal_delivers_a_cancellation(backend: Backend) -> None:
    async def main() -> str:
        await greenback.ensure_portal()
        if backend.is_asyncio:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await greenback.ensure_portal()
            if sys.version_info >= (3, 11):  # no cancellation count to undo before
                task.uncancel()
        else:
            import trio

            with trio.CancelScope() as scope:
                scope.cancel()
                await greenback.ensure_portal()
                raise AssertionError("not a cancellation point")  # pragma: no cover
        return fetch(backend, "after")

    assert backend.run(main) == "after"


def test_ensure_portal_outside_a_task() -> None:
    coro = greenback.ensure_portal()
    with pytest.raises(RuntimeError, match="asyncio or trio task"):
        coro.send(None)


def test_await_outside_a_portal_raises_and_closes_the_coroutine(backend: Backend) -> None:
    async def main() -> None:
        async def never() -> None:
            raise AssertionError("ran")  # pragma: no cover

        coro = never()
        with pytest.raises(RuntimeError, match=r"ensure_portal\(\)") as info:
            greenback.await_(coro)
        assert isinstance(info.value, MissingBridge)
        assert coro.cr_frame is None  # closed: no "never awaited" warning

    backend.run(main)


def test_await_with_no_loop_raises_as_greenback_does() -> None:
    # greenbridge.await_ would run it on a private loop; greenback's does not.
    async def value() -> int:
        return 1  # pragma: no cover

    with pytest.raises(RuntimeError, match="portal"):
        greenback.await_(value())
    assert greenbridge.await_(value()) == 1


def test_await_returns_results_and_raises_exceptions(backend: Backend) -> None:
    async def fails() -> None:
        await backend.sleep(0)
        raise ValueError("from the coroutine")

    async def main() -> str:
        await greenback.ensure_portal()
        with pytest.raises(ValueError, match="from the coroutine"):
            greenback.await_(fails())
        if backend.is_asyncio:
            future = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.001, future.set_result, "future")
            assert greenback.await_(future) == "future"
        return fetch(backend, "value")

    assert backend.run(main) == "value"


def test_await_is_cancelled_with_its_task(backend: Backend) -> None:
    cleaned: list[str] = []

    def blocked() -> None:
        try:
            greenback.await_(backend.sleep(10))
        finally:
            cleaned.append("finally")

    async def main() -> None:
        await greenback.ensure_portal()
        if backend.is_asyncio:
            asyncio.get_running_loop().call_later(0.01, current_task(backend).cancel)
            with pytest.raises(asyncio.CancelledError):
                blocked()
            if sys.version_info >= (3, 11):
                current_task(backend).uncancel()
        else:
            import trio

            with trio.move_on_after(0.01):
                blocked()

    backend.run(main)
    assert cleaned == ["finally"]


# ---------------------------------------------------------------- bestow_portal / has_portal


def test_bestow_portal_on_another_task(backend: Backend) -> None:
    events: list[Any] = []  # made in the run (a trio Event belongs to one), by either task
    results: list[Any] = []

    def event() -> Any:
        if not events:
            events.append(new_event(backend))
        return events[0]

    async def other() -> None:
        await event().wait()
        results.append(fetch(backend, "other"))  # no ensure_portal() of its own

    async def main(task: Any) -> tuple[bool, bool]:
        before = greenback.has_portal(task)
        greenback.bestow_portal(task)
        after = greenback.has_portal(task)
        greenback.bestow_portal(task)  # a no-op
        event().set()
        return before, after

    assert run_with_other(backend, main, other) == (False, True)
    assert results == ["other"]
    assert not greenback.has_portal()  # outside any task


def test_bestow_portal_on_the_current_task_opens_at_its_next_step(backend: Backend) -> None:
    async def main() -> str:
        greenback.bestow_portal(current_task(backend))
        assert not greenback.has_portal()
        with pytest.raises(RuntimeError, match=r"yield to the loop first"):
            greenback.await_(backend.sleep(0))
        await backend.sleep(0)
        assert greenback.has_portal()
        return fetch(backend, "open")

    assert backend.run(main) == "open"


def test_bestow_portal_on_an_asyncio_task_before_its_first_step(aio: Backend) -> None:
    async def child() -> str:
        return fetch(aio, "first step")  # no await before the sync call

    async def main() -> str:
        task = asyncio.create_task(child())
        greenback.bestow_portal(task)
        return await task

    assert aio.run(main) == "first step"


def test_bestow_portal_then_cancel_the_task(backend: Backend) -> None:
    log: list[Any] = []

    async def other() -> None:
        try:
            await backend.sleep(10)
        finally:
            # (trio's cancellation is level-triggered: no await_ here.)
            log.append(greenback.has_portal())

    async def go() -> None:
        if backend.is_asyncio:
            task = asyncio.create_task(other())
            await asyncio.sleep(0)
            greenback.bestow_portal(task)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return
        import trio

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            await trio.sleep(0.01)
            (task,) = nursery.child_tasks
            greenback.bestow_portal(task)
            nursery.cancel_scope.cancel()

    backend.run(go)
    assert log == [True]  # the cancellation reached the coroutine, in its portal


def test_bestow_portal_on_a_pure_python_task() -> None:
    py_task = getattr(asyncio.tasks, "_PyTask", None)
    if py_task is None:
        pytest.skip("no pure-Python Task in this version")

    async def child() -> Any:
        await asyncio.sleep(0)
        return fetch(BACKENDS["asyncio"], "py")

    async def main() -> Any:
        task = py_task(child())
        greenback.bestow_portal(task)
        assert greenback.has_portal(task)
        return await task

    assert asyncio.run(main()) == "py"


def test_importing_it_does_not_import_trio() -> None:
    code = "import sys, greenbridge.compat.greenback; print('trio' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_bestow_portal_refuses_what_it_cannot_serve(aio: Backend) -> None:
    async def done() -> None:
        pass

    async def main() -> None:
        task = asyncio.create_task(done())
        await task
        with pytest.raises(RuntimeError, match="done"):
            greenback.bestow_portal(task)
        with pytest.raises(TypeError, match="asyncio Task or a trio Task"):
            greenback.bestow_portal(object())

    aio.run(main)


# ---------------------------------------------------------------- with_portal_run*


def test_with_portal_run_gives_a_portal_for_the_call_only(backend: Backend) -> None:
    seen: list[bool] = []

    async def body(a: int, *, b: int) -> int:
        seen.append(greenback.has_portal())
        await greenback.ensure_portal()  # keeps the call's portal, adds none
        return fetch(backend, a + b)

    async def main() -> int:
        result = await greenback.with_portal_run(body, 1, b=2)
        seen.append(greenback.has_portal())
        return result

    assert backend.run(main) == 3
    assert seen == [True, False]


def test_with_portal_run_in_a_task_with_a_portal_just_awaits(backend: Backend) -> None:
    async def body() -> Any:
        return fetch(backend, "inner")

    async def main() -> Any:
        await greenback.ensure_portal()
        result = await greenback.with_portal_run(body)
        assert greenback.has_portal()  # the task's own portal stays
        return result

    assert backend.run(main) == "inner"


def test_with_portal_run_adds_no_checkpoint(backend: Backend) -> None:
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async def quick(x: int) -> int:
        return x * 2

    def quick_sync(x: int) -> int:
        return x * 3

    async def calls() -> tuple[int, int, list[str]]:
        # A checkpoint would let the task scheduled below run.
        return (
            await greenback.with_portal_run(quick, 1),
            await greenback.with_portal_run_sync(quick_sync, 1),
            list(ran),
        )

    async def main() -> tuple[int, int, list[str]]:
        if backend.is_asyncio:
            task = asyncio.create_task(other())
            results = await calls()
            await task
            return results
        import trio

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            return await calls()

    assert backend.run(main) == (2, 3, [])


def test_with_portal_run_is_seen_by_other_tasks(backend: Backend) -> None:
    seen: list[bool] = []

    async def other() -> None:
        pass

    async def main(task: Any) -> None:
        me = current_task(backend)

        def inside() -> None:
            seen.append(greenback.has_portal(me))  # asked about the current task
            seen.append(greenback.has_portal(task))  # another task

        await greenback.with_portal_run_sync(inside)
        seen.append(greenback.has_portal(me))

    run_with_other(backend, main, other)
    assert seen == [True, False, False]


def test_with_portal_run_sync(backend: Backend) -> None:
    def body(a: int, *, b: int) -> int:
        assert greenback.has_portal()
        return fetch(backend, a + b)

    def fails() -> None:
        fetch(backend, None)
        raise KeyError("sync")

    async def main() -> int:
        result = await greenback.with_portal_run_sync(body, 1, b=2)
        assert not greenback.has_portal()
        with pytest.raises(KeyError, match="sync"):
            await greenback.with_portal_run_sync(fails)
        return result

    assert backend.run(main) == 3


# ---------------------------------------------------------------- with_portal_run_tree


def test_with_portal_run_tree_under_trio() -> None:
    trio = pytest.importorskip("trio")
    seen: dict[str, bool] = {}

    async def child(name: str) -> None:
        seen[name] = greenback.has_portal()
        if seen[name]:
            greenback.await_(trio.sleep(0.001))

    async def grandparent() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(child, "grandchild")
            await child("middle")

    async def root(outer: Any) -> None:
        await child("root")
        outer.start_soon(child, "outer")  # a nursery opened before the call: no portal
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, "child")
            nursery.start_soon(grandparent)

    async def main() -> None:
        async with trio.open_nursery() as outer:
            await greenback.with_portal_run_tree(root, outer)
        # After the call, new children get no portal.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, "after")

    trio.run(main)
    assert seen == {
        "root": True,
        "child": True,
        "middle": True,
        "grandchild": True,
        "outer": False,
        "after": False,
    }


def test_with_portal_run_tree_for_a_whole_trio_run() -> None:
    trio = pytest.importorskip("trio")

    async def child(results: list[int]) -> None:
        greenback.await_(trio.sleep(0.001))
        results.append(1)

    async def main() -> list[int]:
        results: list[int] = []
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(child, results)
        return results

    assert trio.run(greenback.with_portal_run_tree, main) == [1, 1, 1]


def test_with_portal_run_tree_under_asyncio(aio: Backend) -> None:
    seen: dict[str, bool] = {}

    async def child(name: str) -> None:
        seen[name] = greenback.has_portal()
        if seen[name]:
            fetch(aio, None)

    async def parent() -> None:
        await asyncio.create_task(child("grandchild"))

    async def root() -> None:
        await child("root")
        await asyncio.gather(child("child"), parent())

    async def main() -> None:
        await greenback.with_portal_run_tree(root)
        assert not greenback.has_portal()
        await asyncio.create_task(child("after"))

    aio.run(main)
    assert seen == {
        "root": True,
        "child": True,
        "grandchild": True,
        "after": False,
    }


def spawn_and_wait(backend: Backend, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``fn`` as a new task (a nursery's child under trio) and wait for it."""

    async def go() -> None:
        if backend.is_asyncio:
            await asyncio.create_task(fn())
            return
        import trio

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fn)

    return go()


def test_portals_for_children(backend: Backend) -> None:
    seen: list[bool] = []

    async def child() -> None:
        seen.append(greenback.has_portal())
        fetch(backend, None)

    async def main() -> None:
        with greenback.portals_for_children():
            assert not greenback.has_portal()  # not the task running the block
            await spawn_and_wait(backend, child)

    backend.run(main)
    assert seen == [True]


def test_portals_for_tree(backend: Backend) -> None:
    seen: list[bool] = []

    async def child() -> None:
        seen.append(greenback.has_portal())
        fetch(backend, None)

    async def late() -> None:
        seen.append(greenback.has_portal())

    async def main() -> Any:
        async with greenback.portals_for_tree():
            result = fetch(backend, "in the block")
            await spawn_and_wait(backend, child)
        await spawn_and_wait(backend, late)  # after the block: none
        return result

    assert backend.run(main) == "in the block"
    assert seen == [True, False]


def test_auto_portal_instrument_gives_every_trio_task_a_portal() -> None:
    trio = pytest.importorskip("trio")

    async def child(results: list[str]) -> None:
        results.append(fetch(BACKENDS["trio"], "child"))

    async def main() -> list[str]:
        results = [fetch(BACKENDS["trio"], "main")]  # from its very first step
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, results)
        return results

    instrument = greenback.AutoPortalInstrument()
    assert trio.run(main, instruments=[instrument]) == ["main", "child"]


def test_a_trio_task_with_a_portal_keeps_trio_s_ki_protection_working() -> None:
    # trio reads task.coro.cr_frame (currently_ki_protected(), its SIGINT
    # handler): the portal's wrapper must be a native coroutine, or both
    # raise AttributeError.  In a portal, trio finds no frame of the task's
    # own below the code and reports it protected (a Ctrl-C is delivered at
    # the next checkpoint), as it does with greenback's portals.
    trio = pytest.importorskip("trio")

    async def main() -> list[bool]:
        seen = [trio.lowlevel.currently_ki_protected()]
        await greenbridge.ensure_portal()
        seen.append(trio.lowlevel.currently_ki_protected())
        return seen

    async def with_greenback() -> bool:
        await greenback.ensure_portal()
        return trio.lowlevel.currently_ki_protected()

    assert trio.run(main) == [False, True]
    assert trio.run(with_greenback) is True


# ---------------------------------------------------------------- autoawait / decorate_as_sync


def test_autoawait(backend: Backend) -> None:
    class Box:
        def __init__(self) -> None:
            self.value = 0

        @greenback.autoawait
        async def add(self, n: int) -> int:
            await backend.sleep(0)
            self.value += n
            return self.value

        # Where the language makes the call, so no await is possible.
        @greenback.autoawait
        async def __iadd__(self, n: int) -> Box:
            await backend.sleep(0)
            self.value += n
            return self

    async def main() -> tuple[int, int, str]:
        box = Box()
        with pytest.raises(RuntimeError, match="portal"):
            box.add(1)
        await greenback.ensure_portal()
        added = box.add(2)
        box += 3
        return added, box.value, Box.add.__name__

    assert backend.run(main) == (2, 5, "add")


def test_decorate_as_sync_with_lru_cache(backend: Backend) -> None:
    calls: list[int] = []

    async def square(x: int) -> int:
        calls.append(x)
        await backend.sleep(0)
        return x * x

    cached = greenback.decorate_as_sync(functools.lru_cache(maxsize=8))(square)

    async def main() -> list[int]:
        return [await cached(2), await cached(3), await cached(2)]

    assert backend.run(main) == [4, 9, 4]
    assert calls == [2, 3]  # the third call was served by the cache
    assert cached.__name__ == "square"

    # The native twin: lru_cache over an async function caches the coroutine.
    native = functools.lru_cache(maxsize=8)(square)

    async def twin() -> None:
        await native(5)
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            await native(5)

    backend.run(twin)


# ---------------------------------------------------------------- async_context / async_iter


def test_async_context_matches_async_with(backend: Backend) -> None:
    @asynccontextmanager
    async def resource(log: list[str]) -> AsyncIterator[str]:
        await backend.sleep(0)
        log.append("enter")
        try:
            yield "value"
        except KeyError:
            log.append("suppressed")
        finally:
            await backend.sleep(0)
            log.append("exit")

    async def native() -> list[str]:
        log: list[str] = []
        async with resource(log) as value:
            log.append(value)
        async with resource(log):
            raise KeyError("body")
        return log

    def sync_side() -> list[str]:
        log: list[str] = []
        with greenback.async_context(resource(log)) as value:
            log.append(value)
        with greenback.async_context(resource(log)):
            raise KeyError("body")
        return log

    async def main() -> list[str]:
        return await greenback.with_portal_run_sync(sync_side)

    expected = ["enter", "value", "exit", "enter", "suppressed", "exit"]
    assert backend.run(native) == expected
    assert backend.run(main) == expected


def test_async_context_refuses_what_it_cannot_drive(backend: Backend) -> None:
    @asynccontextmanager
    async def resource() -> AsyncIterator[None]:
        yield  # pragma: no cover

    async def main() -> None:
        context = greenback.async_context(object())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="asynchronous context manager"), context:
            pass  # pragma: no cover
        with pytest.raises(RuntimeError, match="portal"), greenback.async_context(resource()):
            pass  # pragma: no cover

    backend.run(main)


def test_async_iter_matches_async_for(backend: Backend) -> None:
    async def numbers(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await backend.sleep(0)
            yield i

    async def native() -> list[int]:
        return [i async for i in numbers(4)]

    def sync_side() -> list[int]:
        return list(greenback.async_iter(numbers(4)))

    async def main() -> list[int]:
        return await greenback.with_portal_run_sync(sync_side)

    assert backend.run(native) == backend.run(main) == [0, 1, 2, 3]


def test_async_iter_of_an_async_generator(backend: Backend) -> None:
    log: list[Any] = []

    async def echo() -> Any:
        try:
            received = None
            while True:
                try:
                    received = yield received
                except ValueError as exc:
                    received = f"caught {exc}"
                await backend.sleep(0)
        finally:
            log.append("closed")

    def sync_side() -> list[Any]:
        gen = greenback.async_iter(echo())
        out = [next(gen), gen.send("a"), gen.throw(ValueError("b"))]
        gen.close()
        return out

    async def main() -> list[Any]:
        return await greenback.with_portal_run_sync(sync_side)

    assert backend.run(main) == [None, "a", "caught b"]
    assert log == ["closed"]


def test_async_iter_refuses_what_it_cannot_drive(backend: Backend) -> None:
    async def numbers() -> AsyncIterator[int]:
        yield 1  # pragma: no cover

    class NoNext:
        def __aiter__(self) -> object:
            return object()

    async def main() -> None:
        with pytest.raises(TypeError, match="async iterable"):
            greenback.async_iter([1, 2])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="__anext__"):
            greenback.async_iter(NoNext())  # type: ignore[arg-type]
        gen = numbers()
        with pytest.raises(RuntimeError, match="portal"):
            next(greenback.async_iter(gen))
        await gen.aclose()

    backend.run(main)


# ---------------------------------------------------------------- greenbridge interop


def test_mixes_with_greenbridge(backend: Backend) -> None:
    async def value(v: Any) -> Any:
        await backend.sleep(0)
        return v

    async def main() -> list[Any]:
        # greenback's await_ in greenbridge's async_, and the other way round.
        first = await greenbridge.async_(lambda: greenback.await_(value("a")))()
        await greenback.ensure_portal()
        return [first, greenbridge.await_(value("b"))]

    assert backend.run(main) == ["a", "b"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is 3.11+")
def test_with_portal_run_tree_and_a_task_group(aio: Backend) -> None:
    async def child(i: int) -> int:
        return int(fetch(aio, i))

    async def root() -> list[int]:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(child(i)) for i in range(3)]
        return [t.result() for t in tasks]

    async def main() -> list[int]:
        return await greenback.with_portal_run_tree(root)

    assert aio.run(main) == [0, 1, 2]
