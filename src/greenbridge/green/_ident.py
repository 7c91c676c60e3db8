"""Who is the current green thread: identifiers and keys for green threads.

Inside an asyncio task, a green thread is the task: :func:`get_ident` is
``id(task)`` and :func:`thread_key` the task itself.  Elsewhere it is the OS
thread: its identifier, and a key object that lives as long as the thread.
"""

from __future__ import annotations

import _thread as _real_thread
import asyncio
from asyncio import events as _asyncio_events

__all__ = ["get_ident", "thread_key"]

_real_get_ident = _real_thread.get_ident
_get_running_loop = _asyncio_events._get_running_loop
_current_task = asyncio.current_task


def get_ident() -> int:
    """The current green thread's identifier: ``id(task)`` in a task, else the OS thread's."""
    loop = _get_running_loop()
    if loop is not None:
        task = _current_task(loop)
        if task is not None:
            return id(task)
    return _real_get_ident()


class _OSThreadKey:
    __slots__ = ("__weakref__",)


_os_keys = _real_thread._local()


def thread_key() -> object:
    """An object that lives exactly as long as the current green thread (or OS thread)."""
    loop = _get_running_loop()
    if loop is not None:
        task = _current_task(loop)
        if task is not None:
            return task
    try:
        return _os_keys.key
    except AttributeError:
        key = _OSThreadKey()
        _os_keys.key = key
        return key
