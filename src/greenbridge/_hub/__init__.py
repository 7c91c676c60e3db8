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

Where the calling code runs (`greenbridge._where.where`) decides how it waits:

1. Where it can suspend (a greenbridge worker, or an SQLAlchemy
   ``greenlet_spawn``): only this greenlet is suspended; the event loop keeps
   running.  asyncio and uvloop watch the descriptor with
   ``loop.add_reader``/``add_writer`` and wake the waiting greenlet from that
   callback (`_asyncio`); trio waits with
   ``trio.lowlevel.wait_readable``/``wait_writable`` (`_trio`).  Every
   registration is removed in ``finally``: on success, timeout, cancellation
   or error.
2. With no event loop running in this thread: the call really blocks, with
   the original ``select`` module, so green modules behave exactly like the
   stdlib ones outside a loop (`_blocking`).
3. With a loop running but the code not started by greenbridge:
   :class:`greenbridge.MissingBridge`, whose message names the fixes.

Several greenlets may wait on the same descriptor (for example one in
``select`` and one in ``recv``): the asyncio backend keeps one registration
per descriptor and wakes every waiter.  (trio allows one reader and one writer
per descriptor and raises ``trio.BusyResourceError`` otherwise.)  Call
:func:`notify_closing` before closing a descriptor others may wait on: they
wake with ``OSError(EBADF)``.  A signal handler installed by a green thread
interrupts that thread's wait, as a native one interrupts the main thread's
(`_signals`).

This module only dispatches; each backend lives in the file named for its
loop family, and the asyncio one has a single wait, which the green socket's
fast path (:func:`wait_socket`) enters without the classification.
"""

from __future__ import annotations

import math
import sys
import time as _time
from collections.abc import Iterable
from typing import Any

from greenlet import getcurrent

from .._errors import MissingBridge, missing_bridge
from .._trampoline import Worker
from .._where import ASYNCIO, NO_LOOP, TRIO, UNBRIDGED, Where, asyncio_loop, can_suspend, where
from . import _asyncio, _blocking, _trio
from ._signals import deliver_signal

__all__ = [
    "deliver_signal",
    "notify_closing",
    "share_turn",
    "sleep",
    "wait_any",
    "wait_owned",
    "wait_readable",
    "wait_socket",
    "wait_writable",
    "where_to_wait",
]

_monotonic = _time.monotonic
_aio_wait = _asyncio.wait
_aio_wait_owned = _asyncio.wait_owned
_aio_sleep = _asyncio.sleep_worker


def where_to_wait() -> Where:
    """`greenbridge._where.where`, minus ``UNBRIDGED``, which raises MissingBridge.

    Returns ``NO_LOOP`` (wait for real), ``ASYNCIO`` or ``TRIO`` (suspend the
    calling greenlet only).
    """
    place = where()
    if place is UNBRIDGED:
        raise _unbridged()
    return place


def _unbridged() -> MissingBridge:
    return missing_bridge(trio=asyncio_loop() is None)


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    timeout = float(timeout)
    if timeout < 0:
        timeout = 0.0
    return timeout


def _wait(
    readers: list[int], writers: list[int], owner: object, timeout: float | None, shield: bool
) -> bool:
    """Every wait on descriptors, but the fast path of `wait_socket`."""
    place = where()  # where_to_wait(), inlined: one frame less
    if place is UNBRIDGED:
        raise _unbridged()
    if place is NO_LOOP:
        return _blocking.wait(readers, writers, timeout)
    timeout = _check_timeout(timeout)
    if place is TRIO:
        return _trio.wait(readers, writers, timeout, shield)
    return _aio_wait(asyncio_loop(), getcurrent(), None, False, owner, timeout, (readers, writers))  # type: ignore[arg-type]


def _fd(fd: Any) -> int:
    return fd if isinstance(fd, int) else int(fd.fileno())


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
    return _wait([_fd(fd)], [], None, timeout, False)


def wait_writable(fd: Any, timeout: float | None = None) -> bool:
    """Wait until ``fd`` is writable; as :func:`wait_readable` otherwise."""
    return _wait([], [_fd(fd)], None, timeout, False)


def wait_any(
    readers: Iterable[int],
    writers: Iterable[int],
    timeout: float | None = None,
    *,
    shield: bool = False,
) -> bool:
    """Wait until any of ``readers`` is readable or any of ``writers`` writable.

    Returns True when one is ready (the caller checks which, e.g. with a
    zero-timeout ``select``), False when ``timeout`` passed first.  With no
    descriptors at all it just sleeps ``timeout`` (for ever when None) and
    returns False.  ``shield``: under trio, a cancellation of the caller's
    scope does not interrupt this wait (see `greenbridge._hub._trio.wait`);
    asyncio raises a cancellation only once, so there it changes nothing.
    """
    rs = list(readers)
    ws = list(writers)
    if not rs and not ws:
        where_to_wait()  # MissingBridge first, as for any wait
        if timeout is None:
            raise ValueError("wait_any() with no file descriptors needs a timeout")
        sleep(max(0.0, float(timeout)))
        return False
    return _wait(rs, ws, None, timeout, shield)


def wait_owned(owner: object, fd: int, readable: bool, timeout: float | None = None) -> bool:
    """Wait until ``fd``, which belongs to ``owner``, is readable/writable.

    As :func:`wait_readable` / :func:`wait_writable`.  ``owner`` is the
    object that owns the descriptor for its whole life (a socket, a database
    connection): consecutive waits by one owner may reuse the registration
    on the loop (see `greenbridge._hub._asyncio.Watch`).  Never pass an owner
    that can close its descriptor and open another one, nor one that closes
    it without calling :func:`notify_closing` first: the registration kept
    for it would outlive the descriptor, and a new one with the same number
    (opened by the code still running) would meet its key in asyncio's
    selector (``FileNotFoundError``, or a reader that never fires).
    psycopg2's connections close theirs unannounced, so its driver names no
    owner.
    """
    fds = [_fd(fd)]
    if readable:
        return _wait(fds, [], owner, timeout, False)
    return _wait([], fds, owner, timeout, False)


def wait_socket(sock: Any, fd: int, readable: bool, timeout: float | None = None) -> bool:
    """Wait until socket ``sock`` (descriptor ``fd``) is readable/writable.

    The green socket's entry point: as :func:`wait_owned` with ``sock`` as
    the owner, without the ``fileno()`` lookup.
    """
    current = getcurrent()
    if type(current) is Worker:
        loop = current.loop
        if loop is None:
            loop = current.loop = asyncio_loop()
        if loop is not None:
            # The common case, a worker on an asyncio loop, needs no
            # classification: straight into the wait, with one descriptor.
            if timeout is not None:
                timeout = _check_timeout(timeout)
            return _aio_wait_owned(loop, current, fd, readable, sock, timeout)
    if readable:
        return _wait([fd], [], sock, timeout, False)
    return _wait([], [fd], sock, timeout, False)


last_turn = [0.0]  # when share_turn() last gave the loop a turn


def share_turn() -> None:
    """Give the event loop a turn if none was given for ``sys.getswitchinterval()``.

    For calls that return at once without waiting (a ``select`` on ready
    descriptors): a loop of them would otherwise keep every other green thread
    from running, where OS threads would be preempted.  Does nothing when this
    code cannot suspend.
    """
    now = _monotonic()
    if now - last_turn[0] < sys.getswitchinterval() or not can_suspend():
        return
    place = where()
    if place is ASYNCIO:
        _asyncio.give_turn()
    elif place is TRIO:
        _trio.give_turn()
    last_turn[0] = _monotonic()


def sleep(seconds: Any, /) -> None:
    """Sleep ``seconds``: suspend this greenlet only, or block with no loop running.

    This is the green ``time.sleep`` itself (`greenbridge.green.time` exports
    it under its own name: no wrapper frame per call).
    ``sleep(0)`` gives the event loop one turn, so other tasks can run.
    Raises ``ValueError`` for a negative or NaN duration, as ``time.sleep``.
    """
    current = getcurrent()
    if type(current) is Worker and type(seconds) is float and seconds >= 0.0:
        loop = current.loop
        if loop is None:
            loop = current.loop = asyncio_loop()
        if loop is not None:
            # The common case (a green thread's time.sleep): straight into the
            # loop's sleeps, or one turn of the loop for 0.  (NaN fails
            # ``>= 0.0``: the checks below.)
            if seconds:
                _aio_sleep(loop, current, seconds)
            else:
                _aio_wait(loop, current, None, False, None, 0.0)
            return
    place = where()  # where_to_wait(), inlined: one frame less
    if place is UNBRIDGED:
        raise _unbridged()
    if place is NO_LOOP:
        _blocking.sleep(seconds)
        return
    if not isinstance(seconds, (int, float)):
        seconds = _coerce_seconds(seconds)
    if math.isnan(seconds):
        raise ValueError("Invalid value NaN (not a number)")
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    if place is TRIO:
        _trio.sleep(seconds)
        return
    loop = asyncio_loop()
    if type(current) is Worker and seconds > 0:
        _aio_sleep(loop, current, float(seconds))  # type: ignore[arg-type]
        return
    # A wait on no descriptor (0: one loop turn).
    _aio_wait(loop, current, None, False, None, float(seconds))  # type: ignore[arg-type]


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
    loop = asyncio_loop()
    if loop is None:
        _trio.notify_closing(fd)
    else:
        _asyncio.notify_closing(loop, fd)
