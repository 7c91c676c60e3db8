"""offload / offload_async: blocking calls in a bounded thread pool, the loop keeps running."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from typing import Any

import pytest

import greenbridge
from greenbridge import OffloadPool, offload, offload_async

from .helpers import Backend, run_concurrently

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def test_concurrent_blocking_calls_do_not_stall_the_loop(backend: Backend) -> None:
    pool = OffloadPool(10)

    def blocking(i: int) -> int:
        return offload(lambda: time.sleep(0.2) or i, pool=pool)

    try:
        results, elapsed, max_gap = run_concurrently(
            backend, [functools.partial(blocking, i) for i in range(10)]
        )
    finally:
        pool.shutdown()
    assert results == list(range(10))
    assert elapsed < 0.6, elapsed  # 10 x 0.2 s one after the other would be 2 s
    assert max_gap < 0.1, max_gap


def test_result_and_exception(backend: Backend) -> None:
    def boom() -> None:
        raise ValueError("from the thread")

    def sync() -> tuple[str, str]:
        name = offload(lambda: threading.current_thread().name)
        with pytest.raises(ValueError, match="from the thread") as info:
            offload(boom)
        assert type(info.value) is ValueError
        return name, threading.current_thread().name

    async def main() -> tuple[str, str]:
        return await greenbridge.async_(sync)()

    worker_thread, caller_thread = backend.run(main)
    assert worker_thread.startswith("greenbridge-offload")
    assert caller_thread == threading.current_thread().name


def test_offload_async_from_coroutines(backend: Backend) -> None:
    async def main() -> list[int]:
        return [await offload_async(functools.partial(int, "7", base=8)) for _ in range(3)]

    assert backend.run(main) == [7, 7, 7]


def test_pool_is_bounded(aio: Backend) -> None:
    pool = OffloadPool(2)
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def work() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    async def main() -> None:
        await asyncio.gather(*(greenbridge.async_(offload)(work, pool=pool) for _ in range(8)))

    try:
        aio.run(main)
    finally:
        pool.shutdown()
    assert peak[0] == 2


def test_context_is_copied_into_the_thread(backend: Backend) -> None:
    def in_thread() -> str:
        seen = var.get()
        var.set("set in thread")
        return seen

    def sync() -> tuple[str, str]:
        var.set("set by caller")
        return offload(in_thread), var.get()

    async def main() -> tuple[str, str]:
        return await greenbridge.async_(sync)()

    assert backend.run(main) == ("set by caller", "set by caller")


def test_cancel_running_call_drops_result_and_cleans_up(aio: Backend) -> None:
    release = threading.Event()
    started = threading.Event()
    cleaned: list[Any] = []
    after: list[str] = []

    def blocking() -> str:
        started.set()
        release.wait(5)
        return "resource"

    def sync() -> None:
        try:
            offload(blocking, cleanup=cleaned.append)
        except asyncio.CancelledError:
            after.append("cancelled")
            raise
        after.append("not reached")

    async def main() -> None:
        task = greenbridge.spawn(sync)
        while not started.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The caller is gone at once; the thread is still in the C call.
        assert cleaned == []
        release.set()
        for _ in range(400):
            if cleaned:
                break
            await asyncio.sleep(0.005)

    aio.run(main)
    assert after == ["cancelled"]
    assert cleaned == ["resource"]


def test_cancel_under_trio_cleans_up() -> None:
    trio = pytest.importorskip("trio")
    release = threading.Event()
    started = threading.Event()
    cleaned: list[Any] = []

    def blocking() -> str:
        started.set()
        release.wait(5)
        return "resource"

    async def main() -> None:
        with trio.move_on_after(0.1) as scope:
            await greenbridge.async_(offload)(blocking, cleanup=cleaned.append)
        assert scope.cancelled_caught
        assert started.is_set() and cleaned == []
        release.set()
        for _ in range(400):
            if cleaned:
                break
            await trio.sleep(0.005)

    trio.run(main)
    assert cleaned == ["resource"]


def test_cancel_queued_call_never_runs(aio: Backend) -> None:
    pool = OffloadPool(1)
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        first = asyncio.ensure_future(offload_async(release.wait, 5, pool=pool))
        second = asyncio.ensure_future(offload_async(ran.append, "second", pool=pool))
        await asyncio.sleep(0.05)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        release.set()
        assert await first is True
        # The pool has a single thread: anything queued would have run by now.
        await offload_async(ran.append, "third", pool=pool)

    try:
        aio.run(main)
    finally:
        pool.shutdown()
    assert ran == ["third"]


def test_timeout_in_bridged_code(aio: Backend) -> None:
    def sync() -> str:
        try:
            greenbridge.await_(asyncio.wait_for(offload_async(time.sleep, 1), 0.05))
        except asyncio.TimeoutError:
            return "timed out"
        return "finished"

    async def main() -> str:
        return await greenbridge.async_(sync)()

    start = time.perf_counter()
    assert aio.run(main) == "timed out"
    assert time.perf_counter() - start < 0.9


def test_outside_any_loop_it_just_waits() -> None:
    var.set("outside")
    assert offload(var.get) == "outside"
    with pytest.raises(ZeroDivisionError):
        offload(divmod, 1, 0)


def test_unbridged_code_in_a_running_loop_gets_missing_bridge(aio: Backend) -> None:
    ran: list[int] = []

    async def main() -> None:
        with pytest.raises(greenbridge.MissingBridge, match="async_"):
            offload(ran.append, 1)  # would block the loop: refused

    aio.run(main)
    assert ran == []


def test_pool_validation_and_shutdown() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        OffloadPool(0)
    pool = OffloadPool(1)
    assert "max_workers=1" in repr(pool)
    pool.shutdown()
    with pytest.raises(RuntimeError):
        offload(int, pool=pool)


async def _coroutine_function() -> int:
    return 1


def _returns_a_coroutine() -> Any:
    return _coroutine_function()


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (5, "expects a blocking sync callable, got 'int'"),
        (_coroutine_function, "_coroutine_function is async: await it directly"),
        (functools.partial(_coroutine_function), "is async: await it directly"),
        (_returns_a_coroutine, "returned a coroutine: await it instead"),
    ],
)
def test_what_cannot_run_in_a_thread_is_a_clear_type_error(fn: Any, words: str) -> None:
    # A thread pool (loop.run_in_executor) would hand back an un-awaited
    # coroutine, and Python would warn "never awaited" later (an error here:
    # warnings are errors in this suite); offload says what is wrong at once.
    with pytest.raises(TypeError, match=words):
        offload(fn)

    async def main() -> None:
        with pytest.raises(TypeError, match=words):
            await offload_async(fn)
        with pytest.raises(TypeError, match=words):
            await greenbridge.async_(offload)(fn)

    asyncio.run(main())


def test_green_wait_in_an_unbridged_trio_task_names_trio_fixes() -> None:
    trio = pytest.importorskip("trio")
    from greenbridge.green import time as green_time

    async def main() -> str:
        try:
            green_time.sleep(0.01)  # a plain sync call in a trio task: no bridge
        except greenbridge.MissingBridge as exc:
            return str(exc)
        raise AssertionError("the green sleep did not raise MissingBridge")

    message = trio.run(main)
    assert "nursery.start_soon" in message and "ensure_portal" in message
    assert "spawn" not in message and "install_portal_factory" not in message
