"""A sync middleware that says, in a response header, which thread it ran on."""

from __future__ import annotations

import threading
from typing import Any, Callable


def where_middleware(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def middleware(request: Any) -> Any:
        thread = threading.current_thread().name
        response = get_response(request)
        response["X-Middleware-Thread"] = thread
        return response

    return middleware
