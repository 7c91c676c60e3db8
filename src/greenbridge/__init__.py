"""greenbridge: sync and async code calling each other on one event loop, with greenlets.

Public names only; see the documentation for the design.
"""

from ._adapters import SyncContextManager, SyncIterator, sync_cm, sync_iter
from ._bridge import async_, await_, spawn
from ._detector import BlockingDetector, BlockingReport, detect_blocking
from ._errors import MissingBridge
from ._offload import OffloadPool, offload, offload_async
from ._patcher import monkey_patch, patch_blocking
from ._portal import ensure_portal, has_portal, install_portal_factory
from ._private_loop import close_private_loop
from ._reentrant import ReentrantRun, allow_reentrant_run
from .drivers import patch_psycopg, patch_psycopg2

__version__ = "0.1.0"

__all__ = [
    "BlockingDetector",
    "BlockingReport",
    "MissingBridge",
    "ReentrantRun",
    "SyncContextManager",
    "SyncIterator",
    "OffloadPool",
    "__version__",
    "allow_reentrant_run",
    "async_",
    "await_",
    "close_private_loop",
    "detect_blocking",
    "ensure_portal",
    "has_portal",
    "install_portal_factory",
    "monkey_patch",
    "patch_blocking",
    "offload",
    "offload_async",
    "patch_psycopg",
    "patch_psycopg2",
    "spawn",
    "sync_cm",
    "sync_iter",
]
