"""greenbridge.integrations.django against a real Django project under uvicorn, on PostgreSQL.

The project (``tests/django_project``: settings, URLs, views, a model and its
migration) is configured with ``settings.configure()`` when this module is
imported: no ``DJANGO_SETTINGS_MODULE``, so pytest-django (installed with
the test extra) stays out of the rest of the suite.  The app runs under a
real uvicorn server on loopback in a thread with its own loop
(``web_servers.Uvicorn``, with a heartbeat on that loop); the tests are its
HTTP clients.  The same project is also served by Django's stock
``get_asgi_application()`` in the same process: the native twin, whose
answers the green ones must equal (only the thread differs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

django = pytest.importorskip("django")
asgiref_sync = pytest.importorskip("asgiref.sync")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
psycopg = pytest.importorskip("psycopg")

from django.conf import settings  # noqa: E402

from .django_project import settings as project_settings  # noqa: E402
from .helpers import PG_DSN, require_mariadb, require_postgres  # noqa: E402
from .web_servers import LOOPS, ROOT, Uvicorn  # noqa: E402

if not settings.configured:
    settings.configure(
        **{
            name: getattr(project_settings, name)
            for name in dir(project_settings)
            if name.isupper()
        }
    )

import greenbridge  # noqa: E402
from greenbridge.integrations import django as gd  # noqa: E402

APP = project_settings.APPLICATION_NAME
HAS_POOL = django.VERSION >= (5, 1)


# ---------------------------------------------------------------- fixtures and helpers


def server_connections() -> int:
    """The project's connections open on the server (``pg_stat_activity``)."""
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND pid <> pg_backend_pid()",
            [APP],
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for_connections(expected: int, timeout: float = 10) -> int:
    """Poll until the project has ``expected`` connections (closing happens after the reply)."""
    deadline = time.monotonic() + timeout
    while True:
        now = server_connections()
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.02)


def close_django_connections() -> None:
    """Close what the test thread opened through Django (the test client, checks)."""
    from django.db import connections

    connections.close_all()


@pytest.fixture(scope="module")
def project() -> Iterator[None]:
    """Django set up, the table migrated, greenbridge's handler installed; undone at the end."""
    require_postgres()
    from django.core.management import call_command

    django.setup(set_prefix=False)
    call_command("migrate", verbosity=0)
    close_django_connections()
    try:
        yield
    finally:
        gd.uninstall()
        close_django_connections()


@pytest.fixture(scope="module")
def green_app(project: None) -> Any:
    return gd.get_asgi_application()


@pytest.fixture
def server(green_app: Any) -> Iterator[Uvicorn]:
    # One per test: the server thread's greenbridge workers end with it.
    with Uvicorn(green_app) as running:
        yield running


@pytest.fixture
def stock_server(project: None) -> Iterator[Uvicorn]:
    from django.core.asgi import get_asgi_application

    with Uvicorn(get_asgi_application()) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "project" in request.fixturenames:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute("DELETE FROM greenbridge_django_item")
        close_django_connections()


def get(url: str, **params: Any) -> httpx.Response:
    return httpx.get(url, params=params, timeout=30)


def get_many(urls: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(await asyncio.gather(*(client.get(u, params=p) for u, p in urls)))

    return asyncio.run(main())


# ---------------------------------------------------------------- the handler


def test_sync_views_and_middleware_run_on_the_loop_thread(server: Uvicorn) -> None:
    response = get(server.url + "/sleep")
    assert response.status_code == 200
    assert response.json()["thread"] == server.thread.name
    assert response.headers["X-Middleware-Thread"] == server.thread.name
    # An async-only middleware in the chain: a coroutine, on the loop, no thread.
    assert response.headers["X-Async-Middleware-Thread"] == server.thread.name


def test_the_request_is_the_asgi_request_of_the_stock_handler(
    server: Uvicorn, stock_server: Uvicorn
) -> None:
    """ASGIRequest, with its scope and the same META as under Django's own handler."""
    stock = get(stock_server.url + "/request", q="1").json()
    green = get(server.url + "/request", q="1").json()
    assert green["cls"] == stock["cls"] == "ASGIRequest"
    assert green["scope_type"] == stock["scope_type"] == "http"
    for key in ("path", "path_info", "scheme", "query"):
        assert green[key] == stock[key], key
    differ = {"REMOTE_PORT", "SERVER_PORT", "HTTP_HOST"}  # (two servers, two ports)
    assert {k: v for k, v in green["meta"].items() if k not in differ} == {
        k: v for k, v in stock["meta"].items() if k not in differ
    }
    assert green["meta"].keys() == stock["meta"].keys()


def test_request_bodies_are_read_as_under_the_stock_handler(
    server: Uvicorn, stock_server: Uvicorn
) -> None:
    """A 1 MiB body (many ASGI messages), a form, a multipart upload: read on demand."""
    body = os.urandom(1 << 20)
    answers = []
    for url in (stock_server.url, server.url):
        raw = httpx.post(url + "/upload", content=body, timeout=30).json()
        form = httpx.post(url + "/upload", data={"a": "1", "b": "two"}, timeout=30).json()
        files = httpx.post(
            url + "/upload", data={"c": "3"}, files={"f": ("f.bin", body[:100_000])}, timeout=30
        ).json()
        answers.append((raw["size"], raw["sha256"], form["form"], files["form"], files["files"]))
    assert answers[0] == answers[1]
    assert answers[1][0] == len(body)
    assert answers[1][2] == {"a": "1", "b": "two"}


def test_a_chunked_body_is_read_within_data_upload_max_memory_size(server: Uvicorn) -> None:
    """No Content-Length: ``request.body`` stops past the limit (a 400), as Django 6.1's does."""

    def chunks(total: int) -> Iterator[bytes]:
        for _ in range(total // 65536):
            yield b"x" * 65536

    small = httpx.post(server.url + "/upload", content=chunks(1 << 20), timeout=30)
    assert small.status_code == 200 and small.json()["size"] == 1 << 20
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    big = httpx.post(server.url + "/upload", content=chunks(limit + (1 << 20)), timeout=30)
    assert big.status_code == 400


@pytest.mark.parametrize("path", ["/stream", "/async-stream"])
def test_streaming_responses_go_out_chunk_by_chunk(server: Uvicorn, path: str) -> None:
    """A sync and an async iterator: the first chunk arrives before the second is made."""
    seconds = 1.0
    arrivals = []
    started = time.monotonic()
    with httpx.stream("GET", server.url + path, params={"t": seconds}, timeout=30) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    assert b"".join(chunk for _, chunk in arrivals) == b"first\nsecond\n"
    assert arrivals[0][1].startswith(b"first")
    assert arrivals[0][0] < seconds * 0.8, arrivals
    assert arrivals[-1][0] >= seconds * 0.9, arrivals
    assert wait_for_connections(0) == 0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_client_leaving_a_stream_closes_its_iterator(server: Uvicorn, kind: str) -> None:
    """The request is cancelled mid-stream: the iterator is closed, the connection too."""
    from .django_project import views

    views.CLOSED_STREAMS.clear()
    path = "/endless-stream" if kind == "sync" else "/async-endless-stream"
    with httpx.stream("GET", server.url + path, timeout=30) as response:
        received = 0
        for chunk in response.iter_raw():
            received += chunk.count(b"chunk")
            if received >= 3:
                break
    closed = views.CLOSED_STREAMS
    deadline = time.monotonic() + 10
    while not closed:
        assert time.monotonic() < deadline, "the iterator was never closed"
        time.sleep(0.02)
    assert closed == [kind]
    assert wait_for_connections(0) == 0


def test_only_http_is_served(green_app: Any) -> None:
    """As Django's handler: a lifespan or websocket scope is refused."""

    async def nothing() -> dict[str, Any]:
        return {}

    async def ignore(message: dict[str, Any]) -> None:
        pass

    with pytest.raises(ValueError, match="Django can only handle ASGI/HTTP connections"):
        asyncio.run(green_app({"type": "lifespan"}, nothing, ignore))


def test_stock_handler_in_the_same_process_keeps_its_threads(
    server: Uvicorn, stock_server: Uvicorn
) -> None:
    """The native twin: same answers, but asgiref's executor threads run its sync code."""
    stock_hello, green_hello = get(stock_server.url + "/hello"), get(server.url + "/hello")
    assert stock_hello.status_code == green_hello.status_code == 200
    assert stock_hello.text == green_hello.text == "hello"
    assert stock_hello.headers["Content-Type"] == green_hello.headers["Content-Type"]
    stock = get(stock_server.url + "/count", name="x")
    green = get(server.url + "/count", name="x")
    assert stock.status_code == green.status_code == 200
    assert stock.json()["count"] == green.json()["count"] == 0
    assert stock.json()["thread"] != stock_server.thread.name
    assert stock.headers["X-Middleware-Thread"] != stock_server.thread.name
    assert green.json()["thread"] == server.thread.name
    assert wait_for_connections(0) == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_concurrent_slow_views_overlap(green_app: Any, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    n, seconds = 8, 0.5
    with Uvicorn(green_app, loop=loop) as server:
        get(server.url + "/hello")  # (the first request imports the URLconf)
        with server.heartbeat() as beat:
            started = time.monotonic()
            responses = get_many([(server.url + "/sleep", {"t": seconds})] * n)
            elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * n
    # One connection each (a thread's worth of state per request)...
    assert len({r.json()["pid"] for r in responses}) == n
    # ...and about one view's time for all (serially: n * seconds = 4 s).
    assert elapsed < n * seconds / 2, elapsed
    assert beat.max_gap < seconds, beat.max_gap


def test_per_request_connections_are_closed(server: Uvicorn) -> None:
    """CONN_MAX_AGE=0: each request's connection is closed when it ends."""
    responses = get_many([(server.url + "/sleep", {"t": 0.1})] * 5)
    assert [r.status_code for r in responses] == [200] * 5
    assert wait_for_connections(0) == 0


def test_a_request_reuses_the_closed_connection_object_of_an_ended_one(server: Uvicorn) -> None:
    """As a thread keeps its DatabaseWrapper between requests: closed, then connected again."""
    first = get(server.url + "/sleep").json()
    assert wait_for_connections(0) == 0
    second = get(server.url + "/sleep").json()
    assert first["wrapper"] == second["wrapper"]
    assert wait_for_connections(0) == 0


def test_transactions_are_isolated_between_concurrent_requests(server: Uvicorn) -> None:
    async def main() -> tuple[Any, Any, Any]:
        async with httpx.AsyncClient(timeout=30) as client:
            writer = asyncio.ensure_future(
                client.get(server.url + "/atomic", params={"name": "iso", "t": 0.8})
            )
            await asyncio.sleep(0.3)  # the writer's row exists, uncommitted
            during = await client.get(server.url + "/count", params={"name": "iso"})
            written = await writer
            after = await client.get(server.url + "/count", params={"name": "iso"})
            return written, during, after

    written, during, after = asyncio.run(main())
    assert written.json()["seen"] == 1  # the writer sees its own row
    assert during.json()["count"] == 0  # another request does not, until the commit
    assert after.json()["count"] == 1


def test_a_view_that_raises_gets_500_logged_and_rolls_back(
    server: Uvicorn, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = get(server.url + "/boom")
        failed = get(server.url + "/atomic", name="rolled back", fail=1)
    assert response.status_code == 500
    assert failed.status_code == 500
    messages = [r.getMessage() for r in caplog.records if r.name == "django.request"]
    assert any("/boom" in m for m in messages), messages
    errors = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any(isinstance(e, ValueError) and str(e) == "boom from a sync view" for e in errors)
    assert get(server.url + "/count", name="rolled back").json()["count"] == 0
    assert wait_for_connections(0) == 0


def test_async_and_sync_views_in_one_app(server: Uvicorn) -> None:
    get(server.url + "/atomic", name="both")
    answer = get(server.url + "/async", name="both").json()
    assert answer["view"] == "async" and answer["count"] == 1  # async ORM, run green
    assert answer["thread"] == server.thread.name
    assert wait_for_connections(0) == 0


def test_asgiref_threads_inside_a_request_get_their_connections_closed(server: Uvicorn) -> None:
    """A third-party module's own asgiref sync_to_async: a thread, whose connection is closed."""
    answer = get(server.url + "/async-asgiref").json()
    assert answer["count"] == 0
    assert answer["worker"] != server.thread.name  # asgiref's thread, as asked
    assert wait_for_connections(0) == 0


def test_orm_from_a_plain_coroutine_still_raises(server: Uvicorn) -> None:
    assert get(server.url + "/async-orm").json()["error"] == "SynchronousOnlyOperation"


@pytest.mark.skipif(
    django.VERSION < (5, 0), reason="Django cancels a request on client disconnect since 5.0"
)
def test_client_disconnect_cancels_the_view_and_rolls_back(server: Uvicorn) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            request = asyncio.ensure_future(
                client.get(server.url + "/atomic", params={"name": "cancelled", "t": 30})
            )
            # Wait until the view is inside its pg_sleep, then go away.
            deadline = time.monotonic() + 10
            while await asyncio.to_thread(_sleeping_backends) == 0:
                assert time.monotonic() < deadline, "the view never started"
                await asyncio.sleep(0.02)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request

    started = time.monotonic()
    asyncio.run(main())
    assert wait_for_connections(0) == 0
    assert time.monotonic() - started < 20  # the 30 s query was cancelled
    assert get(server.url + "/count", name="cancelled").json()["count"] == 0


def test_cancelled_handler_cancels_the_view_and_rolls_back(green_app: Any) -> None:
    """The handler task cancelled (a server's shutdown timeout) mid-view.

    The request runs in the handler's own task: the cancellation reaches the
    view's query, ``atomic()`` rolls back, and the request (its
    connection included) is over by the time the handler's task ends.
    """
    errors: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/atomic",
        "raw_path": b"/atomic",
        "query_string": b"name=orphan&t=30",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        disconnect = asyncio.Event()
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        handler = asyncio.ensure_future(green_app(scope, receive, send))
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(_sleeping_backends) == 0:
            assert time.monotonic() < deadline, "the view never started"
        handler.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handler

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 20  # the 30 s query was cancelled
    assert errors == []
    assert sent == []
    assert wait_for_connections(0) == 0
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM greenbridge_django_item WHERE name = 'orphan'"
        ).fetchone()
    assert row == (0,)


def _sleeping_backends() -> int:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND query LIKE 'SELECT pg_sleep%%'",
            [APP],
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_conn_max_age_keeps_connections_for_later_requests(server: Uvicorn) -> None:
    """CONN_MAX_AGE=None: the connection outlives its request and serves the next one."""
    try:
        first = get(server.url + "/persistent").json()["pid"]
        second = get(server.url + "/persistent").json()["pid"]
        assert first == second
        assert wait_for_connections(1) == 1
    finally:
        # The idle connection belongs to the server's thread: a request closes it.
        get(server.url + "/persistent", close=1)
    assert wait_for_connections(0) == 0


@pytest.mark.skipif(not HAS_POOL, reason="Django's psycopg pool needs Django 5.1")
def test_pool_wait_suspends_only_the_request(server: Uvicorn) -> None:
    """A pool of 2, 6 requests: 4 wait for a connection, the loop keeps running."""
    seconds = 0.4
    try:
        with server.heartbeat() as beat:
            started = time.monotonic()
            responses = get_many([(server.url + "/pooled", {"t": seconds})] * 6)
            elapsed = time.monotonic() - started
        assert [r.status_code for r in responses] == [200] * 6
        assert len({r.json()["pid"] for r in responses}) == 2  # the pool's two
        assert elapsed >= 3 * seconds * 0.9  # three rounds of two
        assert beat.max_gap < seconds, beat.max_gap
    finally:
        assert get(server.url + "/close-pool").status_code == 200
    assert wait_for_connections(0) == 0


def test_concurrency_caps_the_requests_in_django(project: None) -> None:
    """concurrency=2, 6 slow views: all answered, never more than 2 on the database at once."""
    seconds = 0.3
    handler = gd.GreenASGIHandler(concurrency=2)
    most = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            most[0] = max(most[0], _sleeping_backends())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    with Uvicorn(handler) as server:
        get(server.url + "/hello")  # (the first request imports the URLconf)
        watcher.start()
        try:
            with server.heartbeat() as beat:
                responses = get_many([(server.url + "/sleep", {"t": seconds})] * 6)
        finally:
            done.set()
            watcher.join()
    assert [r.status_code for r in responses] == [200] * 6
    assert most[0] == 2, most
    assert beat.max_gap < seconds, beat.max_gap
    assert handler._gate is not None and handler._gate.free == 2
    assert wait_for_connections(0) == 0


def test_get_asgi_application_checks_concurrency_first(project: None) -> None:
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        gd.get_asgi_application(concurrency=0)
    with pytest.raises(TypeError, match="concurrency must be an int"):
        gd.get_asgi_application(concurrency="8")  # type: ignore[arg-type]


# ---------------------------------------------------------------- outside the handler


@pytest.mark.leaks_ok(reason="asgiref's single-thread executor (AsyncClient) lives on")
def test_test_client_and_async_client_work_unchanged(server: Uvicorn) -> None:
    from django.test import AsyncClient, Client

    try:
        answer = Client().get("/count", {"name": "x"}).json()
        assert answer["count"] == 0
        assert answer["thread"] == threading.current_thread().name
        async_answer = asyncio.run(AsyncClient().get("/async", {"name": "x"})).json()
        assert async_answer["view"] == "async" and async_answer["count"] == 0
    finally:
        close_django_connections()
        # (the test client does not close connections at request end; the async
        # view's is in asgiref's executor thread, which closes it there)
        asyncio.run(asgiref_sync.sync_to_async(close_django_connections)())


def test_management_commands_work(server: Uvicorn) -> None:
    from django.core.management import call_command

    call_command("check", verbosity=0)
    call_command("migrate", verbosity=0)
    close_django_connections()


def test_bridged_code_outside_a_request_gets_a_connection_per_task(project: None) -> None:
    """async_ + the ORM outside the handler: allowed, one connection per task."""
    gd.install()
    from django.db import connection

    def backend_pid() -> int:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(0.2), pg_backend_pid()")
                return int(cursor.fetchone()[1])
        finally:
            connection.close()

    async def main() -> list[int]:
        return list(await asyncio.gather(*(greenbridge.async_(backend_pid)() for _ in range(3))))

    greenbridge.patch_psycopg()
    started = time.monotonic()
    pids = asyncio.run(main())
    assert len(set(pids)) == 3
    assert time.monotonic() - started < 0.5 * 3


def test_orm_in_a_plain_coroutine_outside_the_handler_raises(project: None) -> None:
    from django.core.exceptions import SynchronousOnlyOperation

    from .django_project.models import Item

    async def main() -> None:
        with pytest.raises(SynchronousOnlyOperation):
            Item.objects.count()

    asyncio.run(main())


def test_install_refuses_an_untested_django(project: None, monkeypatch: pytest.MonkeyPatch) -> None:
    gd.uninstall()
    monkeypatch.setattr(django, "__version__", "9.0")
    with pytest.raises(gd.UnsupportedVersion, match=r"tested with django 4\.2 to"):
        gd.install()
    assert not gd.installed()
    # Uninstalled: Django's own functions and connection store are back.
    import django.core.handlers.base as base
    import django.utils.asyncio as django_asyncio
    from django.db import connections

    assert base.sync_to_async is asgiref_sync.sync_to_async
    assert base.async_to_sync is asgiref_sync.async_to_sync
    assert django_asyncio.get_running_loop is asyncio.get_running_loop
    assert type(connections._connections).__module__ == "asgiref.local"
    monkeypatch.undo()
    gd.install()
    assert gd.installed()
    assert base.sync_to_async is not asgiref_sync.sync_to_async


def test_modules_imported_later_are_patched_at_the_next_request(server: Uvicorn) -> None:
    import django.contrib.staticfiles.handlers as handlers  # not imported by the project

    assert get(server.url + "/hello").text == "hello"
    assert handlers.sync_to_async is not asgiref_sync.sync_to_async


# ---------------------------------------------------------------- sync_to_async / async_to_sync


def asgiref_version() -> tuple[int, ...]:
    import asgiref

    return tuple(int(part) for part in asgiref.__version__.split(".")[:2])


VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")

FLAVOURS = {
    "asgiref": (asgiref_sync.sync_to_async, asgiref_sync.async_to_sync),
    "greenbridge": (gd.sync_to_async, gd.async_to_sync),
}


@pytest.fixture(params=list(FLAVOURS))
def flavour(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    return FLAVOURS[request.param]


def test_sync_to_async_call_forms_and_results(flavour: tuple[Any, Any]) -> None:
    sync_to_async, _ = flavour

    def add(a: int, b: int = 0) -> int:
        """Adds."""
        return a + b

    @sync_to_async
    def plain(a: int) -> int:
        return a * 2

    @sync_to_async(thread_sensitive=False)
    def insensitive(a: int) -> int:
        return a * 3

    async def main() -> list[int]:
        return [await sync_to_async(add)(1, b=2), await plain(5), await insensitive(5)]

    assert asyncio.run(main()) == [3, 10, 15]
    wrapped = sync_to_async(add)
    assert wrapped.__name__ == "add" and wrapped.__doc__ == "Adds."
    assert asyncio.iscoroutinefunction(wrapped) or asgiref_sync.iscoroutinefunction(wrapped)


def test_sync_to_async_errors(flavour: tuple[Any, Any]) -> None:
    sync_to_async, _ = flavour

    async def coroutine_function() -> None:
        pass

    with pytest.raises(TypeError, match="sync_to_async can only be applied to sync functions"):
        sync_to_async(coroutine_function)
    executor = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with pytest.raises(TypeError, match="executor must not be set"):
            sync_to_async(len, executor=executor)
    finally:
        executor.shutdown()

    def fails() -> None:
        raise KeyError("inside")

    async def main() -> None:
        with pytest.raises(KeyError, match="inside"):
            await sync_to_async(fails)()

    asyncio.run(main())


def test_sync_to_async_context_variables_both_ways(flavour: tuple[Any, Any]) -> None:
    sync_to_async, _ = flavour

    def read_and_set() -> str:
        seen = VAR.get()
        VAR.set("set in sync code")
        return seen

    async def main() -> tuple[str, str]:
        VAR.set("set by the caller")
        seen = await sync_to_async(read_and_set)()
        return seen, VAR.get()

    assert asyncio.run(main()) == ("set by the caller", "set in sync code")


def test_async_to_sync_without_a_loop(flavour: tuple[Any, Any]) -> None:
    _, async_to_sync = flavour

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        VAR.set("set in the coroutine")
        return x * 2

    def main() -> tuple[int, str]:
        VAR.set("before")
        return async_to_sync(double)(21), VAR.get()

    assert contextvars.copy_context().run(main) == (42, "set in the coroutine")

    @async_to_sync
    async def decorated() -> str:
        return "decorated"

    assert decorated() == "decorated"


@pytest.mark.parametrize("force_new_loop", [False, True])
def test_async_to_sync_from_plain_sync_code_on_a_loop_raises(
    flavour: tuple[Any, Any], force_new_loop: bool
) -> None:
    _, async_to_sync = flavour
    stock = async_to_sync is asgiref_sync.async_to_sync
    if force_new_loop and stock and asgiref_version() < (3, 13):
        pytest.skip("older asgiref runs it on a new loop in another thread")

    async def nothing() -> None:
        pass

    async def main() -> None:
        with pytest.raises(RuntimeError, match="You cannot use AsyncToSync in the same thread"):
            async_to_sync(nothing, force_new_loop=force_new_loop)()

    asyncio.run(main())


def test_async_to_sync_inside_sync_to_async(flavour: tuple[Any, Any]) -> None:
    sync_to_async, async_to_sync = flavour

    async def inner() -> str:
        await asyncio.sleep(0)
        VAR.set("set by the inner coroutine")
        return "inner"

    def middle() -> tuple[str, str]:
        return async_to_sync(inner)(), VAR.get()

    async def main() -> tuple[tuple[str, str], str]:
        result = await sync_to_async(middle)()
        return result, VAR.get()

    assert asyncio.run(main()) == (
        ("inner", "set by the inner coroutine"),
        "set by the inner coroutine",
    )


def test_async_to_sync_force_new_loop(flavour: tuple[Any, Any]) -> None:
    _, async_to_sync = flavour
    if async_to_sync is asgiref_sync.async_to_sync and asgiref_version() < (3, 13):
        # (seen with 3.11: it runs the coroutine on the loop that was running
        # where async_to_sync() was called, force_new_loop or not)
        pytest.skip("older asgiref can run it on an outer loop of the process")

    async def which_loop() -> int:
        return id(asyncio.get_running_loop())

    async def main() -> tuple[int, int]:
        return id(asyncio.get_running_loop()), await asyncio.to_thread(
            async_to_sync(which_loop, force_new_loop=True)
        )

    outer, inner = asyncio.run(main())
    assert outer != inner


def test_green_sync_to_async_runs_concurrently_on_the_loop_thread() -> None:
    from greenbridge.green import time as green_time

    def nap() -> int:
        green_time.sleep(0.2)
        return threading.get_ident()

    async def main() -> tuple[list[int], float]:
        started = time.monotonic()
        idents = await asyncio.gather(*(gd.sync_to_async(nap)() for _ in range(5)))
        return list(idents), time.monotonic() - started

    idents, elapsed = asyncio.run(main())
    assert set(idents) == {threading.get_ident()}
    assert elapsed < 0.2 * 5 / 2


# ---------------------------------------------------------------- other drivers, in subprocesses


@pytest.mark.parametrize(("backend", "driver"), [("mysql", "pymysql"), ("psycopg2", "psycopg2")])
def test_other_drivers(backend: str, driver: str) -> None:
    """MariaDB through PyMySQL imported green; PostgreSQL through psycopg2: views overlap."""
    if backend == "mysql":
        require_mariadb()
    else:
        require_postgres()
    pytest.importorskip(driver)
    n, seconds = 5, 1.0  # (a subprocess on a loaded machine: keep the bounds generous)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    out = subprocess.run(
        [sys.executable, "-m", "tests.django_project.run_backend", backend, str(n), str(seconds)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["driver"] == driver
    assert result["status"] == [200] * n
    assert len(set(result["ids"])) == n  # a connection per request
    assert result["threads"] == [result["server_thread"]]
    assert result["elapsed"] < n * seconds / 2
    assert result["max_gap"] < seconds


REFUSED = {
    "pymysql": (
        "import pymysql; pymysql.install_as_MySQLdb()\n",
        {"ENGINE": "django.db.backends.mysql", "NAME": "test", "USER": "root"},
        "PyMySQL was imported with the blocking socket module",
    ),
    "psycopg_pool": (
        "import psycopg_pool\n",
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "test",
            "USER": "postgres",
            "OPTIONS": {"pool": True},
        },
        "psycopg_pool was imported before greenbridge's get_asgi_application()",
    ),
}


@pytest.mark.parametrize("driver", list(REFUSED))
def test_get_asgi_application_refuses_blocking_drivers(driver: str) -> None:
    """A driver imported with blocking modules: a clear error naming the fix."""
    pytest.importorskip(driver)
    first, database, message = REFUSED[driver]
    code = (
        first + "from django.conf import settings\n"
        f"settings.configure(DATABASES={{'default': {database!r}}})\n"
        "from greenbridge.integrations.django import get_asgi_application\n"
        "get_asgi_application()\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert message in out.stderr
    assert "greenbridge.patch_blocking()" in out.stderr
