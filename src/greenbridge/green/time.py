"""Green ``time``: everything the stdlib ``time`` module exports, with a cooperative ``sleep``.

``sleep(s)`` under greenbridge suspends only the calling greenlet (``sleep(0)``
gives the event loop one turn); with no loop running in the thread it blocks
exactly like ``time.sleep``.
"""

from __future__ import annotations

from .._patcher import original
from . import _util

_util.reexport(globals(), original("time"))

# The hub's sleep is this module's (a wrapper would cost a frame per sleep of
# every green thread), imported after the stdlib's names so that it replaces
# theirs; it goes by this module's name, as patched code sees it.
from .._hub import sleep  # noqa: E402

sleep.__module__ = __name__
