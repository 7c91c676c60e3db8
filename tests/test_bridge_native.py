"""Bridged sync code behaves like the same program written with native coroutines.

Each test runs the native twin (plain ``async def``) and the bridged program in
the same test and compares what they observe: exceptions, recursion headroom,
``sys.exc_info()``, garbage collection of dropped work, ``finally`` order.
"""

from __future__ import annotations

import asyncio
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


async def _gather(backend: Backend, *coros: Any) -> None:
    if backend.is_asyncio:
        await asyncio.gather(*coros)
        return
    import trio

    async with trio.open_nursery() as nursery:
        for coro in coros:
            nursery.start_soon(lambda c=coro: c)
