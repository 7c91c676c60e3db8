"""Green locks: ``Lock``, ``RLock``, ``Condition``, ``Semaphore``, ``BoundedSemaphore``,
``Event`` and ``Barrier`` of :mod:`greenbridge.green.threading`.

Every primitive keeps its state under a tiny *real* lock and parks each
blocked caller on a `Waiter` (see :mod:`greenbridge.green._waiter`), which
suspends only the calling green thread, or blocks a real OS thread for real.
So one ``Lock`` can be contended by green threads and real OS threads at the
same time: nobody sees "no current event loop" and nobody busy-waits.  A
released ``Lock`` is handed straight to its oldest waiter (FIFO), so a green
thread that releases and re-acquires in a loop cannot starve the others.
``RLock`` ownership follows the green thread (see :func:`get_ident`).
"""

from __future__ import annotations

import _thread as _real_thread
import asyncio
import collections
import sys
import threading as _std
import warnings
from collections.abc import Callable
from typing import Any

from ._ident import get_ident
from ._util import lock_waits
from ._waiter import Waiter, check_timeout, is_trio_cancelled, shielded

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Lock",
    "RLock",
    "Semaphore",
]

_real_allocate = _real_thread.allocate_lock
# The module these classes belong to for their users (``__module__``, reprs,
# docs, pickling by name): the green ``threading`` that re-exports them.
_PUBLIC_MODULE = "greenbridge.green.threading"
BrokenBarrierError = _std.BrokenBarrierError


def _qualname(obj: object) -> str:
    """``threading.Event`` for our classes (as the stdlib's repr), ``module.Name`` for others."""
    cls = type(obj)
    module = "threading" if cls.__module__ == _PUBLIC_MODULE else cls.__module__
    return f"{module}.{cls.__qualname__}"


def _granted(owner: Lock | RLock | Semaphore, waiter: Waiter, timeout: float | None) -> bool:
    """Wait for ``owner`` (a Lock, RLock or Semaphore) to hand ``waiter`` what it queued for.

    Returns True once handed it, False if ``timeout`` passed first.  A caller
    interrupted (cancelled) after it was handed the lock or the permit passes it
    on (``_hand_on``), so nothing is lost.
    """
    mutex = owner._mutex
    try:
        if waiter.wait(timeout):
            return True
    except BaseException:
        with mutex:
            handed = waiter.fired
            if not handed:
                owner._waiters.remove(waiter)
        if handed:  # handed to us as we were interrupted: pass it on
            owner._hand_on()
        raise
    with mutex:
        if waiter.fired:
            return True
        owner._waiters.remove(waiter)
        return False


def _take(owner: Lock | RLock, blocking: bool, timeout: float) -> bool:
    """Take ``owner``'s lock (for an RLock: the lock itself, no owner, no count), or
    wait in line for it as ``blocking`` and ``timeout`` allow."""
    with owner._mutex:
        if not owner._locked:
            owner._locked = True
            return True
        if not blocking or timeout == 0:
            return False
        waiter = Waiter()
        owner._waiters.append(waiter)
    return _granted(owner, waiter, None if timeout == -1 else timeout)


class Lock:
    """A green ``threading.Lock``: FIFO hand-off, usable by green and real threads alike."""

    __slots__ = ("_mutex", "_locked", "_waiters", "__weakref__")

    def __init__(self) -> None:
        self._mutex = _real_allocate()
        self._locked = False
        self._waiters: collections.deque[Waiter] = collections.deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock; wait at most ``timeout`` seconds (-1: forever) if ``blocking``."""
        if timeout != -1:  # -1 is valid whether blocking or not
            check_timeout(blocking, timeout)
        with self._mutex:
            if not self._locked:
                self._locked = True
                return True
        return _take(self, blocking, timeout)

    def release(self) -> None:
        """Release the lock, handing it to the oldest waiter if there is one."""
        with self._mutex:
            if not self._locked:
                raise RuntimeError("release unlocked lock")
            if self._waiters:
                self._waiters.popleft().wake()  # stays locked: now the waiter's
            else:
                self._locked = False

    _hand_on = release

    def locked(self) -> bool:
        """Whether the lock is held."""
        return self._locked

    def _at_fork_reinit(self) -> None:
        self._mutex = _real_allocate()
        self._locked = False
        self._waiters.clear()

    acquire_lock = acquire
    release_lock = release
    locked_lock = locked

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "locked" if self._locked else "unlocked"
        return f"<{state} {_qualname(self)} object at {id(self):#x}>"


class RLock:
    """A green reentrant lock: the owner is the green thread (see :func:`get_ident`).

    Its own state, as `Lock` keeps it (a tiny real mutex, a ``locked`` flag and
    the queue of waiters), rather than a `Lock` inside: a re-entry never takes
    the mutex, and a first acquire or a last release takes it once.  A release
    hands the lock straight to the oldest waiter, which becomes the owner when
    it runs.
    """

    __slots__ = ("_mutex", "_locked", "_waiters", "_owner", "_count", "__weakref__")

    def __init__(self) -> None:
        self._mutex = _real_allocate()
        self._locked = False  # held, or handed to a waiter that has not run yet
        self._waiters: collections.deque[Waiter] = collections.deque()
        self._owner: int | None = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock, or bump the recursion level if this green thread holds it."""
        if timeout != -1:  # checked even for the owner, as the stdlib does
            check_timeout(blocking, timeout)
        me = get_ident()
        if self._owner == me:  # (only this green thread makes it ``me``)
            self._count += 1
            return True
        with self._mutex:
            if not self._locked:
                self._locked = True
                self._owner = me
                self._count = 1
                return True
        if _take(self, blocking, timeout):
            self._owner = me
            self._count = 1
            return True
        return False

    __enter__ = acquire

    def _hand_on(self) -> None:
        """Let the lock go: to the oldest waiter if there is one, else free."""
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().wake()  # stays locked: now the waiter's
            else:
                self._locked = False

    def release(self) -> None:
        """Drop one recursion level; release the lock at the last one."""
        if self._owner != get_ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = None
            self._hand_on()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def locked(self) -> bool:
        """Whether any green thread holds the lock."""
        return self._locked

    def _is_owned(self) -> bool:
        return self._owner == get_ident()

    def _recursion_count(self) -> int:
        return self._count if self._owner == get_ident() else 0

    def _release_save(self) -> tuple[int, int | None]:
        if not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = None
        self._hand_on()
        return state

    def _acquire_restore(self, state: tuple[int, int | None]) -> None:
        _take(self, True, -1)
        self._count, self._owner = state

    def _at_fork_reinit(self) -> None:
        self._mutex = _real_allocate()
        self._locked = False
        self._waiters.clear()
        self._owner = None
        self._count = 0

    def __repr__(self) -> str:
        owner = self._owner
        state = "locked" if self._locked else "unlocked"
        return (
            f"<{state} {_qualname(self)} object "
            f"owner={owner!r} count={self._count} at {id(self):#x}>"
        )


# ---------------------------------------------------------------------------
# conditions and the primitives built on them


class Condition:
    """A green ``threading.Condition`` over any lock (a green :class:`RLock` by default)."""

    def __init__(self, lock: Any = None) -> None:
        if lock is None:
            lock = RLock()
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release
        for name in ("_release_save", "_acquire_restore", "_is_owned"):
            method = getattr(lock, name, None)
            if method is not None:
                setattr(self, name, method)
        if type(lock) is Lock:
            # What _is_owned() below finds with acquire(False) and release():
            # a green Lock is never free while a waiter is queued on it.
            self._is_owned = lock.locked  # type: ignore[method-assign]
        self._waiters: collections.deque[Waiter] = collections.deque()

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()
        self._waiters.clear()

    def __enter__(self) -> Any:
        return self._lock.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._lock.__exit__(*exc)

    def __repr__(self) -> str:
        return f"<Condition({self._lock}, {len(self._waiters)})>"

    def _release_save(self) -> Any:
        self._lock.release()

    def _acquire_restore(self, state: Any) -> None:
        self._lock.acquire()

    def _is_owned(self) -> bool:
        if self._lock.acquire(False):
            self._lock.release()
            return False
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notification or the timeout, re-acquire the lock.

        Returns True if notified.  A notification is never lost: one that arrives
        while the wait times out makes it return True, and a waiter interrupted
        (cancelled) after it was notified passes the notification on to the next
        waiter, as ``asyncio.Condition`` does.  The lock is held again whatever
        happens; a cancellation that arrives while re-acquiring it is raised once
        it is held (as ``asyncio.Condition.wait`` does; under trio, as
        ``trio.Condition.wait`` does, the lock is waited for in a shielded scope).
        """
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = Waiter()
        self._waiters.append(waiter)
        saved = self._release_save()
        error: BaseException | None = None
        try:
            waiter.wait(timeout)
        except BaseException as exc:
            error = exc
        try:
            while True:
                try:
                    self._acquire_restore(saved)
                    break
                except asyncio.CancelledError as exc:
                    error = exc
                except BaseException as exc:
                    if not is_trio_cancelled(exc):
                        raise
                    # trio's cancellation is level-triggered: every wait in the
                    # cancelled scope would raise it again.  Wait for the lock
                    # shielded, as trio.Condition.wait does, and raise it after.
                    error = exc
                    with shielded():
                        self._acquire_restore(saved)
                    break
        except BaseException:
            # The lock could not be re-acquired (not a cancellation): do not keep
            # a notification this caller will never act on.
            if waiter.fired:
                self._pass_on()
            raise
        if waiter.fired:
            if error is None:
                return True
            self._pass_on()  # notified, but leaving with an exception: wake another
        else:
            try:  # noqa: SIM105 - contextlib.suppress costs more on this path
                self._waiters.remove(waiter)
            except ValueError:
                pass
        if error is not None:
            try:
                raise error
            finally:
                error = None
        return False

    def _pass_on(self) -> None:
        """Give a notification this caller got but will not use to the next waiter."""
        try:
            waiter = self._waiters.popleft()
        except IndexError:
            return
        waiter.wake()

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true or the timeout passes; return its last value."""
        result = predicate()
        if not result:
            for waittime in lock_waits(timeout):
                self.wait(waittime)
                result = predicate()
                if result:
                    break
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters; the caller must hold the lock."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters
        while waiters and n > 0:
            waiters.popleft().wake()
            n -= 1

    def notify_all(self) -> None:
        """Wake every waiter; the caller must hold the lock."""
        self.notify(len(self._waiters))

    def notifyAll(self) -> None:  # noqa: N802 - the stdlib's deprecated alias
        """Deprecated alias of :meth:`notify_all`."""
        warnings.warn(
            "notifyAll() is deprecated, use notify_all() instead", DeprecationWarning, stacklevel=2
        )
        self.notify_all()


class Semaphore:
    """A green counting semaphore: a release hands its permit to the oldest waiter (FIFO).

    The stdlib's semaphore lets whoever comes next take a released permit
    before the waiter it woke runs (which then waits again, at the back); with
    many green threads on a few permits, that starves the oldest waiters.
    Here a permit released while some wait is theirs at once, in order of
    arrival, as a released green :class:`Lock` is.
    """

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._mutex = _real_allocate()
        self._value = value
        self._waiters: collections.deque[Waiter] = collections.deque()

    def __repr__(self) -> str:
        return f"<{_qualname(self)} at {id(self):#x}: value={self._value}>"

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Decrement the counter, waiting while it is zero (at most ``timeout`` seconds)."""
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        with self._mutex:
            if self._value:  # never while some wait: a release hands its permit to them
                self._value -= 1
                return True
            if not blocking:
                return False
            waiter = Waiter()
            self._waiters.append(waiter)
        return _granted(self, waiter, timeout)

    __enter__ = acquire

    def release(self, n: int = 1) -> None:
        """Increment the counter by ``n``, handing permits to up to ``n`` waiters first."""
        if n < 1:
            raise ValueError("n must be one or more")
        with self._mutex:
            self._add(n)

    def _add(self, n: int) -> None:
        waiters = self._waiters
        while waiters and n:
            waiters.popleft().wake()
            n -= 1
        self._value += n

    # (Semaphore's release, even for a BoundedSemaphore: a permit handed over
    # and given back never counts above the bound.)
    _hand_on = release

    def _at_fork_reinit(self) -> None:
        self._mutex = _real_allocate()
        self._waiters.clear()

    def __exit__(self, *exc: object) -> None:
        self.release()


class BoundedSemaphore(Semaphore):
    """A semaphore whose counter may not rise above its initial value."""

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._initial_value = value

    def __repr__(self) -> str:
        return f"<{_qualname(self)} at {id(self):#x}: value={self._value}/{self._initial_value}>"

    def release(self, n: int = 1) -> None:
        """Increment the counter; ValueError if it would exceed the initial value."""
        if n < 1:
            raise ValueError("n must be one or more")
        with self._mutex:
            # Permits handed to waiters are held by them: only the free ones count.
            if self._value + n > self._initial_value:
                raise ValueError("Semaphore released too many times")
            self._add(n)


class Event:
    """A green event flag."""

    def __init__(self) -> None:
        self._cond = Condition(Lock())
        self._flag = False

    def __repr__(self) -> str:
        status = "set" if self._flag else "unset"
        return f"<{_qualname(self)} at {id(self):#x}: {status}>"

    def _at_fork_reinit(self) -> None:
        self._cond._at_fork_reinit()

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._flag

    def isSet(self) -> bool:  # noqa: N802 - the stdlib's deprecated alias
        """Deprecated alias of :meth:`is_set`."""
        warnings.warn(
            "isSet() is deprecated, use is_set() instead", DeprecationWarning, stacklevel=2
        )
        return self.is_set()

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        """Reset the flag."""
        with self._cond:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is set or ``timeout`` seconds pass; return the flag."""
        if self._flag:
            return True
        with self._cond:
            signaled: bool = self._flag
            if not signaled:
                signaled = self._cond.wait(timeout)
            return signaled


_FILLING, _DRAINING, _RESETTING, _BROKEN = 0, 1, -1, -2
_BARRIER_NEEDS_PARTIES = sys.version_info >= (3, 13)  # earlier, Barrier(0) is accepted


class Barrier:
    """A green barrier for ``parties`` threads, with an optional action and timeout."""

    def __init__(
        self, parties: int, action: Callable[[], object] | None = None, timeout: float | None = None
    ) -> None:
        if parties < 1 and _BARRIER_NEEDS_PARTIES:
            raise ValueError("parties must be > 0")
        self._cond = Condition(Lock())
        self._action = action
        self._timeout = timeout
        self._parties = parties
        self._state = _FILLING
        self._count = 0

    def __repr__(self) -> str:
        if self.broken:
            return f"<{_qualname(self)} at {id(self):#x}: broken>"
        return f"<{_qualname(self)} at {id(self):#x}: waiters={self.n_waiting}/{self.parties}>"

    def wait(self, timeout: float | None = None) -> int:
        """Wait for all parties; return this caller's arrival index (0 .. parties-1)."""
        if timeout is None:
            timeout = self._timeout
        with self._cond:
            while self._state in (_DRAINING, _RESETTING):
                self._cond.wait()
            if self._state == _BROKEN:
                raise BrokenBarrierError
            index = self._count
            self._count += 1
            try:
                if index + 1 == self._parties:
                    self._trip()
                else:
                    if not self._cond.wait_for(lambda: self._state != _FILLING, timeout):
                        self._break()
                        raise BrokenBarrierError
                    if self._state < 0:
                        raise BrokenBarrierError
                return index
            finally:
                self._count -= 1
                if self._count == 0 and self._state in (_DRAINING, _RESETTING):
                    self._state = _FILLING
                    self._cond.notify_all()

    def _trip(self) -> None:
        try:
            if self._action is not None:
                self._action()
            self._state = _DRAINING
            self._cond.notify_all()
        except BaseException:
            self._break()
            raise

    def _break(self) -> None:
        self._state = _BROKEN
        self._cond.notify_all()

    def reset(self) -> None:
        """Return the barrier to its empty state; current waiters get BrokenBarrierError."""
        with self._cond:
            if self._count > 0:
                if self._state in (_FILLING, _BROKEN):
                    self._state = _RESETTING
            else:
                self._state = _FILLING
            self._cond.notify_all()

    def abort(self) -> None:
        """Put the barrier in the broken state."""
        with self._cond:
            self._break()

    @property
    def parties(self) -> int:
        """The number of threads required to pass the barrier."""
        return self._parties

    @property
    def n_waiting(self) -> int:
        """The number of threads waiting now."""
        return self._count if self._state == _FILLING else 0

    @property
    def broken(self) -> bool:
        """Whether the barrier is broken."""
        return self._state == _BROKEN


for _cls in (Lock, RLock, Condition, Semaphore, BoundedSemaphore, Event, Barrier):
    _cls.__module__ = _PUBLIC_MODULE
del _cls
