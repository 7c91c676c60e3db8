"""Where is the calling code running?  The one answer every module uses.

Green I/O, green locks, the drivers, the detector and re-entrant
``asyncio.run`` all need the same two facts about the caller:

* which event loop, if any, runs in this thread: none, an asyncio (or
  uvloop) loop, or trio;
* whether the calling greenlet can be suspended without stopping that loop:
  true in greenbridge's worker greenlets (sync code started by ``async_``,
  ``spawn`` or a portal) and in SQLAlchemy's ``greenlet_spawn`` greenlets,
  which hand awaitables to their own driver.

:func:`where` combines them into one of four answers (`Where`); the
cheaper :func:`can_suspend` and :func:`asyncio_loop` serve hot paths that
need only one of the two facts.  This module sits at the bottom of the
package with `_errors`: it imports nothing else from greenbridge.  The
trampoline's worker class derives from `BridgeGreenlet`, which is how this
module recognises it without importing it.
"""

from __future__ import annotations

import asyncio
import enum
import sys

from greenlet import getcurrent, greenlet

__all__ = [
    "ASYNCIO",
    "NO_LOOP",
    "TRIO",
    "UNBRIDGED",
    "BridgeGreenlet",
    "Where",
    "asyncio_loop",
    "can_suspend",
    "running_loop",
    "trio_running",
    "where",
]

#: The running asyncio loop of this thread, or None (never raises).
asyncio_loop = asyncio.events._get_running_loop


class BridgeGreenlet(greenlet):
    """Base class of the greenlets in which greenbridge can suspend sync code."""

    __slots__ = ()


class Where(enum.Enum):
    """Where the caller runs, as far as waiting is concerned."""

    #: No event loop runs in this thread: wait for real (block the thread).
    NO_LOOP = "no loop"
    #: Suspendable code under a running asyncio (or uvloop) loop.
    ASYNCIO = "asyncio"
    #: Suspendable code under trio.
    TRIO = "trio"
    #: A loop runs in this thread but the caller cannot be suspended (a
    #: coroutine, a loop callback, or plain sync code they call): waiting
    #: here would stop the loop.
    UNBRIDGED = "unbridged"


# The members as module constants, for where() and its callers' hot paths: a
# member looked up on its enum class costs about 150 ns on Python 3.11, more
# than the rest of the classification.
NO_LOOP = Where.NO_LOOP
ASYNCIO = Where.ASYNCIO
TRIO = Where.TRIO
UNBRIDGED = Where.UNBRIDGED


def can_suspend() -> bool:
    """Return true when waiting here may suspend only the calling greenlet."""
    current = getcurrent()
    return isinstance(current, BridgeGreenlet) or bool(
        getattr(current, "__sqlalchemy_greenlet_provider__", False)
    )


def trio_running() -> bool:
    """Return true when trio runs in this thread (in a task or not)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def running_loop() -> object | None:
    """The running asyncio loop, else trio's token, else None."""
    loop = asyncio_loop()
    if loop is not None:
        return loop
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return trio.lowlevel.current_trio_token()  # type: ignore[no-any-return]
        except RuntimeError:
            pass
    return None


def where() -> Where:
    """Classify the caller (see `Where`)."""
    if can_suspend():
        if asyncio_loop() is not None:
            return ASYNCIO
        if trio_running():
            return TRIO
        return NO_LOOP
    if asyncio_loop() is not None or trio_running():
        return UNBRIDGED
    return NO_LOOP
