"""Signal handlers that run in the green thread waiting in the hub.

A Python signal handler installed through the green ``signal`` module runs
in the green thread that installed it (the stdlib runs handlers in the main
thread, the only one allowed to install them).  When the signal arrives
while the loop waits in its selector, the hub wakes that green thread out of
its wait (:func:`deliver_signal`); the handler runs there and its exception
is raised by the blocking call that was waiting (``recv``, ``select``,
``sleep``...); when the handler returns normally the wait resumes with what
is left of its timeout (PEP 475).  The wait's side of this is a few lines of
`greenbridge._hub._asyncio.wait`, woken with a `SignalArrived` (a wrapper
function around every wait would cost the green socket's fast path a frame).

Only the asyncio backend delivers signals this way: `waiting` records its
waits, which this module knows only through the small `Interruptible`
protocol, so it sits below the backends and imports none of them.
"""

from __future__ import annotations

from typing import Any, Protocol

from .._where import asyncio_loop

__all__ = ["Interruptible", "SignalArrived", "deliver_signal", "waiting"]


class Interruptible(Protocol):
    """What a hub wait offers to signal delivery (see `greenbridge._hub._asyncio.Wait`)."""

    #: True until the wait was woken (the first wake wins).
    armed: bool
    #: A signal delivered to the waiting greenlet: it wins over any other wake-up.
    signal: BaseException | None

    def wake(self, value: Any) -> None: ...


#: greenlet -> its wait in the hub, while it waits.
waiting: dict[Any, Interruptible] = {}


class SignalArrived(BaseException):
    """What a hub wait is woken with: run ``handler(signum, frame)`` in the waiting greenlet.

    A BaseException, so that a wait that does not know it (woken by a later
    change of this design) raises it rather than returning it.
    """

    def __init__(self, handler: Any, signum: int, frame: Any) -> None:
        super().__init__(signum)
        self.handler = handler
        self.signum = signum
        self.frame = frame

    def run(self) -> None:
        """Run the handler (in the greenlet whose wait it interrupted)."""
        self.handler(self.signum, self.frame)


def deliver_signal(target: Any, handler: Any, signum: int, frame: Any) -> bool:
    """Make greenlet ``target``, waiting in the hub, run ``handler(signum, frame)``.

    Returns False (and does nothing) when ``target`` is not waiting in the hub
    on an asyncio loop; the caller then runs the handler where it is.
    """
    waiter = waiting.get(target)
    if waiter is None or not waiter.armed or waiter.signal is not None:
        return False
    loop = asyncio_loop()
    if loop is None:
        return False
    waiter.signal = SignalArrived(handler, signum, frame)
    # Wake it from the loop (this runs between two bytecodes of any greenlet);
    # that also ends the selector's wait, which restarts after a handler (PEP 475).
    loop.call_soon_threadsafe(waiter.wake, None)
    return True
