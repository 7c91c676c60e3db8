"""Green ``signal``: the stdlib module, with handlers that run in a green thread.

The stdlib runs a Python signal handler in the main thread, which is also the
only thread allowed to install one; an exception it raises comes out of
whatever the main thread was doing, typically a blocking call (``recv``,
``select``, ``time.sleep``), and a handler that returns normally lets that
call resume (PEP 475).

Under greenbridge many green threads share the OS main thread, and while they
all wait the event loop sits in its selector: the handler would run there and
its exception would escape the loop.  So :func:`signal` installs a Python
handler through a small wrapper that remembers the green thread that
installed it.  When the signal arrives while that green thread waits in
greenbridge's hub on an asyncio (or uvloop) loop, the wait is woken and the
handler runs in that green thread, so its exception is raised by the blocking
call, exactly as with the stdlib; when it returns normally, the call goes on
waiting for what is left of its timeout.  In every other case (the green
thread is running, or waits on something else; trio; no loop) the handler runs
where the signal arrived, as with the stdlib.

:func:`getsignal` and the value :func:`signal` returns give back your own
handler, never the wrapper.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from greenlet import getcurrent

from .. import _hub, _where
from .._patcher import original
from . import _util
from ._ident import active_threads

_std: Any = original("signal")
_os_thread_ident = original("_thread").get_ident
_std_threading: Any = original("threading")

_util.reexport(globals(), _std)


class _GreenHandler:
    """Calls ``handler`` in the green thread that installed it, when that one waits."""

    __slots__ = ("handler", "_target", "__weakref__")

    def __init__(self, handler: Any, target: Any) -> None:
        self.handler = handler
        self._target = None if target is None else weakref.ref(target)

    def __call__(self, signum: int, frame: Any) -> Any:
        target = None if self._target is None else self._target()
        if (
            target is not None
            and target is not getcurrent()
            and _hub.deliver_signal(target, self.handler, signum, frame)
        ):
            return None
        return self.handler(signum, frame)

    def __repr__(self) -> str:
        return f"<green signal handler for {self.handler!r}>"


def _unwrap(handler: Any) -> Any:
    return handler.handler if isinstance(handler, _GreenHandler) else handler


def signal(signalnum: int, handler: Any, /) -> Any:
    """``signal.signal``: install ``handler``; a Python handler runs in this green thread.

    Returns the previous handler (as you installed it).
    """
    if (
        callable(handler)
        and handler is not _std.default_int_handler
        and not isinstance(handler, _GreenHandler)
    ):
        target = getcurrent() if _where.can_suspend() else None
        handler = _GreenHandler(handler, target)
    return _unwrap(_std.signal(signalnum, handler))


def getsignal(signalnum: int, /) -> Any:
    """``signal.getsignal``: the handler installed for ``signalnum`` (yours, unwrapped)."""
    return _unwrap(_std.getsignal(signalnum))


if hasattr(_std, "pthread_kill"):

    def pthread_kill(thread_id: int, signalnum: int, /) -> None:
        """``signal.pthread_kill``; a green thread's identifier means the OS thread running it.

        (Green threads share their OS thread, so the signal goes to that thread,
        and its Python handler runs as :func:`signal` describes.)
        """
        if thread_id not in _std_threading._active and _is_green_thread(thread_id):
            thread_id = _os_thread_ident()
        _std.pthread_kill(thread_id, signalnum)


def _is_green_thread(ident: int) -> bool:
    """Is ``ident`` a green thread's identifier (``id()`` of a task) on this thread's loop?"""
    loop = _where.asyncio_loop()
    if loop is None:
        return False
    if ident in active_threads:
        return True
    return any(id(task) == ident for task in asyncio.all_tasks(loop))
