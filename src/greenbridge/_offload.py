"""Run a blocking call in a worker thread while only the calling greenlet waits.

Some blocking calls offer no hook to wait on the event loop: a C extension
that does its own I/O (mysqlclient, a vendor SDK), a CPU-heavy function that
releases the GIL (hashing, compression, NumPy).  :func:`offload` runs such a
call in a thread of a bounded pool; the calling greenlet (or coroutine, with
:func:`offload_async`) waits on the event loop meanwhile, so every other task
keeps running.

What it does about the hard parts:

* **Bounded**: each :class:`OffloadPool` runs at most ``max_workers`` calls at
  once; more calls queue (waiting on the loop, not blocking it).
* **Cancellation**: a call still queued is removed and never runs.  A call
  already running cannot be interrupted (nothing can stop a C function from
  the outside); its result or exception is dropped when it ends, and the
  ``cleanup`` callback, if given, receives the dropped result so that a
  resource it holds (a connection, a file) is released, not leaked.
* **Context**: the call runs in a *copy* of the caller's
  :class:`contextvars.Context`, so it sees the caller's context variables;
  values it sets stay in the thread's copy (it runs in parallel with the
  loop, so sharing the Context itself would not be safe).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._bridge import await_
from ._callables import callable_name, is_async_callable
from ._where import running_loop

__all__ = ["OffloadPool", "offload", "offload_async"]

T = TypeVar("T")

logger = logging.getLogger("greenbridge")


class OffloadPool:
    """A bounded pool of OS threads for :func:`offload` / :func:`offload_async`.

    Args:
        max_workers: most calls running at the same time (at least 1).
            Calls beyond that wait in a queue, on the event loop.
        name: prefix of the worker threads' names.

    Threads are started on demand and reused.  The pool can be used from any
    thread and any event loop.  :func:`offload` without ``pool=`` uses a
    process-wide default pool of ``min(32, os.cpu_count() + 4)`` threads.
    """

    def __init__(self, max_workers: int = 8, *, name: str = "greenbridge-offload") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=name
        )

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> concurrent.futures.Future[T]:
        unchecked: object = fn  # callers may pass anything
        if not callable(unchecked):
            kind = type(unchecked).__name__
            raise TypeError(f"offload() expects a blocking sync callable, got {kind!r}")
        if is_async_callable(fn):
            raise TypeError(
                f"offload() runs blocking sync functions in a thread, but {callable_name(fn)} is "
                "async: await it directly (or through greenbridge.await_ from sync code)"
            )
        context = contextvars.copy_context()
        return self._executor.submit(context.run, _call_sync, fn, args)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the pool: queued calls are cancelled; with ``wait``, wait for running ones.

        Later submissions raise :class:`RuntimeError`.  Do not call it with
        ``wait=True`` from bridged code: that would block the event loop.
        """
        self._executor.shutdown(wait=wait, cancel_futures=True)

    def __repr__(self) -> str:
        return f"<OffloadPool max_workers={self.max_workers}>"


def _call_sync(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """Run ``fn(*args)`` in a pool thread; a coroutine it returns is an error, not a result."""
    result = fn(*args)
    if asyncio.iscoroutine(result):
        result.close()  # nobody could await it: no "never awaited" warning
        raise TypeError(
            f"offload() runs blocking sync functions, but {callable_name(fn)} returned a "
            "coroutine: await it instead of offloading it"
        )
    return result


_default_pool: OffloadPool | None = None
_default_lock = threading.Lock()


def _get_default_pool() -> OffloadPool:
    global _default_pool
    pool = _default_pool
    if pool is None:
        with _default_lock:
            pool = _default_pool
            if pool is None:
                pool = _default_pool = OffloadPool(min(32, (os.cpu_count() or 1) + 4))
    return pool


def _drop(future: concurrent.futures.Future[T], cleanup: Callable[[T], object] | None) -> None:
    """The caller gave up on ``future``: drop its outcome, cleaning up a result."""

    def done(f: concurrent.futures.Future[T]) -> None:
        if f.cancelled():
            return
        exc = f.exception()
        if exc is not None:
            logger.debug("greenbridge.offload: dropped the exception of a cancelled call: %r", exc)
            return
        if cleanup is None:
            return
        try:
            cleanup(f.result())
        except Exception:
            logger.exception("greenbridge.offload: cleanup callback failed")

    # A call still queued never starts; one already running is not interrupted:
    # its outcome is dropped (and cleaned up) when it ends.
    future.cancel()
    future.add_done_callback(done)


async def offload_async(
    fn: Callable[..., T],
    /,
    *args: Any,
    cleanup: Callable[[T], object] | None = None,
    pool: OffloadPool | None = None,
) -> T:
    """Run ``fn(*args)`` in a worker thread and wait for it without blocking the loop.

    The coroutine form of :func:`offload`, for async code (asyncio, uvloop or
    trio).  Pass keyword arguments to ``fn`` with :func:`functools.partial`.

    Args:
        fn: the blocking callable.
        args: its positional arguments.
        cleanup: called with ``fn``'s result if the caller was cancelled
            while ``fn`` was running (``fn`` still ends, and its result would
            otherwise be lost); runs in the worker thread, or right away if
            the result was already there.  Exceptions of a dropped call are
            logged at debug level and discarded.
        pool: the :class:`OffloadPool` to use (default: the shared one).

    Returns:
        ``fn``'s result; its exception is raised here.
    """
    future = (pool or _get_default_pool())._submit(fn, args)
    loop = running_loop()
    if isinstance(loop, asyncio.AbstractEventLoop):
        waiter = asyncio.wrap_future(future, loop=loop)
        try:
            return await waiter
        except asyncio.CancelledError:
            _drop(future, cleanup)
            raise
    if loop is not None and "trio" in sys.modules:
        return await _wait_trio(future, cleanup)
    raise RuntimeError("offload_async() must be awaited in an asyncio, uvloop or trio task")


async def _wait_trio(
    future: concurrent.futures.Future[T], cleanup: Callable[[T], object] | None
) -> T:
    import trio

    token = trio.lowlevel.current_trio_token()
    task = trio.lowlevel.current_task()
    state = {"waiting": True}

    def wake() -> None:
        if state["waiting"]:
            state["waiting"] = False
            trio.lowlevel.reschedule(task)

    def on_done(_: concurrent.futures.Future[T]) -> None:
        # The run may have ended meanwhile: nobody is left to wake.
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(wake)

    def abort(_: Any) -> Any:
        state["waiting"] = False
        _drop(future, cleanup)
        return trio.lowlevel.Abort.SUCCEEDED

    future.add_done_callback(on_done)
    await trio.lowlevel.wait_task_rescheduled(abort)
    return future.result()


def offload(
    fn: Callable[..., T],
    /,
    *args: Any,
    cleanup: Callable[[T], object] | None = None,
    pool: OffloadPool | None = None,
) -> T:
    """Run ``fn(*args)`` in a worker thread; only the calling greenlet waits.

    For blocking calls that give the event loop no way to wait for them: a C
    extension doing its own I/O (e.g. mysqlclient), a CPU-heavy call that
    releases the GIL.  From sync code run by :func:`greenbridge.async_` /
    :func:`greenbridge.spawn` (or a task with a portal), the calling greenlet
    is suspended on the loop until the thread is done, and other tasks keep
    running.  With no event loop running in this thread, it simply waits for
    the thread.  Pass keyword arguments to ``fn`` with
    :func:`functools.partial`.

    Cancellation (a task cancelled, a timeout) raises at this call at once; a
    call still queued never runs; a call already running cannot be
    interrupted: it goes on in its thread, its outcome is dropped and
    ``cleanup`` receives a dropped result (see :func:`offload_async`).

    ``fn`` runs in a copy of the caller's context variables.

    Raises:
        greenbridge.MissingBridge: an event loop is running in this thread but
            the caller is not bridged sync code (waiting would block the loop);
            from a coroutine use ``await offload_async(...)``.
    """
    if running_loop() is None:
        future = (pool or _get_default_pool())._submit(fn, args)
        try:
            return future.result()
        except BaseException:
            if not future.done():  # interrupted (e.g. KeyboardInterrupt)
                _drop(future, cleanup)
            raise
    return await_(offload_async(fn, *args, cleanup=cleanup, pool=pool))
