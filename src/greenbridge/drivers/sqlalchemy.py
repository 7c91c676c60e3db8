"""SQLAlchemy's connection pool, waiting on the event loop.

SQLAlchemy's :class:`~sqlalchemy.pool.QueuePool` hands out connections from a
queue guarded by ``threading`` locks and conditions.  When every connection is
checked out, the next ``checkout`` waits on a real ``threading.Condition``:
from bridged sync code that blocks the whole event loop (and, as the holders
of the connections can only give them back when the loop runs, until
``pool_timeout`` expires).

:class:`GreenQueuePool` is the same pool over greenbridge's green locks
(:mod:`greenbridge.green.threading`): a checkout that has to wait suspends
only its own greenlet while the loop keeps running (a greenbridge worker under
asyncio is resumed straight from a loop callback; SQLAlchemy's own
``greenlet_spawn`` greenlets and trio tasks wait through ``await_``: see
:mod:`greenbridge.green._waiter`); ``pool_timeout`` still raises SQLAlchemy's
``TimeoutError`` after that many seconds.  Outside a running loop (and in
real threads) the green locks behave like the stdlib ones, so the same
engine also works in plain sync code.

Use it through ``poolclass=``::

    from greenbridge.drivers.sqlalchemy import GreenQueuePool
    engine = sqlalchemy.create_engine(url, poolclass=GreenQueuePool, pool_size=5)

or :func:`create_engine`, which sets it for you.  This module imports
SQLAlchemy (2.0 or newer); ``import greenbridge`` does not.

The pool also greens one lock outside the queue.  SQLAlchemy runs the pool's
``connect`` (and ``first_connect``) listeners under a per-collection "exec
once" mutex until they have succeeded once, and the engine's own ``connect``
listener is the dialect's first-connect initialisation, which queries the
server.  SQLAlchemy makes that mutex a real ``threading.Lock``: a greenlet
holding it waits on the loop for those queries, the next greenlet opening a
connection would block the whole thread on it and the loop would never run
again.  :class:`GreenQueuePool` gives those listener collections a green
lock before SQLAlchemy creates its own.
"""

from __future__ import annotations

from collections import deque
from contextlib import nullcontext as _nullcontext
from typing import Any

try:
    import sqlalchemy as _sa
    from sqlalchemy import util as _sa_util
    from sqlalchemy.pool import ConnectionPoolEntry as _ConnectionPoolEntry
    from sqlalchemy.pool import QueuePool as _QueuePool
    from sqlalchemy.util import queue as _sa_queue
except ImportError as exc:  # pragma: no cover - exercised only without SQLAlchemy
    raise ImportError(
        "greenbridge.drivers.sqlalchemy needs SQLAlchemy 2.0 or newer: "
        "install it with `pip install sqlalchemy`",
        name="sqlalchemy",
    ) from exc

from ..green import threading as _green_threading
from ..green._waiter import Waiter

__all__ = ["GreenQueuePool", "create_engine"]


class _Getter:
    """A ``get()`` waiting for an item; ``put()`` fills it and wakes it (mutex held)."""

    __slots__ = ("waiter", "filled", "item")

    def __init__(self) -> None:
        # Created by the getter itself: the waiter suspends the caller that creates it.
        self.waiter = Waiter()
        self.filled = False
        self.item: Any = None


class _GreenQueue(_sa_queue.Queue[Any]):
    """SQLAlchemy's pool queue with green locks, handing items to waiters in order.

    A ``get()`` that has to wait queues up, and ``put()`` hands its item
    straight to the oldest waiter.  With a plain condition the woken getter
    would only look at the queue when it next runs, and code that runs first
    (another request's sync code, resumed by a loop callback) would take the
    connection from under it: under load some requests would wait far longer
    than others.
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        mutex = _green_threading.RLock()
        self.mutex = mutex  # type: ignore[assignment]
        self.not_empty = _green_threading.Condition(mutex)  # type: ignore[assignment]
        self.not_full = _green_threading.Condition(mutex)  # type: ignore[assignment]
        self._getters: deque[_Getter] = deque()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.mutex:
            if not self._hand_over(item):
                super().put(item, block, timeout)

    def _hand_over(self, item: Any) -> bool:
        """Give ``item`` to the oldest waiting getter, if any (mutex held)."""
        if not self._getters:
            return False
        getter = self._getters.popleft()
        getter.item = item
        getter.filled = True
        getter.waiter.wake()
        return True

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        with self.mutex:
            if not self._getters and not self._empty():
                item = self._get()
                self.not_full.notify()
                return item
            if not block:
                raise _sa_queue.Empty
            if timeout is not None and timeout < 0:
                raise ValueError("'timeout' must be a positive number")
            getter = _Getter()
            self._getters.append(getter)
        try:
            getter.waiter.wait(timeout)
        except BaseException:
            with self.mutex:
                if getter.filled:  # handed over meanwhile: pass it on, not lose it
                    if not self._hand_over(getter.item):
                        self._put(getter.item)
                else:
                    self._getters.remove(getter)
            raise
        with self.mutex:
            if getter.filled:
                return getter.item
            self._getters.remove(getter)
        raise _sa_queue.Empty


# Pool events whose listeners SQLAlchemy runs under an "exec once" mutex:
# ``connect`` (``_exec_w_sync_on_first_run``, the dialect's initialisation)
# and ``first_connect`` (``exec_once_unless_exception``).
_EXEC_ONCE_EVENTS = ("connect", "first_connect")
_MISSING = object()


def _green_exec_once_mutexes(pool: Any) -> None:
    """Give the pool's exec-once listener collections a green mutex.

    SQLAlchemy (``sqlalchemy/event/attr.py``) creates the mutex lazily, as a
    ``threading.Lock``, in ``_CompoundListener._get_exec_once_mutex()`` unless
    the collection was set up for asyncio, and keeps it in the collection's
    ``_exec_once_mutex`` slot.  ``for_modify()`` turns the pool's empty
    per-event placeholder into its own listener collection now (later
    ``event.listen()`` calls reuse that collection), and a slot still ``None``
    gets a :class:`greenbridge.green.threading.Lock`, which suspends a
    greenlet and blocks a real thread.  A mutex SQLAlchemy already made is
    left alone.  Anything not shaped as expected (other SQLAlchemy
    internals) leaves the pool untouched: it then works as ``QueuePool`` does.
    """
    dispatch = getattr(pool, "dispatch", None)
    if dispatch is None:
        return
    for name in _EXEC_ONCE_EVENTS:
        try:
            collection = getattr(dispatch, name).for_modify(dispatch)
        except (AttributeError, TypeError, NotImplementedError, AssertionError):
            continue
        if getattr(collection, "_exec_once_mutex", _MISSING) is not None:
            continue  # not there (internals changed), or already made
        # SQLAlchemy's own lock around creating the mutex: a real RLock under
        # free-threaded Python, a null context otherwise.  Held for no wait.
        with getattr(_sa_util, "mini_gil", _nullcontext()):
            if collection._exec_once_mutex is None:
                collection._exec_once_mutex = _green_threading.Lock()


class GreenQueuePool(_QueuePool):
    """A :class:`sqlalchemy.pool.QueuePool` whose waiting for a free connection is green.

    Same arguments and behaviour as ``QueuePool`` (``pool_size``,
    ``max_overflow``, ``timeout``, ``use_lifo``...).  From sync code run by
    :func:`greenbridge.async_` / :func:`greenbridge.spawn`, a checkout from
    an exhausted pool suspends only the calling greenlet until a connection is
    returned or ``timeout`` (the engine's ``pool_timeout``) seconds pass, when
    SQLAlchemy's ``sqlalchemy.exc.TimeoutError`` is raised as usual.  In a
    thread with no event loop running it blocks like ``QueuePool``.

    Concurrent first connections of a fresh engine (or of the new pool that
    ``engine.dispose()`` / ``recreate()`` make) wait for the dialect's
    first-connect initialisation on a green lock too.
    """

    _queue_class = _GreenQueue

    def __init__(self, creator: Any, *args: Any, **kw: Any) -> None:
        super().__init__(creator, *args, **kw)
        # Only held for a counter update, but green too: a greenlet never
        # blocks the loop on it, whatever SQLAlchemy does under it later.
        self._overflow_lock = _green_threading.Lock()  # type: ignore[assignment]
        # After super().__init__(): recreate() copies the old pool's
        # listeners (``_dispatch=``) into fresh collections with no mutex.
        _green_exec_once_mutexes(self)

    def _create_connection(self) -> _ConnectionPoolEntry:
        # Again before each new connection, in case SQLAlchemy made a
        # collection after __init__ (cheap once done: nothing to replace).
        _green_exec_once_mutexes(self)
        return super()._create_connection()


def create_engine(url: Any, **kwargs: Any) -> _sa.Engine:
    """``sqlalchemy.create_engine(url, **kwargs)`` with :class:`GreenQueuePool` as the pool.

    An explicit ``poolclass=`` or ``pool=`` in ``kwargs`` is refused: this
    helper exists to choose the pool.  The database driver itself must wait
    on the loop too: call :func:`greenbridge.patch_psycopg2` /
    :func:`greenbridge.patch_psycopg` first, or pass a pymysql imported under
    :func:`greenbridge.patch_blocking` as ``module=``.

    Raises:
        TypeError: ``poolclass`` or ``pool`` was given.
    """
    for name in ("poolclass", "pool"):
        if name in kwargs:
            raise TypeError(
                f"greenbridge.drivers.sqlalchemy.create_engine() sets the pool itself; "
                f"drop {name}= (or call sqlalchemy.create_engine(..., "
                f"poolclass=GreenQueuePool) directly)"
            )
    return _sa.create_engine(url, poolclass=GreenQueuePool, **kwargs)
