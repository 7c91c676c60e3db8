"""Green ``time``: everything the stdlib ``time`` module exports, with a cooperative ``sleep``.

``sleep(s)`` under greenbridge suspends only the calling greenlet (``sleep(0)``
gives the event loop one turn); with no loop running in the thread it blocks
exactly like ``time.sleep``.
"""

from __future__ import annotations

from .._hub import sleep as _hub_sleep
from .._patcher import original

_time = original("time")

for _name in dir(_time):
    if not _name.startswith("__"):
        globals()[_name] = getattr(_time, _name)
del _name

__doc__ = _time.__doc__ or __doc__


def sleep(secs: float, /) -> None:
    """Sleep ``secs`` seconds; under greenbridge only this greenlet waits."""
    _hub_sleep(secs)
