"""Starlette and FastAPI: ``def`` code runs in greenlets on the event loop, not in threads.

Starlette and FastAPI hand every piece of sync user code to anyio's thread
pool (40 threads by default): ``def`` endpoints, ``def`` dependencies
(``yield`` ones included), sync background tasks, sync exception handlers,
sync iterators of a ``StreamingResponse``.  After :func:`install`, the same
code runs through :func:`greenbridge.async_` instead: in a pooled greenlet on
the event loop, in the request's own ``contextvars.Context``.  Green I/O in
that code (a patched driver, a library imported under
:func:`greenbridge.patch_blocking`) suspends only its request, so the number
of requests in flight is no longer bounded by the thread count, and
ContextVars set in ``def`` code are seen by the rest of the request, as after
a plain call.

What is replaced, and why it has to be.  Neither framework has a hook for
"how to run sync code": each module that needs it did
``from starlette.concurrency import run_in_threadpool`` (or
``iterate_in_threadpool``, or FastAPI's ``contextmanager_in_threadpool``) and
calls its own copy of the name.  :data:`PATCHES` is the one table of
(module, attribute, replacement) that :func:`install` sets and
:func:`uninstall` puts back; before touching anything, :func:`install` checks
that the installed versions are ones this module was tested with
(:data:`TESTED_VERSIONS`) and that every attribute still holds the framework's
own function, and raises :class:`UnsupportedVersion` otherwise.

Left in threads on purpose: the frameworks' own file-system and CPU work
(``UploadFile``'s async methods, ``StaticFiles``, ``FileResponse``, GZip
compression, the debug traceback page), which is blocking I/O that no green
module makes cooperative; and the public helpers themselves
(``starlette.concurrency.run_in_threadpool``, ``fastapi.concurrency.*``): code
that calls them asked for a thread.  :func:`run_in_greenlet`,
:func:`iterate_in_greenlet` and :func:`contextmanager_in_greenlet` are the
green drop-ins for them.

One timing rule: Starlette binds a plain ``Route``'s ``def`` endpoint to the
thread pool when the ``Route`` is created, so call :func:`install` before
building the app's routes (FastAPI's routes choose at each request, either
order works for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

try:
    import anyio
    import starlette
    from anyio.lowlevel import checkpoint
except ImportError as exc:  # pragma: no cover - exercised only without Starlette
    raise ImportError(
        "greenbridge.integrations.starlette needs Starlette (FastAPI brings it): "
        "install it with `pip install 'greenbridge[starlette]'`",
        name=exc.name,
    ) from exc

from .._bridge import async_
from .._detector import BlockingReport, detect_blocking
from ._versions import check_release, release

__all__ = [
    "PATCHES",
    "TESTED_VERSIONS",
    "Patch",
    "UnsupportedVersion",
    "contextmanager_in_greenlet",
    "install",
    "installed",
    "iterate_in_greenlet",
    "run_in_greenlet",
    "uninstall",
]

T = TypeVar("T")

#: The oldest and newest (major, minor) release of each framework this module
#: was tested with; :func:`install` refuses any other.
TESTED_VERSIONS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "starlette": ((0, 38), (1, 10)),
    "fastapi": ((0, 115), (0, 165)),
}


class UnsupportedVersion(RuntimeError):
    """:func:`install` met a framework version (or layout) it was not tested with."""


# ---------------------------------------------------------------- the green runners

_DONE = object()  # what next() returns at the end of an iterator


def _call(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    return fn(*args, **kwargs)


# One coroutine function made once (not one async_() wrapper per call): the
# caller's Context is used as is, so ContextVars set by ``fn`` stay set.
_green_call = async_(_call)

# Set by install(detect_blocking=...): called before each green run, it starts
# a detector on the running loop the first time code runs there.
_watch: Callable[[], None] | None = None


async def run_in_greenlet(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ``func(*args, **kwargs)`` in a greenlet on the event loop; its result.

    The green drop-in for ``starlette.concurrency.run_in_threadpool``: the
    call runs in the caller's Context (ContextVars it sets stay set) and green
    I/O inside it suspends only this call.
    """
    if _watch is not None:
        _watch()
    return await _green_call(func, args, kwargs)


async def iterate_in_greenlet(iterable: Iterable[T]) -> AsyncGenerator[T, None]:
    """Iterate a sync iterable with each ``next()`` in a greenlet on the loop.

    The green drop-in for ``starlette.concurrency.iterate_in_threadpool``.
    The next item is asked for only when the consumer wants it (a
    ``StreamingResponse`` asks after the previous chunk was sent: back-pressure).
    A cancellation (the client went away) reaches a ``next()`` that waits
    green as ``CancelledError`` raised in the iterator; under anyio's cancel
    scopes (Starlette's) every later wait is cancelled as well, so green I/O
    in a generator's ``finally`` needs ``with anyio.CancelScope(shield=True):``.
    When the iteration ends for any reason, an iterator with a ``close()``
    method (a generator, a file) is closed, in a greenlet as well and shielded
    from cancellation, so the ``finally`` blocks of a generator run, green,
    when the client goes away.
    """
    iterator = iter(iterable)
    try:
        while True:
            # One turn of the loop per item, as the thread hop gave: an
            # iterator that never waits, sent to a client that went away (the
            # server drops the chunks without waiting), would otherwise spin
            # without letting the disconnect be noticed.
            await checkpoint()
            if _watch is not None:
                _watch()
            item = await _green_call(next, (iterator, _DONE), {})
            if item is _DONE:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            # Shielded, as the teardown of a yield dependency: a cancelled
            # response (the client went away) still lets the generator's
            # finally blocks do their green I/O to the end.
            with anyio.CancelScope(shield=True):
                await _green_call(close, (), {})


@contextlib.asynccontextmanager
async def contextmanager_in_greenlet(cm: AbstractContextManager[T]) -> AsyncIterator[T]:
    """Use a sync context manager from async code, its methods run in greenlets.

    The green drop-in for ``fastapi.concurrency.contextmanager_in_threadpool``
    (what runs a ``def`` dependency with ``yield``).  As there, ``__exit__``
    runs only after ``__enter__`` succeeded, is shielded from cancellation
    (the teardown of a cancelled request still runs to its end) and sees the
    exception that left the block; if it returns true, the exception is
    swallowed.
    """
    value = await run_in_greenlet(cm.__enter__)
    try:
        yield value
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            swallowed = await run_in_greenlet(cm.__exit__, type(exc), exc, exc.__traceback__)
        if not swallowed:
            raise
    else:
        with anyio.CancelScope(shield=True):
            await run_in_greenlet(cm.__exit__, None, None, None)


def _green_unless(
    keep_in_thread: Callable[[Callable[..., Any]], bool],
    original: Callable[..., Any],
) -> Callable[..., Any]:
    """A ``run_in_threadpool`` for a module that also hands the framework's own file I/O to it."""

    async def run_in_threadpool(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if keep_in_thread(func):
            return await original(func, *args, **kwargs)  # type: ignore[no-any-return]
        return await run_in_greenlet(func, *args, **kwargs)

    run_in_threadpool.__qualname__ = "green_run_in_threadpool"
    return run_in_threadpool


def _is_method(func: Callable[..., Any], name: str, module: str, cls: str) -> bool:
    """``func`` is the bound method ``name`` of an instance of ``module.cls``.

    The name is compared first: the calls of user code (every ``def``
    endpoint) pay one ``getattr``.
    """
    if getattr(func, "__name__", None) != name:
        return False
    defined_in = sys.modules.get(module)  # (not imported: func cannot be one of its methods)
    return defined_in is not None and isinstance(
        getattr(func, "__self__", None), getattr(defined_in, cls)
    )


def _is_static_files_lookup(func: Callable[..., Any]) -> bool:
    """``StaticFiles.lookup_path``: file-system calls (FastAPI's frontend routes)."""
    return _is_method(func, "lookup_path", "starlette.staticfiles", "StaticFiles")


def _is_debug_page(func: Callable[..., Any]) -> bool:
    """``ServerErrorMiddleware.debug_response``: reads source files for the traceback page."""
    errors = "starlette.middleware.errors"
    return _is_method(func, "debug_response", errors, "ServerErrorMiddleware")


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Patch:
    """One framework attribute that :func:`install` replaces.

    Attributes:
        module: the module whose global is replaced (where the name is looked up).
        attribute: the global's name.
        expected: ``"module:name"`` of the framework function it must hold
            before :func:`install` (else the layout is not the tested one).
        what: the sync code that this makes green (for the docs and errors).
        optional: the attribute is absent from older tested releases (they
            lack the feature); when present it must still be ``expected``.
    """

    module: str
    attribute: str
    expected: str
    what: str
    optional: bool = False


_RUN = "starlette.concurrency:run_in_threadpool"
_ITERATE = "starlette.concurrency:iterate_in_threadpool"
_CONTEXT = "fastapi.concurrency:contextmanager_in_threadpool"

#: Every replacement, in one place.  The FastAPI rows apply when FastAPI is
#: installed.
PATCHES: tuple[Patch, ...] = (
    Patch("starlette.routing", "run_in_threadpool", _RUN, "def endpoints of Route"),
    Patch("starlette.endpoints", "run_in_threadpool", _RUN, "def methods of HTTPEndpoint"),
    Patch("starlette.background", "run_in_threadpool", _RUN, "sync background tasks"),
    Patch("starlette._exception_handler", "run_in_threadpool", _RUN, "def exception handlers"),
    Patch("starlette.middleware.errors", "run_in_threadpool", _RUN, "def 500 handlers"),
    Patch("starlette.responses", "iterate_in_threadpool", _ITERATE, "StreamingResponse"),
    Patch("fastapi.routing", "run_in_threadpool", _RUN, "def path operations"),
    Patch(
        "fastapi.routing",
        "iterate_in_threadpool",
        _ITERATE,
        "def server-sent-event generators",
        optional=True,
    ),
    Patch("fastapi.dependencies.utils", "run_in_threadpool", _RUN, "def dependencies"),
    Patch(
        "fastapi.dependencies.utils",
        "contextmanager_in_threadpool",
        _CONTEXT,
        "def dependencies with yield",
    ),
)

# Which rows share a module with the framework's own file I/O, which stays in
# a thread: the predicate says which calls.
_KEEP_IN_THREAD: dict[tuple[str, str], Callable[[Callable[..., Any]], bool]] = {
    ("fastapi.routing", "run_in_threadpool"): _is_static_files_lookup,
    ("starlette.middleware.errors", "run_in_threadpool"): _is_debug_page,
}

_REPLACEMENTS: dict[str, Callable[..., Any]] = {
    _RUN: run_in_greenlet,
    _ITERATE: iterate_in_greenlet,
    _CONTEXT: contextmanager_in_greenlet,
}

# (module object, attribute, original) of what install() replaced.
_saved: list[tuple[Any, str, Any]] = []
_lock = threading.Lock()


def _version(text: str) -> tuple[int, int]:
    return release(text, UnsupportedVersion)


def _check_version(name: str, version: str) -> None:
    check_release("starlette", name, version, TESTED_VERSIONS, UnsupportedVersion)


def _resolve(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _plan() -> list[tuple[Any, str, Any, Any]]:
    """(module, attribute, original, replacement) for every row; raises if anything is off."""
    _check_version("starlette", starlette.__version__)
    fastapi: Any = None
    with contextlib.suppress(ImportError):
        fastapi = importlib.import_module("fastapi")
    if fastapi is not None:
        _check_version("fastapi", fastapi.__version__)
    plan = []
    for patch in PATCHES:
        if patch.module.startswith("fastapi") and fastapi is None:
            continue
        module = importlib.import_module(patch.module)
        expected = _resolve(patch.expected)
        current = getattr(module, patch.attribute, None)
        if current is None and patch.optional:
            continue
        if current is not expected:
            raise UnsupportedVersion(
                f"{patch.module}.{patch.attribute} is {current!r}, not {patch.expected} "
                f"as in the tested releases (starlette {starlette.__version__}"
                + (f", fastapi {fastapi.__version__}" if fastapi is not None else "")
                + "): something else replaced it, or this release changed the layout"
            )
        replacement = _REPLACEMENTS[patch.expected]
        keep = _KEEP_IN_THREAD.get((patch.module, patch.attribute))
        if keep is not None:
            replacement = _green_unless(keep, current)
        plan.append((module, patch.attribute, current, replacement))
    return plan


# ---------------------------------------------------------------- blocking detection


def _watcher(
    threshold: float, callback: Callable[[BlockingReport], object] | None
) -> Callable[[], None]:
    """What ``_watch`` becomes: one detector per running loop, started on first use."""
    detectors: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
    started = _started_detectors

    def watch() -> None:
        try:
            key: Any = asyncio.get_running_loop()
        except RuntimeError:  # trio (greenbridge's trio support)
            trio = sys.modules.get("trio")
            if trio is None:
                return
            key = trio.lowlevel.current_root_task()
        detector = detectors.get(key)
        if detector is not None and detector.active:
            return
        detectors[key] = detector = detect_blocking(threshold, callback)
        # (a detector stops itself when its loop is closed: drop those)
        started[:] = [d for d in started if d.active]
        started.append(detector)

    return watch


_started_detectors: list[Any] = []


# ---------------------------------------------------------------- install


def install(
    *,
    detect_blocking: float | bool | None = None,
    on_blocking: Callable[[BlockingReport], object] | None = None,
) -> None:
    """Run Starlette's and FastAPI's sync user code in greenlets on the event loop.

    From now on ``def`` endpoints (``Route``, ``HTTPEndpoint`` methods,
    FastAPI path operations and server-sent-event generators), ``def``
    dependencies with or without ``yield``, sync background tasks, ``def``
    exception handlers and sync iterators given to ``StreamingResponse`` run
    through :func:`greenbridge.async_` (see :data:`PATCHES`).  Calling it
    again changes only the detector settings.

    Call it before building the app (Starlette picks the runner of a plain
    ``Route``'s endpoint when the route is created).

    Args:
        detect_blocking: find sync code that blocks the loop instead of
            waiting green: a threshold in seconds (``True``: 0.1), or
            ``None``/``False`` for none.  A :func:`greenbridge.detect_blocking`
            detector starts on each loop the first time green code runs there;
            it logs each stall (logger ``greenbridge.detector``) with the stack
            of the blocking line.
        on_blocking: also called with each :class:`greenbridge.BlockingReport`.

    Raises:
        UnsupportedVersion: Starlette or FastAPI is a version this module was
            not tested with, or a function to replace is not the framework's
            own (another library replaced it); nothing is changed then.
    """
    global _watch
    if detect_blocking is True:
        threshold: float | None = 0.1
    elif detect_blocking is None or detect_blocking is False:
        threshold = None
    else:
        threshold = float(detect_blocking)
        if not threshold > 0:
            raise ValueError(f"detect_blocking must be > 0 seconds, got {detect_blocking!r}")
    with _lock:
        if not _saved:
            plan = _plan()
            for module, attribute, original, replacement in plan:
                setattr(module, attribute, replacement)
                _saved.append((module, attribute, original))
        _stop_detectors()
        _watch = None if threshold is None else _watcher(threshold, on_blocking)


def _stop_detectors() -> None:
    while _started_detectors:
        _started_detectors.pop().stop()


def uninstall() -> None:
    """Undo :func:`install`: put back every original function and stop the detectors.

    Plain Starlette ``Route`` objects created while installed keep running
    their ``def`` endpoint green (their runner was chosen at creation).
    Does nothing if not installed.
    """
    global _watch
    with _lock:
        while _saved:
            module, attribute, original = _saved.pop()
            setattr(module, attribute, original)
        _watch = None
        _stop_detectors()


def installed() -> bool:
    """True between :func:`install` and :func:`uninstall`."""
    return bool(_saved)
