"""The bridge's public functions: ``async_``, ``await_`` and ``spawn``.

How they work: `async_` and `spawn` start the sync function in a worker
greenlet and drive it with the trampoline (`greenbridge._trampoline`: read
its docstring for the mechanism); `await_` in a worker steps the awaitable
right there and passes only its traps on to the driver.  This module holds
what is particular to each function: its checks and error messages, and the
order of the fast paths in `await_`.  Outside a worker, `await_` hands the
awaitable to SQLAlchemy's driver (in its ``greenlet_spawn`` greenlets) or
to the no-loop mode (`greenbridge._private_loop`), which raises
`MissingBridge` when a loop runs.  Portals are in `greenbridge._portal`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import signal
import sys
import threading
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from greenlet import getcurrent

from ._callables import callable_name, is_async_callable
from ._errors import MissingBridge, missing_bridge
from ._trampoline import (
    NO_KWARGS,
    Pending,
    Worker,
    await_in_worker,
    call_handling,
    chain_thrown,
    handled_exception,
    iterator,
    launch,
    step,
)
from ._where import running_loop

if sys.version_info >= (3, 10) or TYPE_CHECKING:
    from typing import ParamSpec

__all__ = [
    "MissingBridge",
    "async_",
    "await_",
    "spawn",
    "ensure_portal",
    "install_portal_factory",
    "has_portal",
    "close_private_loop",
    "current_private_loop",
]

T = TypeVar("T")
if sys.version_info >= (3, 10) or TYPE_CHECKING:
    P = ParamSpec("P")
else:  # pragma: no cover - 3.9: annotations are strings, P is never evaluated
    P = TypeVar("P")

_CoroutineType = types.CoroutineType


# ---------------------------------------------------------------------------
# async_


@overload
def async_(
    fn: Callable[P, T], *, with_context: bool = True
) -> Callable[P, Coroutine[Any, Any, T]]: ...


@overload
def async_(
    fn: None = None, *, with_context: bool = True
) -> Callable[[Callable[P, T]], Callable[P, Coroutine[Any, Any, T]]]: ...


def async_(fn: Callable[P, T] | None = None, *, with_context: bool = True) -> Any:
    """Turn a sync function into a coroutine function that runs it in a greenlet.

    Use it as a call (``await async_(fn)(*args)``) or a decorator (``@async_`` or
    ``@async_()``).  The result is a real coroutine function with ``fn``'s
    name, docstring and signature.  Inside ``fn`` (and anything it calls),
    `await_` suspends only this call, never the event loop.

    Args:
        fn: the sync function.
        with_context: if true (the default), ``fn`` runs in its caller's
            `contextvars.Context` itself, so values it sets are seen by
            the caller afterwards, as with a plain call.  If false, it runs in
            a copy taken when the coroutine starts.

    Raises:
        TypeError: ``fn`` is not callable, or is async (a coroutine function,
            a ``functools.partial`` of one, an object with an ``async def
            __call__``).  Awaiting the coroutine function raises TypeError
            (and closes the coroutine) if ``fn`` returns a coroutine.
    """
    if fn is None:

        def decorate(f: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
            return async_(f, with_context=with_context)

        return decorate
    if not callable(fn):
        raise _not_callable("async_", fn, "await it directly")
    if is_async_callable(fn):
        kind = (
            "a coroutine function"
            if inspect.iscoroutinefunction(fn)
            else "async (calling it returns a coroutine)"
        )
        raise TypeError(
            f"async_() expects a sync function, but {callable_name(fn)} is already {kind}: "
            "await it directly"
        )

    if with_context:

        @functools.wraps(fn)
        async def run_shared(*args: P.args, **kwargs: P.kwargs) -> T:
            result = launch(fn, args, kwargs, None)
            if type(result) is Pending:
                result = await result
            if type(result) is _CoroutineType:
                _returned_coroutine("async_", fn, result)
            return cast(T, result)

        return run_shared

    @functools.wraps(fn)
    async def run_copied(*args: P.args, **kwargs: P.kwargs) -> T:
        context = contextvars.copy_context()
        result = launch(fn, args, kwargs, context)
        if type(result) is Pending:
            result = await result
        if type(result) is _CoroutineType:
            _returned_coroutine("async_", fn, result)
        return cast(T, result)

    return run_copied


def _not_callable(where: str, obj: object, coroutine_fix: str) -> TypeError:
    """The error for ``where(obj)`` with a non-callable; a coroutine is closed first."""
    if inspect.iscoroutine(obj):
        obj.close()  # no "never awaited" warning on top of this error
        return TypeError(
            f"{where}() expects a sync callable, got the coroutine {obj.__qualname__}(): "
            f"{coroutine_fix}"
        )
    return TypeError(f"{where}() expects a sync callable, got {type(obj).__name__!r}")


def _returned_coroutine(where: str, fn: object, coro: types.CoroutineType[Any, Any, Any]) -> None:
    """``fn`` run by async_/spawn returned a coroutine: close it and say what to do."""
    name = callable_name(fn)
    coro.close()  # never started: closing it runs nothing, and no "never awaited" warning
    raise TypeError(
        f"{where}() expects a sync function, but {name} returned a coroutine "
        f"({coro.__qualname__}); it is async: await it directly (or "
        f"asyncio.create_task() it) instead of passing it to {where}()"
    )


# ---------------------------------------------------------------------------
# spawn


async def _spawned(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    """A spawn() task's coroutine (renamed after ``fn`` by `spawn`)."""
    result = launch(fn, args, kwargs, None)
    if type(result) is Pending:
        result = await result
    if type(result) is _CoroutineType:
        _returned_coroutine("spawn", fn, result)
    return cast(T, result)


def spawn(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Task[T]:
    """Start ``fn(*args, **kwargs)`` as a concurrent asyncio Task and return it.

    ``fn`` runs in a greenlet, in the task's own Context (a copy of the
    caller's, as for `asyncio.create_task`), and may call
    `await_`.  Works from coroutines and from bridged sync code alike.

    The task's coroutine carries ``fn``'s name, so the task's repr and
    asyncio's "Task exception was never retrieved" log name ``fn``; the task
    gets the default name (``Task-N``), as with `asyncio.create_task`.

    Raises:
        TypeError: ``fn`` is not a sync callable (see `async_`).
        RuntimeError: no asyncio event loop is running in this thread.
    """
    if not callable(fn):
        raise _not_callable("spawn", fn, "for a coroutine use asyncio.create_task()")
    if is_async_callable(fn):
        raise TypeError(
            f"spawn() expects a sync callable, but {callable_name(fn)} is async: "
            "use asyncio.create_task() on the coroutine it returns"
        )
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "spawn() needs a running asyncio event loop in this thread; "
            "call it from async code or from sync code run by async_()/spawn() "
            "(under trio, use nursery.start_soon(async_(fn), ...))"
        ) from None
    coro: Any = _spawned(fn, args, kwargs)
    # Name the coroutine after fn, so the task's repr and asyncio's "exception
    # was never retrieved" log show the user's function (as create_task(af())
    # would show af), not greenbridge's wrapper.
    try:
        coro.__qualname__ = fn.__qualname__
        coro.__name__ = fn.__name__
    except (AttributeError, TypeError):  # a partial, a callable object...
        coro.__name__ = coro.__qualname__ = callable_name(fn)
    return loop.create_task(coro)


# ---------------------------------------------------------------------------
# await_


@overload
def await_(awaitable: Callable[P, Awaitable[T]]) -> Callable[P, T]: ...


@overload
def await_(awaitable: Awaitable[T]) -> T: ...


def await_(awaitable: Any) -> Any:
    """Wait for an awaitable from sync code and return its result.

    Accepts coroutines, Futures, Tasks and any object with ``__await__``;
    raises the awaitable's exception with its traceback.  Where it may run:

    * in sync code started by `async_` or `spawn`, or called
      from a task that has a portal (`ensure_portal`,
      `install_portal_factory`): only this call is suspended, the
      event loop keeps running;
    * in a thread with no running event loop: the awaitable runs to the end
      on this thread's private loop (see `close_private_loop`), in the
      caller's Context, as `asyncio.run` runs its main task: Ctrl-C
      cancels it (its ``finally`` blocks see CancelledError) and then raises
      KeyboardInterrupt here; when KeyboardInterrupt, SystemExit or another
      BaseException (not CancelledError) leaves this call, every task still
      pending on the private loop is cancelled and run to its end (the loop
      stays open);
    * anywhere else `MissingBridge` is raised (and a coroutine passed
      in is closed, so no "never awaited" warning follows).

    Given an async function instead of an awaitable (a coroutine function,
    a ``functools.partial`` of one, or an object with an ``async def
    __call__``), ``await_`` acts as a decorator and returns a sync function
    with the same signature.  Any other callable, even one that returns an
    awaitable, raises TypeError: pass the awaitable itself.
    """
    current = getcurrent()
    if type(current) is Worker:
        cls = type(awaitable)
        if cls is types.CoroutineType:
            if awaitable.cr_await is not None:
                # What `await` checks first (GET_AWAITABLE): another task is
                # suspended in this coroutine; stepping it would steal its wake-ups.
                raise RuntimeError("coroutine is being awaited already")
            return step(awaitable, current)
        if isinstance(awaitable, asyncio.Future):
            # What Future.__await__ does, without a stepper: yield it (as a
            # trap) unless it is done, then take its result.
            if not awaitable.done():
                awaitable._asyncio_future_blocking = True
                handled = handled_exception()
                try:
                    current.parent.switch(awaitable)  # type: ignore[union-attr]
                except BaseException as exc:
                    if handled is not None:
                        chain_thrown(exc, handled)
                    raise
                if not awaitable.done():
                    raise RuntimeError("await wasn't used with future")
            return awaitable.result()
        it = iterator(awaitable)
        if it is None:
            return _not_awaitable(awaitable)
        return step(it, current)
    if not inspect.isawaitable(awaitable):
        return _not_awaitable(awaitable)
    if getattr(current, "__sqlalchemy_greenlet_provider__", False):
        # Inside SQLAlchemy's greenlet_spawn(): hand the awaitable to its driver.
        return current.parent.switch(awaitable)  # type: ignore[union-attr]
    return await_outside(awaitable)


def _not_awaitable(obj: Any) -> Any:
    """await_() of something that is not awaitable: the decorator form, or a TypeError."""
    if is_async_callable(obj):
        return _sync_wrapper(obj)
    if inspect.isasyncgenfunction(obj):
        raise TypeError(
            f"await_() expects an awaitable, or an async function to turn into a sync one, "
            f"but {callable_name(obj)} is an async generator function: iterate what it returns "
            "with greenbridge.sync_iter()"
        )
    if callable(obj):
        name = callable_name(obj)
        raise TypeError(
            f"await_() expects an awaitable, or an async function to turn into a sync "
            f"one (the decorator form), but {name} is a sync callable: call it directly; "
            f"if it returns an awaitable, pass that to await_(): await_({name}(...))"
        )
    raise TypeError(f"object {type(obj).__name__} can't be used in 'await' expression")


def _sync_wrapper(fn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return await_(fn(*args, **kwargs))

    return call


# ---------------------------------------------------------------------------
# the private per-thread loop


class _PrivateState(threading.local):
    def __init__(self) -> None:
        # This thread's private loop (None until the first await_ that needs it).
        self.private_loop: asyncio.AbstractEventLoop | None = None
        # Dies with the thread's local state, and then closes the loop (see _private_loop).
        self.holder: object = None


_local = _PrivateState()


def current_private_loop() -> asyncio.AbstractEventLoop | None:
    """This thread's private loop, or None if it has none (for tests)."""
    return _local.private_loop


def await_outside(awaitable: Any) -> Any:
    """`greenbridge.await_` in a greenlet that cannot be suspended.

    With no loop running in this thread: run ``awaitable`` to its end on the
    private loop.  With one running: raise `MissingBridge`, closing a
    coroutine first (no "never awaited" warning on top of the error).
    """
    running = running_loop()
    if running is not None:
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        raise missing_bridge(not isinstance(running, asyncio.AbstractEventLoop))
    loop = _private_loop()
    # The awaitable runs in the caller's own Context (not a copy), as a native
    # ``await`` would: a ContextVar it sets is seen by the caller afterwards.
    # The Task is made directly (not through the loop's portal factory): its
    # coroutine starts a worker itself, so sync code the awaitable calls can
    # await_ too.
    context = getcurrent().gr_context
    if context is None:  # no Context in this thread yet: copying makes the thread's one
        contextvars.copy_context()
        context = getcurrent().gr_context
    coro: Any = _outside(awaitable, cast(contextvars.Context, context), handled_exception())
    if type(awaitable) is _CoroutineType:  # the task's repr names it, as asyncio.run's would
        coro.__name__ = awaitable.__name__
        coro.__qualname__ = awaitable.__qualname__
    task = asyncio.Task(coro, loop=loop)
    return _run_private(loop, task)


async def _outside(
    awaitable: Any, context: contextvars.Context, handling: BaseException | None
) -> Any:
    """The private loop's task for one `await_` call (see `await_outside`).

    ``handling``: the exception the caller is handling, seen by the awaitable
    as by a native ``await`` in an ``except`` block.
    """
    if handling is None:
        result = launch(await_in_worker, (awaitable,), NO_KWARGS, context)
    else:
        call = (handling, await_in_worker, (awaitable,), NO_KWARGS)
        result = launch(call_handling, call, NO_KWARGS, context)
    if type(result) is Pending:
        result = await _no_trio_traps(result)
    return result


@types.coroutine
def _no_trio_traps(pending: Pending) -> Generator[Any, Any, Any]:
    """Drive ``pending`` for the private loop, stopping trio traps at the door.

    A trio awaitable yields trio's own traps, which asyncio cannot run ("Task
    got bad yield").  The trap is answered instead by throwing `MissingBridge`
    into the awaitable, so its ``finally`` blocks run and the error says what
    to do.
    """
    it = pending.__await__()
    value: Any = None
    exc: BaseException | None = None
    while True:
        try:
            trap = it.send(value) if exc is None else it.throw(exc)
        except StopIteration as stop:
            return stop.value
        value = exc = None
        if trap is not None and _is_trio_trap(trap):
            exc = MissingBridge(
                "await_() got a trio awaitable while no event loop runs in this thread; "
                "trio awaitables need a running trio.run(): call this code from a trio "
                "task (through greenbridge.async_, or after greenbridge.ensure_portal())"
            )
            continue
        try:
            value = yield trap
        except GeneratorExit:
            it.close()
            raise
        except BaseException as thrown:  # noqa: BLE001 - forwarded to the awaitable
            exc = thrown
            del thrown


def _is_trio_trap(trap: Any) -> bool:
    if hasattr(trap, "_asyncio_future_blocking"):
        return False
    cls = trap if isinstance(trap, type) else type(trap)
    module = getattr(cls, "__module__", None) or ""
    return module == "trio" or module.startswith("trio.")


def _run_private(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> Any:
    """Run ``task`` to its end on the private ``loop``, as `asyncio.run` runs its main task.

    Ctrl-C: as `asyncio.Runner` does (3.11+), a SIGINT handler is installed
    while the loop runs (main thread, default handler only); the first
    Ctrl-C cancels the task, so its ``finally`` blocks see CancelledError,
    and KeyboardInterrupt is raised here once it has ended; a second one
    raises KeyboardInterrupt at once.  Whenever an exception that is not an
    ``Exception`` nor CancelledError (KeyboardInterrupt, SystemExit...) leaves this call, every
    task still pending on the private loop is cancelled and run to its end,
    as `asyncio.run` does when it finishes; the loop itself stays open.  So
    is it when the loop stops before the task has ended (``loop.stop()``).
    """
    interrupts = 0

    def on_sigint(signum: int, frame: types.FrameType | None) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1 and not task.done():
            task.cancel()
            loop.call_soon_threadsafe(_nothing)  # wake the loop out of its selector
            return
        raise KeyboardInterrupt()

    handler: Any = None
    if (
        threading.current_thread() is threading.main_thread()
        and _getsignal(_SIGINT) is _default_int_handler
    ):
        handler = on_sigint
        _setsignal(_SIGINT, handler)
    try:
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupts:
                uncancel = getattr(task, "uncancel", None)  # 3.11+
                if uncancel is None or uncancel() == 0:
                    raise KeyboardInterrupt()  # noqa: B904 - chained to the CancelledError, as asyncio.Runner
            raise
        finally:
            if handler is not None and _getsignal(_SIGINT) is handler:
                _setsignal(_SIGINT, _default_int_handler)
    except (Exception, asyncio.CancelledError):
        if not task.done():  # the loop was stopped (loop.stop()) before the task ended
            _cancel_pending(loop)
        raise  # else an outcome of the awaitable: the loop's other tasks go on
    except BaseException:
        _cancel_pending(loop)
        raise


def _nothing() -> None:
    pass


# The C functions under signal.getsignal()/signal.signal(): those wrappers try
# to turn the handler they return into an enum member, which for a function
# fails through a ValueError and costs several microseconds per await_.
_c_signal: Any = importlib.import_module("_signal")
_getsignal: Callable[[int], Any] = _c_signal.getsignal
_setsignal: Callable[[int, Any], Any] = _c_signal.signal
_SIGINT = int(signal.SIGINT)
_default_int_handler = signal.default_int_handler


def _cancel_pending(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel every task pending on ``loop`` and run them to their end (as asyncio.run)."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not pending:
        return
    for t in pending:
        t.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    for t in pending:
        if t.cancelled():
            continue
        exc = t.exception()
        if exc is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during greenbridge private loop shutdown",
                    "exception": exc,
                    "task": t,
                }
            )


# ---------------------------------------------------------------------------
# the private per-thread loop


def _private_loop() -> asyncio.AbstractEventLoop:
    loop = _local.private_loop
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        install_portal_factory(loop)
        _local.private_loop = loop
        # The holder lives in this thread's local state; when the thread ends
        # (for the main thread: at interpreter exit) it dies and closes the loop.
        holder = _Holder()
        _local.holder = holder
        main = threading.current_thread() is threading.main_thread()
        weakref.finalize(holder, _close_quietly, loop, main)
    return loop


class _Holder:
    __slots__ = ("__weakref__",)


def _close_quietly(loop: asyncio.AbstractEventLoop, main: bool) -> None:
    """Close a private loop whose thread ended, or the main thread's at exit.

    At interpreter exit (atexit, in the main thread) the main thread's loop is
    shut down as `close_private_loop` does, as `asyncio.run` would have done:
    pending tasks run their ``finally`` blocks.  Another thread's loop is only
    closed: this runs while that thread's state is torn down, where running
    the loop (and its worker greenlets) is not safe.
    """
    if loop.is_closed() or loop.is_running():
        return
    if main and threading.current_thread() is threading.main_thread():
        try:
            _shutdown(loop)
            return
        except Exception:  # noqa: BLE001 - at exit: close the loop whatever happened
            pass
    loop.close()


def _shutdown(loop: asyncio.AbstractEventLoop) -> None:
    """Shut ``loop`` down as asyncio.run does when it ends, then close it."""
    try:
        _cancel_pending(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def close_private_loop() -> None:
    """Close this thread's private event loop, if it has one.

    With no event loop running in a thread, `await_` runs awaitables on
    a private loop of that thread.  The loop persists between calls, so
    objects bound to it (connections, locks, futures) stay usable.  It is
    closed when the thread ends (for the main thread: at interpreter exit) or
    when you call this function; the next `await_` then creates a new
    one.  This function shuts the loop down as `asyncio.run` does when it
    ends: tasks still pending on it are cancelled and run to their end,
    then async generators are finalized and the default executor is shut down.
    The main thread's loop is shut down that way at interpreter exit; call
    this at the end of other threads that used `await_` with no loop
    running, or their pending tasks never finish.
    """
    loop = _local.private_loop
    _local.private_loop = None
    if loop is None or loop.is_closed():
        return
    if loop.is_running():
        _local.private_loop = loop
        raise RuntimeError("close_private_loop() called while the private loop is running")
    _shutdown(loop)


# ---------------------------------------------------------------------------
# portals


async def _call(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    result = launch(fn, args, kwargs, None)
    if type(result) is Pending:
        result = await result
    return cast(T, result)


async def _portal(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` inside a worker, so sync code it calls can await_."""
    return cast(T, await _call(await_in_worker, (awaitable,), {}))


def has_portal() -> bool:
    """Return true if `await_` can suspend the code calling this, right here."""
    return type(getcurrent()) is Worker


def install_portal_factory(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Give every task created on ``loop`` from now on a portal.

    Installs a task factory (chained with one already set) whose tasks run
    their coroutine through greenbridge, so plain sync functions called from
    those coroutines can use `await_`.  Each time such a task suspends
    it pays two greenlet switches.  ``task.get_coro()`` returns the wrapping
    coroutine.  Idempotent.  ``loop`` defaults to the running loop.
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "install_portal_factory() with no loop argument needs a running asyncio "
                "loop: call it from a coroutine, or pass the loop"
            ) from None
    elif not isinstance(loop, asyncio.AbstractEventLoop):
        raise TypeError(
            f"install_portal_factory() expects an asyncio event loop, got "
            f"{type(loop).__name__!r}; under trio use `await greenbridge.ensure_portal()` "
            "in each task"
        )
    previous = loop.get_task_factory()
    if getattr(previous, "__greenbridge_portal__", False):
        return

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        wrapped: Any = _portal_task(coro)
        if type(coro) is _CoroutineType:  # the task's repr names coro, as without a portal
            wrapped.__name__ = coro.__name__
            wrapped.__qualname__ = coro.__qualname__
        wrapped.send(None)  # to its first await: see _portal_task
        if previous is None:
            return asyncio.Task(wrapped, loop=loop, **kwargs)
        return previous(loop, wrapped, **kwargs)

    factory.__greenbridge_portal__ = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)


@types.coroutine
def _first_step() -> Generator[None, None, None]:
    yield


async def _portal_task(coro: Any) -> Any:
    """The coroutine of a task made by the portal factory, which steps it once.

    Started before the task is created, this waits in ``_first_step`` for the
    task's first step.  If that step throws an exception in instead (the task
    was cancelled before it started), ``coro`` never started: it is closed
    and the exception raised, as the task would do for ``coro`` itself.
    Unstarted, a wrapper like `_portal` would let the exception through
    without ever closing ``coro`` (reported as never awaited).
    """
    try:
        await _first_step()
    except GeneratorExit:  # the task was destroyed unstarted: so was coro, as natively
        raise
    except BaseException:
        coro.close()
        raise
    return await _call(await_in_worker, (coro,), {})


class _EnsurePortal:
    """Awaitable returned by `ensure_portal`."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, None]:
        if type(getcurrent()) is Worker:
            return
        yield from _rebind_current_task()


def ensure_portal() -> Awaitable[None]:
    """Give the current task a portal: ``await greenbridge.ensure_portal()``.

    Afterwards, sync functions called directly from this task's coroutine can
    use `await_`.  A no-op in a task that already has one (for example
    under `install_portal_factory`, or inside `async_`).
    """
    return _EnsurePortal()


def _rebind_current_task() -> Generator[Any, Any, None]:
    from ._portal import rebind_current_task

    return rebind_current_task(_portal)


# ---------------------------------------------------------------------------
# TEMPORARY re-exports for modules not yet moved (removed at merge)
#
# _hub.py, green/os.py, green/subprocess.py and green/threading.py still import
# these old names from here; the new home of each is on its right.
from . import _errors, _park, _trampoline, _where  # noqa: E402

_PARK = _park.PARK  # _park.PARK
park = _park.park  # _park.park
wake = _park.wake  # _park.wake
_Worker = _trampoline.Worker  # _trampoline.Worker
_chain = _trampoline.chain_thrown  # _trampoline.chain_thrown
_handled = _trampoline.handled_exception  # _trampoline.handled_exception
_running_loop = _where.running_loop  # _where.running_loop


def _missing_message(running: object) -> str:
    # raise _errors.missing_bridge(trio=not isinstance(running, asyncio.AbstractEventLoop))
    return str(_errors.missing_bridge(not isinstance(running, asyncio.AbstractEventLoop)))
