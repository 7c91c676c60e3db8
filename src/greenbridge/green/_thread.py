"""Green ``_thread``: the low-level thread API on green threads.

``start_new_thread`` starts a task on the running asyncio loop (a real OS
thread when no loop runs in the calling thread); ``allocate_lock`` returns a
green :class:`~greenbridge.green.threading.Lock`; ``get_ident`` and ``_local``
are the green ones.  Everything else the stdlib ``_thread`` exports is
re-exported unchanged.
"""

from __future__ import annotations

import _thread as _real_thread
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from .._bridge import spawn
from .._where import asyncio_loop
from ._ident import get_ident
from ._local import local
from ._locks import Lock, RLock
from ._waiter import TIMEOUT_MAX

__all__ = [
    "LockType",
    "RLock",
    "TIMEOUT_MAX",
    "allocate",
    "allocate_lock",
    "error",
    "exit",
    "exit_thread",
    "get_ident",
    "get_native_id",
    "interrupt_main",
    "stack_size",
    "start_new",
    "start_new_thread",
]

error = _real_thread.error
get_native_id = _real_thread.get_native_id
interrupt_main = _real_thread.interrupt_main
stack_size = _real_thread.stack_size

LockType = Lock
allocate_lock = allocate = Lock
_local = local
_running = [0]


def _run(
    function: Callable[..., object], args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
) -> None:
    _running[0] += 1
    try:
        # A plain positional call runs in this C-level eval loop; function(*args)
        # would nest another one on the C stack, which every greenlet switch of
        # a suspended thread then copies.
        if kwargs:
            function(*args, **kwargs)
        elif not args:
            function()
        elif len(args) == 1:
            function(args[0])
        elif len(args) == 2:
            function(args[0], args[1])
        else:
            function(*args)
    except SystemExit:
        pass
    except BaseException as exc:
        if type(exc).__name__ in ("CancelledError", "GreenletExit"):
            raise
        hook: Any = sys.unraisablehook  # as the stdlib: report, and let the thread end
        hook(_UnraisableArgs(type(exc), exc, exc.__traceback__, function))
    finally:
        _running[0] -= 1


class _UnraisableArgs:
    def __init__(self, exc_type: Any, exc_value: BaseException, tb: Any, obj: Any) -> None:
        self.exc_type = exc_type
        self.exc_value = exc_value
        self.exc_traceback = tb
        self.err_msg = "Exception ignored in thread started by"
        self.object = obj


def start_new_thread(
    function: Callable[..., object], args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
) -> int:
    """Run ``function(*args, **kwargs)`` in a new green thread; return its identifier.

    With an asyncio loop running in this thread it is a task (the identifier
    is ``id(task)``); otherwise a real OS thread, as the stdlib does.
    """
    if not isinstance(args, tuple):
        raise TypeError("2nd arg must be a tuple")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError("optional 3rd arg must be a dictionary")
    if not callable(function):
        raise TypeError("first arg must be callable")
    if asyncio_loop() is None:
        return _real_thread.start_new_thread(function, args, kwargs or {})
    # Two arguments when there are no keywords: the bridge calls those without *args.
    task = spawn(_run, function, args, kwargs) if kwargs else spawn(_run, function, args)
    return id(task)


start_new = start_new_thread


def exit() -> NoReturn:  # noqa: A001 - the stdlib's name
    """Raise SystemExit, which ends the current thread silently."""
    raise SystemExit


exit_thread = exit


def _count() -> int:
    """Green threads started here that are still running, plus the real ones."""
    return _running[0] + _real_thread._count()


for _name in dir(_real_thread):
    if _name not in globals() and not _name.startswith("__"):
        globals()[_name] = getattr(_real_thread, _name)
del _name
