"""Shared fixtures: run tests on asyncio, uvloop and trio, and find the local services."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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


@pytest.fixture(params=["asyncio", "uvloop", "trio"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every loop family greenbridge supports."""
    return BACKENDS[request.param]


@pytest.fixture(params=["asyncio", "uvloop"])
def aio(request: pytest.FixtureRequest) -> Backend:
    """The asyncio-API loops (asyncio's own and uvloop)."""
    return BACKENDS[request.param]


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


def run_concurrently(
    backend: Backend,
    fns: list[Callable[[], Any]],
    *,
    after: Callable[[], None] | None = None,
) -> tuple[list[Any], float, float]:
    """Run sync callables at once, each through ``greenbridge.async_``, on one loop.

    A heartbeat coroutine ticks every 5 ms meanwhile.  Returns the results (in
    order), the elapsed wall time and the heartbeat's largest gap: the proof
    that the calls did not block the loop.  ``after`` runs inside the loop
    once every call has finished (e.g. to check what is left registered).
    """
    import time

    import greenbridge

    async def main() -> tuple[list[Any], float, float]:
        results: list[Any] = [None] * len(fns)
        gaps: list[float] = []
        stop: list[bool] = []

        async def heartbeat() -> None:
            last = time.monotonic()
            while not stop:
                await backend.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async def one(i: int) -> None:
            results[i] = await greenbridge.async_(fns[i])()

        t0 = time.monotonic()
        if backend.is_asyncio:
            beat = asyncio.ensure_future(heartbeat())
            try:
                await asyncio.gather(*(one(i) for i in range(len(fns))))
            finally:
                stop.append(True)
                await beat
        else:
            import trio

            async with trio.open_nursery() as nursery:
                nursery.start_soon(heartbeat)
                async with trio.open_nursery() as inner:
                    for i in range(len(fns)):
                        inner.start_soon(one, i)
                stop.append(True)
        elapsed = time.monotonic() - t0
        if after is not None:
            after()
        return results, elapsed, max(gaps, default=0.0)

    return backend.run(main)  # type: ignore[no-any-return]
