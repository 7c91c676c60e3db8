"""Green ``time``: everything the stdlib ``time`` module exports, with a cooperative ``sleep``.

``sleep(s)`` under greenbridge suspends only the calling greenlet (``sleep(0)``
gives the event loop one turn); with no loop running in the thread it blocks
exactly like ``time.sleep``.
"""

from __future__ import annotations

from .._hub import sleep as _hub_sleep
from .._patcher import original
from . import _util

_util.reexport(globals(), original("time"))


def sleep(secs: float, /) -> None:
    """Sleep ``secs`` seconds; under greenbridge only this greenlet waits."""
    _hub_sleep(secs)
