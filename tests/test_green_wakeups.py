"""No wake-up, item or permit is lost when a green waiter is cancelled or times out.

Each test runs the same program on the green primitive and on its native
reference (the asyncio primitive for cancellation, real OS threads for
timeouts) and compares what every waiter got and what is left.
"""

from __future__ import annotations

import asyncio
import inspect
import queue as std_queue
import random
import sys
import threading as real_threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import greenbridge
from greenbridge.green import queue as gq
from greenbridge.green import threading as gt

from .helpers import Backend, run_green

# ---------------------------------------------------------------------------
# A and B wait, one release, A is cancelled in the same loop turn: B must get it.


class Scenario:
    """One primitive, green and native: how to make it, wait on it, release it once."""

    def __init__(
        self,
        green_make: Callable[[], Any],
        green_wait: Callable[[Any, str], Any],
        green_release: Callable[[Any], Any],
        native_make: Callable[[], Any],
        native_wait: Callable[[Any, str], Awaitable[Any]],
        native_release: Callable[[Any], Awaitable[Any]],
        left: Callable[[Any], Any],
        native_since: tuple[int, int] = (3, 9),
    ) -> None:
        self.green_make = green_make
        self.green_wait = green_wait
        self.green_release = green_release
        self.native_make = native_make
        self.native_wait = native_wait
        self.native_release = native_release
        self.left = left
        # The first Python whose asyncio primitive passes the wake-up on (the
        # reference); before it, the test checks that B got it.
        self.native_since = native_since


def _drain(q: Any) -> list[Any]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def _full(cls: Callable[[int], Any]) -> Any:
    q = cls(1)
    q.put_nowait("old")
    return q


def _locked() -> gt.Lock:
    lock = gt.Lock()
    assert lock.acquire()
    return lock


async def _native_locked() -> asyncio.Lock:
    lock = asyncio.Lock()
    await lock.acquire()
    return lock


async def _native_lock_acquire(lock: asyncio.Lock, name: str) -> str:
    await lock.acquire()
    return name


def _taken(sem: Any) -> Any:
    """A semaphore of value 1, acquired once (asyncio's acquire is a coroutine)."""
    assert sem._value == 1
    sem._value = 0
    return sem


def _green_cond_wait(cond: Any, name: str) -> str:
    with cond:
        cond.wait()
    return name


async def _native_cond_wait(cond: asyncio.Condition, name: str) -> str:
    async with cond:
        await cond.wait()
    return name


def _green_notify(cond: Any) -> None:
    with cond:
        cond.notify()


async def _native_notify(cond: asyncio.Condition) -> None:
    async with cond:  # free: taken without yielding to the loop
        cond.notify()


class _Tokens:
    """A condition and the tokens ``wait_for`` callers take, one each."""

    def __init__(self) -> None:
        self.cond: Any = gt.Condition()
        self.tokens: list[str] = []


class _NativeTokens(_Tokens):
    def __init__(self) -> None:
        self.cond = asyncio.Condition()
        self.tokens = []


def _green_wait_for(t: _Tokens, name: str) -> str:
    with t.cond:
        t.cond.wait_for(lambda: t.tokens)
        return name + ":" + t.tokens.pop()


async def _native_wait_for(t: _Tokens, name: str) -> str:
    async with t.cond:
        await t.cond.wait_for(lambda: t.tokens)
        return name + ":" + t.tokens.pop()


def _green_add_token(t: _Tokens) -> None:
    with t.cond:
        t.tokens.append("token")
        t.cond.notify()


async def _native_add_token(t: _Tokens) -> None:
    async with t.cond:  # free: taken without yielding to the loop
        t.tokens.append("token")
        t.cond.notify()


async def _native_event_wait(event: asyncio.Event, name: str) -> str | None:
    return name if await event.wait() else None


def _unfinished(cls: Callable[[], Any]) -> Callable[[], Any]:
    def make() -> Any:
        q = cls()
        q.put_nowait("item")
        q.get_nowait()  # one task not yet done
        return q

    return make


def _green_join(q: Any, name: str) -> str:
    q.join()
    return name


async def _native_join(q: Any, name: str) -> str:
    await q.join()
    return name


def _green_barrier_wait(barrier: Any, name: str) -> str:
    barrier.wait()
    return name


async def _native_barrier_wait(barrier: Any, name: str) -> str:
    await barrier.wait()
    return name


def _sem_wait(sem: Any, name: str) -> str:
    assert sem.acquire()
    return name


async def _native_sem_wait(sem: asyncio.Semaphore, name: str) -> str:
    await sem.acquire()
    return name


async def _put(q: Any, name: str) -> None:
    await q.put(name)


def _as_coro(fn: Callable[[Any], Any]) -> Callable[[Any], Awaitable[Any]]:
    async def call(obj: Any) -> Any:
        return fn(obj)

    return call


SCENARIOS: dict[str, Scenario] = {
    "Queue.get": Scenario(
        gq.Queue,
        lambda q, name: q.get(),
        lambda q: q.put("item"),
        asyncio.Queue,
        lambda q, name: q.get(),
        _as_coro(lambda q: q.put_nowait("item")),
        _drain,
    ),
    "LifoQueue.get": Scenario(
        gq.LifoQueue,
        lambda q, name: q.get(),
        lambda q: q.put("item"),
        asyncio.LifoQueue,
        lambda q, name: q.get(),
        _as_coro(lambda q: q.put_nowait("item")),
        _drain,
    ),
    "PriorityQueue.get": Scenario(
        gq.PriorityQueue,
        lambda q, name: q.get(),
        lambda q: q.put("item"),
        asyncio.PriorityQueue,
        lambda q, name: q.get(),
        _as_coro(lambda q: q.put_nowait("item")),
        _drain,
    ),
    "SimpleQueue.get": Scenario(
        gq.SimpleQueue,
        lambda q, name: q.get(),
        lambda q: q.put("item"),
        asyncio.Queue,
        lambda q, name: q.get(),
        _as_coro(lambda q: q.put_nowait("item")),
        _drain,
    ),
    "Queue.put": Scenario(
        lambda: _full(gq.Queue),
        lambda q, name: q.put(name),
        lambda q: q.get_nowait(),
        lambda: _full(asyncio.Queue),
        _put,
        _as_coro(lambda q: q.get_nowait()),
        _drain,
    ),
    "Semaphore.acquire": Scenario(
        lambda: gt.Semaphore(0),
        _sem_wait,
        lambda s: s.release(),
        lambda: asyncio.Semaphore(0),
        _native_sem_wait,
        _as_coro(lambda s: s.release()),
        lambda s: s._value,
    ),
    "BoundedSemaphore.acquire": Scenario(
        lambda: _taken(gt.BoundedSemaphore(1)),
        _sem_wait,
        lambda s: s.release(),
        lambda: _taken(asyncio.BoundedSemaphore(1)),
        _native_sem_wait,
        _as_coro(lambda s: s.release()),
        lambda s: s._value,
    ),
    "Condition.wait": Scenario(
        gt.Condition,
        _green_cond_wait,
        _green_notify,
        asyncio.Condition,
        _native_cond_wait,
        _native_notify,
        lambda c: None,
        native_since=(3, 13),
    ),
    "Condition.wait_for": Scenario(
        _Tokens,
        _green_wait_for,
        _green_add_token,
        _NativeTokens,
        _native_wait_for,
        _native_add_token,
        lambda t: list(t.tokens),
        native_since=(3, 13),
    ),
    "Event.wait": Scenario(
        gt.Event,
        lambda e, name: name if e.wait() else None,
        lambda e: e.set(),
        asyncio.Event,
        _native_event_wait,
        _as_coro(lambda e: e.set()),
        lambda e: e.is_set(),
    ),
    "Queue.join": Scenario(
        _unfinished(gq.Queue),
        _green_join,
        lambda q: q.task_done(),
        _unfinished(asyncio.Queue),
        _native_join,
        _as_coro(lambda q: q.task_done()),
        lambda q: q.unfinished_tasks if hasattr(q, "unfinished_tasks") else q._unfinished_tasks,
    ),
    "Barrier.wait": Scenario(
        lambda: gt.Barrier(3),
        _green_barrier_wait,
        lambda b: b.wait(),
        lambda: asyncio.Barrier(3),
        _native_barrier_wait,
        lambda b: b.wait(),
        lambda b: (b.n_waiting, b.broken),
        native_since=(3, 11),
    ),
    "Lock.acquire": Scenario(
        _locked,
        lambda lk, name: name if lk.acquire() else None,
        lambda lk: lk.release(),
        _native_locked,
        _native_lock_acquire,
        _as_coro(lambda lk: lk.release()),
        lambda lk: lk.locked(),
    ),
}


async def _outcome(task: asyncio.Task[Any]) -> Any:
    """What a waiter ended with: its result, "cancelled", or "stuck" (a lost wake-up)."""
    try:
        return await asyncio.wait_for(asyncio.shield(task), 2.0)
    except asyncio.CancelledError:
        return "cancelled"
    except asyncio.TimeoutError:
        task.cancel()
        return "stuck"


async def _release_and_cancel(
    a: asyncio.Task[Any], b: asyncio.Task[Any], release: Callable[[], Any]
) -> tuple[Any, Any]:
    for _ in range(20):  # both parked on the primitive, A first
        await asyncio.sleep(0)
    assert not a.done() and not b.done()
    released = release()
    if asyncio.iscoroutine(released):
        await released  # never suspends: see the Scenario's native_release
    a.cancel()  # A was woken in this loop turn, and has not run since
    return await _outcome(a), await _outcome(b)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_woken_waiter_cancelled_before_it_runs_passes_the_wakeup_on(
    aio: Backend, name: str
) -> None:
    scenario = SCENARIOS[name]

    async def green() -> tuple[Any, ...]:
        obj = scenario.green_make()
        a = greenbridge.spawn(scenario.green_wait, obj, "A")
        await asyncio.sleep(0)
        b = greenbridge.spawn(scenario.green_wait, obj, "B")
        got_a, got_b = await _release_and_cancel(a, b, lambda: scenario.green_release(obj))
        return got_a, got_b, scenario.left(obj)

    async def native() -> tuple[Any, ...]:
        obj = scenario.native_make()
        if inspect.isawaitable(obj):
            obj = await obj
        a = asyncio.ensure_future(scenario.native_wait(obj, "A"))
        await asyncio.sleep(0)
        b = asyncio.ensure_future(scenario.native_wait(obj, "B"))
        got_a, got_b = await _release_and_cancel(a, b, lambda: scenario.native_release(obj))
        return got_a, got_b, scenario.left(obj)

    got = aio.run(green)
    if sys.version_info < scenario.native_since:
        # This Python's asyncio primitive loses the wake-up too (or is missing).
        assert got[0] == "cancelled" and str(got[1]).split(":")[0] == "B"
        return
    expected = aio.run(native)
    assert expected[0] == "cancelled" and expected[1] != "stuck"
    assert got == expected


# ---------------------------------------------------------------------------
# Randomized: rounds of many parked waiters, a few releases, and cancellations of
# random waiters in the same loop turn; green and asyncio side by side.


async def _settle() -> None:
    """Let every wake-up in flight run (green ones take a few loop turns)."""
    for _ in range(30):
        await asyncio.sleep(0)


class _Storm:
    """One primitive under test: park a waiter, release n, count what is left."""

    def __init__(self, kind: str, green: bool) -> None:
        self.kind = kind
        self.green = green
        self.done: list[Any] = []  # what each successful waiter got
        if kind == "sem":
            self.obj: Any = gt.Semaphore(0) if green else asyncio.Semaphore(0)
        elif kind == "get":
            self.obj = gq.Queue() if green else asyncio.Queue()
        else:  # "put": a full queue; waiters put, releases take
            self.obj = gq.Queue(3) if green else asyncio.Queue(3)
            for _ in range(3):
                self.obj.put_nowait(-1)
        self.released = 0

    def park(self, n: int) -> asyncio.Task[Any]:
        obj, done, kind = self.obj, self.done, self.kind
        if self.green:

            def wait() -> None:
                if kind == "sem":
                    done.append(obj.acquire())
                elif kind == "get":
                    done.append(obj.get())
                else:
                    obj.put(n)
                    done.append(n)

            return greenbridge.spawn(wait)

        async def native() -> None:
            if kind == "sem":
                done.append(await obj.acquire())
            elif kind == "get":
                done.append(await obj.get())
            else:
                await obj.put(n)
                done.append(n)

        return asyncio.ensure_future(native())

    def release(self, n: int) -> None:
        for _ in range(n):
            if self.kind == "sem":
                self.obj.release()
            elif self.kind == "get":
                self.obj.put_nowait(self.released)
            elif self.obj.empty():
                return  # every slot is already free
            else:
                self.obj.get_nowait()
            self.released += 1

    def available(self) -> int:
        """Permits, items or (for "put") free slots that nobody took."""
        if self.kind == "sem":
            return int(self.obj._value)
        if self.kind == "get":
            return int(self.obj.qsize())
        return 3 - int(self.obj.qsize())


async def _storm(kind: str, green: bool, seed: int) -> tuple[int, int, int, int]:
    """Rounds: park waiters, release a few, cancel random waiters in the same turn.

    Returns (rounds that ended with something available while waiters still
    slept, i.e. lost wake-ups; releases; successful waits; left available).
    """
    rng = random.Random(seed)
    storm = _Storm(kind, green)
    waiting: list[asyncio.Task[Any]] = []
    stranded = 0
    for _ in range(60):
        target = rng.randint(2, 8)
        while len(waiting) < target:
            waiting.append(storm.park(len(storm.done) + 1000 * len(waiting)))
            await asyncio.sleep(0)
        await _settle()
        storm.release(rng.randint(1, 3))
        for task in rng.sample(waiting, rng.randint(1, len(waiting))):
            task.cancel()
        await _settle()
        waiting = [t for t in waiting if not t.done()]
        if waiting and storm.available():
            stranded += 1
            # Unstick them for the next round: the same schedule goes on.
            for task in waiting:
                task.cancel()
            await _settle()
            waiting = [t for t in waiting if not t.done()]
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    return stranded, storm.released, len(storm.done), storm.available()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["get", "put", "sem"])
def test_random_cancellations_lose_no_wakeup(aio: Backend, kind: str, seed: int) -> None:
    green = aio.run(lambda: _storm(kind, True, seed))
    runs = [green]
    # asyncio.Semaphore loses wake-ups to cancellation before 3.10.9/3.11.1 (gh-90155).
    if kind != "sem" or sys.version_info >= (3, 11):
        native = aio.run(lambda: _storm(kind, False, seed))
        assert native[0] == 0
        runs.append(native)
    assert green[0] == 0
    # Conservation: every release was taken by exactly one waiter or is still there.
    for _, released, taken, left in runs:
        assert taken + left == released
        assert taken > 50


# ---------------------------------------------------------------------------
# Timeouts racing a notification, against real OS threads and queue.Queue.


def _timeout_storm(threading: Any, queue: Any, seed: int) -> tuple[list[int], list[int], int]:
    """Consumers that give up after a short get(timeout), consumers that wait for ever.

    Producers put every item; the patient consumers must end up with whatever the
    impatient ones did not take.  Returns (items, items got, items left).
    """
    rng = random.Random(seed)
    q = queue.Queue(3)
    got: list[int] = []
    n = 400

    def producer(base: int) -> None:
        for i in range(base, n, 4):
            q.put(i)
            if rng.random() < 0.3:
                threading.Event().wait(0.0005)

    def impatient() -> None:
        while True:
            try:
                got.append(q.get(timeout=rng.choice([0.0002, 0.001, 0.003])))
            except queue.Empty:
                return

    def patient() -> None:
        while True:
            item = q.get()
            if item is None:
                return
            got.append(item)

    producers = [threading.Thread(target=producer, args=(b,)) for b in range(4)]
    impatients = [threading.Thread(target=impatient) for _ in range(8)]
    patients = [threading.Thread(target=patient) for _ in range(3)]
    for t in patients + impatients + producers:
        t.start()
    for t in producers + impatients:
        t.join()
    deadline = 200
    while not q.empty() and deadline:  # the patient consumers drain it, unless one sleeps
        threading.Event().wait(0.005)
        deadline -= 1
    left = q.qsize()
    for _ in patients:
        q.put(None)
    for t in patients:
        t.join(5)
    return list(range(n)), got, left


@pytest.mark.parametrize("seed", range(3))
def test_timeouts_racing_puts_lose_no_item(aio: Backend, seed: int) -> None:
    items, got, left = _timeout_storm(real_threading, std_queue, seed)
    assert left == 0 and sorted(got) == items
    items, got, left = run_green(aio, lambda: _timeout_storm(gt, gq, seed))
    assert left == 0 and sorted(got) == items


def test_condition_wait_timed_out_but_notified_reports_it(aio: Backend) -> None:
    """A wait whose timer fired, notified before it re-took the lock, returns True.

    notify(1) then wakes exactly one waiter: this one (which says so) and not B.
    (CPython's Condition returns False there and the notification is gone.)
    """

    def main() -> tuple[Any, ...]:
        cond = gt.Condition(gt.Lock())
        results: dict[str, Any] = {}

        def a() -> None:
            with cond:
                results["A"] = cond.wait(0.01)

        def b() -> None:
            with cond:
                results["B"] = cond.wait()

        ta, tb = gt.Thread(target=a), gt.Thread(target=b)
        ta.start()
        tb.start()
        # Take the lock once both wait (on a loaded uvloop a 1 ms timer can run
        # before the threads' first step, so one fixed pause is not enough).
        cond.acquire()
        while len(cond._waiters) < 2:
            cond.release()
            gt.Event().wait(0.001)
            cond.acquire()
        gt.Event().wait(0.05)  # A's timer fires now; A then waits for the lock
        assert cond._waiters and "A" not in results
        cond.notify(1)
        cond.release()
        ta.join()
        with cond:
            b_still_waiting = len(cond._waiters) == 1 and "B" not in results
            cond.notify()
        tb.join()
        return results["A"], b_still_waiting, results["B"]

    assert run_green(aio, main) == (True, True, True)


async def _cancel_twice(green: bool) -> tuple[Any, ...]:
    """A waiter is cancelled, then cancelled again while it re-takes the held lock."""
    if green:
        cond: Any = gt.Condition(gt.Lock())
        release: Any = gt.Event()

        def waiter() -> None:
            with cond:
                cond.wait()

        def holder() -> None:
            with cond:
                release.wait()

        start: Callable[[Callable[[], None]], asyncio.Task[Any]] = greenbridge.spawn
    else:
        cond = asyncio.Condition()
        release = asyncio.Event()

        async def waiter() -> None:  # type: ignore[misc]
            async with cond:
                await cond.wait()

        async def holder() -> None:  # type: ignore[misc]
            async with cond:
                await release.wait()

        def start(fn: Callable[[], Any]) -> asyncio.Task[Any]:
            return asyncio.ensure_future(fn())

    a = start(waiter)
    await _settle()
    h = start(holder)
    await _settle()  # the holder has the lock; the waiter waits on the condition
    a.cancel()  # it wakes and must re-take the lock: it waits for the holder
    await _settle()
    a.cancel()  # cancelled again while it re-takes the lock
    await _settle()
    release.set()
    results = await asyncio.gather(a, h, return_exceptions=True)
    lock = cond._lock
    return tuple(type(r).__name__ for r in results), lock.locked(), len(cond._waiters)


def test_cancelled_again_while_retaking_the_lock(aio: Backend) -> None:
    """The waiter leaves holding the lock (its ``with`` releases it), as asyncio's does."""
    native = aio.run(lambda: _cancel_twice(False))
    assert native == (("CancelledError", "NoneType"), False, 0)
    assert aio.run(lambda: _cancel_twice(True)) == native


# ---------------------------------------------------------------------------
# Fair hand-over: a released lock or permit goes to the oldest waiter, never to
# a newcomer that runs first (asyncio's Lock, and its Semaphore since 3.11).

_GREEN_LOCKS = {
    "Lock": gt.Lock,
    "RLock": gt.RLock,
    "Semaphore": gt.Semaphore,
    "BoundedSemaphore": gt.BoundedSemaphore,
}
_NATIVE_LOCKS = {
    "Lock": asyncio.Lock,
    "RLock": asyncio.Lock,  # (asyncio has no reentrant lock)
    "Semaphore": asyncio.Semaphore,
    "BoundedSemaphore": asyncio.BoundedSemaphore,
}


def _starter(green: bool, obj: Any, order: list[str]) -> Callable[[str], asyncio.Task[Any]]:
    """``start(name)``: a task (green, or a native coroutine) that takes ``obj`` and records
    ``name``; a green one takes a reentrant lock twice."""

    def green_wait(name: str) -> None:
        with obj:
            if isinstance(obj, gt.RLock):
                with obj:  # reentrant: the owner once it runs
                    assert obj._is_owned()
            order.append(name)
        if isinstance(obj, gt.RLock):
            assert not obj._is_owned()

    async def native_wait(name: str) -> None:
        async with obj:
            order.append(name)

    def start(name: str) -> asyncio.Task[Any]:
        if green:
            return greenbridge.spawn(green_wait, name)
        return asyncio.ensure_future(native_wait(name))

    return start


async def _newcomer_after_release(green: bool, kind: str) -> list[str]:
    """A, B, C wait; D starts, the holder releases; D runs first. Who gets it when?"""
    order: list[str] = []
    obj: Any = (_GREEN_LOCKS if green else _NATIVE_LOCKS)[kind]()
    start = _starter(green, obj, order)
    if green:
        assert obj.acquire(blocking=False)
    else:
        await obj.acquire()
    waiting = []
    for name in "ABC":
        waiting.append(start(name))
        await _settle()  # parked, in this order
    waiting.append(start("D"))  # its first step is queued before the wake-up below
    obj.release()
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    return order


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_a_released_lock_or_permit_goes_to_the_oldest_waiter(aio: Backend, kind: str) -> None:
    got = aio.run(lambda: _newcomer_after_release(True, kind))
    assert got == ["A", "B", "C", "D"]
    if kind in ("Lock", "RLock") or sys.version_info >= (3, 11):
        # asyncio's Semaphore let a newcomer overtake the waiters before 3.11 (gh-90155).
        assert aio.run(lambda: _newcomer_after_release(False, kind)) == got


async def _handed_then_cancelled(green: bool) -> tuple[list[str], str, bool]:
    """A and B wait; the holder releases, which hands the lock to A, and A is
    cancelled before it runs.  Who gets the lock, and is it free at the end?"""
    order: list[str] = []
    lock: Any = gt.RLock() if green else asyncio.Lock()
    start = _starter(green, lock, order)
    if green:
        assert lock.acquire(blocking=False)
    else:
        await lock.acquire()
    a = start("A")
    await _settle()
    b = start("B")
    await _settle()
    lock.release()  # handed to A
    a.cancel()  # before A runs
    results = await asyncio.wait_for(asyncio.gather(a, b, return_exceptions=True), 5)
    return order, type(results[0]).__name__, lock.locked()


def test_an_rlock_handed_to_a_cancelled_waiter_goes_on_to_the_next(aio: Backend) -> None:
    native = aio.run(lambda: _handed_then_cancelled(False))
    assert native == (["B"], "CancelledError", False)
    assert aio.run(lambda: _handed_then_cancelled(True)) == native
