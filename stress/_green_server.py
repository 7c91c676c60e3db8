"""What the network stress tests share: a green echo server and the loop-side tools.

The server is written as a plain blocking server with greenbridge's green
``socket``: one green thread accepts, one green thread per connection echoes
what it reads, with a timeout on every connection (``settimeout``) as a real
server has, so that an idle or stuck peer is dropped.  Handlers start through
``greenbridge.spawn`` on asyncio/uvloop and ``nursery.start_soon(async_(...))``
on trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket as _stdsocket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import greenbridge
from greenbridge.green import socket as gsocket


def open_fds() -> int:
    """How many file descriptors this process has open (Linux: /proc/self/fd)."""
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def have_proc() -> bool:
    return os.path.isdir("/proc/self/fd") and os.path.exists("/proc/self/statm")


class GreenGroup:
    """Green threads started on the running loop, asyncio or trio; waited for at exit."""

    def __init__(self, backend: Any, nursery: Any = None) -> None:
        self.backend = backend
        self.nursery = nursery
        self.tasks: set[asyncio.Task[Any]] = set()
        self.failures: list[BaseException] = []

    def start(self, fn: Callable[..., Any], *args: Any) -> None:
        """Start ``fn(*args)`` as a green thread (callable from green code too)."""
        if self.nursery is not None:
            self.nursery.start_soon(greenbridge.async_(fn), *args)
            return
        task = greenbridge.spawn(fn, *args)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(task.exception())  # type: ignore[arg-type]

    async def join(self) -> None:
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def green_group(backend: Any) -> AsyncIterator[GreenGroup]:
    """A `GreenGroup` for this backend; leaving it waits for every green thread."""
    if backend.is_asyncio:
        group = GreenGroup(backend)
        try:
            yield group
        finally:
            await group.join()
        if group.failures:
            raise group.failures[0]
    else:
        import trio

        async with trio.open_nursery() as nursery:
            yield GreenGroup(backend, nursery)


async def run_all(backend: Any, fns: list[Callable[[], Any]]) -> list[Any]:
    """Run sync callables at once, each as a green thread, and return their results."""
    results: list[Any] = [None] * len(fns)

    async def one(i: int) -> None:
        results[i] = await greenbridge.async_(fns[i])()

    if backend.is_asyncio:
        await asyncio.gather(*(one(i) for i in range(len(fns))))
    else:
        import trio

        try:
            async with trio.open_nursery() as nursery:
                for i in range(len(fns)):
                    nursery.start_soon(one, i)
        except BaseException as exc:
            inner = getattr(exc, "exceptions", ())  # an exception group of one: raise that one
            if len(inner) == 1:
                raise inner[0] from None
            raise
    return results


class Heartbeat:
    """A coroutine on the loop that sleeps 5 ms in a loop: the longest gap between beats."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.longest = 0.0
        self.stopped = False

    async def run(self) -> None:
        last = time.monotonic()
        while not self.stopped:
            await self.backend.sleep(0.005)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now

    def take(self) -> float:
        """The longest gap since the last call."""
        longest, self.longest = self.longest, 0.0
        return longest


class GcPauses:
    """The longest garbage-collector pause since the last `take` (from ``gc.callbacks``)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.longest = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self.started = now
        else:
            self.longest = max(self.longest, now - self.started)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def take(self) -> float:
        longest, self.longest = self.longest, 0.0
        return longest


class EchoServer:
    """A green echo server: ``accept_loop`` and one ``handle`` per connection, green threads.

    Every connection gets ``settimeout(idle_timeout)``: a peer that sends
    nothing, or stops reading, for that long is dropped (counted in
    ``timeouts``).  Resets and broken pipes are counted in ``resets``; any
    other exception is kept in ``errors`` (a test asserts there is none).
    """

    def __init__(self, idle_timeout: float, backlog: int = 1024) -> None:
        self.idle_timeout = idle_timeout
        self.listener = gsocket.socket()
        self.listener.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(backlog)
        self.addr = self.listener.getsockname()
        self.active = 0  # handlers running
        self.accepted = 0
        self.finished = 0
        self.timeouts = 0
        self.resets = 0
        self.bytes = 0
        self.fired: list[float] = []  # when each timeout fired, from its recv/sendall call
        self.errors: list[BaseException] = []
        self.stopping = False
        self.closed = False

    def handle(self, conn: Any) -> None:
        self.active += 1
        try:
            with conn:
                conn.settimeout(self.idle_timeout)
                while True:
                    t0 = time.monotonic()
                    try:
                        data = conn.recv(65536)
                        if not data:
                            return
                        t0 = time.monotonic()
                        conn.sendall(data)
                    except gsocket.timeout:
                        self.fired.append(time.monotonic() - t0)
                        self.timeouts += 1
                        return
                    except (ConnectionResetError, BrokenPipeError):
                        self.resets += 1
                        return
                    self.bytes += len(data)
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.active -= 1
            self.finished += 1

    def accept_loop(self, group: GreenGroup) -> None:
        """Accept until `stop`; start a handler per connection."""
        try:
            while True:
                conn, _ = self.listener.accept()
                if self.stopping:
                    conn.close()
                    return
                self.accepted += 1
                group.start(self.handle, conn)
        finally:
            self.listener.close()
            self.closed = True

    async def stop(self, backend: Any) -> None:
        """Make the accept loop return (one last connection wakes it) and close the listener."""
        self.stopping = True
        with _stdsocket.create_connection(self.addr):
            while not self.closed:
                await backend.sleep(0.005)

    async def settle(self, backend: Any, keep: int = 0, deadline: float = 30.0) -> None:
        """Wait (loop running) until the handlers of all but ``keep`` connections finished."""
        end = time.monotonic() + deadline
        while self.active > keep or self.finished < self.accepted - keep:
            assert time.monotonic() < end, (
                f"{self.active - keep} handlers still running {deadline} s after their clients left"
            )
            await backend.sleep(0.01)


def recv_exactly(sock: Any, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 65536))
        if not chunk:
            raise ConnectionError(f"connection closed with {size} bytes still expected")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_all(sock: Any) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")
