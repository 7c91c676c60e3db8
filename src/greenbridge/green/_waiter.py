"""The one green waiter: how a green primitive parks a caller until another wakes it.

Every green primitive (locks, conditions, semaphores, events, barriers,
queues, thread joins, the SQLAlchemy pool shim) keeps its state under a tiny
*real* lock and queues one `Waiter` per blocked caller; whoever changes the
state calls ``wake()`` on the waiter(s) it releases, under that real lock,
from any green thread or OS thread.  The waiter picks how to wait from where
its caller runs (see :mod:`greenbridge._where`), once, when it is created:

* a greenbridge worker under an asyncio loop (sync code run by ``async_``,
  ``spawn``, a portal, or a green ``Thread``) *parks* (the bridge's
  ``park``): its task waits, and a loop callback resumes the worker with the
  bridge's ``wake``, switching straight into it, as the hub does for I/O: no
  Future to resolve, no Task step, no trip through the driver.  ``wake()``
  never switches into the waiter itself (it runs under the primitive's real
  lock, in the releasing thread): it schedules that callback with
  ``call_soon`` (``call_soon_threadsafe`` from another OS thread);
* other code that can suspend under asyncio (an SQLAlchemy ``greenlet_spawn``
  greenlet, which can only hand awaitables to its driver) awaits a loop
  future with `await_`;
* suspendable code under trio awaits a ``trio.Event`` with `await_` (set
  directly from trio's thread, through the run's token from any other);
* any other caller blocks on a real ``_thread`` lock, exactly like the
  standard library: a real OS thread, or sync code with no loop running.
  Where a loop runs but the caller cannot suspend (a coroutine, a loop
  callback) blocking would stop the loop and the green thread that would
  wake it: that raises `MissingBridge` naming the fix.

Cancellation: a waiter woken (``fired``) whose wait then ends with an
exception (its task was cancelled before it ran) still reports ``fired``;
the primitive passes what it was given on (the lock, the notification, the
item) to the next waiter.  A parked worker's resume callback checks that the
worker still waits *here* (``_parked``), so a stale callback (the wait ended
by a cancellation or a timeout first) never resumes it out of a later wait.
"""

from __future__ import annotations

import _thread as _real_thread
import asyncio
import contextlib
import contextvars
import sys
from collections.abc import Iterator
from typing import Any

from greenlet import getcurrent

from .._bridge import await_
from .._errors import MissingBridge
from .._park import park, wake
from .._trampoline import Worker
from .._where import asyncio_loop, can_suspend, running_loop, trio_running

__all__ = ["TIMEOUT_MAX", "Waiter", "check_timeout", "is_trio_cancelled", "shielded"]

_real_allocate = _real_thread.allocate_lock
_real_get_ident = _real_thread.get_ident

TIMEOUT_MAX: float = _real_thread.TIMEOUT_MAX

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

# Under trio there is no spawn() and no task factory: name trio's fixes.
_BLOCKS_TRIO = (
    "a green threading/queue primitive would have to block this thread, which runs "
    "trio, from code that is not running under greenbridge (a trio task, or sync code "
    "it calls): that stops trio and every task in it, including the one that would "
    "release the wait. Call the sync code through greenbridge: `await "
    "greenbridge.async_(fn)(...)`, or `nursery.start_soon(greenbridge.async_(fn), ...)`; "
    "or give the calling task a portal with `await greenbridge.ensure_portal()`. From "
    "a trio task, `await greenbridge.async_(lock.acquire)()` waits without blocking."
)

# How a Waiter waits (see the module docstring).
_PARKS = 0  # a worker under asyncio: park(), resumed by _resume
_FUTURE = 1  # other suspendable code under asyncio: await_(a loop future)
_TRIO = 2  # suspendable code under trio: await_(a trio.Event)
_BLOCKS = 3  # anything else: a real lock, or MissingBridge if a loop runs


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# The Context _resolve runs in: it needs nothing of the waiter's, and passing one
# saves the loop a copy of the caller's Context per timed wait and per wake-up.
# (Not for _resume: it switches into a worker, and a Context entered in a
# suspended greenlet cannot be entered again, e.g. by a loop nested in that worker.)
_RESOLVE_CONTEXT = contextvars.Context()


# True while the caller's trio waits must not be cancelled (see `shielded`).
_shield: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "greenbridge.green._waiter.shield", default=False
)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Make the calling task's waits under trio ignore cancellation, for a while.

    For a wait that must end with the lock held even when the task was
    cancelled (re-acquiring a condition's lock): trio's cancellation is
    level-triggered, so every wait in a cancelled scope raises it again.
    Under asyncio (one cancellation, raised once) it changes nothing.
    """
    token = _shield.set(True)
    try:
        yield
    finally:
        _shield.reset(token)


def is_trio_cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is trio's cancellation."""
    trio = sys.modules.get("trio")
    return trio is not None and isinstance(exc, trio.Cancelled)


async def _trio_wait(event: Any, timeout: float | None) -> None:
    trio = sys.modules["trio"]
    with trio.CancelScope(shield=_shield.get()):
        if timeout is None:
            await event.wait()
        else:
            with trio.move_on_after(timeout):
                await event.wait()


class Waiter:
    """One blocked caller of a green primitive (see the module docstring).

    ``wake()`` may be called any number of times, from any thread, by whoever
    holds the state lock of the primitive the waiter is queued on; the first
    call sets ``fired`` and wakes the caller.  ``wait(timeout)`` returns
    ``fired``, so a wake-up that raced a timeout is never lost.
    """

    # on: the parked worker, the loop future, the trio.Event or the real lock;
    # loop: the asyncio loop (or trio token) to wake it through;
    # tid: the OS thread the loop runs in (call_soon is not thread-safe);
    # parked: while a worker is parked in wait() (see _resume).
    __slots__ = ("fired", "_how", "_on", "_loop", "_tid", "_parked")

    def __init__(self) -> None:
        self.fired = False
        current = getcurrent()
        loop = asyncio_loop()
        if loop is not None:
            if type(current) is Worker:  # the common case first
                self._how = _PARKS
                self._on: Any = current
                self._loop: Any = loop
                self._tid = _real_get_ident()
                self._parked = False
                return
            if can_suspend():
                self._how = _FUTURE
                self._on = loop.create_future()
                self._loop = loop
                self._tid = _real_get_ident()
                return
        elif can_suspend() and trio_running():
            trio = sys.modules["trio"]
            self._how = _TRIO
            self._on = trio.Event()
            self._loop = trio.lowlevel.current_trio_token()
            self._tid = _real_get_ident()
            return
        self._how = _BLOCKS
        lock = _real_allocate()
        lock.acquire()
        self._on = lock

    def wake(self) -> None:
        """Wake the caller (the first call only)."""
        if self.fired:
            return
        self.fired = True
        how = self._how
        if how == _PARKS:
            # (try/except, not contextlib.suppress: this is the hot path.)
            try:
                if _real_get_ident() == self._tid:
                    self._loop.call_soon(self._resume)
                else:
                    self._loop.call_soon_threadsafe(self._resume)
            except RuntimeError:  # the loop is closed: nobody is left to wake
                pass
        elif how == _BLOCKS:
            self._on.release()
        elif how == _FUTURE:
            if _real_get_ident() == self._tid:
                _resolve(self._on)
            else:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(_resolve, self._on, context=_RESOLVE_CONTEXT)
        elif _real_get_ident() == self._tid:
            self._on.set()
        else:
            # trio.RunFinishedError (a RuntimeError): the run is over, nobody to wake.
            with contextlib.suppress(RuntimeError):
                self._loop.run_sync_soon(self._on.set)

    def _resume(self) -> None:
        """Loop callback: resume the parked worker, if it still waits here."""
        if self._parked:
            self._parked = False
            wake(self._on, None)

    def wait(self, timeout: float | None) -> bool:
        """Wait until woken or ``timeout`` seconds passed (None: forever).

        As the stdlib's waits: a timeout that is not ``> 0`` (including NaN) only
        polls, and one beyond ``TIMEOUT_MAX`` raises the stdlib's OverflowError.
        Returns ``fired``.  Cancellation arrives as the loop's exception.
        """
        if timeout is not None:
            if not timeout > 0:
                return self.fired
            if timeout > TIMEOUT_MAX:
                check_timeout(True, timeout)
        how = self._how
        if how == _PARKS:
            if self.fired:  # woken from another OS thread already: no need to park
                return True
            timer = None if timeout is None else self._loop.call_later(timeout, self._resume)
            self._parked = True
            try:
                park()
            finally:
                self._parked = False
                if timer is not None:
                    timer.cancel()
        elif how == _BLOCKS:
            running = running_loop()
            if running is not None:
                # Blocking here would stop the loop this thread runs, and with it
                # the green thread that would wake us: a deadlock.
                raise MissingBridge(
                    _BLOCKS_THE_LOOP
                    if isinstance(running, asyncio.AbstractEventLoop)
                    else _BLOCKS_TRIO
                )
            if timeout is None:
                self._on.acquire()
            else:
                self._on.acquire(True, min(timeout, TIMEOUT_MAX))
        elif how == _FUTURE:
            if timeout is None:
                await_(self._on)
            else:
                handle = self._loop.call_later(
                    timeout, _resolve, self._on, context=_RESOLVE_CONTEXT
                )
                try:
                    await_(self._on)
                finally:
                    handle.cancel()
        else:
            await_(_trio_wait(self._on, timeout))
        return self.fired


def check_timeout(blocking: Any, timeout: Any) -> None:
    """Raise what a real lock's ``acquire(blocking, timeout)`` raises for these arguments.

    A fresh, free real lock checks them (so the exceptions and messages are this
    Python's own, NaN and wrong types included) and is taken at once if they are
    valid.
    """
    _real_allocate().acquire(blocking, timeout)
