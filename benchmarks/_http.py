"""What the web benchmarks share: a free port, a server process, a keep-alive GET, CPU time.

Also ``profile_if_asked()``: with ``GB_BENCH_PROFILE=/some/prefix`` in the
environment, each server process runs under cProfile and writes
``/some/prefix-<pid>.prof`` when it exits (read them with ``pstats``;
divide call counts by the requests served).
"""

from __future__ import annotations

import asyncio
import atexit
import cProfile
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until something accepts connections on ``port`` (or ``proc`` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def server_process(
    argv: list[str],
    port: int,
    env: dict[str, str],
    cwd: Path,
    *,
    new_session: bool = False,
    start_timeout: float = 30,
    stop_timeout: float = 15,
) -> Iterator[int]:
    """Run a server until the block ends; yield its pid once it accepts connections."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=new_session)
    try:
        wait_for_port(port, proc, timeout=start_timeout)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    """One keep-alive GET: the status (the body is read and dropped)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) of process ``root`` and its descendants (Linux; else 0)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0.0
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, seconds)
    tick = os.sysconf("SC_CLK_TCK")
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo.extend(child for child, (parent, _) in stats.items() if parent == pid)
    return total


def profile_if_asked() -> None:
    """Profile this process from now to its exit if ``GB_BENCH_PROFILE`` is set."""
    prefix = os.environ.get("GB_BENCH_PROFILE")
    if not prefix:
        return
    profile = cProfile.Profile()

    def dump() -> None:
        profile.disable()
        profile.dump_stats(f"{prefix}-{os.getpid()}.prof")

    atexit.register(dump)
    # uvicorn ends by raising the SIGTERM it caught again, with the default
    # handler back, so no atexit: dump first, then let its handler go on.
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        dump()
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signum, previous or signal.SIG_DFL)
            signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    profile.enable()
