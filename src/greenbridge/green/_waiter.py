"""The one green waiter: how a green primitive parks a caller until another wakes it.

Every green primitive (locks, conditions, semaphores, events, barriers,
queues, thread joins, the SQLAlchemy pool shim) keeps its state under a tiny
*real* lock and queues one `Waiter` per blocked caller; whoever changes the
state calls ``wake()`` on the waiter(s) it releases, under that real lock.
The waiter picks how to wait from where its caller runs:

* a green thread (code that :func:`greenbridge.has_portal`, with an asyncio
  loop running) waits on a loop future, woken directly from the loop's own
  thread or with ``call_soon_threadsafe`` from any other thread;
* any other caller (a real OS thread, sync code outside any loop) blocks on a
  real ``_thread`` lock, exactly like the standard library.
"""

from __future__ import annotations

import _thread as _real_thread
import asyncio
import contextlib
import contextvars
from asyncio import events as _asyncio_events
from typing import Any

from .._bridge import MissingBridge, await_, has_portal

__all__ = ["TIMEOUT_MAX", "Waiter", "check_timeout"]

_real_allocate = _real_thread.allocate_lock
_real_get_ident = _real_thread.get_ident
_get_running_loop = _asyncio_events._get_running_loop

TIMEOUT_MAX: float = _real_thread.TIMEOUT_MAX


def _green_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, if the caller is bridged sync code that can suspend."""
    loop = _get_running_loop()
    if loop is None or not has_portal():
        return None
    return loop


_BLOCKS_THE_LOOP = (
    "a green threading/queue primitive would have to block this thread, which runs an "
    "asyncio event loop, from code that is not running under greenbridge (a coroutine, "
    "a loop callback, or sync code they call): that stops the loop and every green "
    "thread on it, including the one that would release the wait. Call the sync code "
    "through greenbridge: `await greenbridge.async_(fn)(...)` or `greenbridge.spawn(fn, "
    "...)`; or give the calling task a portal with `await greenbridge.ensure_portal()` "
    "(or every task with `greenbridge.install_portal_factory()`). From a coroutine, "
    "`await greenbridge.async_(lock.acquire)()` waits without blocking."
)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# The Context _resolve runs in: it needs nothing of the waiter's, and passing one
# saves the loop a copy of the caller's Context per timed wait and per wake-up.
_RESOLVE_CONTEXT = contextvars.Context()


class Waiter:
    """One parked caller: a loop future (green) or an acquired real lock (OS thread).

    ``wake()`` is called at most once, by whoever holds the state lock of the
    primitive the waiter is queued on; ``wait()`` returns whether it was woken.
    """

    __slots__ = ("fired", "_loop", "_fut", "_lock", "_tid")

    def __init__(self) -> None:
        self.fired = False
        loop = _green_loop()
        self._loop = loop
        if loop is None:
            lock = _real_allocate()
            lock.acquire()
            self._lock: Any = lock
            self._fut: asyncio.Future[None] | None = None
        else:
            self._lock = None
            self._fut = loop.create_future()
            self._tid = _real_get_ident()

    def wake(self) -> None:
        if self.fired:
            return
        self.fired = True
        if self._lock is not None:
            self._lock.release()
            return
        fut = self._fut
        assert fut is not None and self._loop is not None
        if _real_get_ident() == self._tid:
            _resolve(fut)
        else:
            # A closed loop raises RuntimeError: nobody is left to wake then.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, fut, context=_RESOLVE_CONTEXT)

    def wait(self, timeout: float | None) -> bool:
        """Wait until woken or ``timeout`` seconds passed (None: forever).

        As the stdlib's waits: a timeout that is not ``> 0`` (including NaN) only
        polls, and one beyond ``TIMEOUT_MAX`` raises the stdlib's OverflowError.
        """
        if timeout is not None:
            if not timeout > 0:
                return self.fired
            if timeout > TIMEOUT_MAX:
                check_timeout(True, timeout)
        if self._lock is not None:
            if _get_running_loop() is not None:
                # Blocking here would stop the loop this thread runs, and with it
                # the green thread that would wake us: a deadlock.
                raise MissingBridge(_BLOCKS_THE_LOOP)
            if timeout is None:
                self._lock.acquire()
            else:
                self._lock.acquire(True, min(timeout, TIMEOUT_MAX))
            return self.fired
        fut = self._fut
        assert fut is not None and self._loop is not None
        if timeout is None:
            await_(fut)
        else:
            handle = self._loop.call_later(timeout, _resolve, fut, context=_RESOLVE_CONTEXT)
            try:
                await_(fut)
            finally:
                handle.cancel()
        return self.fired


def check_timeout(blocking: Any, timeout: Any) -> None:
    """Raise what a real lock's ``acquire(blocking, timeout)`` raises for these arguments.

    A fresh, free real lock checks them (so the exceptions and messages are this
    Python's own, NaN and wrong types included) and is taken at once if they are
    valid.
    """
    _real_allocate().acquire(blocking, timeout)
