"""Database and service drivers on the event loop.

* :func:`greenbridge.patch_psycopg2` and :func:`greenbridge.patch_psycopg`
  hook the waiting of psycopg2 and psycopg 3 (sync API) into greenbridge.
* pymysql and redis-py need no driver of their own: they use plain sockets,
  which :func:`greenbridge.patch_blocking` makes green.
* Blocking C calls with no hook (mysqlclient, ...) go through
  :func:`greenbridge.offload`.
* :mod:`greenbridge.drivers.sqlalchemy` (imported on its own: it needs
  SQLAlchemy) has ``GreenQueuePool``, SQLAlchemy's connection pool waiting
  on the loop, and a ``create_engine`` that uses it.
"""

from __future__ import annotations

from .psycopg import patch_psycopg
from .psycopg2 import patch_psycopg2

__all__ = ["patch_psycopg", "patch_psycopg2"]
