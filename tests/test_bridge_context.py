"""contextvars: sync code shares its caller's Context (as a plain call would)."""

from __future__ import annotations

import asyncio
import contextvars

from greenbridge import async_, await_, spawn

from .helpers import Backend

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def test_sync_code_sees_and_sets_the_callers_context(backend: Backend) -> None:
    def sync() -> str:
        seen = var.get()
        await_(backend.sleep(0))
        var.set("set in sync")
        return seen

    async def main() -> tuple[str, str]:
        var.set("set in async")
        seen = await async_(sync)()
        return seen, var.get()

    assert backend.run(main) == ("set in async", "set in sync")


def test_with_context_false_runs_in_a_copy(backend: Backend) -> None:
    def sync() -> str:
        seen = var.get()
        var.set("changed in copy")
        return seen

    async def main() -> tuple[str, str]:
        var.set("outer")
        seen = await async_(sync, with_context=False)()
        return seen, var.get()

    assert backend.run(main) == ("outer", "outer")


def test_context_flows_through_nesting(backend: Backend) -> None:
    async def inner() -> str:
        value = var.get()
        var.set("inner async")
        return value

    def sync() -> str:
        var.set("sync")
        return await_(inner())

    async def main() -> tuple[str, str]:
        seen = await async_(sync)()
        return seen, var.get()

    # await_ runs the coroutine in the same Context, like a native await.
    assert backend.run(main) == ("sync", "inner async")


def test_spawned_tasks_get_a_copy_like_create_task(aio: Backend) -> None:
    def child() -> str:
        seen = var.get()
        var.set("child")
        return seen

    async def main() -> tuple[str, str]:
        var.set("parent")
        seen = await spawn(child)
        return seen, var.get()

    assert aio.run(main) == ("parent", "parent")


def test_concurrent_calls_keep_their_own_task_context(aio: Backend) -> None:
    def sync(name: str) -> list[str]:
        out = []
        for _ in range(5):
            out.append(var.get())
            await_(asyncio.sleep(0))
        return out

    async def one(name: str) -> list[str]:
        var.set(name)
        return await async_(sync)(name)

    async def main() -> list[list[str]]:
        return list(await asyncio.gather(*(one(f"task{i}") for i in range(20))))

    results = aio.run(main)
    assert results == [[f"task{i}"] * 5 for i in range(20)]
