"""Portals: let sync code called straight from a task's coroutine use ``await_``.

The whole portal API lives here: `has_portal`, `install_portal_factory`,
`ensure_portal`, and for `greenbridge.compat.greenback`: `bestow_portal`
(another task's portal), `task_has_portal` and `run_in_portal` (a portal
for one call).  A task gets a portal when its coroutine is driven by
greenbridge: each step of the task then runs inside a worker greenlet (the
coroutine is awaited by `greenbridge._trampoline.await_in_worker`, in a call
started by `greenbridge._trampoline.launch`), so plain sync functions called
from the coroutine can suspend with `greenbridge.await_`.  Tasks created
under `install_portal_factory` get one at birth through the public
task-factory API (`_portal_task`).  A task that already runs
(`ensure_portal`) must have its coroutine replaced by a wrapper that drives
the original one:

* trio: ``Task.coro`` is a plain attribute;
* asyncio's pure-Python ``Task``: the ``_coro`` attribute;
* asyncio's C ``Task`` (the usual one, also under uvloop): its coroutine slot
  is read-only from Python, so we locate the one pointer in the task object
  that refers to the coroutine and swap it, keeping reference counts right.
  If the slot cannot be found unambiguously we raise instead of guessing.

After the swap the task yields once to its loop; its next step enters the
wrapper, which resumes the original coroutine inside a worker greenlet.  The
wrapper is started before the swap (see `_primed`), so whatever that next step
brings, a value or an exception thrown in (a cancellation), reaches the
original coroutine at its ``await ensure_portal()``.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar, cast

from greenlet import getcurrent

from ._errors import MissingBridge
from ._trampoline import Pending, Worker, await_in_worker, launch

__all__ = [
    "bestow_portal",
    "ensure_portal",
    "has_portal",
    "install_portal_factory",
    "run_in_portal",
    "task_has_portal",
]

T = TypeVar("T")

_CoroutineType = types.CoroutineType
_POINTER = ctypes.sizeof(ctypes.c_void_p)


async def _call(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    result = launch(fn, args, kwargs, None)
    if type(result) is Pending:
        result = await result
    return cast(T, result)


async def run_in_portal(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` inside a worker, so sync code it calls can await_.

    A portal for this one call: it adds no step of its own (if ``awaitable``
    never suspends, neither does this).
    """
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
    Unstarted, a wrapper like `run_in_portal` would let the exception through
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
    """Swap the running task's coroutine for a portal (`run_in_portal`), then yield once."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is not None:
        old = task.get_coro()
        new = _primed(old)
        _set_asyncio_coro(task, old, new)
        yield None  # a bare yield: asyncio reschedules the task at once
        return
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            ttask = trio.lowlevel.current_task()
        except RuntimeError:
            ttask = None
        if ttask is not None:
            ttask.coro = _primed(ttask.coro)
            yield from trio.lowlevel.cancel_shielded_checkpoint().__await__()
            return
    raise MissingBridge("ensure_portal() must be awaited inside an asyncio or trio task")


def bestow_portal(task: Any) -> None:
    """Give ``task`` (an asyncio Task or a trio Task) a portal, from its next step on.

    The same swap as `ensure_portal`, done from outside the task: the wrapper
    is primed now and takes over at the task's next step, whatever resumes
    it (a value, an exception thrown in, trio's first send of a new task).
    The current task may be given one too: it becomes usable once the task
    has yielded to its loop.  A no-op for a task that has a portal already.

    Raises:
        TypeError: ``task`` is neither an asyncio Task nor a trio Task.
        RuntimeError: ``task`` is done.
        MissingBridge: this asyncio Task's coroutine slot cannot be found.
    """
    if task_has_portal(task):
        return
    if _is_asyncio_task(task):
        if task.done():
            raise RuntimeError(f"cannot give a portal to {task!r}: it is done")
        old = task.get_coro()
        _set_asyncio_coro(task, old, _primed(old))
        return
    trio = sys.modules.get("trio")
    if trio is not None and isinstance(task, trio.lowlevel.Task):
        # trio binds ``coro.send`` when it schedules a task; one scheduled
        # already takes one more step in ``coro`` itself, then the wrapper
        # (primed, it accepts whatever is sent first).
        if getattr(task.coro, "cr_frame", True) is None:
            raise RuntimeError(f"cannot give a portal to {task!r}: it is done")
        task.coro = _primed(task.coro)
        return
    raise TypeError(
        f"bestow_portal() expects an asyncio Task or a trio Task, got {type(task).__name__!r}"
    )


def _is_asyncio_task(obj: Any) -> bool:
    # asyncio's pure-Python Task subclasses neither the C Task nor the C Future.
    return asyncio.isfuture(obj) and hasattr(obj, "get_coro")


def task_has_portal(task: Any) -> bool:
    """Return true if ``task``'s coroutine is one of greenbridge's portal wrappers.

    True for tasks given a portal by `ensure_portal`, `bestow_portal` or
    `install_portal_factory`; false for any other task, including one that
    runs sync code through `async_` (only the current greenlet can tell
    that: `has_portal`).
    """
    if _is_asyncio_task(task):
        coro: Any = task.get_coro()
    else:
        coro = getattr(task, "coro", None)
    code = getattr(coro, "gi_code", None) or getattr(coro, "cr_code", None)
    return code is _PRIMED_CODE or code is _FACTORY_CODE


def _primed(coro: Any) -> Any:
    """A portal wrapper that is already started.

    trio resumes a task by sending it a non-None value (an outcome), which a
    just-started coroutine cannot take; asyncio may throw an exception (a
    cancellation) into it, which a just-started coroutine would raise without
    ever resuming ``coro``, leaving it suspended with its ``finally`` blocks
    not run.  This wrapper has run to its first ``yield``, so either lands
    there; it then passes it on as the first thing sent to (or thrown into)
    the original coroutine, inside the portal.
    """
    wrapper = _primed_body(coro)
    wrapper.send(None)
    return wrapper


async def _primed_body(coro: Any) -> Any:
    # A native coroutine, not a generator: trio reads ``task.coro.cr_frame``
    # (``currently_ki_protected()``, its SIGINT handler, system tasks).
    try:
        first = await _received()
    except GeneratorExit:
        # Closed before the task's next step (the swap failed, or the task is
        # being destroyed): ``coro`` stays as it is, for its owner to close.
        raise
    except BaseException as exc:  # noqa: BLE001 - delivered at the await in ``coro``
        thrown: BaseException | None = exc
        first = None
    else:
        thrown = None
    resume = _FirstSend(coro, first, thrown)
    del thrown
    return await run_in_portal(resume)


@types.coroutine
def _received() -> Generator[None, Any, Any]:
    """Suspend once; return what the task's next step sends (or raise what it throws)."""
    return (yield)


class _FirstSend:
    """Iterate ``coro`` like ``await`` would, but start with ``first`` or ``thrown``.

    The first step sends ``first`` instead of the initial None, or throws
    ``thrown`` into ``coro`` if that is set.
    """

    __slots__ = ("coro", "first", "thrown")

    def __init__(self, coro: Any, first: Any, thrown: BaseException | None = None) -> None:
        self.coro = coro
        self.first = first
        self.thrown = thrown

    def __await__(self) -> _FirstSend:
        return self

    def __iter__(self) -> _FirstSend:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        thrown = self.thrown
        if thrown is not None:
            self.thrown = None
            return self.coro.throw(thrown)
        first = self.first
        if first is not None:
            self.first = None
            value = first
        return self.coro.send(value)

    def throw(self, *args: Any) -> Any:
        self.first = self.thrown = None
        return self.coro.throw(*args)

    def close(self) -> None:
        self.coro.close()


def _set_asyncio_coro(task: asyncio.Task[Any], old: Any, new: Any) -> None:
    try:
        task._coro = new  # type: ignore[attr-defined]  # the pure-Python Task
    except AttributeError:  # the C Task: read-only slot
        pass
    else:
        return
    base = id(task)
    size = type(task).__basicsize__
    target = id(old)
    hits = [
        off
        for off in range(2 * _POINTER, size - _POINTER + 1, _POINTER)
        if ctypes.c_void_p.from_address(base + off).value == target
    ]
    if len(hits) != 1:
        _close(new)
        raise MissingBridge(
            f"ensure_portal() cannot give this {type(task).__qualname__} a portal; create "
            "the task under greenbridge.install_portal_factory() or run the sync code "
            "with greenbridge.async_()"
        )
    slot = ctypes.c_void_p.from_address(base + hits[0])
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(new))
    slot.value = id(new)
    # The wrapper holds its own reference to ``old``; drop the task's.
    ctypes.pythonapi.Py_DecRef(ctypes.py_object(old))
    if task.get_coro() is not new:  # pragma: no cover - defensive
        raise RuntimeError("greenbridge: failed to install a portal on the current task")


def _close(coro: Any) -> None:
    close = getattr(coro, "close", None)
    if close is not None:
        close()


# How `task_has_portal` recognizes a portal wrapper: by the code it runs.
_PRIMED_CODE = _primed_body.__code__
_FACTORY_CODE = _portal_task.__code__
