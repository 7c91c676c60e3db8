"""SQLAlchemy's connection pool, waiting on the event loop.

SQLAlchemy's :class:`~sqlalchemy.pool.QueuePool` hands out connections from a
queue guarded by ``threading`` locks and conditions.  When every connection is
checked out, the next ``checkout`` waits on a real ``threading.Condition``:
from bridged sync code that blocks the whole event loop (and, as the holders
of the connections can only give them back when the loop runs, until
``pool_timeout`` expires).

:class:`GreenQueuePool` is the same pool over greenbridge's green locks
(:mod:`greenbridge.green.threading`): a checkout that has to wait suspends
only its own greenlet while the loop keeps running; ``pool_timeout`` still
raises SQLAlchemy's ``TimeoutError`` after that many seconds.  Outside a
running loop (and in real threads) the green locks behave like the stdlib
ones, so the same engine also works in plain sync code.

Use it through ``poolclass=``::

    from greenbridge.drivers.sqlalchemy import GreenQueuePool
    engine = sqlalchemy.create_engine(url, poolclass=GreenQueuePool, pool_size=5)

or :func:`create_engine`, which sets it for you.  This module imports
SQLAlchemy (2.0 or newer); ``import greenbridge`` does not.
"""

from __future__ import annotations

from typing import Any

try:
    import sqlalchemy as _sa
    from sqlalchemy.pool import QueuePool as _QueuePool
    from sqlalchemy.util import queue as _sa_queue
except ImportError as exc:  # pragma: no cover - exercised only without SQLAlchemy
    raise ImportError(
        "greenbridge.drivers.sqlalchemy needs SQLAlchemy 2.0 or newer: "
        "install it with `pip install sqlalchemy`",
        name="sqlalchemy",
    ) from exc

from ..green import threading as _green_threading

__all__ = ["GreenQueuePool", "create_engine"]


class _GreenQueue(_sa_queue.Queue[Any]):
    """SQLAlchemy's pool queue with green mutex and conditions."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        # The queue's own logic is unchanged: only what it waits on is green.
        mutex = _green_threading.RLock()
        self.mutex = mutex  # type: ignore[assignment]
        self.not_empty = _green_threading.Condition(mutex)  # type: ignore[assignment]
        self.not_full = _green_threading.Condition(mutex)  # type: ignore[assignment]


class GreenQueuePool(_QueuePool):
    """A :class:`sqlalchemy.pool.QueuePool` whose waiting for a free connection is green.

    Same arguments and behaviour as ``QueuePool`` (``pool_size``,
    ``max_overflow``, ``timeout``, ``use_lifo``...).  From sync code run by
    :func:`greenbridge.async_` / :func:`greenbridge.spawn`, a checkout from
    an exhausted pool suspends only the calling greenlet until a connection is
    returned or ``timeout`` (the engine's ``pool_timeout``) seconds pass, when
    SQLAlchemy's ``sqlalchemy.exc.TimeoutError`` is raised as usual.  In a
    thread with no event loop running it blocks like ``QueuePool``.
    """

    _queue_class = _GreenQueue

    def __init__(self, creator: Any, *args: Any, **kw: Any) -> None:
        super().__init__(creator, *args, **kw)
        # Only held for a counter update, but green too: a greenlet never
        # blocks the loop on it, whatever SQLAlchemy does under it later.
        self._overflow_lock = _green_threading.Lock()  # type: ignore[assignment]


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
