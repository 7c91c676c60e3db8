"""Green ``queue``: ``Queue``, ``LifoQueue``, ``PriorityQueue``, ``SimpleQueue``.

The classes run the standard library's own queue logic (they subclass the
stdlib classes) over green locks and conditions from
:mod:`greenbridge.green.threading`, so ``put``/``get``/``join`` with or without
timeouts suspend only the calling green thread, and real OS threads may use
the same queue.  :class:`SimpleQueue` (a C type in the stdlib) is rewritten
on a green lock hand-off (``_PySimpleQueue``, the stdlib's pure-Python
version, is the same green class).  ``Empty``, ``Full`` (and ``ShutDown`` on
3.13+) are the stdlib's exception classes.
"""

from __future__ import annotations

import _thread as _real_thread
import collections
import contextlib
import types
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._patcher import original
from . import threading as _green_threading
from ._locks import Condition, Lock
from ._waiter import Waiter, check_timeout

if TYPE_CHECKING:
    import queue as _queue
else:
    _queue = original("queue")

__all__ = ["Empty", "Full", "Queue", "PriorityQueue", "LifoQueue", "SimpleQueue"]
if hasattr(_queue, "ShutDown"):
    __all__.append("ShutDown")

T = TypeVar("T")

Empty = _queue.Empty
Full = _queue.Full


def _green_conditions(q: Any) -> None:
    q.mutex = Lock()
    q.not_empty = Condition(q.mutex)
    q.not_full = Condition(q.mutex)
    q.all_tasks_done = Condition(q.mutex)


class Queue(_queue.Queue[T]):
    """A FIFO queue; blocking calls suspend only the calling green thread."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        _green_conditions(self)


class LifoQueue(Queue[T]):
    """A LIFO queue (a stack)."""

    _init = _queue.LifoQueue._init
    _qsize = _queue.LifoQueue._qsize
    _put = _queue.LifoQueue._put
    _get = _queue.LifoQueue._get


class PriorityQueue(Queue[T]):
    """A priority queue: the lowest entry (``sorted(entries)[0]``) comes out first."""

    _init = _queue.PriorityQueue._init
    _qsize = _queue.PriorityQueue._qsize
    _put = _queue.PriorityQueue._put
    _get = _queue.PriorityQueue._get


def _check_get_timeout(timeout: Any) -> None:
    """Raise what the stdlib's C ``SimpleQueue.get`` raises for this timeout, if anything."""
    try:
        negative = timeout < 0
    except TypeError:
        negative = False  # the real lock below raises this Python's TypeError
    if negative:
        raise ValueError("'timeout' must be a non-negative number")
    check_timeout(True, timeout)  # NaN, too large: as a real lock (the C code's checks)


class SimpleQueue(Generic[T]):
    """An unbounded FIFO queue without task tracking; ``put`` never blocks."""

    def __init__(self) -> None:
        self._mutex = _real_thread.allocate_lock()  # state only, never held across a wait
        self._items: collections.deque[T] = collections.deque()
        self._waiters: collections.deque[Waiter] = collections.deque()

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item`` in the queue (``block`` and ``timeout`` are ignored, as in the stdlib)."""
        with self._mutex:
            self._items.append(item)
            if self._waiters:
                self._waiters.popleft().wake()

    def put_nowait(self, item: T) -> None:
        """Same as ``put(item)``."""
        self.put(item)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Remove and return an item, waiting at most ``timeout`` seconds; Empty if none."""
        if timeout is not None and block:
            _check_get_timeout(timeout)
        with self._mutex:
            if self._items:
                return self._items.popleft()
            if not block:
                raise Empty
            waiter = Waiter()
            self._waiters.append(waiter)
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            try:
                remaining = None if deadline is None else deadline - _monotonic()
                waiter.wait(remaining)
            except BaseException:
                self._forget(waiter)
                raise
            with self._mutex:
                if self._items:
                    self._forget_locked(waiter)
                    return self._items.popleft()
                if deadline is not None and _monotonic() >= deadline:
                    self._forget_locked(waiter)
                    raise Empty
                if waiter.fired:  # woken but the item was taken: queue again
                    waiter = Waiter()
                    self._waiters.append(waiter)

    def _forget(self, waiter: Waiter) -> None:
        with self._mutex:
            self._forget_locked(waiter)

    def _forget_locked(self, waiter: Waiter) -> None:
        if waiter.fired:
            # We were woken for an item: pass the wake-up on if items remain.
            if self._items and self._waiters:
                self._waiters.popleft().wake()
            return
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def get_nowait(self) -> T:
        """Remove and return an item if one is there; raise Empty otherwise."""
        return self.get(False)

    def empty(self) -> bool:
        """Whether the queue is empty (not reliable while others use it)."""
        return not self._items

    def qsize(self) -> int:
        """The approximate number of items in the queue."""
        return len(self._items)

    __class_getitem__ = classmethod(types.GenericAlias)  # type: ignore[var-annotated]


# The stdlib's pure-Python SimpleQueue waits on a real threading.Semaphore: ours is
# the green one (CPython's own tests reach for this name).
_PySimpleQueue = SimpleQueue

for _name in dir(_queue):
    if _name not in globals() and not _name.startswith("__"):
        globals()[_name] = getattr(_queue, _name)
del _name
threading = _green_threading  # the stdlib module's ``threading`` name, green
