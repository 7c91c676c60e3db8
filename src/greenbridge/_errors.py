"""The exceptions greenbridge raises for misuse, and the texts that name the fix.

The bottom layer: it imports nothing from the package, so every other module
can raise these without creating an import cycle.
"""

from __future__ import annotations

__all__ = ["MissingBridge", "UnsupportedLoop", "missing_bridge", "unsupported_loop"]


class MissingBridge(RuntimeError):
    """`await_` was called where nothing can drive the awaitable.

    Raised when an event loop is running in this thread but the calling sync
    code does not run under greenbridge (it was not started by
    `async_` / `spawn`, and its task has no portal).  The message
    names the ways to fix it.
    """


class UnsupportedLoop(RuntimeError):
    """The running event loop cannot watch file descriptors (e.g. Windows' Proactor loop)."""


_MISSING_ASYNCIO = (
    "await_() was called from sync code that is not running under greenbridge, "
    "while an event loop is running in this thread. Fix it by calling the sync "
    "function through greenbridge: `await greenbridge.async_(fn)(...)` or "
    "`greenbridge.spawn(fn, ...)`; or give the calling task a portal with "
    "`await greenbridge.ensure_portal()` (or every task of the loop with "
    "`greenbridge.install_portal_factory()`). await_() cannot run in a loop "
    "callback."
)

# Under trio there is no spawn() and no task factory: name trio's fixes.
_MISSING_TRIO = (
    "await_() was called from sync code that is not running under greenbridge, "
    "while trio is running in this thread. Fix it by calling the sync function "
    "through greenbridge: `await greenbridge.async_(fn)(...)`, or "
    "`nursery.start_soon(greenbridge.async_(fn), ...)` for a concurrent task; or "
    "give the calling task a portal with `await greenbridge.ensure_portal()`. "
    "await_() cannot run in a trio system task or outside a task."
)

_UNSUPPORTED = (
    "the running event loop ({loop!r}) cannot watch file descriptors "
    "(loop.add_reader is not implemented), so green I/O cannot wait on it. "
    "Use a selector-based loop: asyncio.SelectorEventLoop (on Windows set "
    "asyncio.WindowsSelectorEventLoopPolicy()), or uvloop, or trio."
)


def missing_bridge(trio: bool) -> MissingBridge:
    """The MissingBridge to raise, worded for the loop family that runs."""
    return MissingBridge(_MISSING_TRIO if trio else _MISSING_ASYNCIO)


def unsupported_loop(loop: object) -> UnsupportedLoop:
    """The UnsupportedLoop to raise for ``loop``."""
    return UnsupportedLoop(_UNSUPPORTED.format(loop=loop))
