"""Views of the test project: sync ones on the ORM and raw SQL, async ones beside them."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from .models import Item


def _sleep(alias: str, seconds: float) -> int:
    """Sleep ``seconds`` in the database ``alias``; the server's id of the connection."""
    connection = connections[alias]
    if connection.vendor == "mysql":
        sql = "SELECT SLEEP(%s), CONNECTION_ID()"
    else:
        sql = "SELECT pg_sleep(%s), pg_backend_pid()"
    with connection.cursor() as cursor:
        cursor.execute(sql, [seconds])
        return int(cursor.fetchone()[1])


def _answer(**data: Any) -> JsonResponse:
    return JsonResponse({"thread": threading.current_thread().name, **data})


def hello(request: HttpRequest) -> HttpResponse:
    """A sync view with no database: the handler's own cost."""
    return HttpResponse("hello")


def sleep(request: HttpRequest) -> HttpResponse:
    seconds = float(request.GET.get("t", "0"))
    alias = request.GET.get("alias", "default")
    return _answer(pid=_sleep(alias, seconds), wrapper=id(connections[alias]))


def atomic(request: HttpRequest) -> HttpResponse:
    """Write a row in a transaction, wait, and optionally fail (rolling it back)."""
    name = request.GET["name"]
    with transaction.atomic():
        Item.objects.create(name=name)
        pid = _sleep("default", float(request.GET.get("t", "0")))
        seen = Item.objects.filter(name=name).count()
        if request.GET.get("fail"):
            raise RuntimeError("failed inside transaction.atomic()")
    return _answer(pid=pid, seen=seen)


def count(request: HttpRequest) -> HttpResponse:
    return _answer(count=Item.objects.filter(name=request.GET["name"]).count())


async def async_view(request: HttpRequest) -> HttpResponse:
    """A native async view on the async ORM (which Django runs through sync_to_async)."""
    number = await Item.objects.filter(name=request.GET.get("name", "")).acount()
    return _answer(count=number, view="async")


async def async_asgiref(request: HttpRequest) -> HttpResponse:
    """The ORM through asgiref's own sync_to_async, as a third-party app would call it."""

    def count() -> tuple[int, str]:
        return Item.objects.count(), threading.current_thread().name

    number, worker = await sync_to_async(count)()
    return _answer(count=number, worker=worker)


async def async_orm_direct(request: HttpRequest) -> HttpResponse:
    """The sync ORM from a coroutine: Django must refuse it."""
    try:
        Item.objects.count()
    except SynchronousOnlyOperation as exc:
        return _answer(error=type(exc).__name__)
    return _answer(error=None)


def boom(request: HttpRequest) -> HttpResponse:
    raise ValueError("boom from a sync view")


def pooled(request: HttpRequest) -> HttpResponse:
    return _answer(pid=_sleep("pooled", float(request.GET.get("t", "0"))))


def close_pool(request: HttpRequest) -> HttpResponse:
    connections["pooled"].close_pool()
    return _answer(closed=True)


def persistent(request: HttpRequest) -> HttpResponse:
    """The backend of a CONN_MAX_AGE=None connection (``?close=1``: close it)."""
    pid = _sleep("persistent", 0)
    if request.GET.get("close"):
        connections["persistent"].close()
    return _answer(pid=pid)


def request_info(request: HttpRequest) -> HttpResponse:
    """What the view sees of its request: its class, its scope, its META."""
    scope = getattr(request, "scope", None)
    meta = {
        key: value if isinstance(value, (str, int, bool)) else repr(type(value))
        for key, value in request.META.items()
    }
    return _answer(
        cls=type(request).__name__,
        scope_type=None if scope is None else scope["type"],
        meta=meta,
        path=request.path,
        path_info=request.path_info,
        scheme=request.scheme,
        host=request.get_host(),
        query=request.GET.dict(),
    )


def upload(request: HttpRequest) -> HttpResponse:
    """The body as the view reads it: its size and digest, its form fields and files."""
    if request.content_type == "multipart/form-data":
        files = {name: hashlib.sha256(f.read()).hexdigest() for name, f in request.FILES.items()}
        return _answer(form=request.POST.dict(), files=files)
    body = request.body
    form = (
        request.POST.dict() if request.content_type == "application/x-www-form-urlencoded" else {}
    )
    return _answer(size=len(body), sha256=hashlib.sha256(body).hexdigest(), form=form)


def stream(request: HttpRequest) -> HttpResponse:
    """A sync iterator: a chunk, a wait of ``t`` seconds in the database, a chunk."""
    seconds = float(request.GET.get("t", "0"))

    def chunks() -> Iterator[bytes]:
        yield b"first\n"
        _sleep("default", seconds)
        yield b"second\n"

    return StreamingHttpResponse(chunks())


async def async_stream(request: HttpRequest) -> HttpResponse:
    """An async iterator: a chunk, ``asyncio.sleep(t)``, a chunk."""
    seconds = float(request.GET.get("t", "0"))

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first\n"
        await asyncio.sleep(seconds)
        yield b"second\n"

    return StreamingHttpResponse(chunks())


#: The endless streams below append their name here when their iterator is closed.
CLOSED_STREAMS: list[str] = []


def endless_stream(request: HttpRequest) -> HttpResponse:
    """A sync iterator that never ends: a chunk every 50 ms of database time."""

    def chunks() -> Iterator[bytes]:
        try:
            while True:
                yield b"chunk\n"
                _sleep("default", 0.05)
        finally:
            CLOSED_STREAMS.append("sync")

    return StreamingHttpResponse(chunks())


async def async_endless_stream(request: HttpRequest) -> HttpResponse:
    """An async iterator that never ends: a chunk every 50 ms."""

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"chunk\n"
                await asyncio.sleep(0.05)
        finally:
            CLOSED_STREAMS.append("async")

    return StreamingHttpResponse(chunks())
