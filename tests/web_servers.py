"""Real servers for the web-integration tests: uvicorn in a thread, gunicorn in a subprocess.

``Uvicorn(app)`` serves an ASGI app on a free loopback port from a thread of
its own, running a loop of its own (asyncio's, or uvloop's with
``loop="uvloop"``), with a ``Heartbeat`` ticking on that loop the whole time:
after the ``with`` block, ``server.max_gap`` is the proof that no request
stalled the loop.  ``with server.heartbeat() as beat:`` measures a window
only (``beat.max_gap`` once the block is left), for a test whose server also
did slow things outside the part it checks (a fixture's server, a stock
run).  ``server.on_loop()`` tells whether the caller runs on the server's
loop, i.e. whether sync app code ran green rather than in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from .helpers import Heartbeat

ROOT = Path(__file__).resolve().parents[1]
LOOPS = ("asyncio", "uvloop")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HeartbeatWindow:
    """What ``Uvicorn.heartbeat()`` measured: ``max_gap``, set when its block is left."""

    max_gap = 0.0


class Uvicorn:
    """``with Uvicorn(app) as server:`` serves ``app`` at ``server.url`` (a thread, one loop).

    ``loop`` is the loop the thread runs: "asyncio" or "uvloop".  ``config``
    goes to ``uvicorn.Config`` (``log_level`` "warning" and ``lifespan``
    "off" unless given).  Leaving the ``with`` block stops the server (and may
    be done early, by calling ``__exit__``: a second exit does nothing more);
    an exception that ended the server's thread is raised there.
    """

    def __init__(self, app: Any, *, loop: str = "asyncio", **config: Any) -> None:
        import uvicorn

        if loop not in LOOPS:
            raise ValueError(f"loop must be one of {LOOPS}, not {loop!r}")
        if loop == "uvloop":
            import uvloop  # here, not in the thread: a missing uvloop fails the test plainly

            self._new_loop: Any = uvloop.new_event_loop
        else:
            self._new_loop = None  # asyncio.run's own
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "off")
        # loop="none": the thread runs the loop itself (uvicorn.Server.serve sets none up).
        self.config = uvicorn.Config(app, log_config=None, access_log=False, loop="none", **config)
        self.server = uvicorn.Server(self.config)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.max_gap = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="uvicorn", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            async with Heartbeat() as beat:
                try:
                    await self.server.serve(sockets=[self.sock])
                finally:
                    self.max_gap = beat.max_gap

        try:
            if self._new_loop is None:
                asyncio.run(main())
            else:
                loop = self._new_loop()
                try:
                    loop.run_until_complete(main())
                finally:
                    loop.close()
        except BaseException as exc:  # reported by __exit__
            self._error = exc

    def on_loop(self) -> bool:
        """Whether the caller runs on the server's thread, the one running its loop."""
        return threading.get_ident() == self.thread.ident

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[HeartbeatWindow]:
        """Ticks on the server's loop during the block; ``.max_gap`` is set on exit."""
        assert self.loop is not None, "the server is not running"
        stop = threading.Event()
        window = HeartbeatWindow()

        async def beat() -> float:
            async with Heartbeat() as hb:
                while not stop.is_set():
                    await asyncio.sleep(0.005)
            return hb.max_gap

        future = asyncio.run_coroutine_threadsafe(beat(), self.loop)
        time.sleep(0.02)  # the heartbeat ticks before the block starts
        try:
            yield window
        finally:
            stop.set()
            window.max_gap = future.result(10)

    def __enter__(self) -> Uvicorn:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"uvicorn did not start: {self._error!r}") from self._error
            time.sleep(0.01)
        return self

    def _stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
        if self._error is not None and exc is None:
            raise self._error


def _no_control_socket() -> list[str]:
    """gunicorn >= 24 opens a control socket in ~/.gunicorn by default: not for tests."""
    from gunicorn.config import KNOWN_SETTINGS

    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        return ["--no-control-socket"]
    return []


class Gunicorn:
    """``with Gunicorn(args, cwd) as g:`` runs ``gunicorn *args`` bound to ``g.url``."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "warning",
            *_no_control_socket(),
            *args,
        ]
        self.cwd = cwd
        self.env = dict(os.environ, **(env or {}))
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), str(cwd), self.env.get("PYTHONPATH", "")]
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gunicorn:
        self.proc = subprocess.Popen(
            self.args, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.05)
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def output(self) -> str:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        out, _ = self.proc.communicate(timeout=10)
        return out.decode(errors="replace")

    def stop(self, timeout: float = 20) -> tuple[int, str]:
        """SIGTERM the master, wait: (exit code, output)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return self.proc.returncode, out.decode(errors="replace")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.stop()
