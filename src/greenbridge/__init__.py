"""greenbridge: sync and async code calling each other on one event loop, with greenlets.

Public names only; see the documentation for the design.

Importing the package defines names and does nothing else.  It loads the
bridge itself (``async_``, ``await_``, ``spawn``, portals, the private loop);
every other part (the adapters, the blocking-call detector, offloading, the
patcher and its green modules, re-entrant ``asyncio.run``, the drivers) is
imported on first use of one of its names, through the module ``__getattr__``
below.  The one exception is opt-in: when the environment variable
``GREENBRIDGE_DETECT_BLOCKING`` is set, importing the package is the point
where it is honoured (see :mod:`greenbridge._detector`).
"""

from __future__ import annotations

import importlib as _importlib
import os as _os
from typing import TYPE_CHECKING, Any

from ._bridge import async_, await_, spawn
from ._errors import MissingBridge, UnsupportedLoop
from ._portal import ensure_portal, has_portal, install_portal_factory
from ._private_loop import close_private_loop

if TYPE_CHECKING:
    # What the lazy names below resolve to, for type checkers and IDEs.
    from ._adapters import SyncContextManager, SyncIterator, sync_cm, sync_iter
    from ._detector import (
        BlockingDetected,
        BlockingDetector,
        BlockingReport,
        assert_no_blocking,
        detect_blocking,
    )
    from ._offload import OffloadPool, offload, offload_async
    from ._patcher import (
        PatchWarning,
        green_module_names,
        is_patched,
        monkey_patch,
        original,
        patch_blocking,
    )
    from ._reentrant import ReentrantRun, allow_reentrant_run
    from ._stacks import SuspendedStack, dump_stacks, suspended_stacks
    from .drivers import patch_psycopg, patch_psycopg2

__version__ = "0.1.0"

__all__ = [
    "BlockingDetected",
    "BlockingDetector",
    "BlockingReport",
    "MissingBridge",
    "ReentrantRun",
    "SyncContextManager",
    "SuspendedStack",
    "SyncIterator",
    "OffloadPool",
    "PatchWarning",
    "UnsupportedLoop",
    "__version__",
    "allow_reentrant_run",
    "assert_no_blocking",
    "async_",
    "await_",
    "close_private_loop",
    "detect_blocking",
    "dump_stacks",
    "ensure_portal",
    "green_module_names",
    "has_portal",
    "install_portal_factory",
    "is_patched",
    "monkey_patch",
    "patch_blocking",
    "offload",
    "offload_async",
    "original",
    "patch_psycopg",
    "patch_psycopg2",
    "spawn",
    "suspended_stacks",
    "sync_cm",
    "sync_iter",
]

# Public name -> the module that defines it, imported on first access.  Keep
# in step with the TYPE_CHECKING imports above (tests/test_package_import.py checks).
_LAZY = {
    "SyncContextManager": "._adapters",
    "SyncIterator": "._adapters",
    "sync_cm": "._adapters",
    "sync_iter": "._adapters",
    "BlockingDetected": "._detector",
    "BlockingDetector": "._detector",
    "BlockingReport": "._detector",
    "assert_no_blocking": "._detector",
    "detect_blocking": "._detector",
    "SuspendedStack": "._stacks",
    "dump_stacks": "._stacks",
    "suspended_stacks": "._stacks",
    "OffloadPool": "._offload",
    "offload": "._offload",
    "offload_async": "._offload",
    "PatchWarning": "._patcher",
    "green_module_names": "._patcher",
    "is_patched": "._patcher",
    "monkey_patch": "._patcher",
    "original": "._patcher",
    "patch_blocking": "._patcher",
    "ReentrantRun": "._reentrant",
    "allow_reentrant_run": "._reentrant",
    "patch_psycopg": ".drivers",
    "patch_psycopg2": ".drivers",
}


if not TYPE_CHECKING:  # a type checker that saw it would accept any attribute name

    def __getattr__(name: str) -> Any:
        try:
            module = _LAZY[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        value = getattr(_importlib.import_module(module, __name__), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# Opt-in, and the only thing an import may do besides defining names: the
# blocking-call detector for every loop (docs/detector.md).  The variable is
# tested here so that, unset, the detector is not even imported.
if _os.environ.get("GREENBRIDGE_DETECT_BLOCKING", "").strip():
    from ._detector import watch_from_environment as _watch_from_environment

    _watch_from_environment()
