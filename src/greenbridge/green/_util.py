"""What the green modules share: the re-export of their stdlib module, timeouts, child waits.

Every green module starts as a copy of its stdlib module's namespace
(:func:`reexport`) and then replaces the blocking parts; the stdlib functions
it keeps but that call a replaced name are rebound to the green module with
:func:`greenbridge._patcher.rebind`.  The blocking parts all have the same
shape: try the operation, and when it would block, wait through the hub and
try again, within the caller's timeout.  :func:`waits` is that timeout;
:func:`wait_fd` and :func:`wait_child` are the waits the ``os`` and
``subprocess`` modules share.

Nothing here is public API; the names have no underscore so that the green
modules can share them (see the package's rule on private names).
"""

from __future__ import annotations

import itertools
import stat
import time
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import missing_bridge
from .._hub import sleep, wait_readable, wait_writable
from .._patcher import original, rebind
from .._where import Where, asyncio_loop, where

if TYPE_CHECKING:
    import os as _os
    import select as _select
else:
    _os = original("os")
    _select = original("select")

__all__ = [
    "ON_A_LOOP",
    "PIPE_BUF",
    "no_loop",
    "open_pidfd",
    "pollable",
    "rebinder",
    "reexport",
    "star_names",
    "until_ready",
    "wait_child",
    "wait_fd",
    "waits",
]

_T = TypeVar("_T")
_A = TypeVar("_A")
_monotonic = time.monotonic

#: A write of at most this many bytes to a pipe reported writable cannot block.
PIPE_BUF = int(getattr(_select, "PIPE_BUF", 512))


def reexport(namespace: dict[str, Any], std: types.ModuleType) -> None:
    """Make a green module's ``namespace`` a copy of the stdlib module ``std``'s.

    Every name but the dunders is copied (private ones too: stdlib code and
    tests reach for them); the green module then replaces what blocks.
    ``__all__`` is the stdlib's (what ``from std import *`` gives: its
    ``__all__``, else its public names), so a star import of the green module
    gives the same names; ``__doc__`` is the stdlib's, so ``help()`` reads as
    for the module it replaces (the green module's own docstring is for the
    reader of its source).
    """
    for name in dir(std):
        if not name.startswith("__"):
            namespace[name] = getattr(std, name)
    namespace["__all__"] = star_names(std)
    if std.__doc__:
        namespace["__doc__"] = std.__doc__


def rebinder(namespace: dict[str, Any]) -> Callable[[Any], Any]:
    """`greenbridge._patcher.rebind` for one green module's ``namespace`` (its ``globals()``).

    ``rebinder(globals())(fn)`` is the stdlib function ``fn`` looking its
    globals up in the green module, so that the names it calls (``socket``,
    ``Popen``, ``waitpid``...) are the green ones.
    """

    def rebind_here(fn: Any) -> Any:
        return rebind(fn, namespace)

    return rebind_here


def star_names(std: types.ModuleType) -> list[str]:
    """The names ``from std import *`` binds: its ``__all__``, else its public names."""
    public = getattr(std, "__all__", None)
    if public is None:
        public = [name for name in dir(std) if not name.startswith("_")]
    return list(public)


#: Where the caller suspends on a running loop (`greenbridge._where.where`):
#: there a green function waits through the hub, elsewhere it is the stdlib's.
ON_A_LOOP = (Where.ASYNCIO, Where.TRIO)


def no_loop() -> bool:
    """True when no event loop runs in this thread: do the stdlib's blocking call.

    False when the caller can suspend on the loop that runs (wait through the
    hub); raises :class:`greenbridge.MissingBridge` when a loop runs but the
    caller cannot suspend, since waiting there would stop the loop.
    """
    here = where()
    if here is Where.UNBRIDGED:
        raise missing_bridge(trio=asyncio_loop() is None)
    return here is Where.NO_LOOP


# ---------------------------------------------------------------------------
# timeouts


def _countdown(deadline: float) -> Iterator[float]:
    while True:
        remaining = deadline - _monotonic()
        if remaining <= 0:
            return
        yield remaining


def waits(timeout: float | None) -> Iterator[float | None]:
    """The time left for each wait within ``timeout`` seconds from now (None: no limit).

    Each step yields the seconds left (a positive number), or None for ever
    when ``timeout`` is None; it stops once the time is up.  The retry loops
    of the green modules read::

        for remaining in waits(timeout):
            if not wait_readable(fd, remaining):
                break
            ...try again; return on success
        raise <the stdlib's timeout error>

    One iterator bounds a whole call that waits several times (``sendall``).
    Where a loop tries before it waits, ``next(it, 0.0)`` gives 0.0 once the
    time is up.  The deadline is taken now, not at the first step.
    """
    if timeout is None:
        return itertools.repeat(None)  # a C iterator: nothing added to a wait for ever
    return _countdown(_monotonic() + timeout)


# ---------------------------------------------------------------------------
# descriptors (os, subprocess)

_POLLABLE = (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR)


def pollable(fd: int) -> bool:
    """Can the loop watch ``fd`` (a pipe, socket or character device; not a regular file)?"""
    try:
        mode = _os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_IFMT(mode) in _POLLABLE


def wait_fd(fd: int, readable: bool, timeout: float | None = None) -> bool:
    """Wait for ``fd``: suspend when we can, else block like the stdlib would.

    Unlike the hub's waits, this one also serves code that cannot suspend
    under a running loop (a green pipe used from a coroutine): it blocks the
    thread there, as the stdlib's blocking descriptor would.  Returns False on
    timeout; raises OSError when the loop cannot watch ``fd``.
    """
    if where() is not Where.UNBRIDGED:
        return (wait_readable if readable else wait_writable)(fd, timeout)
    poller = _select.poll()
    poller.register(fd, _select.POLLIN if readable else _select.POLLOUT)
    return bool(poller.poll(None if timeout is None else int(timeout * 1000)))


def until_ready(
    op: Callable[[int, _A], _T],
    fd: int,
    readable: bool,
    arg: _A,
    wait: Callable[[int, bool], bool] = wait_fd,
) -> _T:
    """``op(fd, arg)`` on a non-blocking ``fd``: after ``EAGAIN``, wait for ``fd`` and try again.

    ``wait(fd, readable)`` returns False when it could not wait (the loop
    cannot watch ``fd``): the call is then made as it comes.
    """
    while True:
        try:
            return op(fd, arg)
        except BlockingIOError:
            if not wait(fd, readable):
                return op(fd, arg)


# ---------------------------------------------------------------------------
# child processes (os.waitpid and friends, subprocess.Popen.wait)


def open_pidfd(pid: int, options: int) -> int | None:
    """A descriptor that turns readable when child ``pid`` exits; None where there is none.

    None also for a wait on several children (``pid <= 0``) and for waits on
    stops and continues (``WUNTRACED``/``WCONTINUED``): a pidfd reports exits only.
    """
    pidfd_open = getattr(_os, "pidfd_open", None)
    if pidfd_open is None or pid <= 0 or options & (_os.WUNTRACED | _os.WCONTINUED):
        return None
    try:
        return int(pidfd_open(pid))
    except OSError:
        return None


def wait_child(
    pid: int, options: int, check: Callable[[], _T | None], timeout: float | None = None
) -> _T | None:
    """Call ``check()`` (a ``WNOHANG`` wait) until it reports child ``pid``; return that.

    Between calls it waits on a pidfd (Linux 5.3+) when :func:`open_pidfd`
    gives one, else sleeps with a backoff from 0.5 ms up to 50 ms.  Returns
    None when ``timeout`` passes first (after one last ``check()``).
    """
    pidfd = open_pidfd(pid, options)
    time_left = waits(timeout)
    delay = 0.0005
    try:
        while True:
            result = check()
            if result is not None:
                return result
            remaining = next(time_left, 0.0)
            if remaining == 0.0:
                return None
            if pidfd is not None:
                wait_readable(pidfd, remaining)
            else:
                sleep(delay if remaining is None else min(delay, remaining))
                delay = min(delay * 2, 0.05)
    finally:
        if pidfd is not None:
            _os.close(pidfd)
