"""Static checks of the public API's types: run by mypy --strict in CI, never executed.

Each ``assert_type`` fails the type check if greenbridge's annotations drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

import greenbridge


def greet(name: str, times: int = 1, *, loud: bool = False) -> str:
    return name * times


async def fetch(url: str) -> bytes:
    return url.encode()


async def check() -> None:
    # async_ keeps the signature and wraps the return type in a coroutine.
    wrapped = greenbridge.async_(greet)
    coro = wrapped("x", 2, loud=True)
    assert_type(coro, Coroutine[Any, Any, str])  # type: ignore[unused-coroutine]
    coro.close()
    assert_type(await wrapped("x"), str)
    wrapped("x", "two").close()  # type: ignore[arg-type]

    @greenbridge.async_
    def decorated(a: int) -> float:
        return a / 2

    assert_type(await decorated(3), float)

    @greenbridge.async_(with_context=False)
    def decorated_copy(a: int) -> list[int]:
        return [a]

    assert_type(await decorated_copy(1), list[int])

    # await_ returns the awaitable's result type; on an async function it is a decorator.
    assert_type(greenbridge.await_(fetch("u")), bytes)
    sync_fetch = greenbridge.await_(fetch)
    assert_type(sync_fetch("u"), bytes)
    sync_fetch(1)  # type: ignore[arg-type]

    # spawn returns a Task of the function's result.
    task = greenbridge.spawn(greet, "y", times=3)
    assert_type(task, asyncio.Task[str])
    greenbridge.spawn(greet, 1)  # type: ignore[arg-type]

    assert_type(await greenbridge.ensure_portal(), None)
    assert_type(greenbridge.has_portal(), bool)


def check_lazy_names() -> None:
    # Names loaded on first use are typed like the others (TYPE_CHECKING imports
    # in greenbridge/__init__.py), and a misspelt name is still an error: the
    # module __getattr__ that loads them is hidden from type checkers.
    detector = greenbridge.detect_blocking(0.1)
    assert_type(detector, greenbridge.BlockingDetector)
    assert_type(greenbridge.offload(len, "abc"), int)
    assert_type(greenbridge.UnsupportedLoop("x"), greenbridge.UnsupportedLoop)
    greenbridge.detect_blocknig(0.1)  # type: ignore[attr-defined]
