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
import inspect
import sys
import time
import types
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from greenlet import getcurrent

from ._callables import callable_name, is_async_callable
from ._private_loop import await_outside
from ._trampoline import Pending, Worker, chain_thrown, handled_exception, iterator, launch, step

if sys.version_info >= (3, 10) or TYPE_CHECKING:
    from typing import ParamSpec

_monotonic = time.monotonic

__all__ = ["async_", "await_", "spawn"]

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

    # None: run in the caller's Context itself; else take a copy at each call.
    copy = None if with_context else contextvars.copy_context

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        result = launch(fn, args, kwargs, None if copy is None else copy())
        if type(result) is Pending:
            result = await result
        if type(result) is _CoroutineType:
            _returned_coroutine("async_", fn, result)
        return cast(T, result)

    return run


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
        # Before anything is stepped or yielded, a green thread with no task yet
        # (greenbridge._bare) gets one, so the awaitable sees it (current_task(),
        # asyncio.timeout); a done Future observes nothing and needs none.
        cls = type(awaitable)
        if cls is _CoroutineType:
            if awaitable.cr_await is not None:
                # What `await` checks first (GET_AWAITABLE): another task is
                # suspended in this coroutine; stepping it would steal its wake-ups.
                raise RuntimeError("coroutine is being awaited already")
            thread = current.thread
            if thread is not None and thread.task is None:
                thread.adopt(current)
            return step(awaitable, current)
        if isinstance(awaitable, asyncio.Future):
            # What Future.__await__ does, without a stepper: yield it (as a
            # trap) unless it is done, then take its result.
            if not awaitable.done():
                thread = current.thread
                if thread is not None and thread.task is None:
                    thread.adopt(current)
                awaitable._asyncio_future_blocking = True
                handled = handled_exception()
                current.since = _monotonic()  # for dump_stacks
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
        thread = current.thread
        if thread is not None and thread.task is None:
            thread.adopt(current)
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
