"""Waiting helpers shared by the database drivers.

The drivers wait through the hub (:mod:`greenbridge._hub`), with one extra:
a *shielded* mode for the short wait after a cancellation, while the server
acknowledges that a query was cancelled.  Under asyncio a cancellation is
raised once, so the hub's waits work as usual afterwards; under trio every
wait inside a cancelled scope raises ``Cancelled`` again, so the shielded
mode asks the hub for a wait in a shielded cancel scope (``shield=True``).
"""

from __future__ import annotations

import contextlib
import contextvars
import select  # imported with greenbridge, before any patching: the original
from collections.abc import Iterator

from .. import _hub

#: How long (seconds) to wait for the server to end a cancelled query before
#: giving up on the connection.
CANCEL_TIMEOUT = 5.0

_shielded: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "greenbridge_drivers_shielded", default=False
)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Within this block, driver waits are not interrupted by a trio cancel scope."""
    token = _shielded.set(True)
    try:
        yield
    finally:
        _shielded.reset(token)


def is_shielded() -> bool:
    """True inside :func:`shielded`."""
    return _shielded.get()


def wait(fd: int, readable: bool, writable: bool, timeout: float | None = None) -> bool:
    """Wait until ``fd`` is readable and/or writable; False on timeout.

    The waits name no owner (``greenbridge._hub.wait_owned``): the drivers'
    libraries close their sockets without telling the hub, so a registration
    kept on the loop for the next wait could outlive the descriptor.
    """
    shield = _shielded.get()
    if readable and writable:
        return _hub.wait_any([fd], [fd], timeout, shield=shield)
    if readable:
        return _hub.wait_any([fd], [], timeout, shield=shield)
    return _hub.wait_any([], [fd], timeout, shield=shield)


def ready_now(fd: int) -> tuple[bool, bool]:
    """(readable, writable) for ``fd`` right now, without waiting."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLOUT)
    events = 0
    for _, ev in poller.poll(0):
        events |= ev
    readable = bool(events & (select.POLLIN | select.POLLERR | select.POLLHUP))
    writable = bool(events & (select.POLLOUT | select.POLLERR | select.POLLHUP))
    return readable, writable


def is_interruption(exc: BaseException) -> bool:
    """True for a cancellation or interrupt (not an ordinary error)."""
    return not isinstance(exc, Exception)
