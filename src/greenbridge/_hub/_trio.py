"""The hub's trio backend: waits are trio's own, awaited through the bridge.

``trio.lowlevel.wait_readable``/``wait_writable`` in a cancel scope that
carries the timeout, awaited with `greenbridge._bridge.await_` (the worker's
task waits on trio's trap).  trio allows one reader and one writer per
descriptor and raises ``trio.BusyResourceError`` otherwise.  trio is imported
when a wait runs: only code running under trio gets here.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Sequence

# The bridge's public entry point (the lead rewires this block when it moves).
from .._bridge import await_

__all__ = ["give_turn", "notify_closing", "sleep", "wait"]


def wait(
    readers: Sequence[int], writers: Sequence[int], timeout: float | None, shield: bool = False
) -> bool:
    """Wait until one descriptor is ready (True) or ``timeout`` passed (False).

    ``shield``: wait in a shielded cancel scope, so that a cancellation of
    the caller's scope does not interrupt it (the drivers' short wait for the
    server to acknowledge a cancelled query: under trio every wait inside a
    cancelled scope raises ``Cancelled`` again).
    """
    return await_(_wait(readers, writers, timeout, shield))


async def _wait(
    readers: Sequence[int], writers: Sequence[int], timeout: float | None, shield: bool
) -> bool:
    import trio

    deadline = math.inf if timeout is None else trio.current_time() + timeout
    with trio.CancelScope(deadline=deadline, shield=shield) as scope:
        if len(readers) + len(writers) == 1:
            if readers:
                await trio.lowlevel.wait_readable(readers[0])
            else:
                await trio.lowlevel.wait_writable(writers[0])
        else:

            async def one(fd: int, readable: bool, done: trio.CancelScope) -> None:
                if readable:
                    await trio.lowlevel.wait_readable(fd)
                else:
                    await trio.lowlevel.wait_writable(fd)
                done.cancel()

            async with trio.open_nursery() as nursery:
                for fd in readers:
                    nursery.start_soon(one, fd, True, nursery.cancel_scope)
                for fd in writers:
                    nursery.start_soon(one, fd, False, nursery.cancel_scope)
    return not scope.cancelled_caught


def sleep(seconds: float) -> None:
    """Sleep ``seconds`` (0: one checkpoint, other tasks run)."""
    import trio

    await_(trio.sleep(seconds))


def give_turn() -> None:
    """Let trio run its other tasks before going on."""
    sleep(0)


def notify_closing(fd: int) -> None:
    """Wake trio's waits on ``fd`` (they raise ``ClosedResourceError``); nothing outside trio."""
    trio = sys.modules.get("trio")
    if trio is None:
        return
    with contextlib.suppress(RuntimeError):  # not in trio
        trio.lowlevel.notify_closing(fd)
