"""The hub's asyncio (and uvloop) backend: waits woken by the loop's callbacks.

A wait registers the descriptors with ``loop.add_reader``/``add_writer``
(one `Watch` per descriptor and direction, shared by every greenlet waiting
there) and, with a timeout, a timer; whichever fires first wakes the `Wait`.
A greenbridge worker parks (see `greenbridge._bridge.park`) and the reader
callback resumes it on the spot; other code that can suspend (an SQLAlchemy
greenlet) waits on a Future instead.  `wait` is the general wait (a sleep
is a wait on no descriptor); the green socket's fast path (`wait_owned`) and
a worker's sleep (`sleep_worker`, whose deadline goes into the loop's
`Timers` instead of a timer of its own) are `wait` specialised for their
case.  Every registration is removed in its ``finally``: on success,
timeout, cancellation or error.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import contextlib
import contextvars
import errno
import heapq
import math
import os
import select
import time as _time
import weakref
from collections.abc import Iterable
from typing import Any

from greenlet import getcurrent

# The park protocol and the trampoline's worker type (the lead rewires this
# block when they move out of _bridge).
from .._bridge import await_
from .._errors import unsupported_loop
from .._park import PARK, wake
from .._trampoline import Pending, Worker, chain_thrown, handled_exception
from ._signals import SignalArrived, waiting

__all__ = [
    "TURN_SLICE",
    "Registry",
    "Wait",
    "Watch",
    "Timers",
    "give_turn",
    "notify_closing",
    "registries",
    "registry",
    "sleep_worker",
    "wait",
    "wait_owned",
]

# Why `wait` switches to the driver itself instead of calling `park()` (the
# same switch, with the same chaining of a thrown exception): the call costs
# a frame and a getcurrent() on every wait of the green socket's fast path.
# Counted with callgrind (machine instructions, repeatable to a few hundred)
# on two green threads exchanging one byte over a socketpair, per round trip
# (two waits): 102.3k before the hub was split, 103.1k with this wait, 104.7k
# with park() called, i.e. park() added 1.5 %.

#: How long the green threads resumed by the hub's reader/writer callbacks
#: may run in one turn of an asyncio loop before the rest of the ready
#: descriptors wait for the next turn (see `_time_turns`).
TURN_SLICE = 0.02
#: How many descriptors must be registered on an asyncio selector loop before
#: new registrations go into the hub's own epoll (see `Registry.register_inner`);
#: below half as many, its registrations go back to the loop and it is closed.
INNER_AT = 16
_monotonic = _time.monotonic
_epoll = getattr(select, "epoll", None)
_EPOLLIN = getattr(select, "EPOLLIN", 1)
_EPOLLOUT = getattr(select, "EPOLLOUT", 4)
_NOT_EPOLLOUT = ~_EPOLLOUT
_NOT_EPOLLIN = ~_EPOLLIN


class Wait:
    """One hub wait, woken by a loop callback.

    ``wake(value)`` (a reader, writer or timer callback) makes the wait
    return ``value`` (True: ready, False: timed out, an exception: raised);
    the first call wins, later ones (and calls after the wait ended) do
    nothing.  A greenbridge worker parks, and a wake from a loop callback
    resumes it on the spot (see `greenbridge._bridge.wake`): no Future, no
    task wake-up.  Other code that can suspend (an SQLAlchemy greenlet)
    waits on a Future instead.
    """

    __slots__ = ("worker", "fut", "armed", "signal")

    def __init__(self, loop: asyncio.AbstractEventLoop, current: Any) -> None:
        if type(current) is Worker:
            self.worker: Worker | None = current
            self.fut: asyncio.Future[Any] | None = None
        else:
            self.worker = None
            self.fut = loop.create_future()
        self.armed = True
        # A signal delivered to this greenlet (see _signals.deliver_signal):
        # it wins over whatever wakes the wait first.
        self.signal: BaseException | None = None

    def wake(self, value: Any) -> None:
        if self.armed:
            self.armed = False
            if self.signal is not None:
                value = self.signal
            if self.worker is not None:
                wake(self.worker, value)
            elif not self.fut.done():  # type: ignore[union-attr]
                self.fut.set_result(value)  # type: ignore[union-attr]


def _outcome(value: Any) -> bool:
    """What a wait returns for the value it was woken with (an exception is raised)."""
    if value is True or value is False:
        return value
    raise value


class Watch:
    """One ``add_reader``/``add_writer`` registration of ours and the waits on it.

    Removed when its last waiter leaves (in ``finally``: on success, timeout,
    cancellation or error), or by :func:`notify_closing`.  One exception saves
    two ``epoll_ctl`` calls (and asyncio's bookkeeping) per wait in the common
    request/response pattern: when the waits are on behalf of an *owner* (a
    green socket, a database connection) and the last one leaves while a
    ``fire`` of this loop is running, the watch stays registered until that
    ``fire`` returns, because the code it resumed usually waits on the same
    descriptor again before it suspends.  Only a wait by the same owner reuses
    it, and an owner cannot close its descriptor and get a new one with the
    same number (a green socket also calls :func:`notify_closing`).
    """

    __slots__ = (
        "loop",
        "reg",
        "table",
        "fd",
        "readable",
        "owner",
        "waiters",
        "skipped",
        "inner",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        reg: Registry,
        fd: int,
        readable: bool,
        owner: object,
    ) -> None:
        self.loop = loop
        self.reg = reg
        self.table = reg.readers if readable else reg.writers
        self.fd = fd
        self.readable = readable
        self.owner = owner
        self.waiters: list[Wait] = []
        # True when fire() passed a readiness report on (see Registry.turn_end):
        # the descriptor was ready, so a timeout of a waiter here reports ready.
        self.skipped = False
        # Registered in the registry's own epoll (see Registry.epoll), not
        # with the loop's add_reader/add_writer.
        self.inner = False

    def fire(self) -> None:
        reg = self.reg
        now = _monotonic()
        end = reg.turn_end
        if end <= 0.0:
            reg.turn_end = now - end  # the first fire of this turn: its time slice starts
        elif now > end:
            # This turn of the loop has run green threads for its time slice:
            # leave the rest to the next turn (the selector is level-triggered,
            # so its next poll reports this descriptor again), and timers and
            # other callbacks get their turn meanwhile.
            self.skipped = True
            return
        self.skipped = False
        reg.firing += 1
        outer = reg.fired
        reg.fired = self
        try:
            waiters = self.waiters
            if len(waiters) == 1:
                waiter = waiters[0]
                worker = waiter.worker
                if worker is not None and waiter.armed and waiter.signal is None:
                    waiter.armed = False  # Wait.wake(True), inlined: the hot path
                    wake(worker, True)
                else:
                    waiter.wake(True)
            else:
                # A woken worker runs here and leaves (or re-enters) the list.
                for waiter in waiters[:]:
                    waiter.wake(True)
        finally:
            reg.fired = outer
            reg.firing -= 1
            # The watch that fired, left by its waiter and not waited on
            # again (the common case reuses it without the idle list).
            if not self.waiters and self.owner is not None and self.table.get(self.fd) is self:
                if reg.firing:
                    reg.idle.append(self)
                else:
                    self.drop()
            if reg.idle and not reg.firing:
                reg.sweep()

    def queue(self) -> None:
        """The reader/writer callback where it may not switch (uvloop): fire() soon.

        It runs in the loop's poll, before the ready queue, so the first one
        of a poll starts a new turn for the time slices (see `_time_turns`)
        and schedules one callback that fires every watch queued by this poll
        (`Registry.fire_queued`), in the order they were reported: one
        ``call_soon`` per poll rather than one per ready descriptor.
        """
        reg = self.reg
        queued = reg.queued
        if not queued:
            reg.turn_end = -TURN_SLICE
            self.loop.call_soon(reg.fire_queued)
        queued.append(self)

    def drop(self) -> None:
        if self.table.get(self.fd) is self:
            del self.table[self.fd]
            if self.inner:
                self.reg.inner_drop(self)
                return
        elif self.inner:
            return  # (dropped already)
        try:
            if self.readable:
                self.loop.remove_reader(self.fd)
            else:
                self.loop.remove_writer(self.fd)
        except (OSError, ValueError):  # the fd was closed under us
            pass
        if self.reg.epoll is not None:  # (its last registration left while this one stayed)
            self.reg.settle_inner()


#: How far ahead of the loop's clock a deadline counts as due, as asyncio's
#: own timers (``BaseEventLoop`` reads the same clock's resolution).
_RESOLUTION = _time.get_clock_info("monotonic").resolution
_heappush = heapq.heappush
_heappop = heapq.heappop


class Timers:
    """The sleeps of workers on one loop: a heap of deadlines, one loop timer for them.

    asyncio keeps its timers in a heap of ``TimerHandle`` objects ordered by
    a Python ``__lt__``: a sleep through ``call_later`` costs a handle (and
    a Context copy), and about log2(n) Python calls to push and to pop it
    among n timers, which made it the largest cost of a sleep among
    thousands of sleeping green threads.  Here a sleep puts its `Wait` in
    ``due[when]`` (the waits with that deadline, in the order they slept),
    and a new deadline into a heap of floats, compared in C; the loop holds
    one timer, for the earliest deadline.  When it fires, every sleep due by
    then (as asyncio counts due: before the clock plus its resolution) is
    woken, in deadline order; sleeps that begin meanwhile wait for the next
    firing, as a timer made by a callback waits for the loop's next turn.
    So a sleep ends in the turn of the loop where its own timer would have
    ended it; only its order among other timers due in that same turn may
    differ.  A sleep that ends another way (a signal, a cancellation) leaves
    its `Wait` disarmed, which a firing skips; `forget` counts those and
    drops them all once they are most of what is left.

    It holds no reference to its loop (the registry it lives in is a value
    of a weak dictionary keyed by the loop): the loop comes as an argument.
    """

    __slots__ = ("heap", "due", "handle", "armed_at", "waits", "dead", "plain_clock")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.heap: list[float] = []  # the deadlines in ``due``
        self.due: dict[float, list[Wait]] = {}
        # The loop's timer, for armed_at: weakly, as the loop holds it while it is
        # scheduled, and it holds the loop, which must not outlive its last
        # reference through this registry (a value of a weak dictionary).
        self.handle: weakref.ref[asyncio.TimerHandle] | None = None
        self.armed_at = math.inf
        self.waits = 0  # the waits in ``due``
        self.dead = 0  # how many of them are disarmed (at most: see forget)
        # Whether loop.time() is time.monotonic(), which then saves a call.
        self.plain_clock = type(loop).time is asyncio.BaseEventLoop.time

    def add(self, loop: asyncio.AbstractEventLoop, when: float, waiter: Wait) -> None:
        """Wake ``waiter`` with False at loop time ``when`` (unless disarmed by then)."""
        self.waits += 1
        waits = self.due.get(when)
        if waits is not None:
            waits.append(waiter)
            return
        self.due[when] = [waiter]
        _heappush(self.heap, when)
        if when < self.armed_at:
            self.arm(loop, when)

    def arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Arm the loop's timer for ``when``, the new earliest deadline."""
        self._cancel()
        self.armed_at = when
        self.handle = weakref.ref(loop.call_at(when, self.fire, loop))

    def _cancel(self) -> None:
        """Cancel the loop's timer, if one is armed."""
        ref = self.handle
        if ref is not None:
            self.handle = None
            handle = ref()
            if handle is not None:
                handle.cancel()

    def forget(self, when: float) -> None:
        """A sleep due at ``when`` ended before it (its Wait is disarmed): drop it some time.

        Once the disarmed waits are most of them, they all go at once.  (A
        wait woken by a signal as `fire` woke it was counted here although
        fire had popped it: the count may be too high, never too low, and
        the sweep counts again.)  A disarmed earliest deadline goes at once,
        so that the loop's timer is never left armed for sleeps that all
        ended, as a cancelled sleep's own timer would not be.
        """
        self.dead += 1
        if self.dead >= self.waits or (self.dead > 64 and self.dead * 2 > self.waits):
            due = {}
            waits = 0
            for deadline, waiting_then in self.due.items():
                live = [waiter for waiter in waiting_then if waiter.armed]
                if live:
                    due[deadline] = live
                    waits += len(live)
            self.due = due
            self.heap = list(due)
            heapq.heapify(self.heap)
            self.waits = waits
            self.dead = 0
        elif self.heap and when == self.heap[0]:
            self._drop_ended()
        if not self.heap:  # nobody left to wake
            self._cancel()
            self.armed_at = math.inf

    def _drop_ended(self) -> None:
        """Drop the earliest deadlines whose sleeps all ended.

        The loop's timer stays armed for the old earliest one (it then
        finds nothing due and arms itself for the next): cheaper than a
        new timer each time, and never left armed once nobody sleeps.
        """
        heap = self.heap
        due = self.due
        while heap:
            waits = due[heap[0]]
            for waiter in waits:
                if waiter.armed:
                    return
            del due[_heappop(heap)]
            self.waits -= len(waits)
            self.dead = max(0, self.dead - len(waits))

    def fire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop's timer: wake every sleep due now, and arm it for the next one."""
        fired_at = self.armed_at
        self.handle = None
        self.armed_at = math.inf
        heap = self.heap
        due = self.due
        end = loop.time() + _RESOLUTION
        if end <= fired_at:
            # The loop fired it by its own rounding (uvloop counts milliseconds):
            # whatever was due by then is due now.
            end = math.nextafter(fired_at, math.inf)
        batches = []
        while heap and heap[0] < end:
            waits = due.pop(_heappop(heap))
            self.waits -= len(waits)
            batches.append(waits)
        if heap:
            self._drop_ended()
        if heap:
            when = heap[0]
            self.armed_at = when
            self.handle = weakref.ref(loop.call_at(when, self.fire, loop))
        for index, waits in enumerate(batches):
            try:
                for waiter in waits:
                    if not waiter.armed:  # its sleep ended meanwhile (forget() counted it)
                        if self.dead:
                            self.dead -= 1
                        continue
                    worker = waiter.worker
                    if worker is not None and waiter.signal is None:
                        waiter.armed = False  # Wait.wake(False), inlined: the hot path
                        drv = worker.drv
                        if drv is not None and type(drv) is not Pending:
                            # A green thread with no task (greenbridge._bare's Run):
                            # what wake() would call, without wake()'s frame.
                            drv.resume(worker, False)  # type: ignore[union-attr]
                        else:
                            wake(worker, False)
                    else:
                        waiter.wake(False)
            except BaseException:
                # (The loop reports it.)  The others due still wake, at its next turn.
                for rest in batches[index:]:
                    for waiter in rest:
                        if waiter.armed:
                            self.add(loop, fired_at, waiter)
                raise


class Registry:
    """Our registrations on one asyncio loop: fd -> watch."""

    __slots__ = (
        "readers",
        "writers",
        "direct",
        "firing",
        "fired",
        "idle",
        "queued",
        "turn_end",
        "timers",
        "epoll",
        "inner",
        "loop",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.readers: dict[int, Watch] = {}
        self.writers: dict[int, Watch] = {}
        self.timers = Timers(loop)  # the sleeps of workers (see sleep_worker)
        self.firing = 0  # > 0 while a watch's fire() runs (and the code it resumed)
        self.idle: list[Watch] = []  # watches kept until the fire() returns
        self.fired: Watch | None = None  # the watch whose fire() runs (the innermost)
        self.queued: list[Watch] = []  # reported by this poll, to fire (see Watch.queue)
        # Whether a reader/writer callback may switch into a waiting greenlet
        # on the spot.  asyncio's selector loops run these callbacks from their
        # ready queue, after the poll.  uvloop runs them inside libuv's poll,
        # which keeps a pointer to its event array, on the C stack, in the loop
        # (to forget events of descriptors closed meanwhile): a greenlet running
        # on that stack region and stopping a watch would write into its own
        # stack.  There the callback defers the wake-up to the ready queue.
        self.direct = isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)
        # When the green threads resumed by our reader/writer callbacks in this
        # turn of the loop have had their time slice (see _time_turns); before
        # the turn's first fire(), minus the length of the slice.
        self.turn_end = math.inf
        if self.direct:
            _time_turns(loop, self)
        # Once many descriptors wait here (`INNER_AT`), the new registrations
        # go into an epoll of our own, which alone is registered with the loop
        # (see `register_inner`); ``inner`` counts them.  None: not in use.
        # (Half as many, and they go back to the loop: `settle_inner`.)
        self.epoll: Any = None
        self.inner = 0
        # (For the epoll's own registration; a registry holds no loop otherwise.)
        self.loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def fire_queued(self) -> None:
        """Fire the watches `Watch.queue` queued (uvloop), in turn."""
        queued = self.queued
        self.queued = []
        for watch in queued:
            watch.fire()

    def register_inner(self, loop: asyncio.AbstractEventLoop, watch: Watch) -> bool:
        """Register ``watch`` in our own epoll; False where that cannot be done.

        Only where callbacks may switch (`direct`): the epoll's callback
        fires the watches on the spot.

        asyncio's selector loop reports each ready descriptor through Python
        code: a selector key looked up, a ``Handle`` queued and run, a
        Context entered.  With many descriptors ready in one poll, most of a
        green round trip's instructions outside the green thread went there.
        Our epoll is registered with the loop once; its reader callback
        (`poll_inner`) polls it and fires the ready watches itself.  With few
        descriptors the second poll costs more than it saves (counted with
        callgrind: see docs/green-io.md), hence `INNER_AT`.
        """
        epoll = self.epoll
        if epoll is None:
            if _epoll is None:  # (not Linux)
                return False
            epoll = self.epoll = _epoll()
            self.loop = weakref.ref(loop)
            # (A fresh Context: the callback's Handle keeps no green thread's.)
            contextvars.Context().run(loop.add_reader, epoll.fileno(), self.poll_inner)
        fd = watch.fd
        other = (self.writers if watch.readable else self.readers).get(fd)
        mask = _EPOLLIN if watch.readable else _EPOLLOUT
        try:
            if other is not None and other.inner:
                epoll.modify(fd, _EPOLLIN | _EPOLLOUT)
            else:
                epoll.register(fd, mask)
        except (OSError, ValueError):  # the loop's own registration says why, or copes
            if not self.inner:
                self.close_inner()
            return False
        watch.inner = True
        self.inner += 1
        return True

    def inner_drop(self, watch: Watch) -> None:
        """Unregister ``watch`` (gone from its table) from our epoll."""
        watch.inner = False
        self.inner -= 1
        fd = watch.fd
        epoll = self.epoll
        other = (self.writers if watch.readable else self.readers).get(fd)
        try:
            if other is not None and other.inner:
                epoll.modify(fd, _EPOLLOUT if watch.readable else _EPOLLIN)
            else:
                epoll.unregister(fd)
        except (OSError, ValueError):  # the fd was closed under us
            pass
        self.settle_inner()

    def settle_inner(self) -> None:
        """Stop using our epoll once few descriptors wait here (fewer than half `INNER_AT`)."""
        total = len(self.readers) + len(self.writers)
        if not total or 2 * total < INNER_AT:
            self.close_inner()

    def close_inner(self) -> None:
        """Close our epoll; the watches still in it go back to the loop's own registrations."""
        epoll, ref = self.epoll, self.loop
        self.epoll = self.loop = None
        loop = None if ref is None else ref()
        if loop is not None and loop.is_closed():
            loop = None
        try:
            if self.inner:
                for table in (self.readers, self.writers):
                    for watch in table.values():
                        if watch.inner:
                            _back_to_loop(loop, watch)
            if loop is not None:
                loop.remove_reader(epoll.fileno())
        finally:
            self.inner = 0
            epoll.close()

    def poll_inner(self) -> None:
        """Our epoll is ready: fire the watches of the descriptors it reports."""
        epoll = self.epoll
        if epoll is None:  # pragma: no cover - closed by a callback of this turn
            return
        readers, writers = self.readers, self.writers
        for fd, events in epoll.poll(0):
            # As the selectors module: an error or hang-up wakes both directions.
            stale = True
            if events & _NOT_EPOLLOUT:
                watch = readers.get(fd)
                if watch is not None and watch.inner:
                    stale = False
                    watch.fire()
            if events & _NOT_EPOLLIN:
                watch = writers.get(fd)
                if watch is not None and watch.inner:
                    stale = False
                    watch.fire()
            if stale and self.epoll is epoll:
                # Nobody waits on it here (its watch left without telling us):
                # a level-triggered report would come back at every turn.
                with contextlib.suppress(OSError):
                    epoll.unregister(fd)

    def sweep(self) -> None:
        """Drop the watches kept by the last fire() that nobody waits on again."""
        idle = self.idle
        self.idle = []
        for watch in idle:
            if not watch.waiters and watch.table.get(watch.fd) is watch:
                watch.drop()


def _on_loop(loop: asyncio.AbstractEventLoop, watch: Watch) -> None:
    """Register ``watch`` with ``loop`` itself, its callback firing it on the spot."""
    if watch.readable:
        loop.add_reader(watch.fd, watch.fire)
    else:
        loop.add_writer(watch.fd, watch.fire)


def _back_to_loop(loop: asyncio.AbstractEventLoop | None, watch: Watch) -> None:
    """Register with ``loop`` itself a watch that was in the registry's epoll (None: closed)."""
    watch.inner = False
    if loop is not None:
        with contextlib.suppress(OSError, ValueError):  # closed under us: as on the loop
            _on_loop(loop, watch)


def _time_turns(loop: asyncio.AbstractEventLoop, reg: Registry) -> None:
    """Make each poll of ``loop``'s selector give our callbacks a fresh time slice.

    asyncio runs every callback made ready by one poll before it polls again
    or looks at its timers.  With hundreds of ready sockets, each resuming a
    green thread that runs until its next wait, one turn of the loop can take
    tens of milliseconds, and every timer and other task waits that long.
    Here `Watch.fire` passes on readiness reports once the green threads it
    resumed in this turn have run for `TURN_SLICE` seconds (counted from the
    turn's first fire, so at least one runs per turn whatever else the turn
    runs); the selector is level-triggered, so the next poll reports them
    again.  (Each report passed on still costs asyncio a callback: a slice
    much shorter than 20 ms made echo rounds at 1000 connections measurably
    slower.)  On uvloop `Watch.queue` starts the turns.
    """
    selector = getattr(loop, "_selector", None)
    select = getattr(selector, "select", None)
    if select is None:
        return

    def timed_select(timeout: float | None = None) -> Any:
        events = select(timeout)
        reg.turn_end = -TURN_SLICE  # a new turn: its slice starts at its first fire()
        return events

    selector.select = timed_select  # type: ignore[union-attr]


#: loop -> our registrations on it.
registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Registry] = (
    weakref.WeakKeyDictionary()
)


def _no_loop() -> None:
    return None


# [a weak reference to a loop, its registry]: a one-entry cache, the common case.
# Weak, so that the last loop that waited here can be collected once closed and
# dropped (its registry, which holds no loop when nothing waits, stays until
# another loop waits).
_last: list[Any] = [_no_loop, None]


def registry(loop: asyncio.AbstractEventLoop) -> Registry:
    """Our registrations on ``loop`` (created on first use)."""
    if _last[0]() is loop:
        return _last[1]  # type: ignore[no-any-return]
    reg = registries.get(loop)
    if reg is None:
        reg = registries[loop] = Registry(loop)
    _last[0] = weakref.ref(loop)
    _last[1] = reg
    return reg


def _register(
    loop: asyncio.AbstractEventLoop,
    reg: Registry,
    fd: int,
    waiter: Wait,
    readable: bool,
    owner: object = None,
) -> Watch:
    table = reg.readers if readable else reg.writers
    watch = table.get(fd)
    if watch is not None:
        if watch.waiters or (owner is not None and watch.owner is owner):
            if not watch.waiters:
                watch.skipped = False
            watch.waiters.append(waiter)
            return watch
        watch.drop()  # kept for another owner: that descriptor may be gone
    watch = Watch(loop, reg, fd, readable, owner)
    try:
        # (Where callbacks may not switch, see Registry.direct: fire() at the
        # loop's next turn, through call_soon.)
        if reg.direct:
            many = reg.epoll is not None or len(reg.readers) + len(reg.writers) >= INNER_AT
            if not (many and reg.register_inner(loop, watch)):
                _on_loop(loop, watch)
        elif readable:
            loop.add_reader(fd, watch.queue)
        else:
            loop.add_writer(fd, watch.queue)
    except NotImplementedError:
        raise unsupported_loop(loop) from None
    watch.waiters.append(waiter)
    table[fd] = watch
    return watch


def _unregister(watch: Watch, waiter: Wait) -> None:
    waiters = watch.waiters
    try:
        waiters.remove(waiter)
    except ValueError:
        return  # notify_closing() already dropped the registration
    if not waiters:
        reg = watch.reg
        if watch.owner is not None and reg.firing:
            if watch is not reg.fired:  # (that one fire() checks itself)
                reg.idle.append(watch)  # likely waited on again at once: see Watch
        else:
            watch.drop()


def _time_out(waiter: Wait, watch: Watch | None, watches: list[Watch] | None) -> None:
    """A wait's timeout expired: it returns False, or True if a descriptor was ready.

    (Ready but passed on by `Watch.fire`, for the next turn of the loop: as
    for a native wait, readiness seen before the deadline wins.)
    """
    if watch is not None and watch.skipped:
        waiter.wake(True)
        return
    if watches is not None:
        for other in watches:
            if other.skipped:
                waiter.wake(True)
                return
    waiter.wake(False)


def wait(
    loop: asyncio.AbstractEventLoop,
    current: Any,
    fd: int | None,
    readable: bool,
    owner: object,
    timeout: float | None,
    more: tuple[Iterable[int], Iterable[int]] | None = None,
) -> bool:
    """Wait until a descriptor is ready (True) or ``timeout`` passed (False).

    The backend's only wait, for greenlet ``current`` (see `Wait`), on ``fd``
    (readable or writable) and/or on the ``(readers, writers)`` in ``more``
    (``select``, ``poll``); with neither it sleeps ``timeout`` seconds (0:
    one turn of the loop).  ``owner``: see `Watch`.  A cancellation thrown
    in is raised.  A signal handler delivered to ``current`` (it wakes the
    wait with a `greenbridge._hub._signals.SignalArrived`) runs here after
    the clean-up; when it returns, the wait goes on with what is left of
    ``timeout`` (PEP 475).

    ``fd`` is the fast path, a parameter rather than a copy: the common wait
    (a green socket's, one descriptor) costs no list, no loop and no timer.
    """
    deadline = None if timeout is None else _monotonic() + timeout
    while True:
        waiter = Wait(loop, current)
        watch: Watch | None = None
        watches: list[Watch] | None = None
        timer: asyncio.Handle | None = None
        value: Any = None
        waiting[current] = waiter
        try:
            if fd is not None:
                watch = _register(loop, registry(loop), fd, waiter, readable, owner)
            if more is not None:
                watches = []
                reg = registry(loop)
                for rfd in more[0]:
                    watches.append(_register(loop, reg, rfd, waiter, True, owner))
                for wfd in more[1]:
                    watches.append(_register(loop, reg, wfd, waiter, False, owner))
            if timeout is not None:
                if watch is None and watches is None and timeout > 0:
                    # A sleep: nothing can be ready, the timer's wake is the answer.
                    timer = loop.call_later(timeout, waiter.wake, False)
                elif timeout > 0 or watch is not None or watches:
                    timer = loop.call_later(timeout, _time_out, waiter, watch, watches)
                else:
                    # sleep(0): resumed at the loop's next turn, after the callbacks
                    # already due (a zero timer would run after that turn's I/O).
                    timer = loop.call_soon(waiter.wake, True)
            if waiter.worker is not None:
                # park(), inlined: the one place the hub does it (see below).
                handled = handled_exception()
                current.since = _monotonic()  # for dump_stacks
                try:
                    value = current.parent.switch(PARK)
                except BaseException as exc:
                    if handled is not None:
                        chain_thrown(exc, handled)
                    raise
            else:
                value = await_(waiter.fut)  # type: ignore[arg-type]
        finally:
            waiter.armed = False
            del waiting[current]
            # (A sleep woken with True/False was woken by its timer, which has run:
            # cancelling it would only cost three Python calls.)
            if timer is not None and not (
                watch is None and watches is None and (value is True or value is False)
            ):
                timer.cancel()
            if watch is not None:
                _unregister(watch, waiter)
            if watches is not None:
                for each in watches:
                    _unregister(each, waiter)
        if value is True:
            return True
        if type(value) is not SignalArrived:
            return _outcome(value)
        value.run()  # after the clean-up; its exception propagates
        if deadline is not None:
            timeout = max(0.0, deadline - _monotonic())


_new_wait = object.__new__


def wait_owned(
    loop: asyncio.AbstractEventLoop,
    worker: Worker,
    fd: int,
    readable: bool,
    owner: object,
    timeout: float | None = None,
) -> bool:
    """`wait` for a worker on one descriptor of ``owner``: the green socket's hot path.

    What `wait` does for that case (``timeout``: a number >= 0 or None), with
    the calls it makes inlined: `Wait` built without its ``__init__`` frame
    (3.11 does not specialize a call to a class), the registry's one-entry
    cache, and the reuse of the owner's `Watch` (`_register`/`_unregister`
    serve the other cases).  Counted with callgrind on two green threads
    exchanging 64 bytes over a socketpair, per round trip (two waits):
    108.2k instructions through `wait` and 97.2k here (asyncio's selector
    loop), 86.1k and 75.5k on uvloop; see docs/green-io.md.
    """
    deadline = None if timeout is None else _monotonic() + timeout
    while True:
        waiter = _new_wait(Wait)
        waiter.worker = worker
        waiter.fut = None
        waiter.armed = True
        waiter.signal = None
        reg = _last[1] if _last[0]() is loop else registry(loop)
        watch = (reg.readers if readable else reg.writers).get(fd)
        timer = None
        waiting[worker] = waiter
        try:
            if watch is not None and watch.owner is owner:
                waiters = watch.waiters
                if not waiters:
                    watch.skipped = False
                waiters.append(waiter)
            else:
                watch = None
                watch = _register(loop, reg, fd, waiter, readable, owner)
            if timeout is not None:
                timer = loop.call_later(timeout, _time_out, waiter, watch, None)
            handled = handled_exception()
            worker.since = _monotonic()  # for dump_stacks
            try:
                value = worker.parent.switch(PARK)  # type: ignore[union-attr]
            except BaseException as exc:
                if handled is not None:
                    chain_thrown(exc, handled)
                raise
        finally:
            waiter.armed = False
            del waiting[worker]
            if timer is not None:
                timer.cancel()
            if watch is not None:  # _unregister(), inlined
                waiters = watch.waiters
                if len(waiters) == 1 and waiters[0] is waiter:
                    waiters.clear()
                    if watch.owner is not None and reg.firing:
                        if watch is not reg.fired:  # (that one fire() checks itself)
                            reg.idle.append(watch)
                    else:
                        watch.drop()
                else:
                    _unregister(watch, waiter)
        if value is True:
            return True
        if type(value) is not SignalArrived:
            return _outcome(value)
        value.run()  # after the clean-up; its exception propagates
        if deadline is not None:
            timeout = max(0.0, deadline - _monotonic())


def sleep_worker(loop: asyncio.AbstractEventLoop, worker: Worker, seconds: float) -> None:
    """`wait` for a worker that sleeps ``seconds`` (> 0): the green ``time.sleep``.

    What `wait` does for a sleep, with its deadline in the loop's `Timers`
    rather than a ``call_later`` of its own.  A signal handler delivered
    meanwhile runs here, and the sleep goes on until the same deadline (PEP
    475); a cancellation thrown in is raised.
    """
    reg = _last[1] if _last[0]() is loop else registry(loop)
    timers = reg.timers
    deadline = (_monotonic() if timers.plain_clock else loop.time()) + seconds
    while True:
        waiter = _new_wait(Wait)
        waiter.worker = worker
        waiter.fut = None
        waiter.armed = True
        waiter.signal = None
        value: Any = None
        # timers.add(loop, deadline, waiter), inlined: the hot path
        timers.waits += 1
        waits = timers.due.get(deadline)
        if waits is not None:
            waits.append(waiter)
        else:
            timers.due[deadline] = [waiter]
            _heappush(timers.heap, deadline)
            if deadline < timers.armed_at:
                timers.arm(loop, deadline)
        waiting[worker] = waiter
        try:
            # greenbridge._park.park(), inlined as in wait_owned: the hot path.
            handled = handled_exception()
            worker.since = _monotonic()  # for dump_stacks
            try:
                value = worker.parent.switch(PARK)  # type: ignore[union-attr]
            except BaseException as exc:
                if handled is not None:
                    chain_thrown(exc, handled)
                raise
        finally:
            waiter.armed = False
            del waiting[worker]
            if value is not False:  # not woken by timers.fire(): still in there
                timers.forget(deadline)
        if value is False or value is True:
            return
        if type(value) is not SignalArrived:
            _outcome(value)  # raises it
            return
        value.run()  # after the clean-up; its exception propagates


def give_turn() -> None:
    """Let the loop run one turn (its other tasks and callbacks) before going on."""
    current = getcurrent()
    if type(current) is Worker:
        # As sleep(0): park until the loop's next turn.  (A green thread with
        # no task would need one to await asyncio.sleep(0): see greenbridge._bare.)
        loop = asyncio.get_running_loop()
        wait(loop, current, None, False, None, 0.0)
        return
    await_(asyncio.sleep(0))


def notify_closing(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wake the waits on ``fd`` with ``OSError(EBADF)`` and drop our registrations of it."""
    reg = registries.get(loop)
    if reg is None:
        return
    for table in (reg.readers, reg.writers):
        watch = table.get(fd)
        if watch is None:
            continue
        watch.drop()
        waiters = watch.waiters[:]
        watch.waiters.clear()
        for waiter in waiters:
            # Woken from a callback of its own: this may run inside a task.
            loop.call_soon(waiter.wake, OSError(errno.EBADF, os.strerror(errno.EBADF)))
