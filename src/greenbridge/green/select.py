"""Green ``select``: everything the stdlib ``select`` module exports, made cooperative.

``select()``, ``poll()`` objects and ``epoll`` objects first ask the kernel
without waiting; only when nothing is ready do they wait through the hub, so
under greenbridge only the calling greenlet is suspended.  With no event loop
running in the thread they are exactly the stdlib's (they call it).
Results, argument checking and errors are the stdlib's own: the real call does
the work, the hub only does the waiting.

A loop that polls descriptors which are always ready never waits, so it would
never let other green threads run (OS threads are preempted; greenlets are
not): a call that returns without waiting gives the event loop a turn when
the thread has not given one for ``sys.getswitchinterval()`` seconds (see
:func:`greenbridge._hub.share_turn`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .. import _hub
from .._patcher import original
from . import _util

_select = original("select")
_util.reexport(globals(), _select)

_real_select = _select.select


def _fd(obj: Any) -> int:
    if isinstance(obj, int):
        return obj
    return int(obj.fileno())


def _wait(readers: list[int], writers: list[int], timeout: float | None) -> None:
    """Wait until one of the descriptors may be ready, or ``timeout`` passed."""
    if readers or writers:
        _hub.wait_any(readers, writers, timeout)
    else:  # nothing to watch: the stdlib sleeps the timeout
        _hub.sleep(math.inf if timeout is None else timeout)


def select(
    rlist: Iterable[Any],
    wlist: Iterable[Any],
    xlist: Iterable[Any],
    timeout: float | None = None,
    /,
) -> tuple[list[Any], list[Any], list[Any]]:
    """``select.select``; under greenbridge only the calling greenlet waits."""
    if _util.no_loop():
        return _real_select(rlist, wlist, xlist, timeout)  # type: ignore[no-any-return]
    rlist, wlist, xlist = list(rlist), list(wlist), list(xlist)
    if timeout is not None:
        # Let the stdlib check the argument (type errors, negative values).
        _real_select([], [], [], 0 if _is_nonneg_number(timeout) else timeout)
        timeout = float(timeout)
    result = _real_select(rlist, wlist, xlist, 0)
    if result[0] or result[1] or result[2] or timeout == 0:
        _hub.share_turn()
        return result  # type: ignore[no-any-return]
    readers = [_fd(o) for o in rlist] + [_fd(o) for o in xlist]
    writers = [_fd(o) for o in wlist]
    for remaining in _util.waits(timeout):
        _wait(readers, writers, remaining)
        result = _real_select(rlist, wlist, xlist, 0)
        if result[0] or result[1] or result[2]:
            return result  # type: ignore[no-any-return]
    return [], [], []


def _is_nonneg_number(value: Any) -> bool:
    try:
        return bool(float(value) >= 0)
    except (TypeError, ValueError):
        return False


def _poll_timeout_ms(timeout: Any) -> float | None:
    """A poll() timeout in ms -> seconds, None for ever (the stdlib's rules)."""
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)):
        if hasattr(timeout, "__index__"):
            timeout = timeout.__index__()
        else:
            raise TypeError(
                f"'{type(timeout).__name__}' object cannot be interpreted as an integer or float"
            )
    if timeout < 0:
        return None
    return float(timeout) / 1000.0


_READ_MASK = getattr(_select, "POLLIN", 1) | getattr(_select, "POLLPRI", 2)
_WRITE_MASK = getattr(_select, "POLLOUT", 4)

if hasattr(_select, "poll"):
    _real_poll = _select.poll

    class poll:  # noqa: N801 - a class, so it does not bind as a method (selectors stores it)
        """``select.poll()``: a polling object whose ``poll()`` is cooperative."""

        def __init__(self) -> None:
            self._poll = _real_poll()
            self._masks: dict[int, int] = {}
            self._polling = False

        def register(self, fd: Any, eventmask: int = _READ_MASK | _WRITE_MASK, /) -> None:
            self._poll.register(fd, eventmask)
            self._masks[_fd(fd)] = eventmask

        def modify(self, fd: Any, eventmask: int, /) -> None:
            self._poll.modify(fd, eventmask)
            self._masks[_fd(fd)] = eventmask

        def unregister(self, fd: Any, /) -> None:
            self._poll.unregister(fd)
            del self._masks[_fd(fd)]

        def poll(self, timeout: Any = None, /) -> list[tuple[int, int]]:
            if _util.no_loop():
                return self._poll.poll(timeout)  # type: ignore[no-any-return]
            seconds = _poll_timeout_ms(timeout)
            if self._polling:
                raise RuntimeError("concurrent poll() invocation")
            self._polling = True
            try:
                result = self._poll.poll(0)
                if result or seconds == 0:
                    _hub.share_turn()
                    return result  # type: ignore[no-any-return]
                for remaining in _util.waits(seconds):
                    # Error and hang-up conditions are reported as readable.
                    readers = [fd for fd, m in self._masks.items() if m & _READ_MASK or not m]
                    writers = [fd for fd, m in self._masks.items() if m & _WRITE_MASK]
                    _wait(readers, writers, remaining)
                    result = self._poll.poll(0)
                    if result:
                        return result  # type: ignore[no-any-return]
                return []
            finally:
                self._polling = False


if hasattr(_select, "epoll"):
    _real_epoll = _select.epoll

    class epoll:  # noqa: N801 - the stdlib's name
        """A green ``select.epoll``: ``poll()`` waits on the epoll descriptor through the hub."""

        def __init__(self, sizehint: int = -1, flags: int = 0, *, _wrap: Any = None) -> None:
            self._epoll = _real_epoll(sizehint, flags) if _wrap is None else _wrap

        @classmethod
        def fromfd(cls, fd: int, /) -> epoll:
            return cls(_wrap=_real_epoll.fromfd(fd))

        @property
        def closed(self) -> bool:
            return bool(self._epoll.closed)

        def close(self) -> None:
            if not self._epoll.closed:
                _hub.notify_closing(self._epoll.fileno())
            self._epoll.close()

        def fileno(self) -> int:
            return int(self._epoll.fileno())

        def register(self, fd: Any, eventmask: int = _READ_MASK | _WRITE_MASK) -> None:
            self._epoll.register(fd, eventmask)

        def modify(self, fd: Any, eventmask: int) -> None:
            self._epoll.modify(fd, eventmask)

        def unregister(self, fd: Any) -> None:
            self._epoll.unregister(fd)

        def __enter__(self) -> epoll:
            self._epoll.__enter__()
            return self

        def __exit__(self, *exc_info: object) -> None:
            self.close()

        def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
            """``epoll.poll``; under greenbridge only the calling greenlet waits."""
            real = self._epoll
            if _util.no_loop():
                return real.poll(timeout, maxevents)  # type: ignore[no-any-return]
            result = real.poll(0, maxevents)  # also checks the arguments
            if timeout is not None:
                timeout = float(timeout)
                if timeout < 0:
                    timeout = None
            if result or timeout == 0:
                _hub.share_turn()
                return result  # type: ignore[no-any-return]
            for remaining in _util.waits(timeout):
                _hub.wait_readable(real.fileno(), remaining)
                result = real.poll(0, maxevents)
                if result:
                    return result  # type: ignore[no-any-return]
            return []
