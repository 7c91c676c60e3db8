"""Give the *current* task a portal (``await greenbridge.ensure_portal()``).

A task gets a portal when its coroutine is driven by greenbridge: each step
of the task then runs inside a worker greenlet, so plain sync functions called
from the coroutine can suspend with `greenbridge.await_`.  Tasks created
under `greenbridge.install_portal_factory` get one at birth through the
public task-factory API.  A task that already runs must have its coroutine
replaced by a wrapper that drives the original one:

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
from typing import Any

_POINTER = ctypes.sizeof(ctypes.c_void_p)


def rebind_current_task(make_portal: Callable[[Any], Awaitable[Any]]) -> Generator[Any, Any, None]:
    """Swap the running task's coroutine for ``make_portal(coro)``, then yield once."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is not None:
        old = task.get_coro()
        new = _primed(make_portal, old)
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
            ttask.coro = _primed(make_portal, ttask.coro)
            yield from trio.lowlevel.cancel_shielded_checkpoint().__await__()
            return
    from ._bridge import MissingBridge

    raise MissingBridge("ensure_portal() must be awaited inside an asyncio or trio task")


def _primed(make_portal: Callable[[Any], Awaitable[Any]], coro: Any) -> Any:
    """A portal wrapper that is already started.

    trio resumes a task by sending it a non-None value (an outcome), which a
    just-started coroutine cannot take; asyncio may throw an exception (a
    cancellation) into it, which a just-started coroutine would raise without
    ever resuming ``coro``, leaving it suspended with its ``finally`` blocks
    not run.  This wrapper has run to its first ``yield``, so either lands
    there; it then passes it on as the first thing sent to (or thrown into)
    the original coroutine, inside the portal.
    """
    wrapper = _primed_body(make_portal, coro)
    wrapper.send(None)
    return wrapper


@types.coroutine
def _primed_body(
    make_portal: Callable[[Any], Awaitable[Any]], coro: Any
) -> Generator[Any, Any, Any]:
    try:
        first = yield
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
    return (yield from make_portal(resume).__await__())


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
    from ._bridge import MissingBridge

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
