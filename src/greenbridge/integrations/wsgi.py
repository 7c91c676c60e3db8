"""Serve a WSGI app (Flask, Django, Pyramid...) from an ASGI server, one greenlet per request.

``WSGIMiddleware(app)`` is an ASGI application.  Each HTTP request runs the
WSGI app in a greenlet (`greenbridge.async_`) on the server's asyncio loop,
in the server's task for the request, instead of a thread of a pool as in
other WSGI-to-ASGI adapters:

- the request body is read from the ASGI ``receive`` channel on demand:
  a ``wsgi.input`` read that finds nothing buffered suspends only this
  request's greenlet until the next chunk arrives;
- each response chunk is handed to ASGI ``send`` and waited for (so the
  server's flow control holds back an app that produces faster than the
  client reads);
- green I/O in the app (patched drivers, `greenbridge.green` modules,
  libraries imported under `greenbridge.patch_blocking`) suspends only this
  request, so thousands of requests can wait at once in one thread;
- a client that disconnects cancels its request: the greenlet sees
  `asyncio.CancelledError` at its next wait, and the app's iterable is
  closed as PEP 3333 requires.

A blocking call that is not green (a driver that is not patched, a
``time.sleep``) stalls the whole loop, i.e. every request of the process:
see the web-apps page of the documentation for how to find and fix them.

Watching for disconnects: the app may never read its body (most GET
views), yet a disconnect must still be seen while it works, and ASGI allows
one reader of ``receive`` at a time.  A request that lasts longer than
``WATCH_AFTER`` gets a receiver task that reads ``receive`` from then on:
it buffers the body for ``wsgi.input`` up to ``HIGH_WATER`` (then stops
reading, so the server stops reading the socket: back-pressure on
uploads), and once the body is complete it waits for ``http.disconnect``
and cancels the request.  Before that, ``wsgi.input`` reads ``receive``
itself, from the greenlet.  Quick requests, most of them, thus cost no task
of their own: a task costs as much as the rest of the middleware.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from types import TracebackType
from typing import Any, Optional, Protocol, TextIO
from urllib.parse import unquote_to_bytes

# (Not ``from greenbridge import``: the package's __init__ only re-exports, and
# no module of the package may import it; see the import-linter contracts.)
from .._bridge import async_, await_

__all__ = ["ClientDisconnected", "WSGIMiddleware"]

logger = logging.getLogger("greenbridge.integrations.wsgi")
"""Where errors of WSGI apps (the tracebacks behind the 500s) are logged."""

# ASGI's types, as far as this module uses them (no dependency on asgiref).
Scope = MutableMapping[str, Any]
"""An ASGI connection scope."""
Message = MutableMapping[str, Any]
"""An ASGI event, received or sent."""
Receive = Callable[[], Awaitable[Message]]
"""ASGI's ``receive`` callable."""
Send = Callable[[Message], Awaitable[None]]
"""ASGI's ``send`` callable."""

ExcInfo = tuple[type[BaseException], BaseException, Optional[TracebackType]]
"""What `sys.exc_info` returns while an exception is handled."""
Environ = dict[str, Any]
"""PEP 3333's environ."""
Write = Callable[[bytes], None]
"""PEP 3333's ``write`` callable, returned by ``start_response``."""


class StartResponse(Protocol):
    """PEP 3333's ``start_response`` callable."""

    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | tuple[None, None, None] | None = None,
        /,
    ) -> Write: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
"""A PEP 3333 application."""

WATCH_AFTER = 0.1
"""Seconds a request runs before a receiver task starts watching for the
client's disconnect (see the module's docstring)."""
HIGH_WATER = 64 * 1024
"""Bytes of request body buffered ahead of the app before the receiver stops
reading (and so, through the server's own flow control, the socket)."""

# RFC 9110 token characters: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_STATUS = re.compile(r"[1-9][0-9][0-9] [^\r\n]*\Z")
_NO_BODY = frozenset((204, 304))  # (and 1xx, which WSGI cannot send)
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 2616 13.5.1 hop-by-hop headers: the server's business, never the app's
# (PEP 3333, "Other HTTP Features").
_HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    )
)


class ClientDisconnected(OSError):
    """The client went away before its request body was read to the end.

    Raised by ``wsgi.input`` reads.  The request is being cancelled anyway:
    an app that catches this sees `asyncio.CancelledError` at its next wait.
    """


class _Request:
    """What the request's coroutine, its receiver task and its greenlet share.

    (`greenbridge.integrations.django` serves its requests with this class
    and `_Input` too: change them with both in mind.)
    """

    __slots__ = (
        "receive",
        "send",
        "loop",
        "task",
        "body",
        "more_body",
        "receiving",
        "receiver",
        "want_receiver",
        "reader",
        "space",
        "disconnected",
        "cancelled",
        "complete",
        "watch",
    )

    def __init__(self, receive: Receive, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        self.receive = receive
        self.send = send
        self.loop = loop
        self.task: asyncio.Task[Any] | None = None  # the task running the request
        self.body = bytearray()  # received, not yet read by the app
        self.more_body = True  # the body has more chunks to come
        self.receiving = False  # the greenlet is in a receive() of its own
        self.receiver: asyncio.Task[None] | None = None
        self.want_receiver = False  # start the receiver once the greenlet's receive() is over
        self.reader: asyncio.Future[None] | None = None  # the greenlet waits for the receiver
        self.space: asyncio.Future[None] | None = None  # the receiver waits for the app
        self.disconnected = False
        self.cancelled = False  # the receiver cancelled the task
        # The last body chunk is being sent: the http.disconnect that the
        # server reports once the response is complete is no client leaving.
        self.complete = False
        self.watch: asyncio.TimerHandle | None = None  # see begin()

    def begin(self) -> None:
        """The request starts, in the running task: from ``WATCH_AFTER`` on, watch it.

        (A request that ends sooner never gets a receiver task: see `_watch`.)
        Always paired with `end`.
        """
        self.task = asyncio.current_task(self.loop)
        self.watch = self.loop.call_later(WATCH_AFTER, _watch, self)

    def end(self) -> None:
        """The request is over, however it ended: stop watching it."""
        if self.watch is not None:
            self.watch.cancel()
        if self.receiver is not None:
            self.receiver.cancel()

    def take(self, message: Message) -> None:
        """Take in a message from ``receive``."""
        kind = message["type"]
        if kind == "http.request":
            if self.more_body:  # (nothing may follow the last chunk: ignore it)
                chunk = message.get("body", b"")
                if chunk:
                    self.body += chunk
                self.more_body = bool(message.get("more_body", False))
        elif kind == "http.disconnect" and not self.complete:
            # (Once the response is complete, servers answer http.disconnect
            # to say the request is over: nobody left.)
            self.disconnected = True

    def start_receiver(self) -> None:
        self.receiver = self.loop.create_task(_receiver(self))


def _watch(request: _Request) -> None:
    """The request outlived ``WATCH_AFTER``: from now on, watch for a disconnect."""
    if request.complete or request.receiver is not None:
        return
    if request.receiving:
        request.want_receiver = True  # (one reader of receive() at a time)
    else:
        request.start_receiver()


async def _receiver(request: _Request) -> None:
    """Feed the body to ``wsgi.input``, then cancel the request if the client leaves."""
    receive = request.receive
    try:
        while not request.disconnected and not request.complete:
            request.take(await receive())
            _wake(request.reader)
            request.reader = None
            # Enough buffered: wait for the app to read, unless it is waiting
            # for more already (a read() of the whole body keeps it all).
            while request.more_body and len(request.body) >= HIGH_WATER and request.reader is None:
                request.space = request.loop.create_future()
                await request.space
    except Exception:  # the server's receive() failed: as good as gone
        logger.exception("ASGI receive() failed; the request is cancelled")
        request.disconnected = True
    finally:
        _wake(request.reader)  # (a read waiting for us sees what happened)
        request.reader = None
    if not request.complete and request.task is not None:
        request.cancelled = True
        request.task.cancel()


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class _Input:
    """``wsgi.input``: the request body, read on demand.

    Every method of PEP 3333's input stream: ``read(size)``, ``read()``,
    ``readline(size)``, ``readlines(hint)`` and iteration (by lines).  At
    the end of the body reads return ``b""``; ``wsgi.input_terminated`` is
    set, so apps may read a body without Content-Length (chunked) to its end.
    """

    __slots__ = ("_request",)

    def __init__(self, request: _Request) -> None:
        self._request = request

    def _fill(self) -> bool:
        """Wait for more body; False at its end."""
        request = self._request
        if not request.more_body:
            return False
        if request.disconnected:
            raise ClientDisconnected("the client disconnected before sending the whole body")
        receiver = request.receiver
        if receiver is None:
            # No receiver task (yet): read receive() from this greenlet.
            request.receiving = True
            try:
                request.take(await_(request.receive()))
            finally:
                request.receiving = False
            if request.want_receiver and not request.disconnected:
                request.start_receiver()
            if request.disconnected:
                raise ClientDisconnected("the client disconnected before sending the whole body")
            return True
        _wake(request.space)  # the receiver may read on
        request.space = None
        request.reader = reader = request.loop.create_future()
        await_(reader)
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` bytes (all the rest of the body if ``size`` is negative or None)."""
        body = self._request.body
        if size is None or size < 0:
            while self._fill():
                pass
            data = bytes(body)
            body.clear()
            return data
        while len(body) < size and self._fill():
            pass
        data = bytes(body[:size])
        del body[:size]
        return data

    def readline(self, size: int | None = -1, /) -> bytes:
        """One line, with its ``b"\\n"``, of at most ``size`` bytes if ``size`` >= 0."""
        body = self._request.body
        limit = -1 if size is None else size
        start = 0
        while True:
            end = body.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if 0 <= limit <= len(body):
                end = len(body)
                break
            start = len(body)
            if not self._fill():
                end = len(body)
                break
        if 0 <= limit < end:
            end = limit
        data = bytes(body[:end])
        del body[:end]
        return data

    def readlines(self, hint: int | None = -1, /) -> list[bytes]:
        """The remaining lines (stopping once their total length reaches ``hint`` > 0)."""
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class _Response:
    """The greenlet's side of a request: ``start_response``, ``write`` and the body out."""

    __slots__ = ("request", "counts", "status", "headers", "started", "remaining")

    def __init__(self, request: _Request, head: bool) -> None:
        self.request = request
        self.counts = not head  # the body's length is checked against Content-Length
        self.status = 0  # 0 until start_response is called
        self.headers: list[tuple[bytes, bytes]] = []
        self.started = False  # the status and headers went to the server
        self.remaining = -1  # bytes still due by Content-Length, or -1

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | tuple[None, None, None] | None = None,
        /,
    ) -> Write:
        if exc_info is not None and exc_info[1] is not None:
            try:
                if self.started:
                    # PEP 3333: too late to replace the headers; re-raise.
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # (no cycle through the traceback)
        elif self.status:
            raise RuntimeError(
                "start_response was already called for this request "
                "(to replace the headers after an error, pass exc_info=sys.exc_info())"
            )
        self.status, self.headers, length = _check_response(status, headers)
        if self.status in _NO_BODY:
            # A 304's Content-Length is that of the body it does not send;
            # some servers (uvicorn with httptools) take it for a promise.
            self.headers = [h for h in self.headers if h[0] != b"content-length"]
            length = -1
        # (Nor does a HEAD's Content-Length count a body.)
        self.remaining = length if self.counts else -1
        return self.write

    def _start(self) -> None:
        if not self.status:
            raise RuntimeError(
                "the WSGI application returned its body without calling start_response"
            )
        self.started = True
        await_(
            self.request.send(
                {"type": "http.response.start", "status": self.status, "headers": self.headers}
            )
        )

    def write(self, data: bytes) -> None:
        """PEP 3333's ``write(data)``: send ``data`` now (waiting only in this greenlet)."""
        if type(data) is not bytes and not isinstance(data, bytes):
            raise TypeError(f"WSGI response data must be bytes, not {type(data).__name__}")
        if not data:
            return
        if not self.started:
            self._start()
        remaining = self.remaining
        more = True
        if remaining >= 0:
            remaining -= len(data)
            if remaining < 0:
                raise RuntimeError("the WSGI application sent more than its Content-Length")
            self.remaining = remaining
            if remaining == 0:
                # Content-Length reached: end the response with this chunk
                # instead of an empty one after it (one message less).
                more = False
                self.request.complete = True
        await_(self.request.send({"type": "http.response.body", "body": data, "more_body": more}))

    def finish(self) -> None:
        if not self.started:
            self._start()
        if self.request.complete:
            return  # (the last chunk ended it)
        if self.remaining > 0:
            raise RuntimeError(
                f"the WSGI application sent {self.remaining} bytes less than its Content-Length"
            )
        self.request.complete = True
        await_(self.request.send({"type": "http.response.body", "body": b"", "more_body": False}))


def _check_response(
    status: str, headers: list[tuple[str, str]]
) -> tuple[int, list[tuple[bytes, bytes]], int]:
    """PEP 3333's rules on status and headers; the ASGI status, headers and Content-Length."""
    code = _STATUS_CODES.get(status) if type(status) is str else None
    if code is None:
        code = _check_status(status)
    if type(headers) is not list:
        raise TypeError(f"the headers must be a list, not {type(headers).__name__}")
    out = []
    length = -1
    names = _HEADER_NAMES
    values = _HEADER_VALUES
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise TypeError(f"each header must be a (name, value) tuple, not {item!r}")
        name, value = item
        if type(value) is not str:
            raise TypeError(f"header values must be str: {item!r}")
        lower = names.get(name) if type(name) is str else None
        if lower is None:
            lower = _check_name(name)
        encoded = values.get(value)
        if encoded is None:
            encoded = _check_value(name, value)
        if lower == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise ValueError(f"invalid Content-Length: {value!r}") from None
        out.append((lower, encoded))
    return code, out, length


# What was checked once need not be again: statuses and header names an app
# sends are few (bounded, in case an app makes them up per request).
_STATUS_CODES: dict[str, int] = {}
_HEADER_NAMES: dict[str, bytes] = {}
_HEADER_VALUES: dict[str, bytes] = {}  # (values repeat: content types, cache rules...)
_CACHE_SIZE = 512


def _check_status(status: object) -> int:
    if type(status) is not str:
        raise TypeError(f"the status must be a str, not {type(status).__name__}: {status!r}")
    if not _STATUS.match(status):
        raise ValueError(f"the status must be 'NNN Reason phrase', not {status!r}")
    code = int(status[:3])
    if len(_STATUS_CODES) < _CACHE_SIZE:
        _STATUS_CODES[status] = code
    return code


def _check_name(name: object) -> bytes:
    if type(name) is not str:
        raise TypeError(f"header names must be str, not {type(name).__name__}: {name!r}")
    if not _TOKEN.match(name):
        raise ValueError(f"invalid header name {name!r}")
    lower = name.lower()
    if lower in _HOP_BY_HOP:
        raise ValueError(
            f"hop-by-hop header {name!r} is the server's business, "
            "not the WSGI application's (PEP 3333)"
        )
    encoded = lower.encode("latin-1")
    if len(_HEADER_NAMES) < _CACHE_SIZE:
        _HEADER_NAMES[name] = encoded
    return encoded


def _check_value(name: str, value: str) -> bytes:
    if _BAD_VALUE.search(value):
        raise ValueError(f"invalid character (control, CR or LF) in header {name}: {value!r}")
    try:
        encoded = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            f"header {name} is not latin-1 (PEP 3333: encode it, e.g. RFC 2047): {value!r}"
        ) from None
    if len(_HEADER_VALUES) < _CACHE_SIZE:
        _HEADER_VALUES[value] = encoded
    return encoded


def _environ_key(raw_name: bytes) -> str:
    """The environ key of a request header ("" to drop it); remembered."""
    name = raw_name.decode("latin-1").lower()
    if "_" in name:
        key = ""  # (it could pass for its "-" twin: dropped, as gunicorn and nginx do)
    elif name == "content-type":
        key = "CONTENT_TYPE"
    elif name == "content-length":
        key = "CONTENT_LENGTH"
    else:
        key = "HTTP_" + name.upper().replace("-", "_")
    if len(_ENVIRON_KEYS) < _CACHE_SIZE:
        _ENVIRON_KEYS[raw_name] = key
    return key


_ENVIRON_KEYS: dict[bytes, str] = {}


def _serve(app: WSGIApp, environ: Environ, request: _Request) -> None:
    """Run one request of the WSGI app, in its greenlet."""
    response = _Response(request, environ["REQUEST_METHOD"] == "HEAD")
    try:
        result = app(environ, response.start_response)
        try:
            write = response.write
            for chunk in result:
                write(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        response.finish()
    except Exception:
        if request.disconnected:
            # (e.g. ClientDisconnected from wsgi.input): nobody to answer.
            logger.debug("WSGI request ended by its client's disconnect", exc_info=True)
            return
        if response.started:
            raise  # too late for a 500: the server aborts the response
        logger.exception(
            "error in WSGI application %r for %s %s",
            app,
            environ["REQUEST_METHOD"],
            environ["PATH_INFO"],
        )
        request.complete = True
        send = request.send
        await_(
            send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", b"21"),
                    ],
                }
            )
        )
        await_(send({"type": "http.response.body", "body": b"Internal Server Error"}))


_serve_green = async_(_serve)


class _Gate:
    """At most ``limit`` requests in the app at once; the others wait their turn, in order.

    A request that finds every place taken waits on a loop future, in its
    server task, before the app sees it (no greenlet, no request object):
    the places are handed on in order of arrival, so no request is
    overtaken.  (`greenbridge.integrations.django` uses it too.)
    """

    __slots__ = ("free", "waiting")

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def enter(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take a place, waiting for one if need be (cancellable while it waits)."""
        if self.free and not self.waiting:
            self.free -= 1
            return
        turn = loop.create_future()
        self.waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if not turn.cancelled():  # handed a place as it was cancelled: hand it on
                self.leave()
            elif turn in self.waiting:  # (a leave() since may have dropped it already)
                self.waiting.remove(turn)
            raise

    def leave(self) -> None:
        """Give a place back: to the oldest waiting request, if there is one."""
        waiting = self.waiting
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.free += 1


def _make_gate(concurrency: int | None) -> _Gate | None:
    """The `_Gate` for an app's ``concurrency`` argument (None: no limit), checked."""
    if concurrency is None:
        return None
    if type(concurrency) is not int:  # (bool is an int: refused too)
        raise TypeError(
            f"concurrency must be an int (the most requests in the app at once) or None "
            f"(no limit), not {type(concurrency).__name__}"
        )
    if concurrency < 1:
        raise ValueError(
            f"concurrency must be at least 1 (or None for no limit), not {concurrency}"
        )
    return _Gate(concurrency)


def _client_left(request: _Request) -> bool:
    """After a request's task got ``CancelledError``: was it the receiver's, the client gone?

    Then the request is over, with nothing to answer: the task's cancellation
    is taken back (Python 3.11+), and the caller returns quietly.  Otherwise
    (the server cancelled the task) the caller lets the error go on.
    """
    if not request.cancelled:
        return False
    uncancel = getattr(request.task, "uncancel", None)  # (Python 3.11+)
    if uncancel is not None:
        uncancel()
    return True


class WSGIMiddleware:
    """An ASGI application serving the WSGI application ``app``, one greenlet per request.

    Run it under any asyncio ASGI server (uvicorn, hypercorn's asyncio
    worker...) or with the gunicorn worker of
    `greenbridge.integrations.gunicorn`::

        from greenbridge.integrations.wsgi import WSGIMiddleware
        from myproject import flask_app

        application = WSGIMiddleware(flask_app)  # uvicorn module:application

    What each request sees: PEP 3333's environ (see below), with ``wsgi.input``
    streaming the body in (reads suspend only this request), and a
    response streamed out chunk by chunk, each chunk waited for (the
    server's back-pressure); the ``write`` callable of ``start_response``
    works.  ``close()`` of the app's iterable is always called: on success,
    on error and when the client disconnects.  An error before the
    headers are sent becomes a 500, its traceback logged on the
    ``greenbridge.integrations.wsgi`` logger; an error after aborts the
    response (the server closes the connection and logs it).  A client
    that disconnects cancels its request: the greenlet sees
    `asyncio.CancelledError` at its next `greenbridge.await_` or green
    wait.

    The environ: ``REQUEST_METHOD``, ``SCRIPT_NAME`` (ASGI's
    ``root_path``), ``PATH_INFO`` (the raw path, percent-decoded into
    bytes and those bytes as latin-1, as PEP 3333 says, less
    ``root_path``), ``QUERY_STRING``, ``CONTENT_TYPE`` and
    ``CONTENT_LENGTH`` (when the request has them), ``SERVER_NAME``,
    ``SERVER_PORT``, ``SERVER_PROTOCOL``, ``REMOTE_ADDR``,
    ``REMOTE_PORT``, one ``HTTP_*`` key per header (repeated headers
    joined by ``", "``, cookies by ``"; "``; a header whose name holds an
    ``_`` is dropped, as gunicorn and nginx do, so that it cannot pass
    for its ``-`` twin), the ``wsgi.*`` keys, ``wsgi.input_terminated``
    and ``asgi.scope``.

    Requests run concurrently in one thread, so ``wsgi.multithread`` is
    true: per-request state belongs in `contextvars` (each request runs in
    a Context of its own) or the framework's request context, never in a
    global.

    Args:
        app: the WSGI application.
        errors: ``wsgi.errors``, a text stream (default: `sys.stderr`).
        multiprocess: ``wsgi.multiprocess`` (true when the app runs in
            several processes, e.g. gunicorn with several workers).
        concurrency: the most requests in the app at once (None: no
            limit).  The others wait for a place, in order of arrival,
            before the app sees them: a waiting request costs no greenlet
            and no object of the app's.  Where the requests all wait for
            the same few resources (a pool of 20 database connections),
            a limit a little above their number keeps the requests that
            would only queue out of the app: less memory, and less for the
            garbage collector to look at (see the web-apps guide).

    Only HTTP requests are served; the lifespan protocol is acknowledged
    (WSGI has none); a websocket is refused (the server answers 403).
    Needs an asyncio loop (uvloop included).
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        errors: TextIO | None = None,
        multiprocess: bool = False,
        concurrency: int | None = None,
    ) -> None:
        self.app = app
        self.errors = errors
        self.multiprocess = multiprocess
        self._gate = _make_gate(concurrency)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            # (Served here, not in a coroutine of its own: every resumption of
            # the request passes through each coroutine frame on the way.)
            loop = asyncio.get_running_loop()
            request = _Request(receive, send, loop)
            environ = self.environ(scope, _Input(request))
            request.begin()
            try:
                gate = self._gate
                if gate is None:
                    await _serve_green(self.app, environ, request)
                else:
                    await gate.enter(loop)
                    try:
                        await _serve_green(self.app, environ, request)
                    finally:
                        gate.leave()
            except asyncio.CancelledError:
                # Cancelled by the server: the greenlet has ended (the iterable
                # closed), the error goes on.
                if not _client_left(request):
                    raise
            finally:
                request.end()
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1000})
        else:
            raise ValueError(f"WSGIMiddleware serves HTTP, not {kind!r} connections")

    def environ(self, scope: Scope, body: Any) -> Environ:
        """PEP 3333's environ for the ASGI HTTP ``scope``, ``body`` as ``wsgi.input``."""
        root = scope.get("root_path", "")
        script_name = root.encode("utf-8").decode("latin-1") if root else ""
        raw = scope.get("raw_path")
        if raw:
            # PEP 3333: the path's bytes, percent-decoded, as latin-1 (the
            # decoded ``path`` lost bytes that are not UTF-8).
            raw = raw.partition(b"?")[0]
            path_info = (unquote_to_bytes(raw) if b"%" in raw else raw).decode("latin-1")
        else:
            path_info = scope["path"].encode("utf-8").decode("latin-1")
        if script_name and path_info.startswith(script_name):
            path_info = path_info[len(script_name) :]
        server = scope.get("server")
        if server is not None:
            server_name, server_port = server[0], str(server[1] if server[1] is not None else 80)
        else:
            server_name, server_port = "localhost", "80"
        environ: Environ = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": script_name,
            "PATH_INFO": path_info,
            "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
            "SERVER_NAME": server_name,
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": "HTTP/" + scope.get("http_version", "1.1"),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": body,
            "wsgi.input_terminated": True,
            "wsgi.errors": self.errors if self.errors is not None else sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": self.multiprocess,
            "wsgi.run_once": False,
            "asgi.scope": scope,
        }
        client = scope.get("client")
        if client is not None:
            environ["REMOTE_ADDR"] = client[0]
            environ["REMOTE_PORT"] = str(client[1])
        keys = _ENVIRON_KEYS
        for raw_name, raw_value in scope.get("headers", ()):
            key = keys.get(raw_name)
            if key is None:
                key = _environ_key(raw_name)
            if not key:
                continue
            value = raw_value.decode("latin-1")
            if key in environ:
                value = environ[key] + ("; " if key == "HTTP_COOKIE" else ", ") + value
            environ[key] = value
        if "HTTP_HOST" in environ and server is None:
            host, _, port = environ["HTTP_HOST"].rpartition(":")
            if host and port.isdigit():
                environ["SERVER_NAME"], environ["SERVER_PORT"] = host, port
            else:
                environ["SERVER_NAME"] = environ["HTTP_HOST"]
        return environ
