"""Green locks, conditions, events, queues and joins on every loop family (trio too).

The green primitives park a blocked caller on the one green waiter
(``greenbridge.green._waiter``): under asyncio a worker parks and a loop
callback resumes it, under trio it awaits a trio primitive.  Here several
``async_`` calls run concurrently (in a trio nursery, or gathered on asyncio)
and contend for the same primitives while a heartbeat checks that the loop
kept running.  Under trio a green ``Thread`` is a real OS thread (``spawn`` is
asyncio's), so the join tests there join an OS thread from a trio task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import greenbridge
from greenbridge.green import queue as gq
from greenbridge.green import threading as gt
from greenbridge.green import time as green_time

from .helpers import Backend, Heartbeat


def run_together(backend: Backend, *fns: Callable[[], Any]) -> tuple[list[Any], float]:
    """Run each of ``fns`` in its own ``async_`` call, concurrently; return results, max gap.

    Unlike ``helpers.run_concurrently``, the calls start in order, a turn of
    the loop (10 ms) apart, so the first reaches its first wait before the
    second starts, on asyncio and on trio (which runs the tasks of one batch
    in random order).
    """
    results: list[Any] = [None] * len(fns)

    async def one(i: int) -> None:
        results[i] = await greenbridge.async_(fns[i])()

    async def main() -> float:
        async with Heartbeat() as beat:
            if backend.is_asyncio:
                tasks = []
                for i in range(len(fns)):
                    tasks.append(asyncio.ensure_future(one(i)))
                    await asyncio.sleep(0.01)
                await asyncio.gather(*tasks)
            else:
                import trio

                async with trio.open_nursery() as nursery:
                    for i in range(len(fns)):
                        nursery.start_soon(one, i)
                        await trio.sleep(0.01)
        return beat.max_gap

    max_gap = backend.run(main)
    return results, max_gap


def test_lock_contention_between_two_calls(backend: Backend) -> None:
    lock = gt.Lock()
    log: list[str] = []

    def holder() -> float:
        with lock:
            log.append("a in")
            green_time.sleep(0.1)  # the other call waits on the lock meanwhile
            log.append("a out")
        return 0.0

    def waiter() -> float:
        started = time.monotonic()
        with lock:
            log.append("b in")
        return time.monotonic() - started

    (_, waited), max_gap = run_together(backend, holder, waiter)
    assert log == ["a in", "a out", "b in"]
    assert waited > 0.05
    assert max_gap < 0.08  # only the waiting call was suspended
    assert not lock.locked()


def test_lock_timeout_and_rlock_ownership_per_task(backend: Backend) -> None:
    lock = gt.Lock()
    rlock = gt.RLock()
    gate = gt.Event()

    def holder() -> None:
        with lock, rlock, rlock:  # re-entered by its owner
            gate.wait(5)

    def other() -> tuple[Any, ...]:
        started = time.monotonic()
        timed_out = lock.acquire(timeout=0.05)
        waited = time.monotonic() - started
        # Another task is another green thread: not the RLock's owner.
        owned = rlock.acquire(timeout=0.05)
        try:
            rlock.release()
        except RuntimeError as exc:
            not_owner = str(exc)
        gate.set()
        with rlock:
            got_it = True
        return timed_out, waited, owned, not_owner, got_it

    (_, (timed_out, waited, owned, not_owner, got_it)), _ = run_together(backend, holder, other)
    assert timed_out is False and waited >= 0.04
    assert owned is False and not_owner == "cannot release un-acquired lock"
    assert got_it and not lock.locked() and not rlock.locked()


def test_condition_wait_and_notify(backend: Backend) -> None:
    cond = gt.Condition()
    items: list[int] = []

    def consumer() -> tuple[list[int], bool]:
        got = []
        with cond:
            while len(got) < 3:
                while not items:
                    cond.wait()
                got.append(items.pop(0))
            timed_out = cond.wait(0.02)  # nobody notifies: times out
        return got, timed_out

    def producer() -> None:
        for i in range(3):
            green_time.sleep(0.01)
            with cond:
                items.append(i)
                cond.notify()

    ((got, timed_out), _), max_gap = run_together(backend, consumer, producer)
    assert got == [0, 1, 2] and timed_out is False
    assert max_gap < 0.08


def test_queue_put_and_get(backend: Backend) -> None:
    q: gq.Queue[int] = gq.Queue(maxsize=1)
    sq: gq.SimpleQueue[int] = gq.SimpleQueue()

    def consumer() -> tuple[list[int], int, str]:
        got = [q.get() for _ in range(5)]  # waits for each item
        q.task_done()
        try:
            q.get(timeout=0.02)
        except gq.Empty:
            empty = "empty"
        return got, sq.get(timeout=5), empty

    def producer() -> None:
        for i in range(5):
            q.put(i)  # maxsize 1: waits for the consumer each time
        green_time.sleep(0.02)
        sq.put(42)

    ((got, simple, empty), _), max_gap = run_together(backend, consumer, producer)
    assert got == [0, 1, 2, 3, 4] and simple == 42 and empty == "empty"
    assert max_gap < 0.08


def test_event_and_semaphore(backend: Backend) -> None:
    event = gt.Event()
    sem = gt.BoundedSemaphore(1)

    def first() -> bool:
        with sem:
            green_time.sleep(0.05)
        return event.wait(5)

    def second() -> tuple[bool, bool, bool]:
        quick = sem.acquire(timeout=0.01)  # held by first: times out
        slow = sem.acquire(timeout=5)
        sem.release()
        event.set()
        return quick, slow, event.wait(0.01)

    (flag, (quick, slow, still)), _ = run_together(backend, first, second)
    assert flag is True and (quick, slow, still) == (False, True, True)


def test_cancelled_waiter_leaves_the_lock_to_the_next(backend: Backend) -> None:
    """A waiter cancelled while it waits is removed; the lock goes to the next one."""
    lock = gt.Lock()
    order: list[str] = []

    def holder() -> None:
        with lock:
            green_time.sleep(0.1)

    def cancelled() -> None:
        with lock:
            order.append("cancelled one got it")

    def last() -> None:
        with lock:
            order.append("last")

    async def main_asyncio() -> None:
        a = asyncio.ensure_future(greenbridge.async_(holder)())
        await asyncio.sleep(0.01)
        b = asyncio.ensure_future(greenbridge.async_(cancelled)())
        await asyncio.sleep(0.01)
        c = asyncio.ensure_future(greenbridge.async_(last)())
        await asyncio.sleep(0.01)
        b.cancel()
        await asyncio.gather(a, c)
        with pytest.raises(asyncio.CancelledError):
            await b

    async def main_trio() -> None:
        import trio

        async with trio.open_nursery() as nursery:
            nursery.start_soon(greenbridge.async_(holder))
            await trio.sleep(0.01)
            scope = trio.CancelScope()
            nursery.start_soon(_in_scope, scope, greenbridge.async_(cancelled))
            await trio.sleep(0.01)
            nursery.start_soon(greenbridge.async_(last))
            await trio.sleep(0.01)
            scope.cancel()

    async def _in_scope(scope: Any, fn: Callable[[], Any]) -> None:
        with scope:
            await fn()

    backend.run(main_asyncio if backend.is_asyncio else main_trio)
    assert order == ["last"]
    assert not lock.locked()


def test_join_and_lock_shared_with_a_thread(backend: Backend) -> None:
    """``Thread`` (a task on asyncio, an OS thread under trio) joined from a call."""
    lock = gt.Lock()
    started = gt.Event()

    def body() -> None:
        with lock:
            started.set()
            green_time.sleep(0.1)  # (in an OS thread, with no loop: a real sleep)

    def main() -> tuple[bool, bool]:
        t = gt.Thread(target=body)
        t.start()
        assert started.wait(5)
        contended = lock.acquire(timeout=0.02)  # the thread holds it
        t.join(0.01)
        alive = t.is_alive()
        t.join()
        with lock:
            pass
        return contended, alive

    (result,), max_gap = run_together(backend, main)
    assert result == (False, True)
    assert max_gap < 0.08  # joining suspended only the calling task


def test_local_per_task(backend: Backend) -> None:
    data = gt.local()
    data.x = "outside"

    def one(value: str) -> Callable[[], str]:
        def body() -> str:
            data.x = value
            green_time.sleep(0.03)
            return str(data.x)

        return body

    (a, b), _ = run_together(backend, one("a"), one("b"))
    assert (a, b) == ("a", "b")


def test_blocking_in_a_task_that_cannot_suspend_names_the_fix(backend: Backend) -> None:
    """A plain task (no ``async_``) would block the loop: MissingBridge, worded per loop."""

    async def main() -> str:
        try:
            gt.Event().wait(1)
        except greenbridge.MissingBridge as exc:
            return str(exc)
        return "waited"

    message = backend.run(main)
    assert "would have to block this thread" in message
    if backend.is_asyncio:
        assert "asyncio event loop" in message and "spawn" in message
    else:
        assert "runs trio" in message and "nursery.start_soon" in message


def test_green_lock_contended_inside_sqlalchemy_greenlets(aio: Backend) -> None:
    """SQLAlchemy's ``greenlet_spawn`` greenlets can suspend: green locks wait there too.

    (As the hub does: their ``await_`` hands the awaitable to SQLAlchemy's
    driver.)  Two such greenlets and a greenbridge call contend for one lock,
    a condition and a queue while the loop keeps running.
    """
    concurrency = pytest.importorskip("sqlalchemy.util.concurrency")
    greenlet_spawn = concurrency.greenlet_spawn
    sa_await = getattr(concurrency, "await_only", None) or concurrency.await_
    lock = gt.Lock()
    q: gq.Queue[str] = gq.Queue()
    log: list[str] = []

    def sa_holder() -> str:
        with lock:
            log.append("sa holder in")
            sa_await(asyncio.sleep(0.05))  # the others wait on the lock meanwhile
            log.append("sa holder out")
        return q.get(timeout=5)  # put by the greenbridge call

    def sa_waiter() -> bool:
        with lock:
            log.append("sa waiter in")
        return lock.acquire(timeout=0.01) and (lock.release() is None)

    def gb_call() -> None:
        with lock:
            log.append("gb in")
        q.put("from gb")

    async def main() -> tuple[Any, ...]:
        async with Heartbeat() as beat:
            first = asyncio.ensure_future(greenlet_spawn(sa_holder))
            await asyncio.sleep(0.01)
            second = asyncio.ensure_future(greenlet_spawn(sa_waiter))
            third = asyncio.ensure_future(greenbridge.async_(gb_call)())
            results = await asyncio.gather(first, second, third)
        return (*results, beat.max_gap)

    got, free, _, max_gap = aio.run(main)
    assert log == ["sa holder in", "sa holder out", "sa waiter in", "gb in"]
    assert got == "from gb" and free is True
    assert max_gap < 0.08


def test_sqlalchemy_green_pool_checkout_waits_on_every_loop(backend: Backend) -> None:
    """``GreenQueuePool``: a checkout that has to wait suspends only its task (trio too)."""
    sa = pytest.importorskip("sqlalchemy")
    from greenbridge.drivers.sqlalchemy import GreenQueuePool

    engine = sa.create_engine(
        "sqlite://", poolclass=GreenQueuePool, pool_size=1, max_overflow=0, pool_timeout=5
    )
    log: list[str] = []

    def first() -> int:
        with engine.connect() as conn:
            log.append("first has it")
            green_time.sleep(0.1)  # the second checkout waits meanwhile
            value = int(conn.execute(sa.text("select 1")).scalar_one())
            log.append("first gives it back")
        return value

    def second() -> int:
        with engine.connect() as conn:
            log.append("second has it")
            return int(conn.execute(sa.text("select 2")).scalar_one())

    try:
        (a, b), max_gap = run_together(backend, first, second)
    finally:
        engine.dispose()
    assert (a, b) == (1, 2)
    assert log == ["first has it", "first gives it back", "second has it"]
    assert max_gap < 0.08


def test_condition_wait_cancelled_under_trio_holds_the_lock_again() -> None:
    """trio's cancellation is level-triggered: the re-acquire after it is shielded.

    As ``trio.Condition.wait`` does: a wait cancelled while another task holds
    the lock waits for the lock (shielded), and the cancellation is raised
    with the lock held, so ``with cond:`` releases a lock its task holds.
    """
    trio = pytest.importorskip("trio")
    lock = gt.Lock()
    cond = gt.Condition(lock)
    log: list[str] = []

    def waiter() -> None:
        try:
            with cond:
                cond.wait()
        except BaseException as exc:
            log.append(f"waiter: {type(exc).__name__}, lock held by another: {lock.locked()}")
            raise

    def holder(scope: Any) -> None:
        with cond:
            scope.cancel()  # while this task holds the lock
            green_time.sleep(0.05)
            log.append("holder releases")

    async def main() -> None:
        scope = trio.CancelScope()

        async def cancellable() -> None:
            with scope:
                await greenbridge.async_(waiter)()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancellable)
            await trio.sleep(0.01)
            nursery.start_soon(greenbridge.async_(holder), scope)

    trio.run(main)
    assert log == ["holder releases", "waiter: Cancelled, lock held by another: False"]
    assert not lock.locked()


def test_settrace_and_setprofile_reach_os_threads_started_with_no_loop() -> None:
    """As documented (and as the stdlib): the hooks apply to threads started after them."""
    traced: list[str] = []
    profiled: list[str] = []

    def tracer(frame: Any, event: str, arg: Any) -> None:
        traced.append(frame.f_code.co_name)

    def profiler(frame: Any, event: str, arg: Any) -> None:
        profiled.append(frame.f_code.co_name)

    def body() -> None:
        pass

    gt.settrace(tracer)
    gt.setprofile(profiler)
    try:
        t = gt.Thread(target=body)  # no loop runs: a real OS thread
        t.start()
        t.join()
    finally:
        gt.settrace(None)  # type: ignore[arg-type]
        gt.setprofile(None)  # type: ignore[arg-type]
    assert "body" in traced and "body" in profiled
