"""Helpers shared by the database driver tests (tests/test_drivers_*.py)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from greenlet import greenlet

import greenbridge

from .conftest import Backend

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def run_with_heartbeat(
    backend: Backend, calls: list[Callable[[], Any]]
) -> tuple[list[Any], float, float]:
    """Run sync ``calls`` concurrently through async_ while a heartbeat ticks.

    Returns (results in order, elapsed seconds, largest gap between heartbeat ticks).
    """

    async def main() -> tuple[list[Any], float, float]:
        results: list[Any] = [None] * len(calls)
        gaps: list[float] = [0.0]
        stop = [False]

        async def beat() -> None:
            last = time.perf_counter()
            while not stop[0]:
                await backend.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async def one(i: int) -> None:
            results[i] = await greenbridge.async_(calls[i])()

        start = time.perf_counter()
        if backend.is_asyncio:
            ticker = asyncio.ensure_future(beat())
            await asyncio.sleep(0.01)
            await asyncio.gather(*(one(i) for i in range(len(calls))))
            elapsed = time.perf_counter() - start
            stop[0] = True
            await ticker
        else:
            import trio

            async with trio.open_nursery() as nursery:
                nursery.start_soon(beat)
                await trio.sleep(0.01)
                async with trio.open_nursery() as inner:
                    for i in range(len(calls)):
                        inner.start_soon(one, i)
                elapsed = time.perf_counter() - start
                stop[0] = True
        return results, elapsed, max(gaps)

    return backend.run(main)  # type: ignore[no-any-return]


def count_greenlets() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet))


def registered_fds(loop: asyncio.AbstractEventLoop) -> int:
    """How many file descriptors the asyncio loop's selector watches."""
    selector = getattr(loop, "_selector", None)
    assert selector is not None, "asyncio selector loop expected"
    return len(selector.get_map())
