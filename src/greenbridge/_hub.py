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

from ._bridge import _MISSING_MESSAGE, MissingBridge, _running_loop, _Worker, await_

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
_original_sleep = _time.sleep
_monotonic = _time.monotonic


class UnsupportedLoop(RuntimeError):
    """The running event loop cannot watch file descriptors (e.g. Windows' Proactor loop)."""


_UNSUPPORTED_MESSAGE = (
    "the running event loop ({loop!r}) cannot watch file descriptors "
    "(loop.add_reader is not implemented), so green I/O cannot wait on it. "
    "Use a selector-based loop: asyncio.SelectorEventLoop (on Windows set "
    "asyncio.WindowsSelectorEventLoopPolicy()), or uvloop, or trio."
)


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
        if _running_loop() is None:
            return None
        raise MissingBridge(_MISSING_MESSAGE)
    try:
        return _get_running_loop()
    except RuntimeError:
        return "trio"


# ---------------------------------------------------------------------------
# asyncio / uvloop backend


class _Watch:
    """One ``add_reader``/``add_writer`` registration of ours and the futures waiting on it.

    Removed as soon as its last waiter leaves (in ``finally``: on success,
    timeout, cancellation or error), or by :func:`notify_closing`.  (Keeping a
    socket's registration across waits saves two ``epoll_ctl`` calls per wait,
    but measured only ~9% on the echo benchmark, and a descriptor closed behind
    our back would leave a stale registration: not worth it.)
    """

    __slots__ = ("loop", "table", "fd", "readable", "waiters")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        table: dict[int, _Watch],
        fd: int,
        readable: bool,
    ) -> None:
        self.loop = loop
        self.table = table
        self.fd = fd
        self.readable = readable
        self.waiters: list[asyncio.Future[bool]] = []

    def fire(self) -> None:
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(True)

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

    __slots__ = ("readers", "writers")

    def __init__(self) -> None:
        self.readers: dict[int, _Watch] = {}
        self.writers: dict[int, _Watch] = {}


_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Registry] = (
    weakref.WeakKeyDictionary()
)
_last: list[Any] = [None, None]  # [loop, registry]: one-entry cache, the common case


def _registry(loop: asyncio.AbstractEventLoop) -> _Registry:
    if _last[0] is loop:
        return _last[1]  # type: ignore[no-any-return]
    reg = _registries.get(loop)
    if reg is None:
        reg = _registries[loop] = _Registry()
    _last[0] = loop
    _last[1] = reg
    return reg


def _time_out(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


# ---------------------------------------------------------------------------
# signals: a Python signal handler installed through the green ``signal`` module
# runs in the green thread that installed it (the stdlib runs handlers in the
# main thread, the only one allowed to install them).  When the signal arrives
# while the loop waits in its selector, the hub wakes that green thread out of
# its wait; the handler runs there and its exception is raised by the blocking
# call that was waiting (``recv``, ``select``, ``sleep``...); when the handler
# returns normally the wait resumes with what is left of its timeout (PEP 475).

_waiting: dict[Any, asyncio.Future[bool]] = {}  # greenlet -> the future it waits on


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
    fut = _waiting.get(target)
    if fut is None or fut.done():
        return False
    fut.set_exception(_SignalArrived(handler, signum, frame))
    # The selector restarts its wait after a handler (PEP 475): wake it.
    fut.get_loop().call_soon_threadsafe(_noop)
    return True


def _noop() -> None:
    pass


def _register(
    loop: asyncio.AbstractEventLoop,
    table: dict[int, _Watch],
    fd: int,
    fut: asyncio.Future[bool],
    readable: bool,
) -> _Watch:
    watch = table.get(fd)
    if watch is not None:
        watch.waiters.append(fut)
        return watch
    watch = _Watch(loop, table, fd, readable)
    try:
        if readable:
            loop.add_reader(fd, watch.fire)
        else:
            loop.add_writer(fd, watch.fire)
    except NotImplementedError:
        raise UnsupportedLoop(_UNSUPPORTED_MESSAGE.format(loop=loop)) from None
    watch.waiters.append(fut)
    table[fd] = watch
    return watch


def _unregister(watch: _Watch, fut: asyncio.Future[bool]) -> None:
    waiters = watch.waiters
    try:
        waiters.remove(fut)
    except ValueError:
        return  # notify_closing() already dropped the registration
    if not waiters:
        watch.drop()


def _aio_wait(
    loop: asyncio.AbstractEventLoop,
    fd: int,
    readable: bool,
    timeout: float | None,
) -> bool:
    reg = _registry(loop)
    fut: asyncio.Future[bool] = loop.create_future()
    watch = _register(loop, reg.readers if readable else reg.writers, fd, fut, readable)
    timer = None if timeout is None else loop.call_later(timeout, _time_out, fut)
    current = getcurrent()
    _waiting[current] = fut
    try:
        return await_(fut)
    finally:
        del _waiting[current]
        if timer is not None:
            timer.cancel()
        _unregister(watch, fut)


def _aio_wait_any(
    loop: asyncio.AbstractEventLoop,
    readers: list[int],
    writers: list[int],
    timeout: float | None,
) -> bool:
    reg = _registry(loop)
    fut: asyncio.Future[bool] = loop.create_future()
    watches: list[_Watch] = []
    timer = None
    current = getcurrent()
    _waiting[current] = fut
    try:
        for fd in readers:
            watches.append(_register(loop, reg.readers, fd, fut, True))
        for fd in writers:
            watches.append(_register(loop, reg.writers, fd, fut, False))
        if timeout is not None:
            timer = loop.call_later(timeout, _time_out, fut)
        return await_(fut)
    finally:
        del _waiting[current]
        if timer is not None:
            timer.cancel()
        for watch in watches:
            _unregister(watch, fut)


def _aio_sleep(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    if seconds <= 0:
        return
    fut: asyncio.Future[bool] = loop.create_future()
    timer = loop.call_later(seconds, _time_out, fut)
    current = getcurrent()
    _waiting[current] = fut
    try:
        await_(fut)
    finally:
        del _waiting[current]
        timer.cancel()


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


def _interruptible(fn: Any, loop: Any, timeout: float | None, *args: Any) -> Any:
    """``fn(loop, *args, timeout)``, running signal handlers delivered to this greenlet.

    A handler's exception propagates; when it returns, the wait goes on with
    what is left of ``timeout``.
    """
    if timeout is None:
        while True:
            try:
                return fn(loop, *args, None)
            except _SignalArrived as sig:
                sig.handler(sig.signum, sig.frame)
    deadline = _monotonic() + timeout
    while True:
        try:
            return fn(loop, *args, timeout)
        except _SignalArrived as sig:
            sig.handler(sig.signum, sig.frame)
            timeout = max(0.0, deadline - _monotonic())


def _wait(fd: Any, readable: bool, timeout: float | None) -> bool:
    if not isinstance(fd, int):
        fd = int(fd.fileno())
    where = _where()
    if where is None:
        return _block_any([fd], [], timeout) if readable else _block_any([], [fd], timeout)
    timeout = _check_timeout(timeout)
    if where == "trio":
        return await_(_trio_wait(fd, readable, timeout))
    return _interruptible(_aio_wait, where, timeout, fd, readable)  # type: ignore[no-any-return]


def wait_socket(sock: Any, fd: int, readable: bool, timeout: float | None = None) -> bool:
    """Wait until socket ``sock`` (descriptor ``fd``) is readable/writable.

    The green socket's entry point: as :func:`wait_readable` /
    :func:`wait_writable`, without the ``fileno()`` lookup.
    """
    return _wait(fd, readable, timeout)


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
    return _interruptible(_aio_wait_any, where, timeout, rs, ws)  # type: ignore[no-any-return]


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
    if seconds <= 0:
        await_(asyncio.sleep(0))  # one trip round the loop
        return
    _interruptible(_aio_sleep, where, float(seconds))


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
        for fut in waiters:
            if not fut.done():
                fut.set_exception(OSError(errno.EBADF, os.strerror(errno.EBADF)))
