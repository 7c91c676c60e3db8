"""allow_reentrant_run(): asyncio.run() / run_until_complete() from bridged sync code."""

from __future__ import annotations

import asyncio
import functools
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import greenbridge
from greenbridge import allow_reentrant_run

from .helpers import Backend, require_redis, run_concurrently


@pytest.fixture
def reentrant() -> Iterator[None]:
    with allow_reentrant_run():
        yield


# -- a real async client behind a sync API that calls asyncio.run ------------


class SyncKV:
    """What a sync library wrapping redis.asyncio typically looks like."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6379) -> None:
        self.host = host
        self.port = port

    async def _call(self, method: str, *args: Any) -> Any:
        import redis.asyncio

        client = redis.asyncio.Redis(host=self.host, port=self.port)
        try:
            return await getattr(client, method)(*args)
        finally:
            close = getattr(client, "aclose", None) or client.close
            await close()

    def set(self, key: str, value: str) -> None:
        asyncio.run(self._call("set", key, value))

    def get(self, key: str) -> bytes | None:
        return asyncio.run(self._call("get", key))  # type: ignore[no-any-return]

    def blpop(self, key: str, timeout: float) -> Any:
        return asyncio.get_event_loop().run_until_complete(self._call("blpop", [key], timeout))


@pytest.fixture
def kv() -> SyncKV:
    pytest.importorskip("redis")
    require_redis()
    return SyncKV()


def test_sync_wrapper_works_standalone(kv: SyncKV) -> None:
    # No loop running: the wrapper's own asyncio.run, untouched.
    key = f"gb-test-{uuid.uuid4()}"
    kv.set(key, "v")
    assert kv.get(key) == b"v"


def test_sync_wrapper_fails_in_a_loop_without_opt_in(aio: Backend, kv: SyncKV) -> None:
    def sync_get() -> Any:
        coro = kv._call("get", "anything")
        try:
            return asyncio.run(coro)
        finally:
            coro.close()  # asyncio.run refused it: do not leave it unawaited

    async def main() -> None:
        await greenbridge.async_(sync_get)()

    with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
        aio.run(main)


def test_sync_wrapper_on_the_running_loop(aio: Backend, kv: SyncKV, reentrant: None) -> None:
    key = f"gb-test-{uuid.uuid4()}"

    def sync_app() -> bytes | None:
        kv.set(key, "hello")
        return kv.get(key)

    async def main() -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        # Several sync callers wait on Redis at the same time, on one loop.
        waiter = greenbridge.async_(kv.blpop)(key + "-list", 1)
        value = await greenbridge.async_(sync_app)()

        def push() -> None:
            asyncio.run(SyncKV()._call("rpush", key + "-list", "item"))

        await asyncio.sleep(0.05)
        await greenbridge.async_(push)()
        popped = await waiter
        assert asyncio.get_running_loop() is loop
        return value, popped

    value, popped = aio.run(main)
    assert value == b"hello"
    assert popped == (f"{key}-list".encode(), b"item")


def test_does_not_block_the_loop(aio: Backend, reentrant: None) -> None:
    def sync_library_call(i: int) -> int:
        async def work() -> int:
            await asyncio.sleep(0.2)
            return i

        return asyncio.run(work())

    results, elapsed, max_gap = run_concurrently(
        aio, [functools.partial(sync_library_call, i) for i in range(20)]
    )
    assert results == list(range(20))
    assert elapsed < 3 * 0.2  # 20 calls waited together, not one after another
    assert max_gap < 0.1


def test_portal_task_and_nesting(aio: Backend, reentrant: None) -> None:
    def inner_sync() -> str:
        async def leaf() -> str:
            await asyncio.sleep(0.001)
            return "leaf"

        return asyncio.run(leaf())

    def outer_sync() -> str:
        async def middle() -> str:
            await asyncio.sleep(0.001)
            return "middle>" + inner_sync()  # sync code again, inside the coroutine

        return asyncio.run(middle())

    async def main() -> str:
        await greenbridge.ensure_portal()
        return outer_sync()  # a plain call from the task, no async_

    assert aio.run(main) == "middle>leaf"


def test_portal_factory(aio: Backend, reentrant: None) -> None:
    def notebook_cell() -> int:
        async def compute() -> int:
            await asyncio.sleep(0.001)
            return 42

        return asyncio.get_event_loop().run_until_complete(compute())

    async def main() -> int:
        greenbridge.install_portal_factory()
        return await asyncio.get_running_loop().create_task(cell())

    async def cell() -> int:
        return notebook_cell()

    assert aio.run(main) == 42


def test_exceptions_and_futures(aio: Backend, reentrant: None) -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("from the coroutine")

    def sync_code() -> Any:
        with pytest.raises(KeyError, match="from the coroutine"):
            asyncio.run(fails())
        loop = asyncio.get_event_loop()
        fut = loop.create_future()
        loop.call_later(0.01, fut.set_result, "future")
        with pytest.raises(ValueError, match="a coroutine was expected"):
            asyncio.run(fut)  # type: ignore[arg-type]
        return loop.run_until_complete(fut)

    async def main() -> Any:
        return await greenbridge.async_(sync_code)()

    assert aio.run(main) == "future"


def test_timeout_cancels_the_inner_coroutine(aio: Backend, reentrant: None) -> None:
    log: list[str] = []

    def sync_code() -> None:
        async def slow() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                log.append("inner cancelled")
                raise

        try:
            asyncio.run(slow())
        except asyncio.CancelledError:
            log.append("asyncio.run raised CancelledError")
            raise

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(greenbridge.async_(sync_code)(), 0.05)

    aio.run(main)
    assert log == ["inner cancelled", "asyncio.run raised CancelledError"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is 3.11+")
def test_runner(aio: Backend, reentrant: None) -> None:
    def sync_code() -> list[int]:
        async def n(i: int) -> int:
            await asyncio.sleep(0.001)
            return i

        with asyncio.Runner() as runner:  # type: ignore[attr-defined,unused-ignore]
            return [runner.run(n(1)), runner.run(n(2))]

    async def main() -> list[int]:
        return await greenbridge.async_(sync_code)()

    assert aio.run(main) == [1, 2]


# -- misuse and the original behaviour ---------------------------------------


def test_without_a_bridge_the_original_error_remains(aio: Backend, reentrant: None) -> None:
    async def coro() -> None:
        pass

    async def main() -> None:
        c = coro()
        with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
            asyncio.run(c)  # a plain coroutine calling asyncio.run: no portal
        c.close()
        c = coro()
        with pytest.raises(RuntimeError, match="already running"):
            asyncio.get_running_loop().run_until_complete(c)
        c.close()

    aio.run(main)


def test_another_loop_is_not_supported(aio: Backend, reentrant: None) -> None:
    async def coro() -> None:
        pass

    def sync_code() -> None:
        other = asyncio.new_event_loop()
        try:
            with pytest.raises(RuntimeError, match="other than the one running"):
                other.run_until_complete(coro())
        finally:
            other.close()

    async def main() -> None:
        await greenbridge.async_(sync_code)()

    aio.run(main)


def test_outside_any_loop_nothing_changes(reentrant: None) -> None:
    async def where() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    loop = asyncio.run(where())
    assert loop.is_closed()  # asyncio.run made (and closed) its own loop


def test_opt_in_is_counted_and_restores_the_originals() -> None:
    original_run = asyncio.run
    original_ruc = asyncio.BaseEventLoop.run_until_complete
    first = allow_reentrant_run()
    second = allow_reentrant_run()
    assert asyncio.run is not original_run
    first.disable()
    first.disable()  # idempotent
    assert asyncio.run is not original_run  # the second one is still active
    assert second.active and not first.active
    second.disable()
    assert asyncio.run is original_run
    assert asyncio.BaseEventLoop.run_until_complete is original_ruc
    uvloop = pytest.importorskip("uvloop")
    assert "run_until_complete" not in vars(uvloop.Loop)  # inherited again, as before
