"""greenback's API on greenbridge: ``import greenbridge.compat.greenback as greenback``.

Every public name of greenback's documented API, with greenback's semantics,
implemented on greenbridge's portals (`greenbridge._portal`) and adapters:

* `ensure_portal`, `bestow_portal`, `has_portal`: a portal for a whole task
  (asyncio or trio), the current one or another one;
* `with_portal_run`, `with_portal_run_sync`: a portal for one call;
* `with_portal_run_tree`, `portals_for_tree`, `portals_for_children`,
  `AutoPortalInstrument`: portals for the tasks spawned under a call, a
  block, or a whole trio run;
* `await_`: wait for an awaitable from sync code, inside a portal only;
* `autoawait`, `decorate_as_sync`, `async_context`, `async_iter`: the
  helpers built on `await_`.

Where greenbridge does more than greenback, the names here keep greenback's
narrower contract, so code written for greenback behaves the same: `await_`
outside a portal raises (`MissingBridge`, a RuntimeError, as greenback's
RuntimeError) instead of running the awaitable on a private loop when no loop
runs, and `ensure_portal` is always a checkpoint.  The differences that
remain (what `has_portal` can see of another task, the portal that
`portals_for_tree` leaves behind, the tree functions also working under
asyncio, with a reach of their own) are listed in docs/migrating-greenback.md,
with the reasons.

A portal here is greenbridge's: the task's steps run in a worker greenlet,
so `greenbridge.await_` works in it as well, and the greenbridge functions
(`async_`, `sync_cm`...) mix freely with these.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import sys
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
)
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from greenlet import getcurrent

from .._adapters import SyncContextManager, SyncIterator
from .._bridge import async_
from .._bridge import await_ as _bridge_await
from .._errors import MissingBridge
from .._portal import bestow_portal as _bestow
from .._portal import run_in_portal, task_has_portal
from .._trampoline import Worker

if sys.version_info >= (3, 10) or TYPE_CHECKING:
    from typing import ParamSpec

if TYPE_CHECKING:
    from trio.abc import Instrument as _Instrument
else:
    # trio calls the hooks an instrument defines, whatever its class: at run
    # time the instruments here need no base, so importing this does not
    # import trio.  Type checkers see trio's base class.
    _Instrument = object

__all__ = [
    "AutoPortalInstrument",
    "async_context",
    "async_iter",
    "autoawait",
    "await_",
    "bestow_portal",
    "decorate_as_sync",
    "ensure_portal",
    "has_portal",
    "portals_for_children",
    "portals_for_tree",
    "with_portal_run",
    "with_portal_run_sync",
    "with_portal_run_tree",
]

T = TypeVar("T")
if sys.version_info >= (3, 10) or TYPE_CHECKING:
    P = ParamSpec("P")
else:  # pragma: no cover - 3.9: annotations are strings, P is never evaluated
    P = TypeVar("P")


# ---------------------------------------------------------------- tasks


def _current_task_or_none() -> Any:
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop runs in this thread
        task = None
    if task is not None:
        return task
    trio = sys.modules.get("trio")  # never imported here: a trio run has imported it
    if trio is not None:
        try:
            return trio.lowlevel.current_task()
        except RuntimeError:
            pass
    return None


def _current_task(what: str) -> Any:
    task = _current_task_or_none()
    if task is None:
        raise RuntimeError(f"{what} must be called from an asyncio or trio task")
    return task


def _checkpoint(task: Any) -> Awaitable[None]:
    """The library's ``sleep(0)``: a schedule point and a cancellation point."""
    if asyncio.isfuture(task):  # a Task, C or pure-Python
        return asyncio.sleep(0)
    import trio

    return trio.sleep(0)


# Tasks inside with_portal_run*(): their portal lasts for the call, and only
# the current greenlet shows it, so has_portal(task) asked by another task
# looks here.  {task: nesting depth}; every entry is removed by its call.
_temporary: dict[Any, int] = {}


def _enter(task: Any) -> None:
    _temporary[task] = _temporary.get(task, 0) + 1


def _leave(task: Any) -> None:
    depth = _temporary.pop(task) - 1
    if depth:
        _temporary[task] = depth


# ---------------------------------------------------------------- portals


async def ensure_portal() -> None:
    """Make sure the current task can use `await_`: ``await greenback.ensure_portal()``.

    Gives the current task (asyncio or trio) a portal for the rest of its
    life, unless it has one already: afterwards sync functions called from it
    can use `await_` (and `greenbridge.await_`).  Always a checkpoint: the
    loop runs other tasks, and a cancellation is delivered here, even when
    the task had a portal.

    Raises:
        RuntimeError: not called from an asyncio or trio task.
    """
    task = _current_task("ensure_portal()")
    if type(getcurrent()) is not Worker:
        _bestow(task)
    # The portal takes over at the task's next step: make that step now.
    await _checkpoint(task)


def bestow_portal(task: Any) -> None:
    """Give ``task`` (an `asyncio.Task` or a ``trio.lowlevel.Task``) a portal.

    As if ``task`` had awaited `ensure_portal`, without any checkpoint.
    Given the current task, the portal is usable once the task has yielded
    to the event loop (`await_` raises until then); so is a trio task that
    is scheduled already (one just spawned).  A no-op for a task that has a
    portal already.

    Raises:
        TypeError: ``task`` is not an asyncio or trio task.
        RuntimeError: ``task`` is done.
    """
    _bestow(task)


def has_portal(task: Any = None) -> bool:
    """Return true if ``task`` (by default the current task) can use `await_`.

    For the current task: true only where `await_` works right now (a
    portal bestowed on it is not usable before it yields to the loop).  For
    another task: true if it has a task-long portal, or is inside
    `with_portal_run` or `with_portal_run_sync` (or `with_portal_run_tree`).
    Outside any task, false.
    """
    current = _current_task_or_none()
    if task is None or task is current:
        return current is not None and type(getcurrent()) is Worker
    return task in _temporary or task_has_portal(task)


async def with_portal_run(
    async_fn: Callable[P, Awaitable[T]], *args: P.args, **kwds: P.kwargs
) -> T:
    """Return ``await async_fn(*args, **kwds)``, run so that it can use `await_`.

    If the current task has a portal, ``async_fn`` is simply awaited;
    otherwise it runs in a portal that lasts for this call only (an
    `ensure_portal` inside it keeps that one, and adds no other).  Adds no
    checkpoint of its own.

    Raises:
        RuntimeError: not called from an asyncio or trio task.
    """
    if type(getcurrent()) is Worker:
        return await async_fn(*args, **kwds)
    task = _current_task("with_portal_run()")
    _enter(task)
    try:
        return await run_in_portal(async_fn(*args, **kwds))
    finally:
        _leave(task)


async def with_portal_run_sync(sync_fn: Callable[P, T], *args: P.args, **kwds: P.kwargs) -> T:
    """Return ``sync_fn(*args, **kwds)``, run so that it can use `await_`.

    If the current task has a portal, ``sync_fn`` is simply called;
    otherwise it runs in a portal that lasts for this call only.  Adds no
    checkpoint of its own: only the `await_` calls in ``sync_fn`` suspend.

    Raises:
        RuntimeError: not called from an asyncio or trio task.
        TypeError: ``sync_fn`` is an async function (await it, or use
            `with_portal_run`), when the call needs a portal of its own.
    """
    if type(getcurrent()) is Worker:
        return sync_fn(*args, **kwds)
    task = _current_task("with_portal_run_sync()")
    _enter(task)
    try:
        return await async_(sync_fn)(*args, **kwds)
    finally:
        _leave(task)


async def with_portal_run_tree(
    async_fn: Callable[P, Awaitable[T]], *args: P.args, **kwds: P.kwargs
) -> T:
    """`with_portal_run`, and a portal for every task spawned under the call.

    Under trio: every task spawned in a nursery that ``async_fn`` (or a task
    given a portal this way) opens, recursively; tasks that ``async_fn``
    starts in a nursery opened before the call get none, as in greenback.
    ``trio.run(with_portal_run_tree, main)`` gives the whole run (but its
    system tasks) portals.

    Under asyncio, which has no nurseries: every task created while the
    call runs, in its context (a context variable, which tasks inherit:
    so also the tasks those tasks create, even after the call returned).
    This installs a task factory on the loop (chained with the one set),
    left in place afterwards.  Adds no checkpoint of its own.

    Raises:
        RuntimeError: not called from an asyncio or trio task.
    """
    with portals_for_children():
        return await with_portal_run(async_fn, *args, **kwds)


@contextlib.contextmanager
def portals_for_children() -> Iterator[None]:
    """``with portals_for_children():`` portals for the tasks spawned in the block.

    The tasks spawned in the block's tree (as `with_portal_run_tree` defines
    it, under trio and asyncio) get a portal; the task running the block
    does not, which is why this is a sync context manager.

    Raises:
        RuntimeError: not entered from an asyncio or trio task.
    """
    task = _current_task("portals_for_children()")
    if asyncio.isfuture(task):  # a Task, C or pure-Python
        _install_tree_factory(task.get_loop())
        token = _IN_TREE.set(True)
        try:
            yield
        finally:
            _IN_TREE.reset(token)
        return
    import trio

    instrument = _TreeInstrument(task)
    trio.lowlevel.add_instrument(instrument)
    try:
        yield
    finally:
        trio.lowlevel.remove_instrument(instrument)


@contextlib.asynccontextmanager
async def portals_for_tree() -> AsyncIterator[None]:
    """``async with portals_for_tree():`` portals for this task and the tasks of the block.

    This task gets a portal on entry (`bestow_portal`), and the tasks
    spawned in the block get one as under `portals_for_children`.  Entry and
    exit are schedule points; under trio neither is a cancellation point.
    Unlike greenback's, the task keeps its portal after the block:
    greenbridge cannot take a portal back from a running task.

    Raises:
        RuntimeError: not entered from an asyncio or trio task.
    """
    task = _current_task("portals_for_tree()")
    with portals_for_children():
        if type(getcurrent()) is not Worker:
            _bestow(task)
        await _shielded_checkpoint(task)
        try:
            yield
        finally:
            await _shielded_checkpoint(task)


def _shielded_checkpoint(task: Any) -> Awaitable[None]:
    """A schedule point; not a cancellation point under trio (asyncio has none such)."""
    if asyncio.isfuture(task):
        return asyncio.sleep(0)
    import trio

    return trio.lowlevel.cancel_shielded_checkpoint()


class AutoPortalInstrument(_Instrument):
    """A trio instrument that gives every task of a run a portal.

    ``trio.run(main, instruments=[AutoPortalInstrument()])``: each task,
    system tasks included, gets a portal before its first step, so `await_`
    works anywhere in the run.  (A ``trio.abc.Instrument`` for type
    checkers; at run time it needs no base class, so that importing this
    module does not import trio.)
    """

    def task_spawned(self, task: Any) -> None:
        """Give the new ``task`` a portal."""
        _bestow(task)


_IN_TREE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "greenbridge.compat.greenback.in_tree", default=False
)


def _install_tree_factory(loop: asyncio.AbstractEventLoop) -> None:
    """Chain a task factory that gives a portal to the tasks created in a tree."""
    previous = loop.get_task_factory()
    if getattr(previous, "__greenback_tree__", False):
        return

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        if previous is None:
            task: asyncio.Future[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        else:
            task = previous(loop, coro, **kwargs)
        # The factory runs in the creating task's context; an explicit
        # context= is the one the new task will run in.
        context = kwargs.get("context")
        in_tree = _IN_TREE.get() if context is None else context.get(_IN_TREE, False)
        if in_tree and hasattr(task, "get_coro") and not task.done():
            _bestow(task)
        return task

    factory.__greenback_tree__ = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)


class _TreeInstrument(_Instrument):
    """A trio instrument giving a portal to each task spawned in the tree of ``root``.

    The tree: ``root``'s nurseries opened after the
    call started, and every nursery of a task spawned in the tree.  trio
    calls ``task_spawned`` before it schedules the task's first step, so
    the portal is in place from the start.
    """

    def __init__(self, root: Any) -> None:
        self.root = root
        self.outer = list(root.child_nurseries)  # opened before the call: not ours
        self.tree: set[Any] = set()

    def task_spawned(self, task: Any) -> None:
        nursery = task.parent_nursery
        if nursery is None:
            return
        parent = nursery.parent_task
        if parent in self.tree or (
            parent is self.root and not any(n is nursery for n in self.outer)
        ):
            _bestow(task)
            self.tree.add(task)

    def task_exited(self, task: Any) -> None:
        self.tree.discard(task)


# ---------------------------------------------------------------- await_


def await_(aw: Awaitable[T]) -> T:
    """Wait for ``aw`` from sync code, in a task with a portal; return its result.

    ``await_(foo())`` in a sync function does what ``await foo()`` does in an
    async one.  It works in sync code called (directly or not) from a task
    that has a portal (`ensure_portal`, `bestow_portal`, `with_portal_run`,
    `with_portal_run_sync`, `with_portal_run_tree`), and in sync code run by
    greenbridge's `async_` or `spawn`.

    Raises:
        MissingBridge: (a RuntimeError) there is no portal here; a coroutine
            passed in is closed, so no "never awaited" warning follows.
    """
    if type(getcurrent()) is Worker:
        return _bridge_await(aw)
    raise _no_portal(aw)


def _no_portal(aw: object) -> MissingBridge:
    close = getattr(aw, "close", None)
    if isinstance(aw, Coroutine) and close is not None:
        close()
    task = _current_task_or_none()
    if task is not None and task_has_portal(task):
        sleep = "asyncio.sleep(0)" if asyncio.isfuture(task) else "trio.sleep(0)"
        return MissingBridge(
            "await_(): this task's portal, given by bestow_portal(), opens at its next "
            f"step: yield to the loop first (`await {sleep}`)"
        )
    return MissingBridge(
        "await_() needs a portal in this task: `await greenback.ensure_portal()` first, "
        "or run the code with `await greenback.with_portal_run(fn, *args)` / "
        "`with_portal_run_sync(fn, *args)`"
    )


# ---------------------------------------------------------------- helpers


def autoawait(fn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    """Turn an async function into a sync one that `await_`\\ s it.

    The result is called without ``await`` (and must be, from code with a
    portal): for magic methods, property setters and other places where the
    language makes the call for you.
    """

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return await_(fn(*args, **kwargs))

    return call


def decorate_as_sync(
    decorator: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Coroutine[Any, Any, Any]]]:
    """Let a decorator made for sync functions decorate an async function.

    ``@decorate_as_sync(functools.lru_cache())`` over an ``async def`` caches
    results, not coroutine objects.  The decorator is applied to a sync
    function that `await_`\\ s the async one; the result is an async
    function that calls the decorated one under `with_portal_run_sync`.  So
    ``await decorate_as_sync(deco)(async_fn)(*args)`` is
    ``await with_portal_run_sync(deco(autoawait(async_fn)), *args)``.
    """

    def decorate(
        async_fn: Callable[..., Awaitable[Any]],
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        decorated = decorator(autoawait(async_fn))

        @functools.wraps(decorated)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await with_portal_run_sync(decorated, *args, **kwargs)

        return call

    return decorate


class async_context(SyncContextManager[T]):  # lowercase: greenback's name
    """Use an async context manager in a sync ``with`` statement, through `await_`.

    ``with async_context(acm) as value:`` awaits ``acm.__aenter__()`` and
    ``acm.__aexit__(...)`` (which may suppress the exception, as under
    ``async with``).  greenbridge's `greenbridge.sync_cm`, under
    greenback's name.

    Raises:
        TypeError: on entry, ``acm`` is not an async context manager.
    """

    __slots__ = ("_not_async", "_not_async_name")

    def __init__(self, cm: AbstractAsyncContextManager[T]) -> None:
        super().__init__(cm)
        # Checked now, raised on entry, where greenback raises it.
        cls = type(cm)
        self._not_async = not (hasattr(cls, "__aenter__") and hasattr(cls, "__aexit__"))
        if self._not_async:
            self._not_async_name = cls.__name__

    def __enter__(self) -> T:
        if self._not_async:
            raise TypeError(
                f"{self._not_async_name!r} object does not support the asynchronous context "
                "manager protocol (no __aenter__ / __aexit__); use a plain `with` for a sync one"
            )
        if type(getcurrent()) is not Worker:
            raise _no_portal(None)
        return super().__enter__()


class async_iter(SyncIterator[T, Any]):  # lowercase: greenback's name
    """Iterate over an async iterable in a sync ``for`` loop (or ``yield from``).

    Each step `await_`\\ s ``__anext__()``; an async generator's ``asend``,
    ``athrow`` and ``aclose`` are reachable as ``send()``, ``throw()`` and
    ``close()``.  greenbridge's `greenbridge.sync_iter`, under greenback's
    name: it also closes the async generator when the iteration stops early.

    Raises:
        TypeError: ``iterable`` is not an async iterable.
    """

    __slots__ = ()

    def __init__(self, iterable: AsyncIterable[T]) -> None:
        aiter_method = getattr(type(iterable), "__aiter__", None)
        if aiter_method is None:
            raise TypeError(
                f"async_iter() expects an async iterable (with __aiter__), got "
                f"{type(iterable).__name__!r}"
            )
        ait = aiter_method(iterable)
        if getattr(type(ait), "__anext__", None) is None:
            raise TypeError(
                f"async_iter(): __aiter__ returned {type(ait).__name__!r}, which has no __anext__"
            )
        super().__init__(ait)

    def __next__(self) -> T:
        if type(getcurrent()) is not Worker:
            raise _no_portal(None)
        return super().__next__()

    def send(self, value: Any) -> T:
        """Send ``value`` to the async generator (``asend``); return what it yields next."""
        if type(getcurrent()) is not Worker:
            raise _no_portal(None)
        return super().send(value)

    def throw(self, exc: BaseException) -> T:
        """Raise ``exc`` in the async generator (``athrow``); return what it yields next."""
        if type(getcurrent()) is not Worker:
            raise _no_portal(None)
        return super().throw(exc)
