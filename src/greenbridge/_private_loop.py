"""The no-loop mode: `greenbridge.await_` with no event loop running in the thread.

Sync code that is not under any event loop (a script, a test, a worker
thread) may still call `greenbridge.await_`: the awaitable runs to its end on
a private event loop of the calling thread, in the caller's own Context, as
`asyncio.run` runs its main task (see `await_outside`).  The loop persists
between calls, so objects bound to it (connections, locks, futures) stay
usable; `close_private_loop` (or the thread's end) shuts it down as
`asyncio.run` does.  Its tasks get portals (`install_portal_factory`), and the
awaitable itself runs in a worker, so sync code it calls can use ``await_``
too.  Ctrl-C in the main thread cancels the awaitable first, as
`asyncio.Runner` does (see `_run_private`).
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import signal
import threading
import types
import weakref
from collections.abc import Callable, Generator
from typing import Any, cast

from greenlet import getcurrent

from ._errors import MissingBridge, missing_bridge
from ._portal import install_portal_factory
from ._trampoline import (
    NO_KWARGS,
    Pending,
    await_in_worker,
    call_handling,
    handled_exception,
    launch,
)
from ._where import running_loop

__all__ = ["await_outside", "close_private_loop", "current_private_loop"]

_CoroutineType = types.CoroutineType


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
