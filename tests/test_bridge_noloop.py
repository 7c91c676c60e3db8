"""await_ with no running loop: a private per-thread loop that persists between calls."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from greenbridge import async_, await_, close_private_loop


@pytest.fixture(autouse=True)
def _fresh_private_loop() -> Any:
    close_private_loop()
    yield
    close_private_loop()


def test_await_without_a_loop_runs_to_completion() -> None:
    async def compute(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * 3

    assert await_(compute(5)) == 15


def test_private_loop_persists_between_calls() -> None:
    """Objects bound to the loop in one call stay usable in the next one."""

    async def make_queue() -> asyncio.Queue[int]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        asyncio.get_running_loop().call_later(0.01, queue.put_nowait, 42)
        return queue

    queue = await_(make_queue())
    first_loop = await_(_running())
    assert await_(queue.get()) == 42
    assert await_(_running()) is first_loop


async def _running() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_background_tasks_progress_during_later_calls() -> None:
    results: list[str] = []

    async def background() -> None:
        await asyncio.sleep(0.01)
        results.append("background done")

    async def start() -> asyncio.Task[None]:
        return asyncio.ensure_future(background())

    task = await_(start())
    assert results == []
    await_(asyncio.sleep(0.05))
    assert results == ["background done"]
    assert task.done()


def test_sync_code_called_from_the_awaited_coroutine_can_await() -> None:
    def sync_helper() -> int:
        return await_(asyncio.sleep(0, 7)) + 1

    async def coro() -> int:
        return sync_helper() + await async_(sync_helper)()

    assert await_(coro()) == 16


def test_close_private_loop_and_recreate() -> None:
    loop1 = await_(_running())
    close_private_loop()
    assert loop1.is_closed()
    loop2 = await_(_running())
    assert loop2 is not loop1 and not loop2.is_closed()


def test_each_thread_has_its_own_private_loop() -> None:
    loops: dict[str, Any] = {}

    def in_thread(name: str) -> None:
        loops[name] = await_(_running())
        loops[name + " again"] = await_(_running())

    threads = [threading.Thread(target=in_thread, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert loops[f"t{i}"] is loops[f"t{i} again"]
    assert len({id(loops[f"t{i}"]) for i in range(4)}) == 4
    # A thread's private loop is closed when the thread ends.
    import gc

    gc.collect()
    assert all(loops[f"t{i}"].is_closed() for i in range(4))


def test_exceptions_from_the_private_loop() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ArithmeticError("private failure")

    with pytest.raises(ArithmeticError, match="private failure"):
        await_(fails())
    assert await_(asyncio.sleep(0, "still usable")) == "still usable"
