"""Example ASGI app: sync SQLAlchemy ORM and ``requests`` in Starlette handlers.

The same sync function, :func:`lookup`, serves two families of routes:

* ``/green/items/{id}``: ``await greenbridge.async_(lookup)(id)``: it runs in
  a greenlet on the event loop; psycopg2 (``patch_psycopg2``), SQLAlchemy's
  pool (``GreenQueuePool``) and requests (imported under ``patch_blocking``)
  wait on the loop.
* ``/thread/items/{id}``: ``await run_in_threadpool(lookup, id)``: Starlette's
  usual way, a worker thread per call (with no loop in the thread the same
  driver, pool and requests block as usual).

``lookup`` reads one row with the ORM and calls an upstream HTTP service that
takes 50 ms (``upstream.py``).  Configuration by environment variables:
``GB_EXAMPLE_DB`` (default ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``),
``GB_EXAMPLE_UPSTREAM`` (default ``http://127.0.0.1:8765``), ``GB_EXAMPLE_POOL``
(pool size, default 20).  Run: ``uvicorn --app-dir examples/asgi_app app:app``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import greenbridge

# Imported under patch_blocking() before anything else can import them, so
# requests, urllib3 and http.client bind greenbridge's green socket/ssl/queue.
with greenbridge.patch_blocking():
    import requests
    import requests.adapters

import sqlalchemy as sa
from sqlalchemy import orm
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from greenbridge.drivers.sqlalchemy import create_engine

DB_URL = os.environ.get("GB_EXAMPLE_DB", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
UPSTREAM = os.environ.get("GB_EXAMPLE_UPSTREAM", "http://127.0.0.1:8765")
POOL_SIZE = int(os.environ.get("GB_EXAMPLE_POOL", "20"))
ITEMS = 100

greenbridge.patch_psycopg2()
engine = create_engine(DB_URL, pool_size=POOL_SIZE, max_overflow=0, pool_timeout=60)
Session = orm.sessionmaker(engine)

http = requests.Session()
http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=256))


class Base(orm.DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "gb_example_items"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50))


def seed() -> None:
    """Create the table and its rows if they are missing (idempotent)."""
    Base.metadata.create_all(engine)
    with Session.begin() as session:
        have = set(session.scalars(sa.select(Item.id)))
        session.add_all(Item(id=i, name=f"item {i}") for i in range(ITEMS) if i not in have)


def lookup(item_id: int) -> dict[str, Any]:
    """The sync business logic: one ORM read, one upstream HTTP call."""
    with Session() as session:
        item = session.get(Item, item_id)
        name = None if item is None else item.name
    reply = http.get(f"{UPSTREAM}/price", params={"item": str(item_id)}, timeout=30)
    reply.raise_for_status()
    return {"id": item_id, "name": name, "upstream": reply.json()}


async def green_item(request: Request) -> JSONResponse:
    """The sync logic through greenbridge: a greenlet on the loop."""
    return JSONResponse(await greenbridge.async_(lookup)(int(request.path_params["id"])))


async def thread_item(request: Request) -> JSONResponse:
    """The sync logic through Starlette's thread pool."""
    return JSONResponse(await run_in_threadpool(lookup, int(request.path_params["id"])))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await greenbridge.async_(seed)()
    yield
    await greenbridge.async_(engine.dispose)()


app = Starlette(
    routes=[
        Route("/green/items/{id:int}", green_item),
        Route("/thread/items/{id:int}", thread_item),
    ],
    lifespan=lifespan,
)
