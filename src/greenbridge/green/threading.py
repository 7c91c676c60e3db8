"""Green ``threading``: threads are asyncio tasks, locks suspend only the waiting task.

A :class:`Thread` started while an asyncio event loop runs in the calling OS
thread becomes a task on that loop (through :func:`greenbridge.spawn`); its
``run()`` executes in a worker greenlet, and every blocking call in this module
(``Lock.acquire``, ``Event.wait``, ``Thread.join``, ...) suspends that task
only.  Started with no loop running, a :class:`Thread` is a real OS thread, so
the module behaves like the standard library there.

Every primitive keeps its state under a tiny *real* lock and parks each waiter
on the object that suits the waiter:

* a green thread (code that :func:`greenbridge.has_portal`, with an asyncio
  loop running) waits on a loop future, woken directly from the loop's own
  thread or with ``call_soon_threadsafe`` from any other thread;
* any other caller (a real OS thread, sync code outside any loop) blocks on a
  real ``_thread`` lock, exactly like the standard library.

So one ``Lock`` can be contended by green threads and real OS threads at the
same time: nobody sees "no current event loop" and nobody busy-waits.  A
released ``Lock`` is handed straight to its oldest waiter (FIFO), so a green
thread that releases and re-acquires in a loop cannot starve the others.

Identity: inside an asyncio task, :func:`get_ident` is ``id(task)``; elsewhere
it is the OS thread's identifier.  :class:`local` keeps one namespace per
green thread (per task) and per OS thread.

Everything else the standard module exports (
``ExceptHookArgs``, ``BrokenBarrierError``, ``settrace``, ``stack_size``,
``TIMEOUT_MAX``, ...) is re-exported unchanged.
"""

from __future__ import annotations

import _thread as _real_thread
import asyncio
import collections
import contextlib
import contextvars
import functools
import itertools
import sys
import threading as _std
import traceback
import warnings
import weakref
from asyncio import events as _asyncio_events
from collections.abc import Callable, Iterable, Mapping
from time import monotonic as _monotonic
from typing import Any

from greenlet import GreenletExit

from .._bridge import MissingBridge, await_, has_portal, spawn
from .._patcher import rebind as _rebind

__all__ = [
    "get_ident",
    "active_count",
    "Condition",
    "current_thread",
    "enumerate",
    "main_thread",
    "TIMEOUT_MAX",
    "Event",
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Thread",
    "Barrier",
    "BrokenBarrierError",
    "Timer",
    "ThreadError",
    "setprofile",
    "settrace",
    "local",
    "stack_size",
    "excepthook",
    "ExceptHookArgs",
    "get_native_id",
]

_real_allocate = _real_thread.allocate_lock
_real_get_ident = _real_thread.get_ident
_real_rlock = _real_thread.RLock
_get_running_loop = _asyncio_events._get_running_loop
_current_task = asyncio.current_task

TIMEOUT_MAX: float = _std.TIMEOUT_MAX
ThreadError = _std.ThreadError
BrokenBarrierError = _std.BrokenBarrierError
ExceptHookArgs = _std.ExceptHookArgs


def excepthook(args: Any, /) -> None:
    """Print an exception that ended a thread (the stdlib's default hook, green identity).

    As ``threading.excepthook``: ``SystemExit`` is silent; otherwise "Exception
    in thread <name>:" and the traceback go to ``sys.stderr`` (or, if that is
    None, the stderr the thread started with).  With ``args.thread`` None the
    name is :func:`get_ident` (a green thread's ``id(task)``).
    """
    if args.exc_type is SystemExit:
        return
    thread = args.thread
    stderr = sys.stderr
    if stderr is None:
        stderr = getattr(thread, "_stderr", None)
        if stderr is None:
            return
    name = getattr(thread, "name", None) if thread is not None else None
    if name is None:
        name = get_ident()
    print(f"Exception in thread {name}:", file=stderr, flush=True)
    traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback, file=stderr)
    stderr.flush()


__excepthook__ = excepthook
get_native_id = _std.get_native_id
setprofile = _std.setprofile
settrace = _std.settrace
stack_size = _std.stack_size


# ---------------------------------------------------------------------------
# waiting


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


class _Waiter:
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
                _check_timeout(True, timeout)
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


def _qualname(obj: object) -> str:
    """``threading.Event`` for our classes (as the stdlib's repr), ``module.Name`` for others."""
    cls = type(obj)
    module = "threading" if cls.__module__ == __name__ else cls.__module__
    return f"{module}.{cls.__qualname__}"


def _check_timeout(blocking: Any, timeout: Any) -> None:
    """Raise what a real lock's ``acquire(blocking, timeout)`` raises for these arguments.

    A fresh, free real lock checks them (so the exceptions and messages are this
    Python's own, NaN and wrong types included) and is taken at once if they are
    valid.
    """
    _real_allocate().acquire(blocking, timeout)


# ---------------------------------------------------------------------------
# identity


def get_ident() -> int:
    """The current green thread's identifier: ``id(task)`` in a task, else the OS thread's."""
    loop = _get_running_loop()
    if loop is not None:
        task = _current_task(loop)
        if task is not None:
            return id(task)
    return _real_get_ident()


class _OSThreadKey:
    __slots__ = ("__weakref__",)


_os_keys = _real_thread._local()


def _thread_key() -> object:
    """An object that lives exactly as long as the current green thread (or OS thread)."""
    loop = _get_running_loop()
    if loop is not None:
        task = _current_task(loop)
        if task is not None:
            return task
    try:
        return _os_keys.key
    except AttributeError:
        key = _OSThreadKey()
        _os_keys.key = key
        return key


# ---------------------------------------------------------------------------
# locks


class Lock:
    """A green ``threading.Lock``: FIFO hand-off, usable by green and real threads alike."""

    __slots__ = ("_mutex", "_locked", "_waiters", "__weakref__")

    def __init__(self) -> None:
        self._mutex = _real_allocate()
        self._locked = False
        self._waiters: collections.deque[_Waiter] = collections.deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock; wait at most ``timeout`` seconds (-1: forever) if ``blocking``."""
        if timeout != -1:  # -1 is valid whether blocking or not
            _check_timeout(blocking, timeout)
        mutex = self._mutex
        with mutex:
            if not self._locked:
                self._locked = True
                return True
            if not blocking or timeout == 0:
                return False
            waiter = _Waiter()
            self._waiters.append(waiter)
        try:
            if waiter.wait(None if timeout == -1 else timeout):
                return True
        except BaseException:
            with mutex:
                owned = waiter.fired
                if not owned:
                    self._waiters.remove(waiter)
            if owned:  # handed to us as we were interrupted: pass it on
                self.release()
            raise
        with mutex:
            if waiter.fired:
                return True
            self._waiters.remove(waiter)
            return False

    def release(self) -> None:
        """Release the lock, handing it to the oldest waiter if there is one."""
        with self._mutex:
            if not self._locked:
                raise RuntimeError("release unlocked lock")
            if self._waiters:
                self._waiters.popleft().wake()  # stays locked: now the waiter's
            else:
                self._locked = False

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
    """A green reentrant lock: the owner is the green thread (see :func:`get_ident`)."""

    def __init__(self) -> None:
        self._block = Lock()
        self._owner: int | None = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock, or bump the recursion level if this green thread holds it."""
        if timeout != -1:  # checked even for the owner, as the stdlib does
            _check_timeout(blocking, timeout)
        me = get_ident()
        if self._owner == me:
            self._count += 1
            return True
        if self._block.acquire(blocking, timeout):
            self._owner = me
            self._count = 1
            return True
        return False

    __enter__ = acquire

    def release(self) -> None:
        """Drop one recursion level; release the lock at the last one."""
        if self._owner != get_ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = None
            self._block.release()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def locked(self) -> bool:
        """Whether any green thread holds the lock."""
        return self._block.locked()

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
        self._block.release()
        return state

    def _acquire_restore(self, state: tuple[int, int | None]) -> None:
        self._block.acquire()
        self._count, self._owner = state

    def _at_fork_reinit(self) -> None:
        self._block._at_fork_reinit()
        self._owner = None
        self._count = 0

    def __repr__(self) -> str:
        owner = self._owner
        state = "locked" if owner is not None else "unlocked"
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
        self._waiters: collections.deque[_Waiter] = collections.deque()

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
        it is held (as ``asyncio.Condition.wait`` does).
        """
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = _Waiter()
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
        endtime = None
        waittime = timeout
        result = predicate()
        while not result:
            if waittime is not None:
                if endtime is None:
                    endtime = _monotonic() + waittime
                else:
                    waittime = endtime - _monotonic()
                    if waittime <= 0:
                        break
            self.wait(waittime)
            result = predicate()
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
    """A green counting semaphore."""

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._cond = Condition(Lock())
        self._value = value

    def __repr__(self) -> str:
        return f"<{_qualname(self)} at {id(self):#x}: value={self._value}>"

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Decrement the counter, waiting while it is zero (at most ``timeout`` seconds)."""
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        endtime = None
        with self._cond:
            while self._value == 0:
                if not blocking:
                    return False
                if timeout is not None:
                    if endtime is None:
                        endtime = _monotonic() + timeout
                    else:
                        timeout = endtime - _monotonic()
                        if timeout <= 0:
                            return False
                self._cond.wait(timeout)
            self._value -= 1
            return True

    __enter__ = acquire

    def release(self, n: int = 1) -> None:
        """Increment the counter by ``n`` and wake up to ``n`` waiters."""
        if n < 1:
            raise ValueError("n must be one or more")
        with self._cond:
            self._value += n
            self._cond.notify(n)

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
        with self._cond:
            if self._value + n > self._initial_value:
                raise ValueError("Semaphore released too many times")
            self._value += n
            self._cond.notify(n)


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


# ---------------------------------------------------------------------------
# local


class _LocalImpl:
    __slots__ = ("dicts", "args", "mutex", "__weakref__")

    def __init__(self, args: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
        self.dicts: dict[int, tuple[Any, dict[str, Any]]] = {}
        self.args = args
        self.mutex = _real_rlock()

    def get(self) -> dict[str, Any] | None:
        entry = self.dicts.get(id(_thread_key()))
        return None if entry is None else entry[1]

    def create(self) -> dict[str, Any]:
        key = _thread_key()
        ident = id(key)
        me = weakref.ref(self)

        def forget(_: object) -> None:
            impl = me()
            if impl is not None:
                impl.dicts.pop(ident, None)

        namespace: dict[str, Any] = {}
        self.dicts[ident] = (weakref.ref(key, forget), namespace)
        return namespace


class local:  # noqa: N801 - the stdlib's name
    """Attributes that are private to each green thread (and to each OS thread).

    As with ``threading.local``, a subclass's ``__init__`` runs again, with the
    constructor's arguments, the first time another thread touches the object.
    """

    __slots__ = ("_local__impl", "__dict__")

    def __new__(cls, *args: Any, **kw: Any) -> local:
        if (args or kw) and (cls.__init__ is object.__init__):
            raise TypeError("Initialization arguments are not supported")
        self = object.__new__(cls)
        impl = _LocalImpl((args, kw))
        object.__setattr__(self, "_local__impl", impl)
        object.__setattr__(self, "__dict__", impl.create())
        return self

    def _local__enter(self) -> _LocalImpl:
        impl: _LocalImpl = object.__getattribute__(self, "_local__impl")
        impl.mutex.acquire()
        try:
            namespace = impl.get()
            if namespace is None:
                namespace = impl.create()
                object.__setattr__(self, "__dict__", namespace)
                args, kw = impl.args
                try:
                    type(self).__init__(self, *args, **kw)
                except BaseException:
                    # As the stdlib: no namespace is kept, the next access runs
                    # __init__ again.
                    impl.dicts.pop(id(_thread_key()), None)
                    raise
            else:
                object.__setattr__(self, "__dict__", namespace)
        except BaseException:
            impl.mutex.release()
            raise
        return impl

    def __getattribute__(self, name: str) -> Any:
        impl = local._local__enter(self)
        try:
            return object.__getattribute__(self, name)
        finally:
            impl.mutex.release()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__dict__":
            raise AttributeError(
                f"{type(self).__name__!r} object attribute '__dict__' is read-only"
            )
        impl = local._local__enter(self)
        try:
            object.__setattr__(self, name, value)
        finally:
            impl.mutex.release()

    def __delattr__(self, name: str) -> None:
        if name == "__dict__":
            raise AttributeError(
                f"{type(self).__name__!r} object attribute '__dict__' is read-only"
            )
        impl = local._local__enter(self)
        try:
            object.__delattr__(self, name)
        finally:
            impl.mutex.release()


# ---------------------------------------------------------------------------
# threads

_active_mutex = _real_allocate()
_active: dict[int, Thread] = {}
_limbo: dict[Thread, Thread] = {}
_counter = itertools.count(1).__next__
_trace_hook: Any = None
_profile_hook: Any = None


_NAME_TARGET = sys.version_info >= (3, 10)  # "Thread-1 (target)" names, as the stdlib's
_NO_NAME: Any = object()


def _newname(template: str = "Thread-%d") -> str:
    return template % _counter()


class Thread:
    """A thread of control: an asyncio task when a loop runs, else a real OS thread.

    Same API as ``threading.Thread``.  ``start()`` called while an asyncio
    loop runs in this OS thread creates a task with :func:`greenbridge.spawn`
    that runs ``run()`` in a greenlet; ``ident`` is then ``id(task)`` and
    ``native_id`` the loop's OS thread id.  With no loop running, ``start()``
    starts a real OS thread, as the standard library does.
    """

    _initialized = False

    def __init__(
        self,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
    ) -> None:
        assert group is None, "group argument must be None for now"
        if kwargs is None:
            kwargs = {}
        if name:
            name = str(name)
        else:
            name = f"Thread-{_counter()}"
            if target is not None and _NAME_TARGET:
                target_name = getattr(target, "__name__", _NO_NAME)
                if target_name is not _NO_NAME:
                    name += f" ({target_name})"
        self._target = target
        self._name = name
        self._args = args
        self._kwargs = kwargs
        self._daemonic = current_thread().daemon if daemon is None else bool(daemon)
        self._ident: int | None = None
        self._native_id: int | None = None
        # Plain flags instead of the stdlib's two Events: most threads are never
        # waited for, and every object a thread owns costs the garbage collector.
        self._is_started = False
        self._is_stopped = False
        # join() waiters, created by the first join() that has to wait; set to
        # None again (and every waiter woken) when the thread ends.
        self._joiners: list[_Waiter] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stderr = sys.stderr
        self._initialized = True

    def __repr__(self) -> str:
        assert self._initialized, "Thread.__init__() was not called"
        status = "initial"
        if self._is_started:
            status = "started"
        if self._is_stopped:
            status = "stopped"
        if self._daemonic:
            status += " daemon"
        if self._ident is not None:
            status += f" {self._ident}"
        return f"<{type(self).__name__}({self._name}, {status})>"

    def start(self) -> None:
        """Start the thread: a task on the running asyncio loop, else an OS thread."""
        if not self._initialized:
            raise RuntimeError("thread.__init__() not called")
        if self._is_started:
            raise RuntimeError("threads can only be started once")
        loop = _get_running_loop()
        with _active_mutex:
            _limbo[self] = self
        if loop is not None:
            try:
                task = spawn(self._run_and_finish)
            except BaseException:
                with _active_mutex:
                    del _limbo[self]
                raise
            self._task = task
            ident = self._ident = id(task)
            self._native_id = get_native_id()
            with _active_mutex:
                del _limbo[self]
                # Already over only if the task ran eagerly (an eager task factory).
                if not self._is_stopped:
                    _active[ident] = self
            self._is_started = True
            return
        started = _real_allocate()
        started.acquire()
        try:
            _real_thread.start_new_thread(self._bootstrap_os, (started,))
        except BaseException:
            with _active_mutex:
                del _limbo[self]
            raise
        started.acquire()  # released by the new thread once it is registered

    def run(self) -> None:
        """The thread's activity: call the target with the arguments. Override it freely."""
        try:
            target = self._target
            if target is not None:
                args = self._args
                kwargs = self._kwargs
                if kwargs or type(args) is not tuple or type(kwargs) is not dict:
                    target(*args, **kwargs)
                # A plain positional call runs in this C-level eval loop;
                # target(*args) would nest another one on the C stack, which
                # every greenlet switch of a suspended thread then copies.
                elif not args:
                    target()
                elif len(args) == 1:
                    target(args[0])
                elif len(args) == 2:
                    target(args[0], args[1])
                else:
                    target(*args)
        finally:
            # Drop references that could form cycles through the thread.
            del self._target, self._args, self._kwargs

    def _bootstrap_os(self, started: Any) -> None:
        self._ident = _real_get_ident()
        self._native_id = get_native_id()
        with _active_mutex:
            _active[self._ident] = self
            del _limbo[self]
        self._is_started = True
        started.release()
        if _trace_hook is not None:
            sys.settrace(_trace_hook)
        if _profile_hook is not None:
            sys.setprofile(_profile_hook)
        self._run_and_finish()

    def _run_and_finish(self) -> None:
        try:
            try:
                self.run()
            except (asyncio.CancelledError, GreenletExit):
                raise
            except BaseException:
                self._report()
        finally:
            self._stop()

    def _stop(self) -> None:
        """Mark the thread ended, unregister it and wake every join()."""
        with _active_mutex:
            self._is_stopped = True
            ident = self._ident
            if ident is not None and _active.get(ident) is self:
                del _active[ident]
            joiners = self._joiners
            self._joiners = None
        if joiners:
            for waiter in joiners:
                waiter.wake()

    def _has_ended(self) -> bool:
        return self._is_stopped

    def _report(self) -> None:
        exc_type, exc_value, exc_tb = sys.exc_info()
        try:
            hook = globals()["excepthook"]
            hook(ExceptHookArgs((exc_type, exc_value, exc_tb, self)))
        except Exception as exc:  # noqa: BLE001 - as the stdlib: fall back to sys.excepthook
            exc.__suppress_context__ = True
            del exc
            stderr = sys.stderr if sys.stderr is not None else self._stderr
            print("Exception in threading.excepthook:", file=stderr, flush=True)
            sys.excepthook(*sys.exc_info())
        finally:
            del exc_type, exc_value, exc_tb

    def join(self, timeout: float | None = None) -> None:
        """Wait until the thread ends, or ``timeout`` seconds pass (check ``is_alive()``)."""
        if not self._initialized:
            raise RuntimeError("Thread.__init__() not called")
        if not self._is_started:
            raise RuntimeError("cannot join thread before it is started")
        if self._has_ended():  # the common case; an ended thread is not the current one
            return
        if self is current_thread():
            raise RuntimeError("cannot join current thread")
        if timeout is not None:
            timeout = max(timeout, 0)  # as the stdlib: its errors for a wrong type
            _check_timeout(True, timeout)  # and for NaN or one too large
        with _active_mutex:
            if self._has_ended() or (timeout is not None and timeout <= 0):
                return
            waiter = _Waiter()
            joiners = self._joiners
            if joiners is None:
                joiners = self._joiners = []
            joiners.append(waiter)
        try:
            waiter.wait(timeout)
        finally:
            if not waiter.fired:  # timed out or interrupted: stop waiting
                with _active_mutex:
                    if self._joiners is joiners and not waiter.fired:
                        joiners.remove(waiter)

    @property
    def name(self) -> str:
        """The thread's name (for identification only)."""
        assert self._initialized, "Thread.__init__() not called"
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        assert self._initialized, "Thread.__init__() not called"
        self._name = str(name)

    @property
    def ident(self) -> int | None:
        """The thread identifier (``id(task)`` for a green thread), None before start()."""
        assert self._initialized, "Thread.__init__() not called"
        return self._ident

    @property
    def native_id(self) -> int | None:
        """The OS thread id the thread runs on, None before start()."""
        assert self._initialized, "Thread.__init__() not called"
        return self._native_id

    def is_alive(self) -> bool:
        """Whether the thread has started and not yet ended."""
        assert self._initialized, "Thread.__init__() not called"
        return self._is_started and not self._is_stopped

    @property
    def daemon(self) -> bool:
        """Daemon threads are not waited for at program exit."""
        assert self._initialized, "Thread.__init__() not called"
        return self._daemonic

    @daemon.setter
    def daemon(self, daemonic: bool) -> None:
        if not self._initialized:
            raise RuntimeError("Thread.__init__() not called")
        if self._is_started:
            raise RuntimeError("cannot set daemon status of active thread")
        self._daemonic = daemonic

    def isDaemon(self) -> bool:  # noqa: N802 - the stdlib's deprecated alias
        """Deprecated: use the ``daemon`` attribute."""
        warnings.warn("isDaemon() is deprecated, get the daemon attribute instead",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        return self.daemon

    def setDaemon(self, daemonic: bool) -> None:  # noqa: N802
        """Deprecated: set the ``daemon`` attribute."""
        warnings.warn("setDaemon() is deprecated, set the daemon attribute instead",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        self.daemon = daemonic

    def getName(self) -> str:  # noqa: N802
        """Deprecated: use the ``name`` attribute."""
        warnings.warn("getName() is deprecated, get the name attribute instead",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        return self.name

    def setName(self, name: str) -> None:  # noqa: N802
        """Deprecated: set the ``name`` attribute."""
        warnings.warn("setName() is deprecated, set the name attribute instead",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        self.name = name


class Timer(Thread):
    """Call a function after ``interval`` seconds, unless cancelled first."""

    def __init__(
        self,
        interval: float,
        function: Callable[..., object],
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        Thread.__init__(self)
        self.interval = interval
        self.function = function
        self.args = args if args is not None else []
        self.kwargs = kwargs if kwargs is not None else {}
        self.finished = Event()

    def cancel(self) -> None:
        """Stop the timer if it has not fired yet."""
        self.finished.set()

    def run(self) -> None:
        """Wait ``interval`` seconds, then call the function unless cancelled."""
        self.finished.wait(self.interval)
        if not self.finished.is_set():
            self.function(*self.args, **self.kwargs)
        self.finished.set()


class _MainThread(Thread):
    def __init__(self) -> None:
        Thread.__init__(self, name="MainThread", daemon=False)
        self._is_started = True
        main = _std.main_thread()
        self._ident = main.ident
        self._native_id = getattr(main, "native_id", None)


class _DummyThread(Thread):
    """A thread not started by this module (a plain task, or a foreign OS thread)."""

    def __init__(self, ident: int, daemon: bool = True) -> None:
        Thread.__init__(self, name=_newname("Dummy-%d"), daemon=daemon)
        self._is_started = True
        self._ident = ident
        self._native_id = get_native_id()

    def is_alive(self) -> bool:
        """Dummy threads are alive while registered."""
        return not self._is_stopped

    def join(self, timeout: float | None = None) -> None:
        """Dummy threads cannot be joined."""
        raise RuntimeError("cannot join a dummy thread")


def _forget_task(ident: int, _task: object) -> None:
    with _active_mutex:
        thread = _active.pop(ident, None)
    if thread is not None:
        thread._is_stopped = True


def current_thread() -> Thread:
    """The Thread object of the calling green thread (a dummy one for foreign threads)."""
    ident = get_ident()
    try:
        return _active[ident]
    except KeyError:
        pass
    loop = _get_running_loop()
    task = None if loop is None else _current_task(loop)
    if task is None:
        foreign = _std._active.get(ident)  # type: ignore[attr-defined]
        if foreign is not None:
            return foreign  # type: ignore[no-any-return]
    # A foreign OS thread is daemonic, as in the stdlib; a task not started by Thread
    # (the body of an async program) is not, so the threads it starts are not either.
    dummy = _DummyThread(ident, daemon=task is None)
    with _active_mutex:
        _active[ident] = dummy
    if task is not None:
        task.add_done_callback(functools.partial(_forget_task, ident))
    return dummy


def main_thread() -> Thread:
    """The main thread (under ``python -m greenbridge``: the program's green thread)."""
    return _main_thread


def enumerate() -> list[Thread]:  # noqa: A001 - the stdlib's name
    """Every Thread alive now, green and real."""
    with _active_mutex:
        threads = list(_active.values()) + list(_limbo.values())
    unique: dict[int, Thread] = {}
    for thread in threads:
        unique.setdefault(id(thread), thread)
    return list(unique.values())


def active_count() -> int:
    """The number of Thread objects alive now."""
    return len(enumerate())


def activeCount() -> int:  # noqa: N802 - the stdlib's deprecated alias
    """Deprecated alias of :func:`active_count`."""
    warnings.warn(
        "activeCount() is deprecated, use active_count() instead", DeprecationWarning, stacklevel=2
    )
    return active_count()


def currentThread() -> Thread:  # noqa: N802 - the stdlib's deprecated alias
    """Deprecated alias of :func:`current_thread`."""
    warnings.warn(
        "currentThread() is deprecated, use current_thread() instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return current_thread()


def _adopt_main_thread() -> None:
    """Make the calling green thread the main thread (used by ``python -m greenbridge``)."""
    ident = get_ident()
    with _active_mutex:
        _active[ident] = _main_thread
    _main_thread._ident = ident


def _non_daemon_threads() -> list[Thread]:
    return [t for t in enumerate() if not t.daemon and t is not _main_thread and t.is_alive()]


def _shutdown() -> None:
    """Called by the interpreter at exit: wait for non-daemon OS threads, as the stdlib does."""
    _std._shutdown()  # type: ignore[attr-defined]


def _count() -> int:
    """Green threads alive plus the interpreter's real threads (as ``_thread._count``)."""
    return len(_active) + _real_thread._count()


_enumerate = enumerate
_allocate_lock = Lock
_CRLock = _PyRLock = _RLock = RLock
_main_thread = _MainThread()
_active[_main_thread._ident or 0] = _main_thread

# Re-export every other name of the standard module (documented or internal), so
# code that reaches for ``threading.<name>`` finds it.
for _name in dir(_std):
    if _name not in globals() and not _name.startswith("__"):
        globals()[_name] = getattr(_std, _name)
del _name
if hasattr(_std, "_make_invoke_excepthook"):
    # The stdlib helper that calls ``excepthook``: with our globals, it calls ours.
    _make_invoke_excepthook = _rebind(_std._make_invoke_excepthook, globals())
