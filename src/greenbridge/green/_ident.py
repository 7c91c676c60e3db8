"""Who is the current green thread: identifiers and keys for green threads.

A green ``Thread`` started under asyncio runs in a worker greenlet with no
task of its own until it needs one (see `greenbridge._bare`): its run object
is the thread, before and after it gets a task; :func:`get_ident` is
``id(run)`` and :func:`thread_key` the run.  Inside any other asyncio task
(or a trio task), the task is the thread, :func:`get_ident` is ``id(task)``
and :func:`thread_key` the task itself.  Elsewhere it is the OS thread: its
identifier, and a key object that lives as long as the thread.  (Sync code
run by ``async_`` belongs to the task that awaits it, so two ``async_``
calls in two trio tasks are two threads, as they are under asyncio.)
"""

from __future__ import annotations

import _thread as _real_thread
import asyncio
import sys
import types
from collections.abc import Callable
from typing import Any

from greenlet import getcurrent

from .._trampoline import Worker
from .._where import asyncio_loop

__all__ = ["active_threads", "current_task", "get_ident", "thread_key"]

#: The started, not yet ended green ``Thread`` objects by identifier (the
#: green ``threading._active``, kept here so that modules which must
#: recognise a green thread, such as ``green.signal``, need not import the
#: threading module to do it).
active_threads: dict[int, Any] = {}

_real_get_ident = _real_thread.get_ident
_current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]
_current_task = asyncio.current_task
if not isinstance(_current_task, types.BuiltinFunctionType):
    # Before 3.12 asyncio.current_task(loop) is a Python function that only
    # looks the loop up in this dict (which the C tasks keep): skip its frame.
    _current_task = asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]


def current_task() -> object | None:
    """The asyncio task or trio task running now, or None (no task: an OS thread)."""
    loop = asyncio_loop()
    if loop is not None:
        return _current_task(loop)
    trio = sys.modules.get("trio")  # not imported: trio cannot be running
    if trio is None:
        return None
    try:
        return trio.lowlevel.current_task()  # type: ignore[no-any-return]
    except RuntimeError:  # no trio run in this thread
        return None


def get_ident() -> int:
    """The current green thread's identifier: ``id(task)`` in a task, else the OS thread's."""
    current = getcurrent()
    if type(current) is Worker:
        thread = current.thread
        if thread is not None:  # a green Thread (greenbridge._bare)
            return id(thread)
        # The worker's loop, as the hub caches it: a call never changes loops,
        # and asyncio_loop() makes a getpid() system call before Python 3.12.
        loop = current.loop
        if loop is None:
            loop = current.loop = asyncio_loop()
    else:
        loop = asyncio_loop()
    # current_task(), inlined for asyncio (green locks ask for their owner).
    task = _current_task(loop) if loop is not None else current_task()
    if task is not None:
        return id(task)
    return _real_get_ident()


class _OSThreadKey:
    __slots__ = ("__weakref__",)


_os_keys = _real_thread._local()


def thread_key() -> object:
    """An object that lives exactly as long as the current green thread (or OS thread)."""
    current = getcurrent()
    if type(current) is Worker:
        thread = current.thread
        if thread is not None:  # a green Thread (greenbridge._bare)
            return thread
    task = current_task()
    if task is not None:
        return task
    try:
        return _os_keys.key
    except AttributeError:
        key = _OSThreadKey()
        _os_keys.key = key
        return key
