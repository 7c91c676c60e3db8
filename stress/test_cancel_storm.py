"""Cancellation storm: thousands of bridged calls cancelled while they wait in green code.

Each backend runs waves of concurrent calls (``async_`` and, on asyncio, ``spawn``)
whose sync bodies block in a green wait: ``socket.recv`` on a green socket pair, a
green ``time.sleep``, ``await_`` of a Future (a trio Event under trio) and, on the
asyncio loops, a green ``threading.Lock`` and a bounded green ``queue.Queue`` (both
``get`` and ``put``).  Half the bodies first take a turn of the loop (a green
``sleep(0)``), so that on asyncio their worker is resumed by loop callbacks from
then on.  Every call gets a fate, drawn from a seeded generator (the seed is
printed; ``GREENBRIDGE_STRESS_SEED`` replays one):

* ``complete``: woken and left alone: it must return its value;
* ``cancel``: cancelled at a random time, woken at another one (either may come
  first); half the cancelled sleeps are an hour long, so only the cancellation ends
  them;
* ``at_wake``: cancelled in the same loop turn as its wake-up (data sent, Future
  completed, lock released or item put, then ``cancel()`` before the loop runs
  again, or the other way round), or on asyncio in the next turn, right after the
  turn in which a native task would have run on;
* ``timeout``: a timeout (``asyncio.timeout_at`` / ``wait_for``, a trio deadline)
  expiring at the very instant of its wake-up: a callback blocks the loop across that
  instant, so the timer, the timeout and the wake-up are all due in one loop turn.

After every wave: every ``finally`` ran; no registration is left on the loop (the
selector's map and our hub's tables on asyncio, uvloop's open poll handles, live
timer handles, open descriptors; trio's statistics); no worker greenlet is alive
beyond the pool; nothing is lost (bytes sent == bytes the sync code received + bytes
left in the socket; items put == items got + items left in the queue, and an item a
``get`` returned reached its caller; the lock and the queue's conditions have no
waiter left and the lock is free; no getter waits while an item is in the queue, no
putter while there is room); every call not cancelled completed with the right value.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import random
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from _scale import scaled
from tests.helpers import BACKENDS, Backend

import greenbridge
from greenbridge import _hub, _trampoline
from greenbridge.green import queue as green_queue
from greenbridge.green import socket as green_socket
from greenbridge.green import threading as green_threading
from greenbridge.green import time as green_time

SEED = int(os.environ.get("GREENBRIDGE_STRESS_SEED") or random.SystemRandom().randrange(1 << 32))
CALLS = int(scaled(6000, 600))  # per backend
WAVE = 150  # calls waiting at once
WINDOW = 0.03  # seconds over which a wave's wake-ups and cancellations are spread
INSTANTS = 3  # per wave: moments where timeouts, timers and wake-ups meet in one turn
HANG = 5.0  # a call still running this long after its wave's last event is stuck
STUCK_WAVES = 3  # the storm stops after this many waves with stuck calls

_real_sleep = time.sleep
_std_recv = socket.socket.recv

COMPLETE, CANCEL, AT_WAKE, TIMEOUT = "complete", "cancel", "at_wake", "timeout"
FATES = (COMPLETE, CANCEL, AT_WAKE, TIMEOUT)
FATE_WEIGHTS = (3, 3, 2, 2)
AIO_KINDS = ("recv", "sleep", "future", "lock", "get", "put")
TRIO_KINDS = ("recv", "sleep", "future")


class Call:
    """One bridged call of the storm and what happened to it."""

    __slots__ = (
        "id", "kind", "fate", "spawned", "warm", "instant", "task", "outer", "scope", "sock",
        "peer", "fut", "sent", "got", "started", "ended", "cancel_sent", "outcome", "value",
    )  # fmt: skip

    def __init__(self, ident: int, kind: str, fate: str, spawned: bool, warm: bool) -> None:
        self.id = ident
        self.kind = kind
        self.fate = fate
        self.spawned = spawned
        # Take a turn of the loop (green sleep(0)) first: on asyncio the worker is
        # then resumed by a loop callback, and waits in the hub from there on.
        self.warm = warm
        self.instant = math.inf  # when it is woken (or its deadline, for a timeout)
        self.task: Any = None  # asyncio: the task running the sync body
        self.outer: Any = None  # asyncio: the task awaiting it under a timeout
        self.scope: Any = None  # trio: its cancel scope
        self.sock: Any = None  # recv: the green end, and the plain peer
        self.peer: Any = None
        self.fut: Any = None  # future: an asyncio Future or a trio Event
        self.sent = 0  # recv: bytes the peer sent, bytes the sync code received
        self.got = 0
        self.started = False  # the sync body began
        self.ended = False  # the sync body reached its end (returned)
        self.cancel_sent = False
        self.outcome = "running"  # then "ok", "cancelled" or "error"
        self.value: Any = None

    def __repr__(self) -> str:
        how = "spawn" if self.spawned else "async_"
        return f"<call {self.id} {how} {self.kind}/{self.fate} {self.outcome}>"


class Stats:
    def __init__(self) -> None:
        self.calls = 0
        self.started = 0
        self.finally_ = 0
        self.cancelled = 0
        self.at_wake = 0  # cancellations made in the same turn as a wake-up
        self.completed = 0
        # sync bodies that returned, whose caller saw a cancellation (by kind/fate)
        self.ended_then_cancelled: dict[str, int] = {}
        self.stuck_waves = 0
        self.problems: list[str] = []


class Wave:
    """The shared state of one wave: the green lock and queue, the orders of their waiters."""

    def __init__(
        self,
        st: Stats,
        rng: random.Random,
        clock: Callable[[], float],
        cancel: Callable[[Call], None],
        soon: Callable[..., Any] | None,
    ) -> None:
        self.st = st
        self.rng = rng
        self.clock = clock
        self.cancel_fn = cancel
        self.soon = soon  # asyncio's call_soon: run at the next turn of the loop
        self.lock = green_threading.Lock()
        self.queue: green_queue.Queue[int] = green_queue.Queue(maxsize=4)
        self.holders = 0
        self.ctl_holds = False
        self.lock_order: list[Call] = []  # calls in lock.acquire, oldest first
        self.get_order: list[Call] = []
        self.put_order: list[Call] = []
        self.next_item = 0
        self.put_items: list[int] = []  # every item put (by bodies or the controller)
        self.got_items: list[int] = []  # every item taken out

    def cancel(self, call: Call, at_wake: bool = False) -> None:
        if call.cancel_sent:
            return
        call.cancel_sent = True
        if at_wake:
            self.st.at_wake += 1
        self.cancel_fn(call)

    def item(self) -> int:
        self.next_item += 1
        return self.next_item

    def cancel_woken(self, call: Call) -> None:
        """Cancel a call just woken: before the loop runs again, or from the next turn.

        From the next turn, the cancellation comes after the turn in which a
        native task would have run on (asyncio; under trio: always at once).
        """
        if self.soon is not None and self.rng.random() < 1 / 3:
            self.soon(self.cancel, call, True)
        else:
            self.cancel(call, at_wake=True)

    # Hand-offs: whoever releases the lock or moves an item cancels the waiter it
    # just woke if that waiter's fate says so.

    def release_lock(self) -> None:
        head = self.lock_order[0] if self.lock_order else None
        self.lock.release()
        if head is not None and head.fate == AT_WAKE:
            self.cancel_woken(head)

    def after_put(self) -> None:
        if self.get_order and self.get_order[0].fate == AT_WAKE:
            self.cancel_woken(self.get_order[0])

    def after_get(self) -> None:
        if self.put_order and self.put_order[0].fate == AT_WAKE:
            self.cancel_woken(self.put_order[0])

    # The controller's moves (run through async_: a green lock may have to wait).

    def ctl_lock(self) -> None:
        if self.ctl_holds:
            self.ctl_holds = False
            self.release_lock()
        elif self.lock.acquire(False):
            self.ctl_holds = True

    def ctl_put(self) -> None:
        if not self.queue.full():
            item = self.item()
            self.queue.put_nowait(item)
            self.put_items.append(item)
            self.after_put()

    def ctl_get(self) -> None:
        try:
            item = self.queue.get_nowait()
        except green_queue.Empty:
            return
        self.got_items.append(item)
        self.after_get()


# ---------------------------------------------------------------------------
# the sync bodies


def _op_recv(w: Wave, c: Call) -> Any:
    data = c.sock.recv(16)
    c.got += len(data)
    return data


def _op_sleep(w: Wave, c: Call) -> Any:
    green_time.sleep(max(0.0, c.instant - w.clock()))
    return "slept"


def _op_future(w: Wave, c: Call) -> Any:
    if isinstance(c.fut, asyncio.Future):
        return greenbridge.await_(c.fut)
    greenbridge.await_(c.fut.wait())  # a trio Event
    return c.id


def _op_lock(w: Wave, c: Call) -> Any:
    w.lock_order.append(c)
    try:
        w.lock.acquire()
    finally:
        w.lock_order.remove(c)
    try:
        w.holders += 1
        if w.holders != 1:
            w.st.problems.append(f"{c}: {w.holders} holders of the lock at once")
        green_time.sleep(0)  # hold it across a turn of the loop
    finally:
        w.holders -= 1
        w.release_lock()
    return "locked"


def _op_get(w: Wave, c: Call) -> Any:
    w.get_order.append(c)
    try:
        item = w.queue.get()
    finally:
        w.get_order.remove(c)
    c.got = item
    w.got_items.append(item)
    w.after_get()
    return item


def _op_put(w: Wave, c: Call) -> Any:
    item = w.item()
    w.put_order.append(c)
    try:
        w.queue.put(item)
    finally:
        w.put_order.remove(c)
    w.put_items.append(item)
    w.after_put()
    return "put"


OPS: dict[str, Callable[[Wave, Call], Any]] = {
    "recv": _op_recv,
    "sleep": _op_sleep,
    "future": _op_future,
    "lock": _op_lock,
    "get": _op_get,
    "put": _op_put,
}


def body(w: Wave, c: Call) -> Any:
    c.started = True
    w.st.started += 1
    try:
        if c.warm:
            green_time.sleep(0)
        value = OPS[c.kind](w, c)
        c.ended = True
        return value
    finally:
        w.st.finally_ += 1


def _expected(c: Call) -> Any:
    if c.kind == "recv":
        return b"x"
    if c.kind == "future":
        return c.id
    return {"sleep": "slept", "lock": "locked", "put": "put"}.get(c.kind)


# ---------------------------------------------------------------------------
# the plan of a wave


def _plan(rng: random.Random, st: Stats, kinds: tuple[str, ...], n: int, now: float) -> tuple[
    list[Call], list[float], list[tuple[float, str, Call | None]]
]:  # fmt: skip
    """The wave's calls, its instants, and its events (time, what, call), in time order."""
    instants = sorted(now + rng.uniform(0.2, 1.0) * WINDOW for _ in range(INSTANTS))
    calls: list[Call] = []
    events: list[tuple[float, str, Call | None]] = []
    for _ in range(n):
        st.calls += 1
        kind = rng.choice(kinds)
        fate = rng.choices(FATES, FATE_WEIGHTS)[0]
        c = Call(st.calls, kind, fate, spawned=rng.random() < 0.5, warm=rng.random() < 0.5)
        calls.append(c)
        t = now + rng.uniform(0.05, 1.0) * WINDOW
        if fate == TIMEOUT:
            c.instant = rng.choice(instants)
            continue  # its wake-up, if any, is made by the instant's hog
        c.instant = t
        if kind == "sleep" and fate == CANCEL and rng.random() < 0.5:
            c.instant = now + 3600  # only the cancellation ends it: its timer must go
        if fate == CANCEL:
            events.append((now + rng.uniform(0.0, 1.0) * WINDOW, "cancel", c))
        if kind in ("recv", "future"):
            events.append((t, "wake+cancel" if fate == AT_WAKE else "wake", c))
        elif kind == "sleep" and fate == AT_WAKE:
            events.append((t, "cancel@timer", c))
    # The controller also takes and releases the lock, and moves items in and out
    # of the queue, at random times.
    for _ in range(n // 6):
        move = rng.choice(("lock", "put", "get"))
        events.append((now + rng.uniform(0.0, 1.0) * WINDOW, move, None))
    events.sort(key=lambda e: e[0])
    return calls, instants, events


def _classify(st: Stats, c: Call) -> None:
    if c.outcome == "cancelled":
        st.cancelled += 1
        if c.ended:
            key = f"{c.kind}/{c.fate}"
            st.ended_then_cancelled[key] = st.ended_then_cancelled.get(key, 0) + 1
        if not c.cancel_sent and c.fate != TIMEOUT:
            st.problems.append(f"{c}: cancelled, though nobody cancelled it")
        if c.kind == "get" and c.ended:
            # asyncio.Queue.get never loses an item to a cancellation: the
            # item stays in the queue, or the getter returns it.
            st.problems.append(f"{c}: item {c.got} lost (returned by q.get, caller cancelled)")
    elif c.outcome == "ok":
        st.completed += 1
        expected = _expected(c)
        if c.kind != "get" and c.value != expected:
            st.problems.append(f"{c}: returned {c.value!r}, expected {expected!r}")
        if not c.ended:
            st.problems.append(f"{c}: completed but its sync body did not reach its end")
    else:
        st.problems.append(f"{c}: {c.outcome} {c.value!r}")


def _check_conservation(w: Wave, calls: list[Call]) -> None:
    st = w.st
    for c in calls:
        if c.kind == "recv":
            left = 0
            try:
                while True:
                    data = _std_recv(c.sock, 4096, socket.MSG_DONTWAIT)
                    if not data:
                        break
                    left += len(data)
            except BlockingIOError:
                pass
            if c.sent != c.got + left:
                st.problems.append(f"{c}: sent {c.sent} bytes, received {c.got}, {left} left")
    left_items = list(w.queue.queue)
    if sorted(w.put_items) != sorted(w.got_items + left_items):
        lost = sorted(set(w.put_items) - set(w.got_items + left_items))
        st.problems.append(
            f"queue: put {len(w.put_items)} items, got {len(w.got_items)}, "
            f"{len(left_items)} left (lost: {lost})"
        )
    if w.lock.locked() or w.lock._waiters:
        st.problems.append(f"lock: {w.lock!r} with {len(w.lock._waiters)} waiters left")
    q = w.queue
    for name in ("not_empty", "not_full", "all_tasks_done"):
        cond = getattr(q, name)
        if cond._waiters:
            st.problems.append(f"queue.{name}: {len(cond._waiters)} waiters left")
    if q.mutex.locked() or q.mutex._waiters:
        st.problems.append("queue.mutex: still held or waited on")


def _check_between_waves(st: Stats) -> int:
    """No worker greenlet outside the pool; return how many uvloop timers are pending.

    Between waves nothing of the last wave is referenced any more, so every
    live `_Worker` must be parked in a pool.  uvloop's loop keeps each pending
    TimerHandle alive through its open libuv timer.  Cancelled handles, and
    handles that fired in the loop iteration still running (their libuv timer
    is closed, but freed only at the end of the iteration), may linger a
    little: they are not pending.
    """
    gc.collect()
    workers = timers = 0
    for o in gc.get_objects():
        cls = type(o)
        if cls is _trampoline.Worker and not o.dead:
            workers += 1
        elif cls.__name__ == "TimerHandle" and cls.__module__ == "uvloop.loop":
            timers += not o.cancelled() and _uv_timer_open(o)
    pool = len(_trampoline.parked_workers())  # every per-depth pool of this thread
    if workers != pool:
        st.problems.append(f"between waves: {workers} live worker greenlets, {pool} in the pools")
    return timers


def _uv_timer_open(handle: object) -> bool:
    """Whether uvloop still holds `handle`'s libuv timer open (the handle is still due)."""
    refs = gc.get_referrers(handle)
    return any(type(r).__name__ == "UVTimer" and "closed=False" in repr(r) for r in refs)


def _uv_polls() -> int:
    """uvloop's open UVPoll handles: one per watched descriptor (closed ones may linger)."""
    return sum(
        1 for o in gc.get_objects() if type(o).__name__ == "UVPoll" and "closed=False" in repr(o)
    )


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def _hog(seconds: float) -> None:
    """Block the loop (a slow callback): timers and I/O falling due meanwhile meet in one turn."""
    _real_sleep(seconds)


def _report(name: str, st: Stats, elapsed: float) -> None:
    ended_then_cancelled = sum(st.ended_then_cancelled.values())
    print(
        f"\ncancel storm [{name}] seed={SEED}: calls={st.calls} started={st.started} "
        f"finally={st.finally_} completed={st.completed} cancelled={st.cancelled} "
        f"cancelled-at-wake-up={st.at_wake} ended-then-cancelled={ended_then_cancelled} "
        f"time={elapsed:.1f}s"
    )
    if st.ended_then_cancelled:
        print(f"  ended-then-cancelled by kind/fate: {sorted(st.ended_then_cancelled.items())}")
    problems = st.problems
    if st.finally_ != st.started:
        problems.append(f"{st.started} sync bodies started, {st.finally_} finally blocks ran")
    assert not problems, (
        f"seed {SEED} (GREENBRIDGE_STRESS_SEED={SEED} replays it): {len(problems)} problems:\n"
        + "\n".join(problems[:40])
    )


# ---------------------------------------------------------------------------
# asyncio and uvloop


def _aio_registrations(loop: asyncio.AbstractEventLoop) -> set[int]:
    """The descriptors asyncio's selector watches (uvloop: see the remove_reader checks)."""
    selector = getattr(loop, "_selector", None)
    return set(selector.get_map()) if selector is not None else set()


async def _aio_call(w: Wave, c: Call) -> Any:
    if c.fate == TIMEOUT and sys.version_info >= (3, 11):
        async with asyncio.timeout_at(c.instant):
            return await greenbridge.async_(body)(w, c)
    return await greenbridge.async_(body)(w, c)


async def _aio_wave(rng: random.Random, st: Stats, n: int) -> None:
    """Run one wave and check it; the caller checks what must be gone once it returned."""
    loop = asyncio.get_running_loop()
    base_fds = _aio_registrations(loop)
    uv = type(loop).__module__.startswith("uvloop")
    base_polls = _uv_polls() if uv else 0

    def cancel(c: Call) -> None:
        c.task.cancel()

    w = Wave(st, rng, loop.time, cancel, loop.call_soon)
    async_ctl = greenbridge.async_(lambda move: getattr(w, "ctl_" + move)())
    calls, instants, events = _plan(rng, st, AIO_KINDS, n, loop.time())
    for c in calls:
        if c.kind == "recv":
            c.sock, c.peer = green_socket.socketpair()
        elif c.kind == "future":
            c.fut = loop.create_future()
    await async_ctl("put")  # start with some items in the queue and the lock held
    await async_ctl("put")
    await async_ctl("lock")

    def wake(c: Call) -> None:
        if c.kind == "recv":
            if not c.sent:
                c.sent += c.peer.send(b"x")
        elif c.kind == "future" and not c.fut.done():
            c.fut.set_result(c.id)

    for c in calls:
        if c.spawned:
            c.task = greenbridge.spawn(body, w, c)
            if c.fate == TIMEOUT:
                c.outer = asyncio.ensure_future(
                    asyncio.wait_for(c.task, max(0.0, c.instant - loop.time()))
                )
        elif c.fate == TIMEOUT and sys.version_info < (3, 11):
            c.task = asyncio.ensure_future(
                asyncio.wait_for(_aio_call(w, c), max(0.0, c.instant - loop.time()))
            )
        else:
            c.task = asyncio.ensure_future(_aio_call(w, c))

    # At each instant a callback makes the wake-ups due then blocks the loop across
    # the instant: the timeouts, the sleeps' timers and those wake-ups (reader
    # callbacks, Future callbacks, timers) all run in the next turn.
    for instant in instants:
        mine = [c for c in calls if c.fate == TIMEOUT and c.instant == instant]

        def hog(mine: list[Call] = mine) -> None:
            for c in mine:
                wake(c)
            _hog(0.002)

        loop.call_at(instant - 0.001, hog)
        for c in mine:
            if c.kind == "future" and rng.random() < 0.5:
                loop.call_at(instant, wake, c)  # a timer at the very deadline instead

    for t, what, c in events:
        delay = t - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if c is None:
            await async_ctl(what)
        elif what == "cancel":
            w.cancel(c)
        elif what == "wake":
            wake(c)
        elif what == "wake+cancel":
            if rng.random() < 0.5:
                wake(c)
                w.cancel_woken(c)
            else:
                w.cancel(c, at_wake=True)
                wake(c)
        elif what == "cancel@timer":  # the sleep's timer and this one are due together
            loop.call_at(c.instant, w.cancel, c, True)
            loop.call_at(c.instant - 0.001, _hog, 0.002)
    await asyncio.sleep(max(0.0, max(instants) - loop.time()) + 0.002)

    # Drain: wake whatever still waits, so every call not cancelled can complete.
    tasks = [c.task for c in calls] + [c.outer for c in calls if c.outer is not None]
    deadline = loop.time() + HANG
    while not all(t.done() for t in tasks) and loop.time() < deadline:
        for c in calls:
            if not c.task.done():
                wake(c)
        if w.ctl_holds:
            await async_ctl("lock")
        # One item at a time, and only when no item (no room) is left: a getter
        # (putter) that keeps waiting while the queue holds an item (has room)
        # lost its wake-up.
        if w.queue.empty() and any(c.kind == "get" and not c.task.done() for c in calls):
            await async_ctl("put")
        if w.queue.full() and any(c.kind == "put" and not c.task.done() for c in calls):
            await async_ctl("get")
        await asyncio.sleep(0.001)
    stuck = [c for c in calls if not c.task.done()]
    if stuck:
        st.problems.append(
            f"{len(stuck)} calls still waiting {HANG:.0f}s after the storm (queue holds "
            f"{w.queue.qsize()} items, lock {'held' if w.lock.locked() else 'free'}): {stuck[:10]}"
        )
        st.stuck_waves += 1
        for c in stuck:  # clean up, to report the rest
            c.cancel_sent = True
            c.task.cancel()
        await asyncio.wait(tasks)
    if w.ctl_holds:
        await async_ctl("lock")
    for c in calls:
        # The call's own task tells its outcome: a spawned task may complete
        # while wait_for(), timing out in the same turn, raises TimeoutError
        # (natively too, on 3.12+); its result is still the task's.
        if c.task.cancelled() or isinstance(c.task.exception(), asyncio.TimeoutError):
            c.outcome = "cancelled"
        elif c.task.exception() is not None:
            c.outcome, c.value = "error", c.task.exception()
        else:
            c.outcome, c.value = "ok", c.task.result()
        if c.outer is not None and not c.outer.cancelled():
            c.outer.exception()  # retrieved
        _classify(st, c)
        if c.kind == "future" and c.started and c.outcome == "cancelled" and not c.fut.done():
            st.problems.append(f"{c}: cancelled, but the Future it awaited is still pending")
    _check_conservation(w, calls)

    reg = _hub._asyncio.registries.get(loop)
    if reg is not None and (reg.readers or reg.writers or reg.idle):
        st.problems.append(f"hub: left registered: {reg.readers} {reg.writers} {reg.idle}")
    if _hub._signals.waiting:
        st.problems.append(f"hub: {len(_hub._signals.waiting)} waits still recorded")
    if uv and _uv_polls() > base_polls:
        st.problems.append(f"uvloop: {_uv_polls() - base_polls} descriptors watched after a wave")
    for c in calls:
        if c.sock is not None:
            fd = c.sock.fileno()
            if loop.remove_reader(fd) or loop.remove_writer(fd):
                st.problems.append(f"{c}: descriptor {fd} still registered on the loop")
            c.sock.close()
            c.peer.close()
    fds = _aio_registrations(loop)
    if fds != base_fds:
        st.problems.append(f"selector: {sorted(fds - base_fds)} registered after the wave")
    scheduled = getattr(loop, "_scheduled", None)  # asyncio's loops: the timer heap
    if scheduled is not None and any(not h.cancelled() for h in scheduled):
        st.problems.append(f"{sum(not h.cancelled() for h in scheduled)} timers left pending")


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_cancel_storm_asyncio(loop_name: str) -> None:
    """The storm on asyncio's loop and on uvloop (green locks and queues included)."""
    aio: Backend = BACKENDS[loop_name]
    rng = random.Random(f"{SEED}-{loop_name}")
    st = Stats()

    async def main() -> None:
        timers, open_fds = _check_between_waves(st), _fd_count()
        while st.calls < CALLS and st.stuck_waves < STUCK_WAVES:
            await _aio_wave(rng, st, min(WAVE, CALLS - st.calls))
            if _check_between_waves(st) > timers:
                st.problems.append("uvloop: timers left pending after a wave")
            if _fd_count() > open_fds:
                st.problems.append(f"{_fd_count() - open_fds} descriptors left open after a wave")

    t0 = time.monotonic()
    aio.run(main)
    _check_between_waves(st)
    _report(loop_name, st, time.monotonic() - t0)


# ---------------------------------------------------------------------------
# trio


def test_cancel_storm_trio() -> None:
    """The storm on trio: green sleep, green socket recv, await_ of trio Events."""
    trio = pytest.importorskip("trio")
    rng = random.Random(f"{SEED}-trio")
    st = Stats()

    async def run_call(w: Wave, c: Call) -> None:
        try:
            with c.scope:
                c.value = await greenbridge.async_(body)(w, c)
                c.outcome = "ok"
        except Exception as exc:  # noqa: BLE001 - reported
            c.outcome, c.value = "error", exc
            return
        if c.scope.cancelled_caught:
            c.outcome = "cancelled"

    async def wave(n: int) -> None:
        base = trio.lowlevel.current_statistics()
        base_open = _fd_count()

        def cancel(c: Call) -> None:
            c.scope.cancel()

        w = Wave(st, rng, trio.current_time, cancel, None)
        calls, instants, events = _plan(rng, st, TRIO_KINDS, n, trio.current_time())
        for c in calls:
            c.scope = trio.CancelScope(deadline=c.instant if c.fate == TIMEOUT else math.inf)
            if c.kind == "recv":
                c.sock, c.peer = green_socket.socketpair()
            elif c.kind == "future":
                c.fut = trio.Event()

        def wake(c: Call) -> None:
            if c.kind == "recv":
                if not c.sent:
                    c.sent += c.peer.send(b"x")
            elif c.kind == "future":
                c.fut.set()

        async def hog(instant: float) -> None:
            mine = [c for c in calls if c.fate == TIMEOUT and c.instant == instant]
            await trio.sleep_until(instant - 0.001)
            for c in mine:
                wake(c)
            _hog(0.002)

        async def timer_cancel(c: Call) -> None:
            await trio.sleep_until(c.instant)
            w.cancel(c, at_wake=True)

        async with trio.open_nursery() as nursery:
            for c in calls:
                nursery.start_soon(run_call, w, c)
            for instant in instants:
                nursery.start_soon(hog, instant)
            for t, what, c in events:
                if c is None:
                    continue  # no green lock or queue under trio
                await trio.sleep_until(t)
                if what == "cancel":
                    w.cancel(c)
                elif what == "wake":
                    wake(c)
                elif what == "wake+cancel":
                    if rng.random() < 0.5:
                        wake(c)
                        w.cancel_woken(c)
                    else:
                        w.cancel(c, at_wake=True)
                        wake(c)
                elif what == "cancel@timer":
                    nursery.start_soon(timer_cancel, c)
            await trio.sleep_until(max(instants) + 0.002)
            with trio.move_on_after(HANG):
                while any(c.outcome == "running" for c in calls):
                    for c in calls:
                        if c.outcome == "running":
                            wake(c)
                    await trio.sleep(0.001)
            stuck = [c for c in calls if c.outcome == "running"]
            if stuck:
                st.problems.append(f"{len(stuck)} calls still waiting after the storm: {stuck}")
                st.stuck_waves += 1
                for c in stuck:
                    c.cancel_sent = True
                nursery.cancel_scope.cancel()
        for c in calls:
            _classify(st, c)
        _check_conservation(w, calls)
        for c in calls:
            if c.sock is not None:
                c.sock.close()
                c.peer.close()
        stats = trio.lowlevel.current_statistics()
        if stats.tasks_living != base.tasks_living:
            st.problems.append(f"trio: {stats.tasks_living - base.tasks_living} tasks left")
        for name in ("tasks_waiting_read", "tasks_waiting_write"):
            before = getattr(base.io_statistics, name, 0)
            after = getattr(stats.io_statistics, name, 0)
            if after != before:
                st.problems.append(f"trio: {name} {before} before the wave, {after} after")
        if stats.seconds_to_next_deadline != math.inf:
            st.problems.append("trio: a deadline is still pending after the wave")
        if _fd_count() > base_open:
            st.problems.append(f"{_fd_count() - base_open} descriptors left open")

    async def main() -> None:
        await trio.sleep(0.001)  # let trio's own tasks settle before the first baseline
        while st.calls < CALLS and st.stuck_waves < STUCK_WAVES:
            await wave(min(WAVE, CALLS - st.calls))
            _check_between_waves(st)

    t0 = time.monotonic()
    trio.run(main)
    _check_between_waves(st)
    _report("trio", st, time.monotonic() - t0)
