"""Portals: await_ in plain sync functions called from coroutines."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from typing import Any

import pytest

import greenbridge
from greenbridge import MissingBridge, await_, ensure_portal, has_portal, install_portal_factory

from .helpers import Backend


def fetch(value: Any) -> Any:
    """A plain sync helper that awaits: works wherever its caller has a portal."""
    return await_(asyncio.sleep(0.001, value))


def test_ensure_portal_for_the_current_task(aio: Backend) -> None:
    async def main() -> list[Any]:
        assert not has_portal()
        with pytest.raises(MissingBridge):
            fetch(0)
        await ensure_portal()
        assert has_portal()
        results = [fetch(1)]
        await asyncio.sleep(0)  # the coroutine keeps working normally
        results.append(fetch(2))
        await ensure_portal()  # idempotent
        results.append(fetch(3))
        return results

    assert aio.run(main) == [1, 2, 3]


def test_ensure_portal_on_a_pure_python_task() -> None:
    py_task = getattr(asyncio.tasks, "_PyTask", None)
    if py_task is None:
        pytest.skip("no pure-Python Task in this version")

    async def main() -> Any:
        await ensure_portal()
        return fetch("py")

    async def outer() -> Any:
        return await py_task(main())

    assert asyncio.run(outer()) == "py"


def test_ensure_portal_keeps_task_identity_and_result(aio: Backend) -> None:
    async def main() -> tuple[bool, str]:
        task = asyncio.current_task()
        await ensure_portal()
        return asyncio.current_task() is task, fetch("result")

    async def runner() -> tuple[bool, str]:
        task = asyncio.ensure_future(main())
        value = await task
        assert task.done() and not task.cancelled()
        return value

    assert aio.run(runner) == (True, "result")


def test_portal_task_cancellation_and_errors(aio: Backend) -> None:
    log: list[str] = []

    def wait_forever() -> None:
        try:
            await_(asyncio.sleep(10))
        finally:
            log.append("finally")

    async def victim() -> None:
        await ensure_portal()
        wait_forever()

    async def failing() -> None:
        await ensure_portal()
        await_(asyncio.sleep(0))
        raise ValueError("portal error")

    async def main() -> None:
        task = asyncio.ensure_future(victim())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ValueError, match="portal error"):
            await failing()

    aio.run(main)
    assert log == ["finally"]


def test_portal_factory_gives_every_task_a_portal(aio: Backend) -> None:
    async def child(i: int) -> int:
        assert has_portal()
        return int(fetch(i)) * 2

    async def main() -> list[int]:
        install_portal_factory()
        install_portal_factory()  # idempotent
        return list(await asyncio.gather(*(child(i) for i in range(10))))

    assert aio.run(main) == [i * 2 for i in range(10)]


def test_portal_factory_chains_an_existing_factory(aio: Backend) -> None:
    created: list[asyncio.Task[Any]] = []

    def counting_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        created.append(task)
        return task

    async def child() -> Any:
        return fetch("chained")

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(counting_factory)
        install_portal_factory(loop)
        return await asyncio.create_task(child(), name="named-child")

    assert aio.run(main) == "chained"
    # The first factory built the task, and create_task's name reached it.
    assert created and created[0].get_name() == "named-child"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="create_task(context=) is new in 3.11")
def test_portal_factory_respects_create_task_context(aio: Backend) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def child() -> str:
        return var.get()

    async def main() -> str:
        install_portal_factory()
        ctx = contextvars.copy_context()
        ctx.run(var.set, "from context")
        return await asyncio.get_running_loop().create_task(child(), context=ctx)  # type: ignore[call-arg]

    assert aio.run(main) == "from context"


def test_ensure_portal_under_trio() -> None:
    trio = pytest.importorskip("trio")

    def helper() -> str:
        await_(trio.sleep(0.001))
        return "trio portal"

    async def main() -> str:
        with pytest.raises(MissingBridge):
            helper()
        await ensure_portal()
        return helper()

    assert trio.run(main) == "trio portal"


def test_portal_outside_a_task_is_a_clear_error() -> None:
    steps = ensure_portal().__await__()  # driven by hand: no task, no loop
    with pytest.raises(MissingBridge, match="inside an asyncio or trio task"):
        steps.send(None)


def test_ensure_portal_through_the_private_loop_is_a_no_op() -> None:
    async def main() -> Any:
        await ensure_portal()  # the private loop's tasks already have one
        return fetch("private")

    assert greenbridge.await_(main()) == "private"


def test_portal_factory_needs_a_loop() -> None:
    with pytest.raises(RuntimeError):
        install_portal_factory()
