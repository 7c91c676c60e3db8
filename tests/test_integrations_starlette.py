"""greenbridge.integrations.starlette against real FastAPI/Starlette apps under uvicorn.

The apps run under a real uvicorn server on loopback, in a thread with its own
asyncio (or uvloop) loop (``web_servers.Uvicorn``); the tests are its HTTP
clients (httpx).  The same FastAPI app is served "stock" (anyio's thread
pool) and "green" (after ``install()``), and the answers are compared; a
heartbeat on the server's loop proves that the green ``def`` code never
stalled it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

import anyio  # noqa: E402
import starlette  # noqa: E402
import starlette.concurrency  # noqa: E402
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.endpoints import HTTPEndpoint  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

import greenbridge  # noqa: E402
from greenbridge.green import time as green_time  # noqa: E402
from greenbridge.integrations import starlette as gs  # noqa: E402

from .helpers import require_postgres  # noqa: E402
from .web_servers import Uvicorn  # noqa: E402

# ---------------------------------------------------------------- the FastAPI app

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")
events: list[tuple[str, Any]] = []
state: dict[str, Any] = {"in_flight": 0, "max_in_flight": 0}


class Teapot(Exception):
    pass


def set_var_dependency() -> str:
    request_var.set("set by a def dependency")
    return "ok"


def yield_dependency(request: Request) -> Iterator[str]:
    events.append(("enter", request.url.path))
    try:
        yield "resource"
    except Exception as exc:
        events.append(("error", type(exc).__name__))
        raise
    finally:
        events.append(("exit", request.url.path))


def failing_teardown() -> Iterator[str]:
    yield "resource"
    events.append(("teardown raises", None))
    raise RuntimeError("teardown failed")


def green_sleep_dependency() -> Iterator[None]:
    events.append(("dep enter", SERVER[0].on_loop()))
    try:
        yield
    finally:
        green_time.sleep(0.01)  # green I/O in a teardown, even a cancelled one
        events.append(("dep exit", None))


SERVER: list[Uvicorn] = []


def build_fastapi() -> FastAPI:
    app = FastAPI()

    class VarHeader:
        """A pure ASGI middleware (same task as the endpoint): reports request_var."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            async def send_with_var(message: Any) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", []))
                    headers.append((b"x-request-var", request_var.get().encode()))
                    message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, send_with_var)

    app.add_middleware(VarHeader)

    @app.exception_handler(Teapot)
    def teapot_handler(request: Request, exc: Teapot) -> JSONResponse:
        state["handler_on_loop"] = SERVER[0].on_loop()
        return JSONResponse({"teapot": True}, status_code=418)

    @app.get("/dep-var")
    async def dep_var(_: str = Depends(set_var_dependency)) -> dict[str, str]:
        return {"var": request_var.get()}

    @app.get("/endpoint-var")
    def endpoint_var() -> dict[str, str]:
        request_var.set("set by a def endpoint")
        return {"ok": "yes"}

    @app.get("/where")
    def where() -> dict[str, Any]:
        return {"on_loop": SERVER[0].on_loop()}

    @app.get("/yield/{how}")
    def yielding(how: str, resource: str = Depends(yield_dependency)) -> dict[str, str]:
        if how == "http":
            raise HTTPException(status_code=404, detail="no such thing")
        if how == "value":
            raise ValueError("boom")
        if how == "teapot":
            raise Teapot()
        return {"resource": resource}

    @app.get("/teardown-raises")
    def teardown_raises(resource: str = Depends(failing_teardown)) -> dict[str, str]:
        return {"resource": resource}

    @app.get("/validate")
    def validate(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/sleep")
    def sleep(s: float) -> dict[str, Any]:
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        try:
            green_time.sleep(s)
        finally:
            state["in_flight"] -= 1
        return {"slept": s}

    @app.get("/block")
    def block() -> dict[str, str]:
        time.sleep(0.3)  # stdlib: not green, blocks the loop
        return {"blocked": "yes"}

    @app.get("/stream")
    def stream() -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            state["chunks"] = 0
            state["closed"] = False
            state["stream_on_loop"] = SERVER[0].on_loop()
            try:
                while True:
                    green_time.sleep(0)
                    state["chunks"] += 1
                    yield b"x" * 65536
            except BaseException as exc:
                state["stream_error"] = type(exc).__name__
                raise
            finally:
                # Cancelled (under anyio's cancel scope, every wait is): green
                # I/O in the cleanup is shielded.
                with anyio.CancelScope(shield=True):
                    green_time.sleep(0.01)
                state["closed"] = True

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @app.get("/short-stream")
    def short_stream() -> StreamingResponse:
        return StreamingResponse(iter([b"a", b"b", b"c"]), media_type="text/plain")

    @app.get("/background")
    def background(tasks: BackgroundTasks) -> dict[str, str]:
        def later() -> None:
            green_time.sleep(0.3)
            state["background"] = (time.monotonic(), SERVER[0].on_loop())

        tasks.add_task(later)
        return {"ok": "yes"}

    @app.get("/cancelled")
    def cancelled(_: None = Depends(green_sleep_dependency)) -> dict[str, str]:
        state["in_flight"] += 1
        try:
            green_time.sleep(30)
        finally:
            state["in_flight"] -= 1
        return {"never": "here"}

    return app


class CancelAfter:
    """Cancels requests to /cancelled after 0.2 s and answers 504 (a request timeout)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/cancelled":
            await self.app(scope, receive, send)
            return
        with anyio.move_on_after(0.2):
            await self.app(scope, receive, send)
            return
        await PlainTextResponse("timeout", status_code=504)(scope, receive, send)


@pytest.fixture
def server() -> Iterator[Uvicorn]:
    # One per test: the server thread's greenbridge workers end with it.
    try:
        with Uvicorn(CancelAfter(build_fastapi())) as srv:
            SERVER[:] = [srv]
            yield srv
    finally:
        gs.uninstall()


ANYIO_THREADS = pytest.mark.leaks_ok(
    reason="stock Starlette starts anyio worker threads; idle ones end after 10 s"
)


@pytest.fixture(params=["stock", "green"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "green":
        gs.install()
    else:
        request.node.add_marker(ANYIO_THREADS)
    try:
        yield request.param
    finally:
        gs.uninstall()


@pytest.fixture
def green() -> Iterator[None]:
    gs.install()
    try:
        yield
    finally:
        gs.uninstall()


def get(server: Uvicorn, path: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        return client.get(path)


# ---------------------------------------------------------------- FastAPI


def test_def_code_runs_on_the_loop_only_when_installed(server: Uvicorn, mode: str) -> None:
    assert get(server, "/where").json() == {"on_loop": mode == "green"}


def test_contextvars_set_in_def_code_are_seen_by_the_request(server: Uvicorn, mode: str) -> None:
    # FastAPI #953: stock runs def code in a copy of the Context, so the value is lost.
    expected_dep = "set by a def dependency" if mode == "green" else "unset"
    assert get(server, "/dep-var").json() == {"var": expected_dep}
    expected_endpoint = "set by a def endpoint" if mode == "green" else "unset"
    assert get(server, "/endpoint-var").headers["x-request-var"] == expected_endpoint


PATHS = [
    "/yield/ok",
    "/yield/http",
    "/yield/value",
    "/yield/teapot",
    "/teardown-raises",
    "/validate?n=3",
    "/validate?n=three",
    "/short-stream",
    "/nowhere",
]


TEARDOWNS = ("/teardown-raises",)


def _answers(server: Uvicorn) -> list[tuple[Any, ...]]:
    answers = []
    for path in PATHS:
        events.clear()
        r = get(server, path)
        body = r.json() if r.headers.get("content-type") == "application/json" else r.text
        headers = {k: v for k, v in r.headers.items() if k in ("content-type", "content-length")}
        deadline = time.monotonic() + 5  # teardowns may run after the response
        last = {"/teardown-raises": ("teardown raises", None)}.get(path, ("exit", path))
        while (path.startswith("/yield") or path in TEARDOWNS) and last not in events:
            assert time.monotonic() < deadline, events
            time.sleep(0.01)
        answers.append((path, r.status_code, headers, body, list(events)))
    return answers


@ANYIO_THREADS
def test_same_answers_and_teardowns_as_stock(server: Uvicorn) -> None:
    stock = _answers(server)
    gs.install()
    try:
        green = _answers(server)
    finally:
        gs.uninstall()
    assert green == stock
    by_path = {a[0]: a for a in green}
    assert by_path["/yield/ok"][1] == 200
    assert by_path["/yield/http"][1] == 404
    assert by_path["/yield/value"][1] == 500
    assert by_path["/yield/teapot"][1] == 418
    assert by_path["/validate?n=three"][1] == 422
    # The teardown of a yield dependency runs, and sees the endpoint's exception.
    assert by_path["/yield/value"][4] == [
        ("enter", "/yield/value"),
        ("error", "ValueError"),
        ("exit", "/yield/value"),
    ]
    assert ("teardown raises", None) in by_path["/teardown-raises"][4]


def test_def_exception_handler_runs_on_the_loop(server: Uvicorn, green: None) -> None:
    r = get(server, "/yield/teapot")
    assert (r.status_code, r.json()) == (418, {"teapot": True})
    assert state["handler_on_loop"] is True


def test_many_green_def_endpoints_run_at_once(server: Uvicorn, mode: str) -> None:
    many_at_once(server, mode)


def test_many_green_def_endpoints_run_at_once_on_uvloop(green: None) -> None:
    pytest.importorskip("uvloop")
    with Uvicorn(build_fastapi(), loop="uvloop") as srv:
        SERVER[:] = [srv]
        many_at_once(srv, "green")


def many_at_once(server: Uvicorn, mode: str) -> None:
    # 200 requests that each wait 0.25 s green: stock runs at most 40 at a
    # time (anyio's thread limit); installed, all of them wait together.
    n, seconds = 200, 0.25

    async def one() -> int:
        # A raw HTTP/1.1 client: httpx's own cost with 200 connections would
        # dominate the timing.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        request = f"GET /sleep?s={seconds} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        return int(answer.split(b" ", 2)[1])

    async def fire() -> list[int]:
        return list(await asyncio.gather(*(one() for _ in range(n))))

    state["max_in_flight"] = 0
    with server.heartbeat() as beat:
        start = time.perf_counter()
        statuses = asyncio.run(fire())
        elapsed = time.perf_counter() - start
    assert statuses == [200] * n
    assert state["in_flight"] == 0
    if mode == "green":
        assert state["max_in_flight"] > 40, state
        assert elapsed < n / 40 * seconds, elapsed  # what 40 threads would take, at best
        assert beat.max_gap < seconds, beat.max_gap  # the loop never waited for a sleep
    else:
        assert state["max_in_flight"] <= 40, state


def test_streaming_sync_iterator_back_pressure_and_close(server: Uvicorn, green: None) -> None:
    with server.heartbeat() as beat:
        with httpx.Client(base_url=server.url, timeout=10) as client:  # noqa: SIM117
            with client.stream("GET", "/stream") as r:
                assert r.status_code == 200
                next(r.iter_raw(65536))
                time.sleep(0.3)
                produced = state["chunks"]
                time.sleep(0.3)
                # Nobody reads: the buffers are full and no chunk is asked for.
                assert state["chunks"] - produced <= 2, (produced, state["chunks"])
                assert produced < 2000  # not 128 MB ahead of the client
        # The client went away: the generator is cancelled, its finally ran (green).
        deadline = time.monotonic() + 5
        while not state["closed"]:
            assert time.monotonic() < deadline, "the sync iterator was not closed"
            time.sleep(0.01)
    assert state["stream_on_loop"] is True
    assert state["stream_error"] in ("CancelledError", "GeneratorExit")
    assert beat.max_gap < 0.25, beat.max_gap


def test_background_task_runs_green_after_the_response(server: Uvicorn, green: None) -> None:
    state.pop("background", None)
    r = get(server, "/background")
    answered = time.monotonic()
    assert r.json() == {"ok": "yes"}
    assert "background" not in state  # the response did not wait for the task
    deadline = time.monotonic() + 5
    while "background" not in state:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    done, on_loop = state["background"]
    assert done > answered
    assert on_loop is True


def test_cancelled_request_runs_its_teardown_and_leaks_nothing(
    server: Uvicorn, green: None
) -> None:
    events.clear()
    state["in_flight"] = 0
    with server.heartbeat() as beat:
        r = get(server, "/cancelled")
    assert (r.status_code, r.text) == (504, "timeout")
    deadline = time.monotonic() + 5
    while ("dep exit", None) not in events:
        assert time.monotonic() < deadline, events
        time.sleep(0.01)
    assert events == [("dep enter", True), ("dep exit", None)]
    assert state["in_flight"] == 0  # the green sleep was interrupted, the finally ran
    assert beat.max_gap < 0.25


def test_detect_blocking_names_the_blocking_line(
    server: Uvicorn, caplog: pytest.LogCaptureFixture
) -> None:
    reports: list[greenbridge.BlockingReport] = []
    gs.install(detect_blocking=0.1, on_blocking=reports.append)
    with caplog.at_level(logging.WARNING, logger="greenbridge.detector"):
        try:
            get(server, "/where")  # the detector starts on the loop with the first green call
            time.sleep(0.05)
            assert get(server, "/block").json() == {"blocked": "yes"}
            deadline = time.monotonic() + 5
            while not reports:
                assert time.monotonic() < deadline, "no report"
                time.sleep(0.01)
        finally:
            gs.uninstall()
    frame = reports[0].frame
    assert frame is not None
    assert frame.name == "block"
    assert frame.line == "time.sleep(0.3)  # stdlib: not green, blocks the loop"
    assert reports[0].duration >= 0.2
    logged = [r.getMessage() for r in caplog.records if r.name == "greenbridge.detector"]
    assert any("time.sleep(0.3)" in message for message in logged), logged


# ---------------------------------------------------------------- plain Starlette


def build_starlette() -> Starlette:
    def endpoint(request: Request) -> Response:
        request_var.set("endpoint")
        return PlainTextResponse(
            str(SERVER[0].on_loop()),
            background=BackgroundTask(lambda: events.append(("task", SERVER[0].on_loop()))),
        )

    class Methods(HTTPEndpoint):
        def get(self, request: Request) -> Response:
            return PlainTextResponse(str(SERVER[0].on_loop()))

    def stream(request: Request) -> Response:
        def chunks() -> Iterator[str]:
            yield str(SERVER[0].on_loop())
            green_time.sleep(0.01)
            yield "!"

        return StreamingResponse(chunks())

    def raises(request: Request) -> Response:
        raise KeyError("x")

    def handler(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"handled {SERVER[0].on_loop()}", status_code=409)

    return Starlette(
        routes=[
            Route("/endpoint", endpoint),
            Route("/methods", Methods),
            Route("/stream", stream),
            Route("/raises", raises),
        ],
        exception_handlers={KeyError: handler},
    )


@pytest.mark.parametrize("installed", [False, True])
def test_plain_starlette_def_code(installed: bool, request: pytest.FixtureRequest) -> None:
    if installed:
        gs.install()
    else:
        request.node.add_marker(ANYIO_THREADS)
    try:
        app = build_starlette()  # after install(): Route picks its runner when created
        with Uvicorn(app) as srv:
            SERVER[:] = [srv]
            events.clear()
            with httpx.Client(base_url=srv.url, timeout=10) as client:
                expected = str(installed)
                assert client.get("/endpoint").text == expected
                assert client.get("/methods").text == expected
                assert client.get("/stream").text == expected + "!"
                r = client.get("/raises")
                assert (r.status_code, r.text) == (409, f"handled {expected}")
            deadline = time.monotonic() + 5
            while not events:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert events == [("task", installed)]
    finally:
        gs.uninstall()


# ---------------------------------------------------------------- install / uninstall


def _current() -> list[Any]:
    import importlib

    # (an optional row is absent from older releases: None)
    return [getattr(importlib.import_module(p.module), p.attribute, None) for p in gs.PATCHES]


def test_install_replaces_every_row_and_uninstall_restores_the_originals() -> None:
    before = _current()
    assert all(
        (f is None and p.optional)
        or f
        in (
            starlette.concurrency.run_in_threadpool,
            starlette.concurrency.iterate_in_threadpool,
            fastapi.concurrency.contextmanager_in_threadpool,
        )
        for f, p in zip(before, gs.PATCHES)
    )
    gs.install()
    try:
        assert gs.installed()
        during = _current()
        assert all(a is not b for a, b in zip(before, during) if a is not None)
        gs.install(detect_blocking=0.5)  # again: only the detector settings change
        assert _current() == during
    finally:
        gs.uninstall()
    assert not gs.installed()
    assert all(a is b for a, b in zip(before, _current()))
    gs.uninstall()  # idempotent
    # The public helpers are never replaced: callers of them asked for a thread.
    assert starlette.concurrency.run_in_threadpool.__module__ == "starlette.concurrency"


def test_unknown_framework_version_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _current()
    monkeypatch.setattr(starlette, "__version__", "9.1.0")
    message = r"tested with starlette 0\.\d+ to 1\.10, not starlette 9\.1\.0"
    with pytest.raises(gs.UnsupportedVersion, match=message):
        gs.install()
    monkeypatch.undo()
    monkeypatch.setattr(fastapi, "__version__", "0.999.0")
    with pytest.raises(gs.UnsupportedVersion, match=r"not fastapi 0\.999\.0"):
        gs.install()
    assert not gs.installed()
    assert _current() == before


def test_foreign_replacement_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    import starlette.background

    async def someone_elses(func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    monkeypatch.setattr(starlette.background, "run_in_threadpool", someone_elses)
    with pytest.raises(gs.UnsupportedVersion, match="starlette.background.run_in_threadpool"):
        gs.install()
    assert not gs.installed()


def test_bad_threshold() -> None:
    with pytest.raises(ValueError, match="detect_blocking must be > 0"):
        gs.install(detect_blocking=0)
    assert not gs.installed()


def test_green_helpers_without_a_framework() -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("v", default=0)

    def setter(x: int) -> int:
        var.set(x)
        return x * 2

    class CM:
        def __enter__(self) -> str:
            return "in"

        def __exit__(self, *exc: Any) -> bool:
            events.append(("cm exit", exc[0]))
            return True  # swallow

    async def main() -> Any:
        doubled = await gs.run_in_greenlet(setter, 21)
        items = [i async for i in gs.iterate_in_greenlet(range(3))]
        async with gs.contextmanager_in_greenlet(CM()) as value:
            raise KeyError(value)
        return doubled, var.get(), items

    events.clear()
    assert asyncio.run(main()) == (42, 21, [0, 1, 2])
    assert events == [("cm exit", KeyError)]


def test_the_frameworks_file_lookups_stay_in_a_thread(
    tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    request.node.add_marker(ANYIO_THREADS)
    import fastapi.routing
    from starlette.staticfiles import StaticFiles

    seen: dict[str, int] = {}

    class Files(StaticFiles):
        def lookup_path(self, path: str) -> Any:
            seen["StaticFiles.lookup_path"] = threading.get_ident()
            return super().lookup_path(path)

    def lookup_path(path: str) -> None:  # user code that happens to share the name
        seen["lookup_path"] = threading.get_ident()

    files = Files(directory=str(tmp_path))

    async def main() -> None:
        run = fastapi.routing.run_in_threadpool
        await run(files.lookup_path, "index.html")
        await run(lookup_path, "x")

    gs.install()
    try:
        asyncio.run(main())
    finally:
        gs.uninstall()
    assert seen["lookup_path"] == threading.get_ident()  # green: on the loop's thread
    assert seen["StaticFiles.lookup_path"] != threading.get_ident()  # a worker thread


# ---------------------------------------------------------------- FastAPI #3205

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def build_3205(engine: Any) -> FastAPI:
    """The FastAPI #3205 shape: a session per request, an outer def dependency that queries."""
    import sqlalchemy as sa
    from sqlalchemy import orm

    Session = orm.sessionmaker(engine)
    query = sa.text("SELECT pg_sleep(0.02)")
    app = FastAPI()

    def get_db() -> Iterator[orm.Session]:
        db = Session()
        try:
            yield db
        finally:
            db.close()

    db_session = Depends(get_db)

    def current_user(db: orm.Session = db_session) -> str:
        db.execute(query)  # the session now holds a connection until the teardown
        return "user"

    user = Depends(current_user)

    @app.get("/item")
    def item(user: str = user, db: orm.Session = db_session) -> dict[str, str]:
        db.execute(query)
        return {"user": user}

    return app


async def burst(port: int, path: str, n: int) -> list[int]:
    """``n`` requests at once, one connection each: their statuses."""

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        return int(answer.split(b" ", 2)[1])

    return list(await asyncio.gather(*(one() for _ in range(n))))


def test_the_3205_setup_completes_when_installed(green: None) -> None:
    # 100 requests at once, a pool of 5: every request is answered.
    require_postgres()
    pytest.importorskip("psycopg2")
    pytest.importorskip("sqlalchemy")
    from greenbridge.drivers.sqlalchemy import create_engine

    greenbridge.patch_psycopg2()
    engine = create_engine(PG_URL, pool_size=5, max_overflow=0, pool_timeout=10)
    try:
        with Uvicorn(build_3205(engine)) as srv, srv.heartbeat() as beat:
            statuses = asyncio.run(burst(srv.port, "/item", 100))
    finally:
        engine.dispose()
    assert statuses == [200] * 100
    assert beat.max_gap < 0.25, beat.max_gap


@ANYIO_THREADS
def test_the_3205_setup_starves_stock() -> None:
    # The same app, stock: the 40 threads wait in the pool for connections
    # held by requests that wait for a thread; requests fail at pool_timeout.
    require_postgres()
    pytest.importorskip("psycopg2")
    sa = pytest.importorskip("sqlalchemy")

    engine = sa.create_engine(PG_URL, pool_size=5, max_overflow=0, pool_timeout=1)
    try:
        with Uvicorn(build_3205(engine)) as srv:
            statuses = asyncio.run(burst(srv.port, "/item", 100))
    finally:
        engine.dispose()
    assert 500 in statuses, statuses


# ---------------------------------------------------------------- trio


@ANYIO_THREADS
@pytest.mark.filterwarnings("ignore:Using .httpx. with .starlette.testclient.")
def test_under_trio() -> None:
    # Starlette runs on anyio: under its trio backend the same code runs green.
    pytest.importorskip("trio")
    from starlette.testclient import TestClient

    order: list[str] = []

    def dependency() -> Iterator[None]:
        request_var.set("dependency")
        order.append("enter")
        try:
            yield
        finally:
            green_time.sleep(0.01)
            order.append("exit")

    app = FastAPI()
    on_loop: list[bool] = []
    dependency_marker = Depends(dependency)

    @app.get("/")
    def endpoint(tasks: BackgroundTasks, _: None = dependency_marker) -> dict[str, str]:
        green_time.sleep(0.01)
        on_loop.append(threading.current_thread().name.startswith("trio-portal"))
        tasks.add_task(order.append, "task")
        return {"var": request_var.get()}

    def run() -> tuple[Any, list[str]]:
        order.clear()
        with TestClient(app, backend="trio") as client:
            return client.get("/").json(), list(order)

    stock = run()
    gs.install()
    try:
        green = run()
    finally:
        gs.uninstall()
    assert stock[0] == {"var": "unset"}
    assert green[0] == {"var": "dependency"}
    assert on_loop == [False, True]
    assert green[1] == stock[1]  # teardown and background task in the same order
    assert sorted(green[1]) == ["enter", "exit", "task"]
