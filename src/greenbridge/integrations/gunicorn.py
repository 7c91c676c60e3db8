"""A gunicorn worker: one asyncio loop per process, one greenlet per request.

``gunicorn -k greenbridge.integrations.gunicorn.Worker myproject:app``
serves a WSGI app (Flask, Django...) the way gunicorn's gevent worker
does, but on asyncio: each request runs in a greenlet on the worker's
loop, and green I/O (patched drivers, `greenbridge.green`, libraries
imported under `greenbridge.patch_blocking`) suspends only that request.
An ASGI app (Starlette, FastAPI, Django's ASGI handler) is served as such.

How: each worker process runs uvicorn's server on the sockets gunicorn
bound, with the WSGI app wrapped in
`greenbridge.integrations.wsgi.WSGIMiddleware`.  uvicorn is a dependency
of this extra because writing (and keeping secure) another HTTP/1.1
server is not greenbridge's business: uvicorn's is tested, fast, and
already knows how to live inside a gunicorn worker (its own, deprecated,
``uvicorn.workers`` did).  This module only maps gunicorn's settings and
signals onto it.

Settings honoured: ``--workers``, ``--worker-connections`` (the most
connections and requests in flight per worker: uvicorn answers 503
beyond), ``--max-requests`` and ``--max-requests-jitter`` (the worker
exits after that many requests and the arbiter starts a fresh one),
``--timeout`` (the worker notifies the arbiter from its loop, so a loop
stalled by a blocking call for longer gets the worker killed, as with
gunicorn's other workers), ``--graceful-timeout``, ``--keep-alive``,
``--backlog``, ``--forwarded-allow-ips``, the SSL options, and the
reloads: ``kill -HUP`` the arbiter starts new workers and stops the old
ones gracefully.

Signals, as gunicorn defines them for its workers: SIGTERM stops
gracefully (no new connections; requests in flight finish, for at most
the graceful timeout); SIGINT and SIGQUIT stop at once; SIGUSR1 reopens
the log files.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Generator
from contextlib import contextmanager
from typing import Any, Callable

import uvicorn
from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from gunicorn.workers import base  # type: ignore[import-untyped]

from .wsgi import WSGIMiddleware

__all__ = ["ASGIWorker", "WSGIWorker", "Worker", "is_asgi"]


def is_asgi(app: object) -> bool:
    """True if ``app`` is an ASGI application (a coroutine function or async ``__call__``).

    Every ASGI framework's app object is one or the other; a WSGI app is a
    plain function or an object with a plain ``__call__``.
    """
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(type(app), "__call__", None)  # noqa: B004 - the method, not callable()
    return inspect.iscoroutinefunction(call)


class _Server(uvicorn.Server):
    """uvicorn's server, minus its signal handling: gunicorn's worker protocol rules."""

    def install_signal_handlers(self) -> None:  # (uvicorn < 0.29)
        pass

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run(
    main: Coroutine[Any, Any, None], new_loop: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """``asyncio.run(main)`` on a loop of ``new_loop``'s (Python 3.9 has no loop_factory)."""
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


class Worker(base.Worker):  # type: ignore[misc]
    """gunicorn's worker class: ``gunicorn -k greenbridge.integrations.gunicorn.Worker``.

    Serves the app gunicorn loads: a WSGI app through
    `greenbridge.integrations.wsgi.WSGIMiddleware` (one greenlet per
    request), an ASGI app as it is (see `is_asgi`), with uvicorn's
    HTTP/1.1 server on one event loop per process (uvloop when installed).
    Set ``loop_factory`` in a subclass to choose the loop.

    ``--threads N`` (above 1) is the WSGI app's ``concurrency``: at most N
    requests in the app at once, the others waiting their turn in order of
    arrival, as requests wait for one of the gthread worker's N threads; by
    default there is no limit but ``--worker-connections``.
    """

    #: Makes each worker's event loop (default: uvloop's if installed, else asyncio's).
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = staticmethod(_new_loop)
    #: True: serve the app as ASGI; False: as WSGI; None: tell by `is_asgi`.
    asgi: bool | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn logs through gunicorn's error and access logs (and their files).
        for name, source in (
            ("uvicorn.error", self.log.error_log),
            ("uvicorn.access", self.log.access_log),
        ):
            logger = logging.getLogger(name)
            logger.handlers = source.handlers
            logger.setLevel(source.level)
            logger.propagate = False
        self.server: _Server | None = None

    def init_signals(self) -> None:
        # The loop handles SIGTERM, SIGINT, SIGQUIT and SIGABRT (see _serve):
        # the base class's handlers would sys.exit() from inside whatever
        # code runs, e.g. a request's greenlet, where the server catches it.
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.signal(signal.SIGWINCH, self.handle_winch)
        # (A log reopen must not interrupt a system call of a request.)
        signal.siginterrupt(signal.SIGUSR1, False)

    def config(self) -> uvicorn.Config:
        """uvicorn's configuration from gunicorn's settings."""
        cfg = self.cfg
        app = self.wsgi
        asgi = is_asgi(app) if self.asgi is None else self.asgi
        if not asgi:
            # --threads N (gthread's N threads): at most N requests in the app at
            # once, the others waiting their turn (the default, 1: no limit).
            threads = cfg.threads
            app = WSGIMiddleware(
                app, multiprocess=cfg.workers > 1, concurrency=threads if threads > 1 else None
            )
        kwargs: dict[str, Any] = {
            "log_config": None,
            # (uvicorn would guess ASGI 2 for a __call__ that is not async.)
            "interface": "asgi3",
            # (As gunicorn's own workers: no access log unless --access-logfile;
            # formatting a record per request costs.)
            "access_log": bool(cfg.accesslog),
            "lifespan": "auto" if asgi else "off",
            "timeout_keep_alive": cfg.keepalive,
            # (The base class already added the jitter.)
            "limit_max_requests": self.max_requests if cfg.max_requests > 0 else None,
            "limit_concurrency": cfg.worker_connections,
            "timeout_graceful_shutdown": cfg.graceful_timeout,
            "forwarded_allow_ips": cfg.forwarded_allow_ips,
        }
        if cfg.settings["backlog"].value:
            kwargs["backlog"] = cfg.settings["backlog"].value
        if cfg.is_ssl:
            options = cfg.ssl_options
            kwargs.update(
                ssl_keyfile=options.get("keyfile"),
                ssl_certfile=options.get("certfile"),
                ssl_keyfile_password=options.get("password"),
                ssl_version=options.get("ssl_version"),
                ssl_cert_reqs=options.get("cert_reqs"),
                ssl_ca_certs=options.get("ca_certs"),
                ssl_ciphers=options.get("ciphers"),
            )
        return uvicorn.Config(app, **kwargs)

    def run(self) -> None:
        _run(self._serve(), self.loop_factory)

    async def _serve(self) -> None:
        self.server = server = _Server(config=self.config())
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop, False)
        loop.add_signal_handler(signal.SIGINT, self._stop, True)
        loop.add_signal_handler(signal.SIGQUIT, self._stop, True)
        # The arbiter's "WORKER TIMEOUT": the loop was stalled longer than
        # --timeout.  SystemExit from a loop callback ends run_until_complete.
        loop.add_signal_handler(signal.SIGABRT, self.handle_abort, signal.SIGABRT, None)
        self._heartbeat(loop)
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def _stop(self, at_once: bool) -> None:
        self.alive = False
        if self.server is not None:
            self.server.should_exit = True
            if at_once:
                self.server.force_exit = True
                self.cfg.worker_int(self)

    def _heartbeat(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tell the arbiter this worker lives, from the loop: a stalled loop is killed.

        gunicorn kills a worker that has not notified for ``--timeout``
        seconds (``self.timeout`` is half of that): notifying from a loop
        callback twice per ``self.timeout`` makes a loop blocked for longer
        than the timeout (a blocking call that is not green) show as a hung
        worker, as with gunicorn's other workers.  (uvicorn's own notify hook
        runs at most once a second: too coarse for short timeouts.)
        """
        if self.ppid != os.getppid():  # the arbiter died: stop, as gunicorn's workers do
            self.log.info("Parent changed, shutting down: %s", self)
            self._stop(False)
            return
        self.notify()
        loop.call_later(max(0.05, self.timeout / 2), self._heartbeat, loop)


class WSGIWorker(Worker):
    """`Worker` that always serves the app as WSGI, whatever `is_asgi` says."""

    asgi = False


class ASGIWorker(Worker):
    """`Worker` that always serves the app as ASGI, for an app `is_asgi` does not recognise.

    (An ASGI app whose ``__call__`` is a plain method returning an awaitable.)
    """

    asgi = True
