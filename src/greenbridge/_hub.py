"""The hub: the only place green code waits.

Green modules try an operation first and call in here only when it would
block (``EAGAIN``, ``EINPROGRESS``, SSL want-read/want-write).  Three
primitives:

* :func:`wait_readable` / :func:`wait_writable` wait until a file descriptor
  is ready and return ``True``, or return ``False`` when ``timeout`` seconds
  passed first.  They never raise on timeout: the caller turns ``False`` into
  the exception its stdlib counterpart raises (``socket.timeout`` for a
  socket, an empty list for ``select``...).
* :func:`wait_any` waits on several descriptors at once (``select``, ``poll``).
* :func:`sleep`.

Where the calling code runs decides how it waits:

1. Inside greenbridge (``greenbridge.has_portal()`` is true, or in an
   SQLAlchemy ``greenlet_spawn``): only this greenlet is suspended; the event
   loop keeps running.  asyncio and uvloop watch the descriptor with
   ``loop.add_reader``/``add_writer`` and a bare Future; trio with
   ``trio.lowlevel.wait_readable``/``wait_writable``.  Every registration is
   removed in ``finally``: on success, timeout, cancellation or error.
2. With no event loop running in this thread: the call really blocks, with
   the original ``select`` module, so green modules behave exactly like the
   stdlib ones outside a loop.
3. With a loop running but the code not started by greenbridge:
   :class:`greenbridge.MissingBridge`, whose message names the fixes.

Several greenlets may wait on the same descriptor (for example one in
``select`` and one in ``recv``): the asyncio backend keeps one registration
per descriptor and wakes every waiter.  (trio allows one reader and one writer
per descriptor and raises ``trio.BusyResourceError`` otherwise.)  Call
:func:`notify_closing` before closing a descriptor others may wait on: they
wake with ``OSError(EBADF)``.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import contextlib
import errno
import math
import os
import select as _select
import sys
import time as _time
import weakref
from collections.abc import Iterable
from typing import Any

from greenlet import getcurrent

from ._bridge import (
    _PARK,
    MissingBridge,
    _chain,
    _handled,
    _missing_message,
    _running_loop,
    _Worker,
    await_,
    park,
    wake,
)
from ._errors import UnsupportedLoop, unsupported_loop

__all__ = [
    "wait_readable",
    "wait_writable",
    "wait_any",
    "sleep",
    "notify_closing",
    "share_turn",
    "can_suspend",
    "UnsupportedLoop",
]

_get_running_loop = asyncio.get_running_loop
_running_asyncio_loop = asyncio.events._get_running_loop  # None when no loop runs
_original_sleep = _time.sleep
#: How long the green threads resumed by the hub's reader/writer callbacks
#: may run in one turn of an asyncio loop before the rest of the ready
#: descriptors wait for the next turn (see `_time_turns`).
TURN_SLICE = 0.02
_monotonic = _time.monotonic


def can_suspend() -> bool:
    """Return true when waiting here suspends only the calling greenlet."""
    current = getcurrent()
    return type(current) is _Worker or bool(
        getattr(current, "__sqlalchemy_greenlet_provider__", False)
    )


def _where() -> Any:
    """The running asyncio loop, ``"trio"``, or None when we must really block.

    Raises MissingBridge when a loop runs but this code cannot suspend.
    """
    if not can_suspend():
        running = _running_loop()
        if running is None:
            return None
        raise MissingBridge(_missing_message(running))
    try:
        return _get_running_loop()
    except RuntimeError:
        return "trio"


# ---------------------------------------------------------------------------
# asyncio / uvloop backend


class _Wait:
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
        if type(current) is _Worker:
            self.worker: _Worker | None = current
            self.fut: asyncio.Future[Any] | None = None
        else:
            self.worker = None
            self.fut = loop.create_future()
        self.armed = True
        # A signal delivered to this greenlet (see deliver_signal): it wins
        # over whatever wakes the wait first.
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

    def wait(self) -> Any:
        if self.worker is not None:
            return park()
        return await_(self.fut)  # type: ignore[arg-type]


def _outcome(value: Any) -> bool:
    """What a wait returns for the value it was woken with (an exception is raised)."""
    if value is True or value is False:
        return value
    raise value


class _Watch:
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

    __slots__ = ("loop", "reg", "table", "fd", "readable", "owner", "waiters", "skipped")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        reg: _Registry,
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
        self.waiters: list[_Wait] = []
        # True when fire() passed a readiness report on (see _Registry.turn_end):
        # the descriptor was ready, so a timeout of a waiter here reports ready.
        self.skipped = False

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
        try:
            waiters = self.waiters
            if len(waiters) == 1:
                waiter = waiters[0]
                worker = waiter.worker
                if worker is not None and waiter.armed and waiter.signal is None:
                    waiter.armed = False  # _Wait.wake(True), inlined: the hot path
                    wake(worker, True)
                else:
                    waiter.wake(True)
            else:
                # A woken worker runs here and leaves (or re-enters) the list.
                for waiter in waiters[:]:
                    waiter.wake(True)
        finally:
            reg.firing -= 1
            if reg.idle and not reg.firing:
                reg.sweep()

    def queue(self) -> None:
        """The reader/writer callback where it may not switch (uvloop): fire() soon.

        It runs in the loop's poll, before the ready queue, so it also starts
        a new turn for the time slices (see `_time_turns`).
        """
        self.reg.turn_end = -TURN_SLICE
        self.loop.call_soon(self.fire)

    def drop(self) -> None:
        if self.table.get(self.fd) is self:
            del self.table[self.fd]
        try:
            if self.readable:
                self.loop.remove_reader(self.fd)
            else:
                self.loop.remove_writer(self.fd)
        except (OSError, ValueError):  # the fd was closed under us
            pass


class _Registry:
    """Our registrations on one asyncio loop: fd -> watch."""

    __slots__ = ("readers", "writers", "direct", "firing", "idle", "turn_end")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.readers: dict[int, _Watch] = {}
        self.writers: dict[int, _Watch] = {}
        self.firing = 0  # > 0 while a watch's fire() runs (and the code it resumed)
        self.idle: list[_Watch] = []  # watches kept until the fire() returns
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

    def sweep(self) -> None:
        """Drop the watches kept by the last fire() that nobody waits on again."""
        idle = self.idle
        self.idle = []
        for watch in idle:
            if not watch.waiters and watch.table.get(watch.fd) is watch:
                watch.drop()


def _time_turns(loop: asyncio.AbstractEventLoop, reg: _Registry) -> None:
    """Make each poll of ``loop``'s selector give our callbacks a fresh time slice.

    asyncio runs every callback made ready by one poll before it polls again
    or looks at its timers.  With hundreds of ready sockets, each resuming a
    green thread that runs until its next wait, one turn of the loop can take
    tens of milliseconds, and every timer and other task waits that long.
    Here `_Watch.fire` passes on readiness reports once the green threads it
    resumed in this turn have run for `TURN_SLICE` seconds (counted from the
    turn's first fire, so at least one runs per turn whatever else the turn
    runs); the selector is level-triggered, so the next poll reports them
    again.  (Each report passed on still costs asyncio a callback: a slice
    much shorter than 20 ms made echo rounds at 1000 connections measurably
    slower.)  On uvloop `_Watch.queue` starts the turns.
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


_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Registry] = (
    weakref.WeakKeyDictionary()
)
_last: list[Any] = [None, None]  # [loop, registry]: one-entry cache, the common case


def _registry(loop: asyncio.AbstractEventLoop) -> _Registry:
    if _last[0] is loop:
        return _last[1]  # type: ignore[no-any-return]
    reg = _registries.get(loop)
    if reg is None:
        reg = _registries[loop] = _Registry(loop)
    _last[0] = loop
    _last[1] = reg
    return reg


# ---------------------------------------------------------------------------
# signals: a Python signal handler installed through the green ``signal`` module
# runs in the green thread that installed it (the stdlib runs handlers in the
# main thread, the only one allowed to install them).  When the signal arrives
# while the loop waits in its selector, the hub wakes that green thread out of
# its wait; the handler runs there and its exception is raised by the blocking
# call that was waiting (``recv``, ``select``, ``sleep``...); when the handler
# returns normally the wait resumes with what is left of its timeout (PEP 475).

_waiting: dict[Any, _Wait] = {}  # greenlet -> its wait in the hub


class _SignalArrived(BaseException):
    """Thrown into a hub wait: run ``handler(signum, frame)`` in the waiting greenlet."""

    def __init__(self, handler: Any, signum: int, frame: Any) -> None:
        super().__init__(signum)
        self.handler = handler
        self.signum = signum
        self.frame = frame


def deliver_signal(target: Any, handler: Any, signum: int, frame: Any) -> bool:
    """Make greenlet ``target``, waiting in the hub, run ``handler(signum, frame)``.

    Returns False (and does nothing) when ``target`` is not waiting in the hub
    on an asyncio loop; the caller then runs the handler where it is.
    """
    waiter = _waiting.get(target)
    if waiter is None or not waiter.armed or waiter.signal is not None:
        return False
    try:
        loop = _get_running_loop()
    except RuntimeError:
        return False
    waiter.signal = _SignalArrived(handler, signum, frame)
    # Wake it from the loop (this runs between two bytecodes of any greenlet);
    # that also ends the selector's wait, which restarts after a handler (PEP 475).
    loop.call_soon_threadsafe(waiter.wake, None)
    return True


def _register(
    loop: asyncio.AbstractEventLoop,
    reg: _Registry,
    fd: int,
    waiter: _Wait,
    readable: bool,
    owner: object = None,
) -> _Watch:
    table = reg.readers if readable else reg.writers
    watch = table.get(fd)
    if watch is not None:
        if watch.waiters or (owner is not None and watch.owner is owner):
            if not watch.waiters:
                watch.skipped = False
            watch.waiters.append(waiter)
            return watch
        watch.drop()  # kept for another owner: that descriptor may be gone
    watch = _Watch(loop, reg, fd, readable, owner)
    try:
        # (Where callbacks may not switch, see _Registry.direct: fire() at the
        # loop's next turn, through call_soon.)
        if reg.direct:
            if readable:
                loop.add_reader(fd, watch.fire)
            else:
                loop.add_writer(fd, watch.fire)
        elif readable:
            loop.add_reader(fd, watch.queue)
        else:
            loop.add_writer(fd, watch.queue)
    except NotImplementedError:
        raise unsupported_loop(loop) from None
    watch.waiters.append(waiter)
    table[fd] = watch
    return watch


def _unregister(watch: _Watch, waiter: _Wait) -> None:
    waiters = watch.waiters
    try:
        waiters.remove(waiter)
    except ValueError:
        return  # notify_closing() already dropped the registration
    if not waiters:
        if watch.owner is not None and watch.reg.firing:
            watch.reg.idle.append(watch)  # likely waited on again at once: see _Watch
        else:
            watch.drop()


def _time_out(waiter: _Wait, watches: list[_Watch]) -> None:
    """A wait's timeout expired: it returns False, or True if a descriptor was ready.

    (Ready but passed on by `_Watch.fire`, for the next turn of the loop: as
    for a native wait, readiness seen before the deadline wins.)
    """
    for watch in watches:
        if watch.skipped:
            waiter.wake(True)
            return
    waiter.wake(False)


def _aio_wait_any(
    loop: asyncio.AbstractEventLoop,
    readers: list[int],
    writers: list[int],
    owner: object,
    timeout: float | None,
) -> bool:
    """Wait on asyncio/uvloop until one descriptor is ready (``owner``: see `_Watch`)."""
    reg = _registry(loop)
    current = getcurrent()
    waiter = _Wait(loop, current)
    watches: list[_Watch] = []
    timer = None
    _waiting[current] = waiter
    try:
        for fd in readers:
            watches.append(_register(loop, reg, fd, waiter, True, owner))
        for fd in writers:
            watches.append(_register(loop, reg, fd, waiter, False, owner))
        if timeout is not None:
            timer = loop.call_later(timeout, _time_out, waiter, watches)
        value = waiter.wait()
    finally:
        waiter.armed = False
        del _waiting[current]
        if timer is not None:
            timer.cancel()
        for watch in watches:
            _unregister(watch, waiter)
    return _outcome(value)


def _aio_sleep(
    loop: asyncio.AbstractEventLoop, _a: None, _b: None, _c: None, seconds: float
) -> None:
    current = getcurrent()
    waiter = _Wait(loop, current)
    if seconds <= 0:
        timer: asyncio.Handle = loop.call_soon(waiter.wake, True)
    else:
        timer = loop.call_later(seconds, waiter.wake, True)
    _waiting[current] = waiter
    try:
        value = waiter.wait()
    finally:
        waiter.armed = False
        del _waiting[current]
        timer.cancel()
    _outcome(value)


# ---------------------------------------------------------------------------
# trio backend


async def _trio_wait(fd: int, readable: bool, timeout: float | None) -> bool:
    import trio

    wait = trio.lowlevel.wait_readable if readable else trio.lowlevel.wait_writable
    if timeout is None:
        await wait(fd)
        return True
    with trio.move_on_after(timeout) as scope:
        await wait(fd)
    return not scope.cancelled_caught


async def _trio_wait_any(readers: list[int], writers: list[int], timeout: float | None) -> bool:
    import trio

    async def one(fd: int, readable: bool, scope: trio.CancelScope) -> None:
        if readable:
            await trio.lowlevel.wait_readable(fd)
        else:
            await trio.lowlevel.wait_writable(fd)
        scope.cancel()

    with trio.move_on_after(math.inf if timeout is None else timeout) as outer:
        async with trio.open_nursery() as nursery:
            for fd in readers:
                nursery.start_soon(one, fd, True, nursery.cancel_scope)
            for fd in writers:
                nursery.start_soon(one, fd, False, nursery.cancel_scope)
    return not outer.cancelled_caught


def _trio_notify_closing(fd: int) -> None:
    trio = sys.modules.get("trio")
    if trio is None:
        return
    with contextlib.suppress(RuntimeError):  # not in trio
        trio.lowlevel.notify_closing(fd)


# ---------------------------------------------------------------------------
# really blocking (no loop in this thread)


def _block_any(readers: list[int], writers: list[int], timeout: float | None) -> bool:
    poll = getattr(_select, "poll", None)
    if poll is None:  # pragma: no cover - Windows
        r, w, x = _select.select(readers, writers, readers + writers, timeout)
        return bool(r or w or x)
    p = poll()
    masks: dict[int, int] = {}
    for fd in readers:
        masks[fd] = masks.get(fd, 0) | _select.POLLIN | _select.POLLPRI
    for fd in writers:
        masks[fd] = masks.get(fd, 0) | _select.POLLOUT
    for fd, mask in masks.items():
        p.register(fd, mask)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return bool(p.poll(ms))


# ---------------------------------------------------------------------------
# public primitives


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    timeout = float(timeout)
    if timeout < 0:
        timeout = 0.0
    return timeout


def _interruptible(fn: Any, loop: Any, a: Any, b: Any, c: Any, timeout: float | None) -> Any:
    """``fn(loop, a, b, c, timeout)``, running signal handlers delivered to this greenlet.

    A handler's exception propagates; when it returns, the wait goes on with
    what is left of ``timeout``.  (A fixed number of arguments: a call with
    ``*args`` would add a C-level frame under every suspended wait, which each
    greenlet switch then copies.)
    """
    if timeout is None:
        while True:
            try:
                return fn(loop, a, b, c, None)
            except _SignalArrived as sig:
                sig.handler(sig.signum, sig.frame)
    deadline = _monotonic() + timeout
    while True:
        try:
            return fn(loop, a, b, c, timeout)
        except _SignalArrived as sig:
            sig.handler(sig.signum, sig.frame)
            timeout = max(0.0, deadline - _monotonic())


def _wait(fd: Any, readable: bool, timeout: float | None, owner: object = None) -> bool:
    if not isinstance(fd, int):
        fd = int(fd.fileno())
    where = _where()
    if where is None:
        return _block_any([fd], [], timeout) if readable else _block_any([], [fd], timeout)
    timeout = _check_timeout(timeout)
    if where == "trio":
        return await_(_trio_wait(fd, readable, timeout))
    fds = [fd]
    readers, writers = (fds, []) if readable else ([], fds)
    return _interruptible(_aio_wait_any, where, readers, writers, owner, timeout)  # type: ignore[no-any-return]


def wait_owned(owner: object, fd: int, readable: bool, timeout: float | None = None) -> bool:
    """Wait until ``fd``, which belongs to ``owner``, is readable/writable.

    As :func:`wait_readable` / :func:`wait_writable`.  ``owner`` is the
    object that owns the descriptor for its whole life (a socket, a database
    connection): consecutive waits by one owner may reuse the registration
    on the loop (see `_Watch`).  Never pass an owner that can close its
    descriptor and open another one, nor one that closes it without calling
    :func:`notify_closing` first: the registration kept for it would outlive
    the descriptor, and a new one with the same number (opened by the code
    still running) would meet its key in asyncio's selector
    (``FileNotFoundError``, or a reader that never fires).  psycopg2's
    connections close theirs unannounced, so its driver names no owner.
    """
    return _wait(fd, readable, timeout, owner)


def wait_socket(sock: Any, fd: int, readable: bool, timeout: float | None = None) -> bool:
    """Wait until socket ``sock`` (descriptor ``fd``) is readable/writable.

    The green socket's entry point: as :func:`wait_readable` /
    :func:`wait_writable`, without the ``fileno()`` lookup.
    """
    if timeout is None:
        current = getcurrent()
        if type(current) is _Worker:
            loop = _running_asyncio_loop()
            if loop is not None:
                # The common case, in one frame: a worker on an asyncio loop
                # waiting with no timeout (the general path does the same).
                try:
                    return _park_on(loop, current, fd, readable, sock)
                except _SignalArrived as sig:
                    sig.handler(sig.signum, sig.frame)  # then wait again, as below
    return _wait(fd, readable, timeout, sock)


def _park_on(
    loop: asyncio.AbstractEventLoop, current: _Worker, fd: int, readable: bool, owner: object
) -> bool:
    """`_aio_wait_any` on one descriptor, for a worker, with no timeout."""
    waiter = _Wait(loop, current)
    watch = _register(loop, _registry(loop), fd, waiter, readable, owner)
    _waiting[current] = waiter
    handled = _handled()
    try:
        value = current.parent.switch(_PARK)  # type: ignore[union-attr]  # park()
    except BaseException as exc:
        if handled is not None:
            _chain(exc, handled)
        raise
    finally:
        waiter.armed = False
        del _waiting[current]
        _unregister(watch, waiter)
    if value is True:
        return True
    return _outcome(value)


def wait_readable(fd: Any, timeout: float | None = None) -> bool:
    """Wait until ``fd`` is readable (or has an error/hang-up to report).

    Args:
        fd: a file descriptor, or an object with ``fileno()``.
        timeout: seconds to wait at most; None waits for ever.

    Returns:
        True when ``fd`` is ready, False when ``timeout`` passed first.  It
        does not raise on timeout: the caller raises what its stdlib
        counterpart raises.  Cancellation of the calling task arrives as the
        loop's exception (``asyncio.CancelledError``, trio's ``Cancelled``).
    """
    return _wait(fd, True, timeout)


def wait_writable(fd: Any, timeout: float | None = None) -> bool:
    """Wait until ``fd`` is writable; as :func:`wait_readable` otherwise."""
    return _wait(fd, False, timeout)


def wait_any(readers: Iterable[int], writers: Iterable[int], timeout: float | None = None) -> bool:
    """Wait until any of ``readers`` is readable or any of ``writers`` writable.

    Returns True when one is ready (the caller checks which, e.g. with a
    zero-timeout ``select``), False when ``timeout`` passed first.  With no
    descriptors at all it just sleeps ``timeout`` (for ever when None) and
    returns False.
    """
    rs = list(readers)
    ws = list(writers)
    where = _where()
    if not rs and not ws:
        if timeout is None:
            raise ValueError("wait_any() with no file descriptors needs a timeout")
        sleep(max(0.0, float(timeout)))
        return False
    if where is None:
        return _block_any(rs, ws, timeout)
    timeout = _check_timeout(timeout)
    if where == "trio":
        return await_(_trio_wait_any(rs, ws, timeout))
    return _interruptible(_aio_wait_any, where, rs, ws, None, timeout)  # type: ignore[no-any-return]


_turn = [0.0]  # when share_turn() last gave the loop a turn


def share_turn() -> None:
    """Give the event loop a turn if none was given for ``sys.getswitchinterval()``.

    For calls that return at once without waiting (a ``select`` on ready
    descriptors): a loop of them would otherwise keep every other green thread
    from running, where OS threads would be preempted.  Does nothing when this
    code cannot suspend.
    """
    now = _monotonic()
    if now - _turn[0] < sys.getswitchinterval() or not can_suspend():
        return
    where = _where()
    if where == "trio":
        import trio

        await_(trio.sleep(0))
    elif where is not None:
        await_(asyncio.sleep(0))
    _turn[0] = _monotonic()


def sleep(seconds: Any) -> None:
    """Sleep ``seconds``: suspend this greenlet only, or block with no loop running.

    ``sleep(0)`` gives the event loop one turn, so other tasks can run.
    Raises ``ValueError`` for a negative or NaN duration, as ``time.sleep``.
    """
    where = _where()
    if where is None:
        _original_sleep(seconds)
        return
    if not isinstance(seconds, (int, float)):
        seconds = _coerce_seconds(seconds)
    if math.isnan(seconds):
        raise ValueError("Invalid value NaN (not a number)")
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    if where == "trio":
        import trio

        await_(trio.sleep(seconds))
        return
    _interruptible(_aio_sleep, where, None, None, None, float(seconds))  # 0: one loop turn


def _coerce_seconds(seconds: Any) -> float:
    try:
        return float(seconds.__float__()) if hasattr(seconds, "__float__") else seconds.__index__()
    except AttributeError:
        raise TypeError(
            f"'{type(seconds).__name__}' object cannot be interpreted as an integer or float"
        ) from None


def notify_closing(fd: int) -> None:
    """Wake every greenlet waiting on ``fd`` with ``OSError(EBADF)``; call before closing it.

    Also drops our registration on the loop, so a later descriptor with the
    same number starts clean.  Does nothing when nobody waits.
    """
    try:
        loop = _get_running_loop()
    except RuntimeError:
        _trio_notify_closing(fd)
        return
    reg = _registries.get(loop)
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
