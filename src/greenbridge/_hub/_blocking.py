"""The hub with no event loop running in this thread: real, blocking waits.

Green modules then behave exactly like the stdlib ones: the thread blocks in
the original ``select`` module (``poll`` where there is one) or the original
``time.sleep``, both taken here at import, before any patching could reach
them (the patcher never mutates the original modules anyway).
"""

from __future__ import annotations

import math
import select as _select
import time as _time

__all__ = ["sleep", "wait"]

#: The stdlib's sleep.
sleep = _time.sleep


def wait(readers: list[int], writers: list[int], timeout: float | None) -> bool:
    """Block until one descriptor is ready (True) or ``timeout`` passed (False)."""
    poll = getattr(_select, "poll", None)
    if poll is None:  # pragma: no cover - Windows
        r, w, x = _select.select(readers, writers, readers + writers, timeout)
        return bool(r or w or x)
    p = poll()
    masks: dict[int, int] = {}
    for fd in readers:
        masks[fd] = masks.get(fd, 0) | _select.POLLIN | _select.POLLPRI
    for fd in writers:
        masks[fd] = masks.get(fd, 0) | _select.POLLOUT
    for fd, mask in masks.items():
        p.register(fd, mask)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return bool(p.poll(ms))
