"""greenbridge.integrations.wsgi: a real Flask app (and raw WSGI apps) under a real uvicorn.

Every server runs in a thread with a heartbeat on its loop (``Uvicorn``):
each test that makes requests checks that the loop never stalled.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import socket
import sys
import threading
import time
import wsgiref.validate
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

pytest.importorskip("flask")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
requests = pytest.importorskip("requests")

import flask  # noqa: E402

from greenbridge.green import time as green_time  # noqa: E402
from greenbridge.integrations.wsgi import WSGIMiddleware  # noqa: E402

from .web_servers import Uvicorn  # noqa: E402

# uvicorn's two HTTP implementations (httptools when installed: uvicorn[standard]).
HTTP_IMPLEMENTATIONS = [
    "h11",
    pytest.param(
        "httptools",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("httptools") is None, reason="httptools is not installed"
        ),
    ),
]

MAX_GAP = 0.25  # generous on a busy 2-core CI machine; a stalled loop shows seconds


def environ_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with the environ's str values (and the types of the others) as JSON."""
    shown = {
        k: (v if isinstance(v, (str, bool, tuple)) else type(v).__name__)
        for k, v in environ.items()
    }
    body = json.dumps(shown).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def make_flask() -> flask.Flask:
    app = flask.Flask("greenbridge_wsgi_test")

    @app.get("/hello/<name>")
    def hello(name: str) -> Any:
        return {"hello": name, "q": flask.request.args.get("q")}

    @app.post("/upload")
    def upload() -> Any:
        digest = hashlib.sha256()
        size = 0
        stream = flask.request.stream
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            size += len(chunk)
            digest.update(chunk)
        return {"size": size, "sha256": digest.hexdigest()}

    @app.post("/whole")
    def whole() -> Any:  # reads the body in one read(): more than the high-water mark
        data = flask.request.get_data()
        return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    @app.post("/form")
    def form() -> Any:
        return {"a": flask.request.form["a"], "file": flask.request.files["f"].read().decode()}

    @app.get("/sleep")
    def sleep() -> Any:
        green_time.sleep(0.2)
        return {"slept": 0.2}

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Iterator[str]:
            for i in range(5):
                yield f"chunk {i}\n"

        return flask.Response(chunks(), mimetype="text/plain")

    @app.get("/empty")
    def empty() -> Any:
        return ""

    @app.get("/boom")
    def boom() -> Any:
        raise ValueError("boom in a view")

    return app


# ---------------------------------------------------------------- Flask


def test_flask_answers_like_its_test_client() -> None:
    """The same requests through the middleware and through Flask's own test client."""
    app = make_flask()
    app.testing = False
    paths = ["/hello/world?q=1", "/hello/%C3%A9t%C3%A9", "/stream", "/missing", "/hello/x?q=a+b"]
    paths += ["/empty"]
    native = app.test_client()
    with Uvicorn(WSGIMiddleware(app)) as server, httpx.Client(base_url=server.url) as client:
        for path in paths:
            ours = client.get(path)
            theirs = native.get(path)
            assert (ours.status_code, ours.content) == (theirs.status_code, theirs.data), path
            assert ours.headers["content-type"] == theirs.headers["content-type"]
        for path in ("/hello/world", "/stream"):
            ours = client.head(path)
            theirs = native.head(path)
            assert (ours.status_code, ours.content) == (theirs.status_code, b""), path
            assert ours.headers.get("content-length") == theirs.headers.get("content-length")
        form = client.post("/form", data={"a": "1"}, files={"f": ("f.txt", b"file body")})
        assert form.json() == {"a": "1", "file": "file body"}
    assert server.max_gap < MAX_GAP


def test_flask_view_error_is_flasks_500() -> None:
    # (Flask turns a view's error into its own 500 page and logs it itself.)
    with Uvicorn(WSGIMiddleware(make_flask())) as server:
        response = httpx.get(server.url + "/boom")
    assert response.status_code == 500
    assert b"Internal Server Error" in response.content


def test_environ_is_pep_3333() -> None:
    headers = [
        ("X-Multi", "a"),
        ("X-Multi", "b"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
        ("X_Sneaky", "dropped"),
        ("Content-Type", "text/plain"),
    ]
    with (
        Uvicorn(WSGIMiddleware(environ_app), root_path="/root") as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        lines = ["POST /p%FF%20q/r?x=%41&y HTTP/1.1", "Host: example.org:8080"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines += ["Content-Length: 3", "Connection: close", "", "abc"]
        sock.sendall("\r\n".join(lines).encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    env = json.loads(body)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/root"
    assert env["PATH_INFO"] == "/p\xff q/r"  # bytes, percent-decoded, as latin-1
    assert env["QUERY_STRING"] == "x=%41&y"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "3"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_HOST"] == "example.org:8080"
    assert env["HTTP_X_MULTI"] == "a, b"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_SNEAKY" not in env and "HTTP_X_MULTI" in env
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.input"] == "_Input"
    assert env["wsgi.errors"] in ("TextIOWrapper", "EncodedFile", "CaptureIO")
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert server.max_gap < MAX_GAP


# ---------------------------------------------------------------- wsgiref's validator


def _conformance_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Uses every input method and the write() callable; checked by wsgiref's validator."""
    stream = environ["wsgi.input"]
    first = stream.readline()
    limited = stream.readline(3)
    two = stream.readlines(1)
    lines_iter = iter(stream)
    lines = [next(lines_iter, b""), next(lines_iter, b"")]
    # (The validator allows only read(size); plain, read() reads to the end.)
    plain = not isinstance(stream, wsgiref.validate.InputWrapper)
    rest = stream.read(5) + (stream.read() if plain else stream.read(-1))
    assert stream.read(10) == b"" and stream.readline() == b"" and stream.readlines() == []
    report = json.dumps(
        {
            "first": first.decode(),
            "limited": limited.decode(),
            "two": [x.decode() for x in two],
            "lines": [x.decode() for x in lines],
            "rest": rest.decode(),
        }
    ).encode()
    write = start_response("200 OK", [("Content-Type", "application/json")])
    write(b"")
    write(report[:5])
    return [report[5:], b""]


@pytest.mark.parametrize("validated", [True, False])
def test_wsgiref_validator_finds_nothing_to_say(validated: bool) -> None:
    """wsgiref.validate raises (and warns, errors here) on any PEP 3333 breach by either side."""
    body = b"line one\nline two\nthree\nfour\nfive\nsix"
    app = wsgiref.validate.validator(_conformance_app) if validated else _conformance_app
    with Uvicorn(WSGIMiddleware(app)) as server:
        response = httpx.post(server.url + "/", content=body)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "first": "line one\n",
            "limited": "lin",
            "two": ["e two\n"],
            "lines": ["three\n", "four\n"],
            "rest": "five\nsix",
        }
        # Chunked, in many small pieces: the reads wait for them.
        chunked = httpx.post(
            server.url + "/", content=iter([body[i : i + 3] for i in range(0, len(body), 3)])
        )
        assert chunked.json() == response.json()
        assert httpx.get(server.url + "/").json()["lines"] == ["", ""]
    assert server.max_gap < MAX_GAP


# ---------------------------------------------------------------- start_response rules


def _eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class _Closing:
    """An iterable with close(), recording what happened to it."""

    def __init__(self, chunks: Iterable[bytes], log: list[str]) -> None:
        self.chunks = iter(chunks)
        self.log = log

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self.chunks)

    def close(self) -> None:
        self.log.append("closed")


def _failing_chunks(after: int) -> Iterator[bytes]:
    for i in range(after):
        yield b"x%d" % i
    raise RuntimeError("boom in the body")


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
def test_errors_and_close(caplog: pytest.LogCaptureFixture, http: str) -> None:
    log: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/raise-before":
            raise KeyError("before start_response")
        if path == "/raise-in-body":  # start_response called, nothing sent yet
            start_response("200 OK", [])
            return _Closing(_failing_chunks(0), log)
        if path == "/raise-after":  # headers and a chunk sent: abort
            start_response("200 OK", [])
            return _Closing(_failing_chunks(2), log)
        if path == "/exc-info":
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                raise ValueError("oops")
            except ValueError:
                start_response("503 Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
            return _Closing([b"sorry"], log)
        if path == "/exc-info-late":
            start_response("200 OK", [])

            def late() -> Iterator[bytes]:
                yield b"partial"
                try:
                    raise ValueError("late")
                except ValueError:
                    start_response("500 Oops", [], sys.exc_info())  # re-raises
                yield b"never"

            return _Closing(late(), log)
        if path == "/twice":
            start_response("200 OK", [])
            start_response("200 OK", [])
        if path == "/hop":
            start_response("200 OK", [("Connection", "close")])
        if path == "/latin":
            start_response("200 OK", [("X-Name", "\u20ac")])
        if path == "/crlf":
            start_response("200 OK", [("X-Name", "a\r\nSet-Cookie: x=1")])
        if path == "/bytes-status":
            start_response(b"200 OK", [])
        if path == "/str-body":
            start_response("200 OK", [])
            return _Closing(["text"], log)  # type: ignore[list-item]
        if path == "/short":
            start_response("200 OK", [("Content-Length", "10")])
            return _Closing([b"abc"], log)
        if path == "/not-modified":  # (Content-Length of a body not sent)
            start_response("304 Not Modified", [("Content-Length", "100"), ("ETag", '"x"')])
            return _Closing([], log)
        if path == "/empty":  # (Content-Length: 0, and no chunk to end the response)
            start_response("200 OK", [("Content-Length", "0")])
            return _Closing([b""], log)
        if path == "/no-start":
            return _Closing([b"abc"], log)
        start_response("200 OK", [("Content-Length", "2")])
        return _Closing([b"ok"], log)

    with (
        caplog.at_level(logging.ERROR, logger="greenbridge.integrations.wsgi"),
        Uvicorn(WSGIMiddleware(app), http=http) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        assert client.get("/").text == "ok"
        # (close() may come just after the response: wait for it.)
        _eventually(lambda: log == ["closed"])
        for path in (
            "/raise-before",
            "/raise-in-body",
            "/twice",
            "/hop",
            "/latin",
            "/crlf",
            # (Again: checked header values are remembered, rejected ones not.)
            "/latin",
            "/crlf",
            "/bytes-status",
            "/str-body",
            "/no-start",
        ):
            caplog.clear()
            response = client.get(path)
            assert (response.status_code, response.text) == (500, "Internal Server Error"), path
            assert any(r.exc_info for r in caplog.records), path  # the traceback is logged
        empty = client.get("/empty")
        assert (empty.status_code, empty.content) == (200, b"")
        not_modified = client.get("/not-modified")
        assert (not_modified.status_code, not_modified.content) == (304, b"")
        exc_info = client.get("/exc-info")
        assert (exc_info.status_code, exc_info.text) == (503, "sorry")
        for path in ("/raise-after", "/exc-info-late", "/short"):
            with pytest.raises(httpx.RemoteProtocolError):
                client.get(path)  # the response is cut short
    # close() after success, each error with an iterable, and the exc_info cases.
    _eventually(lambda: log == ["closed"] * 10)
    assert server.max_gap < MAX_GAP


# ---------------------------------------------------------------- streaming


def test_large_upload_streams_in_and_large_download_streams_out() -> None:
    """8 MiB up (chunked, and with Content-Length) and 64 MiB down, both ways streamed."""
    produced = [0]
    chunk = b"z" * 65536
    count = 1024  # 64 MiB

    def download(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", str(len(chunk) * count))])
        for _ in range(count):
            produced[0] += 1
            yield chunk

    flask_app = make_flask()

    def router(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/download":
            return download(environ, start_response)
        return flask_app(environ, start_response)

    upload = bytes(range(256)) * 32768  # 8 MiB
    with (
        Uvicorn(WSGIMiddleware(router)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        expected = {"size": len(upload), "sha256": hashlib.sha256(upload).hexdigest()}
        assert client.post("/upload", content=upload).json() == expected
        pieces = iter([upload[i : i + 100_000] for i in range(0, len(upload), 100_000)])
        assert client.post("/upload", content=pieces).json() == expected
        assert client.post("/whole", content=upload).json() == expected
        pieces = iter([upload[i : i + 100_000] for i in range(0, len(upload), 100_000)])
        assert client.post("/whole", content=pieces).json() == expected
        with client.stream("GET", "/download") as response:
            stream = response.iter_raw(65536)
            next(stream)
            time.sleep(0.3)  # a slow reader: the app must wait for it
            held_back = produced[0]
            received = 65536 + sum(len(c) for c in stream)
        assert received == len(chunk) * count
        # Back-pressure: while the client did not read, the app got no
        # further than what the sockets' buffers hold (a few MiB).
        assert held_back < count // 2, held_back
    assert server.max_gap < MAX_GAP


def test_slow_upload_is_read_before_and_after_the_receiver_starts() -> None:
    """A body trickling in for longer than WATCH_AFTER: read by the greenlet, then the receiver."""
    pieces = [b"piece %d\n" % i for i in range(8)]
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        lines = list(environ["wsgi.input"])
        seen.append(lines)
        body = b"".join(lines)
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with (
        Uvicorn(WSGIMiddleware(app)) as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:  # 8 x 30 ms: the receiver starts (after 0.1 s) mid-body
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.03)
        sock.sendall(b"0\r\n\r\n")
        received = b""
        while not received.endswith(pieces[-1]):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert seen == [pieces]
    assert received.endswith(b"".join(pieces))
    assert server.max_gap < MAX_GAP


def test_flask_streamed_response_arrives_in_chunks() -> None:
    with (
        Uvicorn(WSGIMiddleware(make_flask())) as server,
        httpx.Client(base_url=server.url) as client,
        client.stream("GET", "/stream") as r,
    ):
        assert "content-length" not in r.headers
        assert r.read() == b"".join(b"chunk %d\n" % i for i in range(5))
    assert server.max_gap < MAX_GAP


# ---------------------------------------------------------------- disconnects


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
def test_client_disconnect_mid_response_cancels_and_closes(http: str) -> None:
    events: list[str] = []
    ended = threading.Event()

    class Endless:
        def __iter__(self) -> Iterator[bytes]:
            try:
                while True:
                    green_time.sleep(0.01)
                    yield b"tick\n"
            except BaseException as exc:
                events.append(type(exc).__name__)
                raise

        def close(self) -> None:
            events.append("closed")
            ended.set()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Endless()

    with Uvicorn(WSGIMiddleware(app), http=http) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while b"tick" not in received:
                received += sock.recv(65536)
        assert ended.wait(5), events
        # The greenlet saw the cancellation at its green sleep (or its send).
        assert events == ["CancelledError", "closed"], events
    assert server.max_gap < MAX_GAP


def test_server_shutdown_cancels_requests_in_flight() -> None:
    """uvicorn cancels what outlives its graceful timeout: the iterable is closed all the same."""
    events: list[str] = []

    def endless() -> Iterator[bytes]:
        try:
            while True:
                green_time.sleep(0.01)
                yield b"tick\n"
        except BaseException as exc:
            events.append(type(exc).__name__)
            raise
        finally:
            events.append("closed")

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return endless()

    server = Uvicorn(WSGIMiddleware(app), timeout_graceful_shutdown=0.2)
    with server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"tick" not in received:
            received += sock.recv(65536)
        server.__exit__(None, None, None)  # (stops the server while the request runs)
    assert events == ["CancelledError", "closed"], events
    assert server.max_gap < MAX_GAP


def test_client_disconnect_during_upload() -> None:
    events: list[str] = []
    ended = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            environ["wsgi.input"].read()
        except BaseException as exc:
            events.append(type(exc).__name__)
            ended.set()
            raise
        start_response("200 OK", [])
        return [b"unexpected"]

    with Uvicorn(WSGIMiddleware(app)) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
            time.sleep(0.1)
        assert ended.wait(5)
        assert events in (["CancelledError"], ["ClientDisconnected"]), events
    assert server.max_gap < MAX_GAP


# ---------------------------------------------------------------- concurrency


def test_many_requests_wait_on_green_io_at_once() -> None:
    """50 Flask requests each sleeping 0.2 s (green): together in well under 50 x 0.2 s."""

    async def fetch_all(url: str) -> tuple[list[Any], float]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            start = time.perf_counter()
            responses = await asyncio.gather(*(client.get("/sleep") for _ in range(50)))
            return [r.json() for r in responses], time.perf_counter() - start

    with Uvicorn(WSGIMiddleware(make_flask())) as server:
        answers, elapsed = asyncio.run(fetch_all(server.url))
    assert answers == [{"slept": 0.2}] * 50
    assert elapsed < 2.0, elapsed  # one after the other: 10 s
    assert server.max_gap < MAX_GAP


def test_concurrency_caps_the_requests_in_the_app() -> None:
    """concurrency=3 under uvicorn: 12 requests all answered, never more than 3 in the app."""
    inside = [0, 0]  # now, most

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        inside[0] += 1
        inside[1] = max(inside)
        try:
            green_time.sleep(0.05)
        finally:
            inside[0] -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    async def fetch_all(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            responses = await asyncio.gather(*(client.get("/") for _ in range(12)))
            return [r.status_code for r in responses]

    middleware = WSGIMiddleware(app, concurrency=3)
    with Uvicorn(middleware) as server:
        assert asyncio.run(fetch_all(server.url)) == [200] * 12
    assert inside == [0, 3]
    assert server.max_gap < MAX_GAP


def _http_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
    }


def test_concurrency_admits_in_order_of_arrival_and_a_cancelled_waiter_leaves_no_trace() -> None:
    """Waiting requests enter in order of arrival; one cancelled while it waits never enters."""
    from greenbridge.green import threading as green_threading

    entered: list[str] = []
    go = green_threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        entered.append(environ["PATH_INFO"])
        go.wait()
        start_response("200 OK", [])
        return [b""]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def main() -> tuple[list[str], list[str], Any]:
        middleware = WSGIMiddleware(app, concurrency=2)
        tasks = {}
        for name in ["/a", "/b", "/c", "/d", "/e", "/f"]:
            tasks[name] = asyncio.ensure_future(middleware(_http_scope(name), receive, send))
            await settle()
        first = list(entered)
        tasks["/d"].cancel()  # waiting: it leaves the queue
        go.set()  # /a and /b end: /c and /e are let in, then /f
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        outcomes = [type(r).__name__ for r in results]
        gate = middleware._gate
        assert gate is not None
        return first, outcomes, (gate.free, len(gate.waiting), entered)

    first, outcomes, (free, waiting, everyone) = asyncio.run(main())
    assert first == ["/a", "/b"]
    assert outcomes == ["NoneType"] * 3 + ["CancelledError"] + ["NoneType"] * 2
    assert everyone == ["/a", "/b", "/c", "/e", "/f"]
    assert (free, waiting) == (2, 0)


def test_a_place_handed_to_a_cancelled_waiter_goes_to_the_next() -> None:
    from greenbridge.integrations.wsgi import _make_gate

    async def main() -> tuple[list[str], int]:
        gate = _make_gate(1)
        assert gate is not None
        loop = asyncio.get_running_loop()
        await gate.enter(loop)
        got: list[str] = []

        async def wait(name: str) -> None:
            await gate.enter(loop)
            got.append(name)
            gate.leave()

        b = asyncio.ensure_future(wait("b"))
        c = asyncio.ensure_future(wait("c"))
        await asyncio.sleep(0)
        gate.leave()  # handed to b...
        b.cancel()  # ...cancelled before it runs: c gets it
        await asyncio.gather(b, c, return_exceptions=True)
        return got, gate.free

    assert asyncio.run(main()) == (["c"], 1)


def test_a_waiter_cancelled_just_before_a_place_is_given_back_leaves_like_asyncio_s() -> None:
    """Cancelled, then (before it runs) a place is given back: as with asyncio.Semaphore."""
    from greenbridge.integrations.wsgi import _make_gate

    async def scenario(native: bool) -> tuple[str, bool, int]:
        loop = asyncio.get_running_loop()
        gate = _make_gate(1)
        sem = asyncio.Semaphore(1)
        assert gate is not None
        await (sem.acquire() if native else gate.enter(loop))
        waiter = asyncio.ensure_future(sem.acquire() if native else gate.enter(loop))
        await asyncio.sleep(0)  # it waits
        waiter.cancel()
        if native:
            sem.release()
        else:
            gate.leave()  # (the cancelled waiter has not run since)
        result = (await asyncio.gather(waiter, return_exceptions=True))[0]
        # Is the place free for the next comer, with nobody left queued?
        free = not sem.locked() if native else (gate.free == 1 and not gate.waiting)
        return type(result).__name__, free, 0 if native else len(gate.waiting)

    native = asyncio.run(scenario(True))
    assert native == ("CancelledError", True, 0)
    assert asyncio.run(scenario(False)) == native


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), (True, TypeError), (2.0, TypeError)]
)
def test_concurrency_must_be_a_positive_int(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="concurrency must"):
        WSGIMiddleware(environ_app, concurrency=value)


# ---------------------------------------------------------------- other scopes


def test_lifespan_is_acknowledged_and_websockets_refused() -> None:
    middleware = WSGIMiddleware(environ_app)

    async def talk(scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[Any]:
        sent: list[Any] = []
        queue = list(incoming)

        async def receive() -> dict[str, Any]:
            return queue.pop(0)

        async def send(message: Any) -> None:
            sent.append(message)

        await middleware(scope, receive, send)
        return sent

    lifespan = asyncio.run(
        talk(
            {"type": "lifespan", "asgi": {"version": "3.0"}},
            [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
        )
    )
    assert lifespan == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    ws = asyncio.run(talk({"type": "websocket", "path": "/"}, [{"type": "websocket.connect"}]))
    assert ws == [{"type": "websocket.close", "code": 1000}]
    with pytest.raises(ValueError, match="serves HTTP"):
        asyncio.run(talk({"type": "other"}, []))


def test_a_failing_receive_cancels_the_request(caplog: pytest.LogCaptureFixture) -> None:
    """The server's receive() raising (in the receiver task): logged, the request cancelled."""
    events: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            green_time.sleep(1.0)  # the receiver starts meanwhile, and fails
        except BaseException as exc:
            events.append(type(exc).__name__)
            raise
        start_response("200 OK", [])
        return [b"unexpected"]

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
    }
    sent: list[Any] = []
    calls = [0]

    async def receive() -> dict[str, Any]:
        calls[0] += 1
        if calls[0] == 1:
            return {"type": "http.request", "body": b"abc", "more_body": True}
        raise OSError("the server broke")

    async def send(message: Any) -> None:
        sent.append(message)

    async def main() -> None:
        await WSGIMiddleware(app)(scope, receive, send)

    with caplog.at_level(logging.ERROR, logger="greenbridge.integrations.wsgi"):
        asyncio.run(main())
    assert events == ["CancelledError"]
    assert sent == []
    assert any("receive() failed" in r.getMessage() for r in caplog.records)
