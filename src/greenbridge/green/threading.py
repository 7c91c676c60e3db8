"""Green ``threading``: threads are greenlets on the loop, locks suspend only the waiter.

A :class:`Thread` started while an asyncio event loop runs in the calling OS
thread runs ``run()`` in a worker greenlet that loop callbacks start and
resume, with no asyncio task until it awaits asyncio code (see
:mod:`greenbridge._bare`); every blocking call in this module
(``Lock.acquire``, ``Event.wait``, ``Thread.join``, ...) suspends that green
thread only.  Started with no loop running, a :class:`Thread` is a real OS thread, so
the module behaves like the standard library there.  Under trio too a
:class:`Thread` is a real OS thread (a green thread is a task started with
:func:`greenbridge.spawn`, and trio has no way to start a task from sync code
without a nursery); the locks, conditions, events, queues and ``join()``
still suspend only the calling trio task, and work between trio tasks and
those OS threads.

This module holds the threads (``Thread``, ``Timer``, ``current_thread``,
``enumerate``, the main thread) and is the stdlib-compatible namespace; the
rest lives in one module per mechanism, re-exported here:

* :mod:`greenbridge.green._waiter`: the one waiter every blocking call parks
  on (a green thread suspends, a real OS thread blocks for real);
* :mod:`greenbridge.green._locks`: ``Lock``, ``RLock``, ``Condition``,
  ``Semaphore``, ``BoundedSemaphore``, ``Event``, ``Barrier``;
* :mod:`greenbridge.green._ident`: who the current green thread is;
* :mod:`greenbridge.green._local`: ``local``.

Identity: in a green :class:`Thread`, :func:`get_ident` is ``id()`` of its
run object (before and after it gets a task); inside any other asyncio or trio
task it is ``id(task)``; elsewhere it is the OS thread's identifier.
:class:`local` keeps one namespace per green thread and per OS thread.

Everything else the standard module exports (
``ExceptHookArgs``, ``BrokenBarrierError``, ``settrace``, ``stack_size``,
``TIMEOUT_MAX``, ...) is re-exported unchanged.
"""

from __future__ import annotations

import _thread as _real_thread
import asyncio
import functools
import itertools
import sys
import threading as _std
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from greenlet import GreenletExit

from .._bare import Run
from .._bare import start as start_bare
from .._patcher import rebind as _rebind
from .._where import asyncio_loop
from . import _util
from ._ident import active_threads, current_task
from ._ident import get_ident as get_ident
from ._local import local as local
from ._locks import Barrier as Barrier
from ._locks import BoundedSemaphore as BoundedSemaphore
from ._locks import Condition as Condition
from ._locks import Event as Event
from ._locks import Lock as Lock
from ._locks import RLock as RLock
from ._locks import Semaphore as Semaphore
from ._util import call_flat
from ._waiter import Waiter, check_timeout

_real_allocate = _real_thread.allocate_lock
_real_get_ident = _real_thread.get_ident

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
# threads

_active_mutex = _real_allocate()
_active: dict[int, Thread] = active_threads  # the stdlib's name for it
_limbo: dict[Thread, Thread] = {}
_counter = itertools.count(1).__next__


_NAME_TARGET = sys.version_info >= (3, 10)  # "Thread-1 (target)" names, as the stdlib's
_NO_NAME: Any = object()


def _newname(template: str = "Thread-%d") -> str:
    return template % _counter()


def _deprecated_accessor(name: str, attribute: str, setter: bool) -> Any:
    """One of Thread's deprecated camelCase accessors of ``attribute``, as the stdlib has them."""
    verb = "set" if setter else "get"
    message = f"{name}() is deprecated, {verb} the {attribute} attribute instead"

    def set_it(self: Thread, value: Any) -> None:
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        setattr(self, attribute, value)

    def get_it(self: Thread) -> Any:
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return getattr(self, attribute)

    accessor = set_it if setter else get_it
    accessor.__name__ = name
    accessor.__qualname__ = f"Thread.{name}"
    accessor.__doc__ = f"Deprecated: {verb} the ``{attribute}`` attribute."
    return accessor


class Thread:
    """A thread of control: a green thread when a loop runs, else a real OS thread.

    Same API as ``threading.Thread``.  ``start()`` called while an asyncio
    loop runs in this OS thread runs ``run()`` in a worker greenlet, started
    at the loop's next turn in a copy of the caller's context; it gets an
    asyncio task only when it first awaits asyncio code (``await_``), and
    keeps it.  ``ident`` is then a green identifier (the same before and
    after) and ``native_id`` the loop's OS thread id.  When the loop's tasks
    are all cancelled (as ``asyncio.run`` does at its end) the green threads
    still waiting are cancelled too.  With no loop running, ``start()``
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
        self._target = target
        if name:
            self._name: Any = str(name)
        else:
            # The stdlib's "Thread-N (target)", formatted when first read (most
            # names never are): its number now, and what the target is called.
            self._name = _counter()
            self._named = getattr(target, "__name__", _NO_NAME) if _NAME_TARGET else _NO_NAME
        self._args = args
        self._kwargs = kwargs
        self._daemonic: bool = current_thread()._daemonic if daemon is None else bool(daemon)
        self._ident: int | None = None
        self._native_id: int | None = None
        # Plain flags instead of the stdlib's two Events: most threads are never
        # waited for, and every object a thread owns costs the garbage collector.
        self._is_started = False
        self._is_stopped = False
        # join() waiters, created by the first join() that has to wait; set to
        # None again (and every waiter woken) when the thread ends.
        self._joiners: list[Waiter] | None = None
        # The green thread's run (greenbridge._bare), while started under asyncio.
        self._run: Run | None = None
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
        return f"<{type(self).__name__}({self.name}, {status})>"

    def start(self) -> None:
        """Start the thread: a green thread on the running asyncio loop, else an OS thread."""
        if not self._initialized:
            raise RuntimeError("thread.__init__() not called")
        if self._is_started:
            raise RuntimeError("threads can only be started once")
        loop = asyncio_loop()
        if loop is not None:
            # A worker greenlet with no task until it needs one (see greenbridge._bare).
            # It starts at the loop's next turn: registered before that, it needs no
            # stay in _limbo.
            run = start_bare(self._run_and_finish, (), loop)
            self._run = run
            ident = self._ident = id(run)
            self._native_id = run.guard.native_id
            with _active_mutex:
                _active[ident] = self
            self._is_started = True
            return
        with _active_mutex:
            _limbo[self] = self
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
            if self._target is not None:
                call_flat(self._target, self._args, self._kwargs)
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
        # The hooks of settrace()/setprofile(), which are the stdlib's (so they
        # reach the stdlib's threads too): they keep them in its module.
        trace_hook = getattr(_std, "_trace_hook", None)
        if trace_hook is not None:
            sys.settrace(trace_hook)
        profile_hook = getattr(_std, "_profile_hook", None)
        if profile_hook is not None:
            sys.setprofile(profile_hook)
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
        if self._is_stopped:  # the common case; an ended thread is not the current one
            return
        if self is current_thread():
            raise RuntimeError("cannot join current thread")
        if timeout is not None:
            timeout = max(timeout, 0)  # as the stdlib: its errors for a wrong type
            check_timeout(True, timeout)  # and for NaN or one too large
        with _active_mutex:
            if self._has_ended() or (timeout is not None and timeout <= 0):
                return
            waiter = Waiter()
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
        name = self._name
        if type(name) is int:  # not formatted yet (see __init__)
            name = f"Thread-{name}"
            if self._named is not _NO_NAME:
                name += f" ({self._named})"
            self._name = name
        return name  # type: ignore[no-any-return]

    @name.setter
    def name(self, name: str) -> None:
        assert self._initialized, "Thread.__init__() not called"
        self._name = str(name)

    @property
    def ident(self) -> int | None:
        """The thread identifier (a green one for a green thread), None before start()."""
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

    isDaemon = _deprecated_accessor("isDaemon", "daemon", setter=False)  # noqa: N815
    setDaemon = _deprecated_accessor("setDaemon", "daemon", setter=True)  # noqa: N815
    getName = _deprecated_accessor("getName", "name", setter=False)  # noqa: N815
    setName = _deprecated_accessor("setName", "name", setter=True)  # noqa: N815


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
    task = current_task()
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
        add_done_callback = getattr(task, "add_done_callback", None)
        if add_done_callback is not None:  # an asyncio task
            add_done_callback(functools.partial(_forget_task, ident))
        else:  # a trio task: no callbacks, but it is dropped once it ended
            weakref.finalize(task, _forget_task, ident, None)
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


def adopt_main_thread() -> None:
    """Make the calling green thread the main thread (used by ``python -m greenbridge``)."""
    ident = get_ident()
    with _active_mutex:
        _active[ident] = _main_thread
    _main_thread._ident = ident


def non_daemon_threads() -> list[Thread]:
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
_util.reexport(globals(), _std, keep=True)
if hasattr(_std, "_make_invoke_excepthook"):
    # The stdlib helper that calls ``excepthook``: with our globals, it calls ours.
    _make_invoke_excepthook = _rebind(_std._make_invoke_excepthook, globals())
