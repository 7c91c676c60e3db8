"""Bridged sync code behaves like the same program written with native coroutines.

Each test runs the native twin (plain ``async def``) and the bridged program in
the same test and compares what they observe: exceptions, recursion headroom,
``sys.exc_info()``, garbage collection of dropped work, ``finally`` order.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from greenbridge import async_, await_

from .conftest import Backend

# ---------------------------------------------------------------------------
# await_ of a coroutine another task is awaiting


def test_await_of_a_coroutine_awaited_elsewhere_fails_at_once(backend: Backend) -> None:
    """Native ``await`` refuses a coroutine another task is suspended in; so does await_."""

    async def main() -> list[Any]:
        steps: list[str] = []

        async def inner() -> str:
            steps.append("start")
            await backend.sleep(0.02)
            steps.append("end")
            return "inner result"

        async def owner(coro: Any, out: list[Any]) -> None:
            out.append(await coro)

        outcomes = []
        for how in ("native", "bridge"):
            coro = inner()
            out: list[Any] = []
            holder: list[Any] = []

            async def other(coro: Any = coro, how: str = how, holder: list[Any] = holder) -> None:
                await backend.sleep(0.005)  # the owner is suspended in coro by now
                try:
                    if how == "native":
                        await coro
                    else:
                        await async_(await_)(coro)
                except BaseException as exc:  # noqa: BLE001 - compared below
                    holder.append((type(exc), str(exc)))

            await _gather(backend, owner(coro, out), other())
            outcomes.append((holder, out, list(steps)))
            steps.clear()
        return outcomes

    native, bridged = backend.run(main)
    refused = [(RuntimeError, "coroutine is being awaited already")]
    assert native == (refused, ["inner result"], ["start", "end"])
    assert bridged == native


def test_await_of_a_running_coroutine_matches_native(backend: Backend) -> None:
    """A coroutine that awaits itself: ValueError from the send, as natively."""

    async def main() -> list[Any]:
        seen = []
        holder: list[Any] = []

        async def native_self() -> None:
            await holder[0]

        def sync_self() -> None:
            await_(holder[0])

        async def bridged_self() -> None:
            await async_(sync_self)()

        for make in (native_self, bridged_self):
            holder[:] = [make()]
            try:
                await holder[0]
            except BaseException as exc:  # noqa: BLE001 - compared below
                seen.append((type(exc), str(exc)))
        return seen

    native, bridged = backend.run(main)
    assert native == (ValueError, "coroutine already executing")
    assert bridged == native


# ---------------------------------------------------------------------------
# recursion headroom of pooled workers


def _headroom() -> int:
    """How many more nested Python calls fit here before RecursionError."""
    n = 0

    def down() -> None:
        nonlocal n
        n += 1
        down()

    with contextlib.suppress(RecursionError):
        down()
    return n


async def _at_depth(k: int, fn: Any) -> Any:
    if k:
        return await _at_depth(k - 1, fn)
    return await fn()


async def _plain_and_bridged() -> tuple[int, int]:
    """Headroom of a plain call and of an async_ call made from the same coroutine."""
    return _headroom(), await async_(_headroom)()


# The bridge adds three frames (the async_ coroutine, _launch, the worker's loop).
BRIDGE_FRAMES = 3


def test_a_worker_created_deep_gives_a_shallow_caller_full_headroom(backend: Backend) -> None:
    async def main() -> list[tuple[int, int]]:
        seen = []
        for _ in range(3):
            # Workers are created 600 frames deep and parked...
            deep = await _at_depth(600, _plain_and_bridged)
            # ...then called from a shallow coroutine, and the other way round.
            shallow = await _plain_and_bridged()
            seen += [deep, shallow]
        return seen

    for plain, bridged in backend.run(main):
        assert plain - BRIDGE_FRAMES - 2 <= bridged <= plain


def test_headroom_does_not_shrink_over_repeated_deep_nesting(backend: Backend) -> None:
    """Workers started ever deeper (async_ inside async_) do not leak their depth."""

    def nest(k: int) -> int:
        if k:
            return await_(async_(nest)(k - 1))
        return _headroom()

    def sleep_then_headroom() -> int:
        await_(backend.sleep(0))
        return _headroom()

    async def main() -> tuple[int, list[tuple[int, int]]]:
        deepest = await async_(nest)(40)
        seen: list[tuple[int, int]] = []

        async def one() -> None:
            # Concurrent calls: each takes its own worker, so all 41 parked ones are used.
            seen.append((_headroom(), await async_(sleep_then_headroom)()))

        await _gather(backend, *(one() for _ in range(41)))
        return deepest, seen

    deepest, seen = backend.run(main)
    assert deepest < seen[0][0] - 100  # the nested calls really went deep
    assert len(seen) == 41
    for plain, bridged in seen:
        assert plain - BRIDGE_FRAMES - 2 <= bridged <= plain


async def _gather(backend: Backend, *coros: Any) -> None:
    if backend.is_asyncio:
        await asyncio.gather(*coros)
        return
    import trio

    async with trio.open_nursery() as nursery:
        for coro in coros:
            nursery.start_soon(lambda c=coro: c)
