"""Middleware that says, in response headers, which thread it ran on: a sync one, an async one."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from django.utils.decorators import async_only_middleware


def where_middleware(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def middleware(request: Any) -> Any:
        thread = threading.current_thread().name
        response = get_response(request)
        response["X-Middleware-Thread"] = thread
        return response

    return middleware


@async_only_middleware
def async_middleware(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An async-only one: says in a header that it ran as a coroutine on a running loop."""

    async def middleware(request: Any) -> Any:
        response = await get_response(request)
        asyncio.get_running_loop()  # (raises RuntimeError outside a coroutine on a loop)
        response["X-Async-Middleware-Thread"] = threading.current_thread().name
        return response

    return middleware
