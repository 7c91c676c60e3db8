"""Re-entrant ``asyncio.run()`` / ``loop.run_until_complete()`` from bridged sync code.

Sync code that wraps an async client usually ends in ``asyncio.run(coro)``.
Called while an event loop already runs in the thread, that fails
("asyncio.run() cannot be called from a running event loop").  When the sync
code runs under greenbridge (``async_``, ``spawn``, or a task with a portal),
it can instead *wait* for the coroutine on the loop that is already running,
with :func:`greenbridge.await_`: only this sync call is suspended, the loop
keeps running everything else.

:func:`allow_reentrant_run` switches that on.  While it is active, these
public entry points are replaced by thin wrappers (and restored when the last
user disables it):

* ``asyncio.run`` (also ``asyncio.runners.run``);
* ``asyncio.Runner.run`` (Python 3.11+);
* ``asyncio.BaseEventLoop.run_until_complete`` (every loop of asyncio itself);
* ``uvloop.Loop.run_until_complete``, if uvloop is installed.

A wrapper redirects only when an asyncio loop is running in this thread *and*
``await_`` can suspend the caller right here (in sync code run by greenbridge,
see :func:`greenbridge.has_portal`, or in SQLAlchemy's ``greenlet_spawn``);
everywhere else it calls the original, so the original behaviour and errors
remain.  Nothing inside asyncio is patched and no C-level trick is used; this
works on uvloop, where ``nest_asyncio`` cannot.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, TypeVar

from ._bridge import await_
from ._where import asyncio_loop, can_suspend

__all__ = ["ReentrantRun", "allow_reentrant_run"]

T = TypeVar("T")

_lock = threading.Lock()
_users = 0
# (owner, attribute name, original value) for every replaced entry point.
_saved: list[tuple[Any, str, Any]] = []
_INHERITED: Any = object()


def _redirect() -> asyncio.AbstractEventLoop | None:
    """The running loop, if a call here should be redirected to it.

    It should when an asyncio loop runs and the caller can be suspended
    (`greenbridge._where.can_suspend`): sync code run by greenbridge, or an
    SQLAlchemy ``greenlet_spawn`` greenlet, whose driver ``await_`` hands the
    coroutine to.
    """
    loop = asyncio_loop()
    if loop is not None and can_suspend():
        return loop
    return None


def _wrap_run(original: Any) -> Any:
    def run(main: Any, **kwargs: Any) -> Any:
        if _redirect() is None:
            return original(main, **kwargs)
        if not asyncio.iscoroutine(main):
            raise ValueError(f"a coroutine was expected, got {main!r}")
        return await_(main)

    run.__wrapped__ = original  # type: ignore[attr-defined]
    run.__doc__ = original.__doc__
    run.__name__ = original.__name__
    run.__qualname__ = original.__qualname__
    run.__greenbridge_reentrant__ = True  # type: ignore[attr-defined]
    return run


def _wrap_runner_run(original: Any) -> Any:
    def run(self: Any, coro: Any, **kwargs: Any) -> Any:
        loop = _redirect()
        if loop is None:
            return original(self, coro, **kwargs)
        if not asyncio.iscoroutine(coro):
            raise ValueError(f"a coroutine was expected, got {coro!r}")
        context = kwargs.get("context")
        if context is not None:
            return await_(loop.create_task(coro, context=context))  # type: ignore[call-arg,unused-ignore]
        return await_(coro)

    run.__wrapped__ = original  # type: ignore[attr-defined]
    run.__doc__ = original.__doc__
    run.__greenbridge_reentrant__ = True  # type: ignore[attr-defined]
    return run


def _wrap_runner_close(original: Any) -> Any:
    def close(self: Any) -> None:
        loop = _redirect()
        if loop is None:
            return original(self)  # type: ignore[no-any-return]
        # The runner's own loop was created by ``with asyncio.Runner()`` but
        # never ran (run() was redirected): let its clean-up run it briefly,
        # which asyncio allows only while no other loop is marked as running.
        asyncio._set_running_loop(None)
        try:
            original(self)
        finally:
            asyncio._set_running_loop(loop)

    close.__wrapped__ = original  # type: ignore[attr-defined]
    close.__doc__ = original.__doc__
    close.__greenbridge_reentrant__ = True  # type: ignore[attr-defined]
    return close


def _wrap_run_until_complete(original: Any) -> Any:
    def run_until_complete(self: asyncio.AbstractEventLoop, future: Awaitable[T]) -> T:
        loop = _redirect()
        if loop is None:
            return original(self, future)  # type: ignore[no-any-return]
        if loop is not self:
            if inspect.iscoroutine(future):
                future.close()
            raise RuntimeError(
                "run_until_complete() was called on an event loop other than the one "
                "running in this thread. greenbridge.allow_reentrant_run() can only wait "
                "on the running loop: use asyncio.run(...) or "
                "asyncio.get_event_loop().run_until_complete(...) in the sync code, "
                "or greenbridge.await_(...)"
            )
        return await_(future)

    run_until_complete.__wrapped__ = original  # type: ignore[attr-defined]
    run_until_complete.__doc__ = original.__doc__
    run_until_complete.__greenbridge_reentrant__ = True  # type: ignore[attr-defined]
    return run_until_complete


def _entry_points() -> list[tuple[Any, str, Any]]:
    """(owner, attribute, wrapper factory) for each entry point to replace."""
    points: list[tuple[Any, str, Any]] = [
        (asyncio, "run", _wrap_run),
        (asyncio.runners, "run", _wrap_run),
        (asyncio.BaseEventLoop, "run_until_complete", _wrap_run_until_complete),
    ]
    if sys.version_info >= (3, 11):
        points.append((asyncio.Runner, "run", _wrap_runner_run))
        points.append((asyncio.Runner, "close", _wrap_runner_close))
    try:
        import uvloop
    except ImportError:
        pass
    else:
        points.append((uvloop.Loop, "run_until_complete", _wrap_run_until_complete))
    return points


def _install() -> None:
    wrappers: dict[int, Any] = {}  # asyncio.run and asyncio.runners.run: one wrapper
    for owner, name, factory in _entry_points():
        # uvloop.Loop inherits run_until_complete from its compiled base class:
        # then the wrapper is removed again rather than replaced.
        own = name in vars(owner)
        original = getattr(owner, name)
        wrapper = wrappers.get(id(original))
        if wrapper is None:
            wrapper = wrappers[id(original)] = factory(original)
        _saved.append((owner, name, original if own else _INHERITED))
        setattr(owner, name, wrapper)


def _uninstall() -> None:
    while _saved:
        owner, name, original = _saved.pop()
        if original is _INHERITED:
            delattr(owner, name)
        else:
            setattr(owner, name, original)


class ReentrantRun:
    """The opt-in returned by :func:`allow_reentrant_run`.

    Call :meth:`disable` or use it as a context manager to end it.  The
    wrappers stay installed while any opt-in is active.
    """

    __slots__ = ("_active",)

    def __init__(self) -> None:
        self._active = True

    @property
    def active(self) -> bool:
        """True until :meth:`disable` is called."""
        return self._active

    def disable(self) -> None:
        """End this opt-in (idempotent); the last one restores the originals."""
        global _users
        with _lock:
            if not self._active:
                return
            self._active = False
            _users -= 1
            if _users == 0:
                _uninstall()

    def __enter__(self) -> ReentrantRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disable()


def allow_reentrant_run() -> ReentrantRun:
    """Let ``asyncio.run()`` and ``loop.run_until_complete()`` wait on the running loop.

    While the returned opt-in is active, sync code that runs under
    greenbridge (started by :func:`async_` / :func:`spawn`, or called from a
    task with a portal) may call ``asyncio.run(coro)``,
    ``asyncio.Runner().run(coro)`` or
    ``asyncio.get_event_loop().run_until_complete(aw)`` even though an event
    loop is running: the call waits for ``coro`` on that loop through
    :func:`await_`, suspending only this sync call.  Anywhere else those
    functions behave exactly as before, errors included.

    Process-wide: it replaces ``asyncio.run``, ``asyncio.runners.run``,
    ``asyncio.Runner.run``, ``asyncio.BaseEventLoop.run_until_complete`` and
    ``uvloop.Loop.run_until_complete`` by wrappers until the last active
    opt-in is disabled.  Code that did ``from asyncio import run`` before the
    opt-in keeps the original function.  Use it as a context manager or call
    ``disable()``::

        with greenbridge.allow_reentrant_run():
            asyncio.run(main())

    Limits: the coroutine runs on the outer loop, in the calling task and
    Context (no new loop or task is created, so ``asyncio.run``'s clean-up of
    other tasks, async generators and the default executor does not happen,
    and its ``debug``/``loop_factory`` arguments are ignored);
    ``run_until_complete`` on a loop other than the running one raises
    RuntimeError.
    """
    global _users
    with _lock:
        if _users == 0:
            _install()
        _users += 1
    return ReentrantRun()
