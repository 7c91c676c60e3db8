"""Real servers for the web-integration tests: uvicorn in a thread, gunicorn in a subprocess.

``Uvicorn(app)`` serves an ASGI app on a free loopback port from a thread of
its own, with a ``Heartbeat`` ticking on the server's loop the whole time:
after the ``with`` block, ``server.max_gap`` is the proof that no request
stalled the loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from .helpers import Heartbeat

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Uvicorn:
    """``with Uvicorn(app) as server:`` serves ``app`` at ``server.url`` (a thread, one loop)."""

    def __init__(self, app: Any, **config: Any) -> None:
        import uvicorn

        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "off")
        self.config = uvicorn.Config(
            app, log_config=None, access_log=False, loop="asyncio", **config
        )
        self.server = uvicorn.Server(self.config)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.max_gap = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="uvicorn", daemon=True)
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
            asyncio.run(main())
        except BaseException as exc:  # reported by __exit__
            self._error = exc

    def __enter__(self) -> Uvicorn:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start: {self._error!r}")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self.sock.close()
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
