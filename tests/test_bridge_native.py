"""Bridged sync code behaves like the same program written with native coroutines.

Each test runs the native twin (plain ``async def``) and the bridged program in
the same test and compares what they observe: exceptions, recursion headroom,
``sys.exc_info()``, garbage collection of dropped work, ``finally`` order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import sys
import traceback
import weakref
from typing import Any, cast

import greenlet
import pytest

from greenbridge import _trampoline, async_, await_, spawn

from .helpers import Backend

# ---------------------------------------------------------------------------
# await_ of a coroutine another task is awaiting


def test_await_of_a_coroutine_awaited_elsewhere_fails_at_once(backend: Backend) -> None:
    """Native ``await`` refuses a coroutine another task is suspended in; so does await_."""

    async def main() -> list[Any]:
        steps: list[str] = []

        async def inner() -> str:
            steps.append("start")
            await backend.sleep(0.02)
            steps.append("end")
            return "inner result"

        async def owner(coro: Any, out: list[Any]) -> None:
            out.append(await coro)

        outcomes = []
        for how in ("native", "bridge"):
            coro = inner()
            out: list[Any] = []
            holder: list[Any] = []

            async def other(coro: Any = coro, how: str = how, holder: list[Any] = holder) -> None:
                await backend.sleep(0.005)  # the owner is suspended in coro by now
                try:
                    if how == "native":
                        await coro
                    else:
                        await async_(await_)(coro)
                except BaseException as exc:  # noqa: BLE001 - compared below
                    holder.append((type(exc), str(exc)))

            await _gather(backend, owner(coro, out), other())
            outcomes.append((holder, out, list(steps)))
            steps.clear()
        return outcomes

    native, bridged = backend.run(main)
    refused = [(RuntimeError, "coroutine is being awaited already")]
    assert native == (refused, ["inner result"], ["start", "end"])
    assert bridged == native


def test_await_of_a_running_coroutine_matches_native(backend: Backend) -> None:
    """A coroutine that awaits itself: ValueError from the send, as natively."""

    async def main() -> list[Any]:
        seen = []
        holder: list[Any] = []

        async def native_self() -> None:
            await holder[0]

        def sync_self() -> None:
            await_(holder[0])

        async def bridged_self() -> None:
            await async_(sync_self)()

        for make in (native_self, bridged_self):
            holder[:] = [make()]
            try:
                await holder[0]
            except BaseException as exc:  # noqa: BLE001 - compared below
                seen.append((type(exc), str(exc)))
        return seen

    native, bridged = backend.run(main)
    assert native == (ValueError, "coroutine already executing")
    assert bridged == native


# ---------------------------------------------------------------------------
# recursion headroom of pooled workers


def _headroom() -> int:
    """How many more nested Python calls fit here before RecursionError."""
    n = 0

    def down() -> None:
        nonlocal n
        n += 1
        down()

    with contextlib.suppress(RecursionError):
        down()
    return n


async def _at_depth(k: int, fn: Any) -> Any:
    if k:
        return await _at_depth(k - 1, fn)
    return await fn()


async def _plain_and_bridged() -> tuple[int, int]:
    """Headroom of a plain call and of an async_ call made from the same coroutine."""
    return _headroom(), await async_(_headroom)()


# The bridge adds three frames (the async_ coroutine, _launch, the worker's loop).
BRIDGE_FRAMES = 3


def test_a_worker_created_deep_gives_a_shallow_caller_full_headroom(backend: Backend) -> None:
    async def main() -> list[tuple[int, int]]:
        seen = []
        for _ in range(3):
            # Workers are created 600 frames deep and parked...
            deep = await _at_depth(600, _plain_and_bridged)
            # ...then called from a shallow coroutine, and the other way round.
            shallow = await _plain_and_bridged()
            seen += [deep, shallow]
        return seen

    for plain, bridged in backend.run(main):
        assert plain - BRIDGE_FRAMES - 2 <= bridged <= plain


def test_headroom_does_not_shrink_over_repeated_deep_nesting(backend: Backend) -> None:
    """Workers started ever deeper (async_ inside async_) do not leak their depth."""

    def nest(k: int) -> int:
        if k:
            return await_(async_(nest)(k - 1))
        return _headroom()

    def sleep_then_headroom() -> int:
        await_(backend.sleep(0))
        return _headroom()

    async def main() -> tuple[int, list[tuple[int, int]]]:
        deepest = await async_(nest)(40)
        seen: list[tuple[int, int]] = []

        async def one() -> None:
            # Concurrent calls: each takes its own worker, so all 41 parked ones are used.
            seen.append((_headroom(), await async_(sleep_then_headroom)()))

        await _gather(backend, *(one() for _ in range(41)))
        return deepest, seen

    deepest, seen = backend.run(main)
    assert deepest < seen[0][0] - 100  # the nested calls really went deep
    assert len(seen) == 41
    for plain, bridged in seen:
        assert plain - BRIDGE_FRAMES - 2 <= bridged <= plain


def test_more_depths_than_pools_keep_matching_headroom(backend: Backend) -> None:
    """Calls from more depths than MAX_DEPTHS evict old pools; headroom still matches."""

    def sleep_then_headroom() -> int:
        await_(backend.sleep(0))
        return _headroom()

    async def at(k: int) -> tuple[int, int]:
        return await _at_depth(k, lambda: _plain_and_bridged_after(sleep_then_headroom))

    async def main() -> list[tuple[int, int]]:
        seen = []
        for _ in range(2):
            for k in range(0, 20 * (_trampoline.MAX_DEPTHS + 3), 20):
                seen.append(await at(k))
        assert len(_trampoline.thread_pools()) <= _trampoline.MAX_DEPTHS
        return seen

    for plain, bridged in backend.run(main):
        assert plain - BRIDGE_FRAMES - 2 <= bridged <= plain


def test_a_worker_busy_while_its_pool_is_evicted_ends_when_done(aio: Backend) -> None:
    async def main() -> None:
        release = asyncio.get_running_loop().create_future()
        workers: list[Any] = []

        def wait() -> str:
            workers.append(greenlet.getcurrent())
            return cast(str, await_(release))

        busy = asyncio.ensure_future(_at_depth(500, async_(wait)))
        await asyncio.sleep(0)
        (worker,) = workers
        home = worker.home
        for k in range(1, _trampoline.MAX_DEPTHS + 2):  # new depths evict every older pool
            await _at_depth(k * 7, _plain_and_bridged)
        assert all(pool is not home for pool in _trampoline.thread_pools().values())
        release.set_result("done")
        assert await busy == "done"
        assert worker.dead and not home  # it ended instead of parking in the evicted pool
        assert len(_trampoline.thread_pools()) <= _trampoline.MAX_DEPTHS

    aio.run(main)


async def _plain_and_bridged_after(fn: Any) -> tuple[int, int]:
    return _headroom(), await async_(fn)()


# ---------------------------------------------------------------------------
# the exception being handled by the caller


def _observe_handled() -> dict[str, Any]:
    """What sync code sees of the exception its caller is handling."""
    info = sys.exc_info()
    seen: dict[str, Any] = {
        "exc_info": info[:2],
        "tb is the exception's": info[2] is (info[1].__traceback__ if info[1] else None),
        "format_exc": traceback.format_exc(),
    }
    try:
        raise ValueError("raised in the sync code")
    except ValueError as exc:
        seen["context"] = exc.__context__
    try:
        raise  # noqa: PLE0704 - re-raises the caller's exception, as natively
    except BaseException as exc:  # noqa: BLE001 - compared below
        seen["bare raise"] = exc
    return seen


def _fail_inside() -> None:
    raise ValueError("escapes")


def test_sync_code_sees_the_exception_its_caller_handles(backend: Backend) -> None:
    async def native_observe() -> dict[str, Any]:
        return _observe_handled()

    async def native_fail() -> None:
        _fail_inside()

    async def main() -> list[Any]:
        out = []
        for observe, fail in (
            (native_observe, native_fail),
            (async_(_observe_handled), async_(_fail_inside)),
        ):
            try:
                {}["key"]  # noqa: B018 - raises KeyError
            except KeyError as handled:
                tb = handled.__traceback__
                seen = await observe()
                try:
                    await fail()
                except ValueError as exc:
                    seen["context of an escaping one"] = exc.__context__
                seen["traceback kept"] = handled.__traceback__ is tb
                seen["handled"] = handled
            out.append(seen)
        return out

    native, bridged = backend.run(main)
    native, bridged = _named(native), _named(bridged)
    assert native["exc_info"] == (KeyError, "HANDLED")
    assert native["context"] == native["bare raise"] == "HANDLED"
    assert native["context of an escaping one"] == "HANDLED"
    assert native["traceback kept"] and native["tb is the exception's"]
    if sys.version_info < (3, 11):
        # There the handled traceback is stored apart from the exception, and
        # holds one more entry: greenbridge's frame that re-raised it.
        assert "in call_handling" in bridged["format_exc"][1]
        del bridged["format_exc"][1:3]
        bridged["tb is the exception's"] = True
    assert bridged == native


def test_a_spawned_task_does_not_inherit_the_handled_exception(aio: Backend) -> None:
    """As for asyncio.create_task(): the new task starts with no handled exception."""

    def sync_observe() -> Any:
        return sys.exc_info()

    async def native_observe() -> Any:
        return sys.exc_info()

    async def main() -> list[Any]:
        out = []
        for start in (
            lambda: asyncio.get_running_loop().create_task(native_observe()),
            lambda: spawn(sync_observe),
        ):
            try:
                {}["key"]  # noqa: B018 - raises KeyError
            except KeyError:
                task = start()
            out.append(await task)
        return out

    native, bridged = aio.run(main)
    assert native == (None, None, None)
    assert bridged == native


def test_await_with_no_loop_sees_the_handled_exception_as_asyncio_run_does() -> None:
    """With no loop running, await_ runs the coroutine like asyncio.run(): inside the except."""

    async def observe() -> Any:
        return sys.exc_info()[1]

    seen = []
    for run in (asyncio.run, await_):
        try:
            {}["key"]  # noqa: B018 - raises KeyError
        except KeyError as handled:
            seen.append(run(observe()) is handled)
    assert seen == [True, True]


def _named(seen: dict[str, Any]) -> dict[str, Any]:
    """``seen`` with its run's handled exception replaced by "HANDLED"."""
    handled = seen.pop("handled")

    def name(value: Any) -> Any:
        if value is handled:
            return "HANDLED"
        if isinstance(value, tuple):
            return tuple(name(v) for v in value)
        return value

    named = {key: name(value) for key, value in seen.items()}
    named["format_exc"] = named["format_exc"].splitlines()
    return named


# ---------------------------------------------------------------------------
# garbage collection of finished and dropped work


class _Marker:
    pass


def test_a_new_worker_does_not_keep_its_first_call_arguments(backend: Backend) -> None:
    """After a call, its arguments are garbage, as after a coroutine call."""

    def sync_use(marker: _Marker) -> None:
        await_(backend.sleep(0))

    async def native_use(marker: _Marker) -> None:
        await backend.sleep(0)

    async def main() -> list[int]:
        alive = []
        for use in (native_use, async_(sync_use)):
            refs = []

            async def one(use: Any = use, refs: list[Any] = refs) -> None:
                marker = _Marker()
                refs.append(weakref.ref(marker))
                await use(marker)

            # Concurrent calls: most of them need a new worker.
            await _gather(backend, *(one() for _ in range(20)))
            gc.collect()
            alive.append(sum(ref() is not None for ref in refs))
        return alive

    native, bridged = backend.run(main)
    assert native == 0
    assert bridged == native


def _busy_workers() -> int:
    gc.collect()
    parked = {id(worker) for worker in _trampoline.parked_workers()}
    return sum(
        isinstance(g, _trampoline.Worker) and not g.dead and id(g) not in parked
        for g in gc.get_objects()
    )


def _tasks() -> int:
    return sum(isinstance(o, asyncio.Task) for o in gc.get_objects())


@pytest.mark.parametrize("wait", ["future", "green sleep", "green recv"])
def test_tasks_left_pending_on_a_closed_loop_are_collected_and_unwound(
    aio: Backend, wait: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Dropped with their loop closed, bridged tasks are destroyed as native ones are.

    Natively the collector finds each task garbage, logs "Task was destroyed
    but it is pending!" and closes its coroutine: GeneratorExit is raised at
    its await and its finally runs.
    """
    from greenbridge.green import socket as green_socket
    from greenbridge.green import time as green_time

    log: list[str] = []
    count = 10

    def sync_job(fut: asyncio.Future[None]) -> None:
        try:
            if wait == "future":
                await_(fut)
            elif wait == "green sleep":
                green_time.sleep(60)
            else:
                a, b = green_socket.socketpair()
                with a, b:
                    a.recv(10)
        except GeneratorExit:
            log.append("GeneratorExit")
            raise
        finally:
            log.append("finally")

    async def native_job(fut: asyncio.Future[None]) -> None:
        try:
            if wait == "future":
                await fut
            elif wait == "green sleep":
                await asyncio.sleep(60)
            else:
                a, b = socket.socketpair()
                with a, b:
                    a.setblocking(False)
                    await asyncio.get_running_loop().sock_recv(a, 10)
        except GeneratorExit:
            log.append("GeneratorExit")
            raise
        finally:
            log.append("finally")

    def run(job: Any) -> dict[str, Any]:
        caplog.clear()
        busy_before = _busy_workers()
        loop = _new_loop(aio)

        async def start() -> None:
            running = asyncio.get_running_loop()
            for _ in range(count):
                running.create_task(job(running.create_future()))
            await asyncio.sleep(0.05)

        loop.run_until_complete(start())
        loop.close()
        del loop
        busy = _busy_workers()  # collects
        seen = {
            "log": list(log),
            "destroyed": sum(
                "Task was destroyed but it is pending!" in r.getMessage() for r in caplog.records
            ),
            "tasks": _tasks(),
            "busy workers left": busy - busy_before,
        }
        log.clear()
        return seen

    tasks_before = _tasks()
    native = run(native_job)
    bridged = run(async_(sync_job))
    assert native == {
        "log": ["GeneratorExit", "finally"] * count,
        "destroyed": count,
        "tasks": tasks_before,
        "busy workers left": 0,
    }
    assert bridged == native


def test_an_error_in_finally_on_a_closed_loop_is_reported_and_others_still_unwind(
    aio: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As natively: the error goes to sys.unraisablehook; every other task still unwinds."""
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_type))
    log: list[int] = []

    def sync_job(fut: asyncio.Future[None], i: int) -> None:
        try:
            await_(fut)
        finally:
            log.append(i)
            if i == 0:
                raise ValueError("in finally")

    async def native_job(fut: asyncio.Future[None], i: int) -> None:
        try:
            await fut
        finally:
            log.append(i)
            if i == 0:
                raise ValueError("in finally")

    def run(job: Any) -> tuple[list[int], list[Any]]:
        loop = _new_loop(aio)

        async def start() -> None:
            running = asyncio.get_running_loop()
            for i in range(3):
                running.create_task(job(running.create_future(), i))
            await asyncio.sleep(0.01)

        loop.run_until_complete(start())
        loop.close()
        del loop
        gc.collect()
        seen = (sorted(log), list(reported))
        log.clear()
        reported.clear()
        return seen

    native = run(native_job)
    bridged = run(async_(sync_job))
    assert native == ([0, 1, 2], [ValueError])
    assert bridged == native


def test_an_error_in_finally_comes_out_of_close(backend: Backend) -> None:
    """coro.close() raises what the code's finally raises, as a coroutine's close() does."""

    def sync_job() -> None:
        try:
            await_(backend.sleep(10))
        finally:
            raise ValueError("in finally")

    async def native_job() -> None:
        try:
            await backend.sleep(10)
        finally:
            raise ValueError("in finally")

    async def main() -> list[Any]:
        out = []
        for job in (native_job, async_(sync_job)):
            coro = job()
            coro.send(None)  # suspended in the sleep
            try:
                coro.close()
            except BaseException as exc:  # noqa: BLE001 - compared below
                out.append((type(exc), str(exc)))
            else:
                out.append(None)
        return out

    native, bridged = backend.run(main)
    assert native == (ValueError, "in finally")
    assert bridged == native


def _new_loop(aio: Backend) -> asyncio.AbstractEventLoop:
    if aio.name == "uvloop":
        import uvloop

        return cast(asyncio.AbstractEventLoop, uvloop.new_event_loop())
    return asyncio.new_event_loop()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory: 3.12+")
def test_an_eager_task_that_suspends_twice_in_one_await_matches_native(aio: Backend) -> None:
    """An eager task's first step runs in its creator's greenlet, the next ones in the loop's.

    An awaitable that suspends in the first step and again in a later one (one
    ``await_`` that spans both) hands its second trap to the loop's greenlet:
    the task goes on as natively.  (It used to switch back to the creator.)
    """

    async def twice(log: list[str]) -> str:
        log.append("first turn")
        await asyncio.sleep(0)
        log.append("second turn")
        await asyncio.sleep(0)
        log.append("third turn")
        return "result"

    def sync_child(log: list[str]) -> str:
        return await_(twice(log))

    def sync_parent(log: list[str]) -> str:
        task = spawn(sync_child, log)  # its first step runs here, in this worker
        log.append("created")
        return await_(task)

    async def native_child(log: list[str]) -> str:
        return await twice(log)

    async def native_parent(log: list[str]) -> str:
        task = asyncio.create_task(native_child(log))
        log.append("created")
        return await task

    async def main() -> list[tuple[str, list[str]]] | None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
        probe = asyncio.sleep(0)
        try:
            await loop.create_task(probe)
        except TypeError as exc:  # uvloop's create_task on 3.13 passes eager_start
            probe.close()
            loop.set_task_factory(None)
            if "eager_start" not in str(exc):
                raise
            return None
        out = []
        for parent in (native_parent, async_(sync_parent)):
            log: list[str] = []
            out.append((await parent(log), log))
        loop.set_task_factory(None)
        return out

    outcome = aio.run(main)
    if outcome is None:
        pytest.skip(f"{aio.name}'s create_task and asyncio.eager_task_factory disagree here")
    native, bridged = outcome
    assert native == ("result", ["first turn", "created", "second turn", "third turn"])
    assert bridged == native


def test_an_idle_stepper_closed_from_outside_is_replaced(backend: Backend) -> None:
    """A worker's idle stepper closed by someone else (frame.clear()) is not reused."""

    def sync() -> list[Any]:
        worker = greenlet.getcurrent()
        assert isinstance(worker, _trampoline.Worker)
        out = [await_(backend.sleep(0))]
        for stepper, _box in worker.free:
            stepper.close()
        out.append(await_(backend.sleep(0)))
        return out

    async def main() -> list[Any]:
        return await async_(sync)()

    assert backend.run(main) == [None, None]


# ---------------------------------------------------------------------------
# exceptions and cancellation


def test_stop_iteration_from_sync_code_becomes_what_a_coroutine_raises(backend: Backend) -> None:
    """PEP 479: "coroutine raised StopIteration", with the StopIteration as its cause."""

    def sync_stop(suspend: bool) -> None:
        if suspend:
            await_(backend.sleep(0))
        raise StopIteration("stop")

    async def native_stop(suspend: bool) -> None:
        if suspend:
            await backend.sleep(0)
        raise StopIteration("stop")

    async def main() -> list[list[Any]]:
        out = []
        for stop in (native_stop, async_(sync_stop)):
            seen = []
            for suspend in (False, True):
                try:
                    await stop(suspend)
                except BaseException as exc:  # noqa: BLE001 - compared below
                    seen.append(
                        (type(exc), str(exc), repr(exc.__cause__), exc.__suppress_context__)
                    )
            out.append(seen)
        return out

    native, bridged = backend.run(main)
    assert native[0] == (
        RuntimeError,
        "coroutine raised StopIteration",
        "StopIteration('stop')",
        True,
    )
    assert bridged == native


def test_cancel_message_reaches_the_future_awaited_after_a_green_wait(aio: Backend) -> None:
    """task.cancel(msg) cancels the future the task waits on with msg, as a Task does."""
    from greenbridge.green import time as green_time

    def sync_wait(fut: asyncio.Future[None]) -> None:
        green_time.sleep(0.01)  # resumed from a loop callback: then await_ waits there too
        await_(fut)

    async def native_wait(fut: asyncio.Future[None]) -> None:
        await asyncio.sleep(0.01)
        await fut

    async def main() -> list[Any]:
        out = []
        for wait in (native_wait, async_(sync_wait)):
            fut = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(wait(fut))
            await asyncio.sleep(0.05)
            task.cancel("the message")
            try:
                await task
            except asyncio.CancelledError as exc:
                seen: list[Any] = [exc.args]
            try:
                fut.result()
            except asyncio.CancelledError as exc:
                seen.append(exc.args)
            out.append(seen)
        return out

    native, bridged = aio.run(main)
    assert native[1] == ("the message",)
    assert bridged == native


@pytest.mark.parametrize("wait", ["coroutine", "future", "green sleep"])
def test_a_cancellation_arriving_in_an_except_block_gets_its_context(
    aio: Backend, wait: str
) -> None:
    """CancelledError raised at an await inside ``except`` has that exception as context."""
    from greenbridge.green import time as green_time

    contexts: list[Any] = []

    def sync_wait() -> None:
        try:
            raise KeyError("handled")
        except KeyError:
            try:
                if wait == "coroutine":
                    await_(asyncio.sleep(10))
                elif wait == "future":
                    await_(asyncio.get_running_loop().create_future())
                else:
                    green_time.sleep(10)
            except asyncio.CancelledError as exc:
                contexts.append(repr(exc.__context__))
                raise

    async def native_wait() -> None:
        try:
            raise KeyError("handled")
        except KeyError:
            try:
                if wait == "future":
                    await asyncio.get_running_loop().create_future()
                else:
                    await asyncio.sleep(10)
            except asyncio.CancelledError as exc:
                contexts.append(repr(exc.__context__))
                raise

    async def main() -> None:
        for job in (native_wait, async_(sync_wait)):
            task = asyncio.ensure_future(job())
            await asyncio.sleep(0.01)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    aio.run(main)
    assert contexts[0] == "KeyError('handled')"
    assert contexts[1] == contexts[0]


@pytest.mark.parametrize("wait", ["coroutine", "future", "green sleep"])
def test_a_cancellation_in_code_called_from_an_except_block_is_not_chained_to_it(
    aio: Backend, wait: str
) -> None:
    """Thrown into the callee, CancelledError chains only to what the callee handles.

    Natively, an exception thrown into a coroutine at its await gets as context
    the exception that coroutine itself handles, not its caller's; it is chained
    to the caller's when it passes through the caller's except block.
    """
    from greenbridge.green import time as green_time

    seen: list[tuple[str, str]] = []

    def sync_wait() -> None:
        try:
            if wait == "coroutine":
                await_(asyncio.sleep(10))
            elif wait == "future":
                await_(asyncio.get_running_loop().create_future())
            else:
                green_time.sleep(10)
        except asyncio.CancelledError as exc:
            seen.append(("callee", repr(exc.__context__)))
            raise

    async def native_wait() -> None:
        try:
            if wait == "future":
                await asyncio.get_running_loop().create_future()
            else:
                await asyncio.sleep(10)
        except asyncio.CancelledError as exc:
            seen.append(("callee", repr(exc.__context__)))
            raise

    def caller(callee: Any) -> Any:
        async def run() -> None:
            try:
                raise KeyError("handled by the caller")
            except KeyError:
                try:
                    await callee()
                except asyncio.CancelledError as exc:
                    seen.append(("caller", repr(exc.__context__)))
                    raise

        return run

    async def main() -> list[list[tuple[str, str]]]:
        out = []
        for callee in (native_wait, async_(sync_wait)):
            seen.clear()
            task = asyncio.ensure_future(caller(callee)())
            await asyncio.sleep(0.01)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            out.append(list(seen))
        return out

    native, bridged = aio.run(main)
    assert native == [("callee", "None"), ("caller", "KeyError('handled by the caller')")]
    assert bridged == native


async def _gather(backend: Backend, *coros: Any) -> None:
    if backend.is_asyncio:
        await asyncio.gather(*coros)
        return
    import trio

    async with trio.open_nursery() as nursery:
        for coro in coros:
            nursery.start_soon(lambda c=coro: c)
