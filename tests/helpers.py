"""What the tests share: loop backends, services, the heartbeat, the registrations check.

Every test module imports these the same way, ``from .helpers import ...``
(the stress suite: ``from tests.helpers import ...``).  ``conftest.py`` keeps
only pytest's side: the ``backend``/``aio`` fixtures and the leak check, which
uses ``registrations`` from here.

- Backends: ``Backend`` (one loop family: how to run a coroutine function on
  it, its sleep) and ``BACKENDS`` (asyncio, uvloop, trio).
- Services: ``require_postgres()``, ``require_mariadb()``, ``require_redis()``
  skip a test when the server is absent on a user's machine, and fail it
  under ``CI=true`` (``IN_CI``), where a missing server is a broken setup,
  not a reason to pass.
- The heartbeat: the proof that sync code run through the bridge did not
  block the event loop.  ``Heartbeat`` ticks every 5 ms on the running loop
  and records the gaps; ``run_concurrently`` and ``run_green`` run sync
  callables through ``greenbridge.async_`` on a fresh loop while it ticks;
  ``with_heartbeat`` awaits one awaitable while it ticks.
- Registrations: ``registrations(loop)`` lists the readers and writers left
  on a loop (its selector's and greenbridge's own, the only ones visible on
  uvloop); ``registered_fds(loop)`` is the set of their descriptors.
"""

from __future__ import annotations

import asyncio
import gc
import os
import selectors
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import pytest
from greenlet import greenlet

import greenbridge
from greenbridge import _hub

T = TypeVar("T")

# A boolean as docs/environment.md defines them.
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "on", "yes")

# ---------------------------------------------------------------- backends


@dataclass(frozen=True)
class Backend:
    """One event-loop family, as the tests see it."""

    name: str
    run: Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]
    sleep: Callable[[float], Awaitable[None]]

    @property
    def is_asyncio(self) -> bool:
        return self.name in ("asyncio", "uvloop")


def _run_asyncio(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _run_uvloop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _run_trio(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    trio = pytest.importorskip("trio")
    return trio.run(main)  # type: ignore[no-any-return]


def _trio_sleep(seconds: float) -> Awaitable[None]:
    import trio

    return trio.sleep(seconds)


BACKENDS = {
    "asyncio": Backend("asyncio", _run_asyncio, asyncio.sleep),
    "uvloop": Backend("uvloop", _run_uvloop, asyncio.sleep),
    "trio": Backend("trio", _run_trio, _trio_sleep),
}

# ---------------------------------------------------------------- services

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def service_available(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a server is absent on a user's machine; fail under CI."""
    if service_available(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing server is a failure)")
    pytest.skip(message)


def require_postgres() -> None:
    """PostgreSQL at 127.0.0.1:5432 (user postgres, database test: ``PG_DSN``)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)


def require_mariadb() -> None:
    """MariaDB (or MySQL) at 127.0.0.1:3306 (user root, database test)."""
    require_service("MariaDB", "127.0.0.1", 3306)


def require_redis() -> None:
    """Redis at 127.0.0.1:6379."""
    require_service("Redis", "127.0.0.1", 6379)


# ---------------------------------------------------------------- heartbeat


class Heartbeat:
    """``async with Heartbeat() as beat:`` ticks every ``period`` s on the running loop.

    ``beat.max_gap`` is the longest time between two ticks (or since the
    start): a loop blocked by sync code shows as a gap as long as the block.
    Works on asyncio, uvloop and trio (a nursery of its own).
    """

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.gaps: list[float] = []
        self._stop = False
        self._task: asyncio.Future[None] | None = None
        self._nursery: Any = None

    @property
    def max_gap(self) -> float:
        return max(self.gaps, default=0.0)

    async def _beat(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        last = time.perf_counter()
        while not self._stop:
            await sleep(self.period)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    async def __aenter__(self) -> Heartbeat:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: trio
            import trio

            self._nursery = trio.open_nursery()
            nursery = await self._nursery.__aenter__()
            nursery.start_soon(self._beat, trio.sleep)
        else:
            self._task = asyncio.ensure_future(self._beat(asyncio.sleep))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._stop = True  # (the beat ends at its next tick)
        if self._task is not None:
            await self._task
            return None
        return await self._nursery.__aexit__(exc_type, exc, tb)  # type: ignore[no-any-return]


def run_concurrently(
    backend: Backend,
    fns: list[Callable[[], Any]],
    *,
    after: Callable[[], None] | None = None,
) -> tuple[list[Any], float, float]:
    """Run sync callables at once, each through ``greenbridge.async_``, on one fresh loop.

    A ``Heartbeat`` ticks meanwhile (from 10 ms before the first call).
    Returns the results (in order), the calls' wall time and the heartbeat's
    largest gap: the proof that the calls did not block the loop.  ``after``
    runs inside the loop once every call has finished (e.g. to check what is
    left registered).
    """

    async def main() -> tuple[list[Any], float, float]:
        results: list[Any] = [None] * len(fns)

        async def one(i: int) -> None:
            results[i] = await greenbridge.async_(fns[i])()

        async with Heartbeat() as beat:
            await backend.sleep(0.01)  # the heartbeat ticks before the first call
            start = time.perf_counter()
            if backend.is_asyncio:
                await asyncio.gather(*(one(i) for i in range(len(fns))))
            else:
                import trio

                async with trio.open_nursery() as nursery:
                    for i in range(len(fns)):
                        nursery.start_soon(one, i)
            elapsed = time.perf_counter() - start
        if after is not None:
            after()
        return results, elapsed, beat.max_gap

    return backend.run(main)  # type: ignore[no-any-return]


def run_green(backend: Backend, fn: Callable[[], Any], heartbeat: bool = False) -> Any:
    """Run ``fn`` as bridged sync code on a fresh loop: its result.

    With ``heartbeat=True``: ``(result, largest heartbeat gap)``.
    """
    if heartbeat:
        results, _elapsed, max_gap = run_concurrently(backend, [fn])
        return results[0], max_gap

    async def main() -> Any:
        return await greenbridge.async_(fn)()

    return backend.run(main)


async def with_heartbeat(awaitable: Awaitable[T]) -> tuple[T, float, float]:
    """Await ``awaitable`` while a ``Heartbeat`` ticks: (result, seconds, largest gap)."""
    async with Heartbeat() as beat:
        await asyncio.sleep(0.01)  # the heartbeat ticks before the wait starts
        start = time.perf_counter()
        try:
            result = await awaitable
        finally:
            elapsed = time.perf_counter() - start
    return result, elapsed, beat.max_gap


# ---------------------------------------------------------------- registrations


def registrations(loop: Any) -> list[tuple[int, str, Any]]:
    """(fd, "reader"/"writer", callback) registered on an open loop, but its self-pipe.

    Both what the loop's selector watches (asyncio) and greenbridge's own
    registry (the only registrations visible on a uvloop loop, and those in
    the hub's own epoll on asyncio's, whose descriptor is left out).
    """
    found: dict[tuple[int, str], Any] = {}
    selector = getattr(loop, "_selector", None)
    registry = _hub._asyncio.registries.get(loop)
    if selector is not None:
        ssock = getattr(loop, "_ssock", None)
        own = {ssock.fileno() if ssock is not None else -1}
        if registry is not None and registry.epoll is not None:
            own.add(registry.epoll.fileno())  # the hub's own epoll: its fds are below
        for fd, key in list(selector.get_map().items()):
            if fd in own:
                continue
            reader, writer = key.data
            if key.events & selectors.EVENT_READ:
                found[(fd, "reader")] = reader
            if key.events & selectors.EVENT_WRITE:
                found[(fd, "writer")] = writer
    if registry is not None:
        for fd, watch in list(registry.readers.items()):
            found.setdefault((fd, "reader"), watch)
        for fd, watch in list(registry.writers.items()):
            found.setdefault((fd, "writer"), watch)
    return [(fd, what, cb) for (fd, what), cb in sorted(found.items())]


def registered_fds(loop: Any) -> set[int]:
    """The descriptors with a reader or a writer registered on ``loop`` (see ``registrations``)."""
    return {fd for fd, _what, _cb in registrations(loop)}


def count_greenlets() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet))
