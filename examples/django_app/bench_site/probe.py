"""What the benchmark asks the server process itself: a loop-lag probe and a profiler switch.

Each server mode's entry point wraps its Django application in one of these;
every other request goes to Django untouched.

- ``GET /__bench/heartbeat``: ``{"worst_ms": ..., "beats": ...}``, the worst
  lateness of a task (a greenlet, under gevent) that sleeps 5 ms in a loop, since
  the last ``?reset=1``: how long the event loop was held at once.  ``null``
  where no event loop serves the requests (gunicorn's gthread worker).
- ``GET /__bench/profile/start`` and ``/__bench/profile/stop``: when the
  environment variable ``GB_EXAMPLE_DJANGO_PROFILE`` names a file, cProfile the thread that
  runs the event loop between the two, and write the stats to that file (pstats).
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import sys
import time
from typing import Any, Callable

BEAT = 0.005  # seconds


class _Stats:
    """The probe's state, shared by the ASGI and WSGI wrappers."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.beats = 0
        self.running = False
        self.profiler: cProfile.Profile | None = None

    def record(self, late: float) -> None:
        self.beats += 1
        if late > self.worst:
            self.worst = late

    def answer(self, path: str, query: str) -> tuple[int, bytes]:
        """The status and JSON body for one ``/__bench/...`` request."""
        if path == "/__bench/heartbeat":
            body: dict[str, Any] = {
                "worst_ms": self.worst * 1000 if self.running else None,
                "beats": self.beats,
            }
            if "reset=1" in query:
                self.worst, self.beats = 0.0, 0
        elif path == "/__bench/profile/start" and os.environ.get("GB_EXAMPLE_DJANGO_PROFILE"):
            self.profiler = cProfile.Profile()
            self.profiler.enable()
            body = {"profiling": True}
        elif path == "/__bench/profile/stop" and self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(os.environ["GB_EXAMPLE_DJANGO_PROFILE"])
            self.profiler = None
            body = {"profiling": False, "file": os.environ["GB_EXAMPLE_DJANGO_PROFILE"]}
        else:
            return 404, b"{}"
        return 200, json.dumps(body).encode()


class AsgiProbe:
    """An ASGI application that answers ``/__bench/...`` and passes the rest to ``app``."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.stats = _Stats()
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(BEAT)
            self.stats.record(loop.time() - start - BEAT)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._beat())
            self.stats.running = True
        if scope["type"] != "http" or not scope["path"].startswith("/__bench/"):
            await self.app(scope, receive, send)
            return
        status, body = self.stats.answer(scope["path"], scope["query_string"].decode())
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class WsgiProbe:
    """A WSGI application that answers ``/__bench/...`` and passes the rest to ``app``.

    The heartbeat runs only under gevent (a greenlet on gevent's hub).
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.stats = _Stats()
        self._started = False

    def _start(self) -> None:
        self._started = True
        monkey = sys.modules.get("gevent.monkey")
        if monkey is None or not monkey.is_module_patched("time"):
            return
        import gevent

        def beat() -> None:
            while True:
                start = time.monotonic()
                gevent.sleep(BEAT)
                self.stats.record(time.monotonic() - start - BEAT)

        gevent.spawn(beat)
        self.stats.running = True

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not self._started:
            self._start()
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/__bench/"):
            return self.app(environ, start_response)
        status, body = self.stats.answer(path, environ.get("QUERY_STRING", ""))
        reason = "OK" if status == 200 else "Not Found"
        start_response(
            f"{status} {reason}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]
