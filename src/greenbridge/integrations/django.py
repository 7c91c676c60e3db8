"""Django under ASGI: sync views, sync middleware and the ORM in greenlets on the event loop.

Django's ASGI handler runs every piece of sync code through asgiref's
``sync_to_async(thread_sensitive=True)``: sync middleware, sync views, the
receivers of ``request_started``/``request_finished``, ``response.close()``,
the exception handlers.  Each request gets an executor thread of its own and
hops between the loop and that thread at every sync/async boundary.
:func:`get_asgi_application` returns a :class:`GreenASGIHandler` instead,
under which the same calls run through :func:`greenbridge.async_`: in a pooled
greenlet on the loop, in the request's own `contextvars.Context`.  Async
views and async middleware stay native coroutines.

Four process-wide changes make that work (:func:`install`, called by
:func:`get_asgi_application`; :func:`uninstall` undoes them).  Each one
changes nothing for code outside a :class:`GreenASGIHandler` request, so the
stock ``get_asgi_application()``, ``runserver``, WSGI, management commands
and Django's test clients keep Django's behaviour in the same process.

1. **Where sync code runs.**  Django's modules each did ``from asgiref.sync
   import sync_to_async, async_to_sync`` and call their own copy of the
   name.  Those globals (in every loaded ``django.*`` module: the handlers,
   ``MiddlewareMixin``, signals, sessions, the async ORM methods...) are
   replaced by routers that read one `contextvars.ContextVar`, set by
   :class:`GreenASGIHandler` for its requests (and while it loads its
   middleware): inside, they return this module's :func:`sync_to_async` and
   :func:`async_to_sync`; anywhere else, asgiref's functions, called as
   before.  Modules imported later (a URLconf importing views on the first
   request) are patched at the start of the next request: the handler
   compares ``len(sys.modules)`` with the count at the last scan.
2. **The ORM's async-safety guard.**  ``django.utils.asyncio.async_unsafe``
   raises ``SynchronousOnlyOperation`` when ``get_running_loop()`` finds a
   loop.  Its module's ``get_running_loop`` becomes a function that reports
   "no running loop" in a greenbridge worker greenlet (bridged sync code,
   which never runs in parallel with the loop) and asks asyncio everywhere
   else, so a plain coroutine still gets the exception.
   ``DJANGO_ALLOW_ASYNC_UNSAFE`` is never set.
3. **One set of connections per request.**  ``django.db.connections`` keeps
   connections in an asgiref ``Local(thread_critical=True)``: one per OS
   thread, which every greenlet on the loop would share.  Its store is
   replaced by one that, inside a :class:`GreenASGIHandler` request, keeps
   the request's own connections (so transactions are isolated between
   concurrent requests, as between threads), and in other bridged code
   (``async_`` outside a request) keeps them per green thread (the asyncio
   or trio task).  Everything else uses Django's ``Local`` as before.  The
   request is the unit, not the task: Django's handler runs the view in a
   task of its own and the ``request_started``/``request_finished`` signals
   in another, and the request's connections must be the same in both.
4. **Drivers.** :func:`get_asgi_application` (not :func:`install`) patches
   the PostgreSQL driver Django uses (:func:`greenbridge.patch_psycopg` or
   :func:`greenbridge.patch_psycopg2`), and imports ``psycopg_pool`` under
   :func:`greenbridge.patch_blocking` when a database uses Django's pool, so
   that a request waiting for a free pooled connection suspends only itself.

At the end of a request, after ``request_finished`` ran Django's
``close_old_connections``, each connection still open in the request's store
is either closed or, when ``CONN_MAX_AGE`` allows it to live on, kept idle
for a later request on the same thread (see :class:`GreenASGIHandler`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import logging
import re
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, overload

from greenlet import getcurrent

try:
    import asgiref
    import asgiref.local
    import asgiref.sync
    import django
    from django.core.handlers.asgi import ASGIHandler
except ImportError as exc:  # pragma: no cover - exercised only without Django
    raise ImportError(
        "greenbridge.integrations.django needs Django and asgiref: "
        "install them with `pip install 'greenbridge[django]'`",
        name=exc.name,
    ) from exc

from .._bridge import async_, await_
from .._callables import is_async_callable
from .._patcher import original, patch_blocking
from .._where import ASYNCIO, TRIO, UNBRIDGED, BridgeGreenlet, where
from ..drivers import patch_psycopg, patch_psycopg2
from ..green._ident import thread_key

if sys.version_info >= (3, 10) or TYPE_CHECKING:
    from typing import ParamSpec

__all__ = [
    "TESTED_VERSIONS",
    "GreenASGIHandler",
    "UnsupportedVersion",
    "async_to_sync",
    "get_asgi_application",
    "install",
    "installed",
    "sync_to_async",
    "uninstall",
]

logger = logging.getLogger("greenbridge.django")

T = TypeVar("T")
if sys.version_info >= (3, 10) or TYPE_CHECKING:
    P = ParamSpec("P")
else:  # pragma: no cover - 3.9: annotations are strings, P is never evaluated
    P = TypeVar("P")

#: The oldest and newest (major, minor) release of Django and asgiref this
#: module was tested with; :func:`install` refuses any other.
TESTED_VERSIONS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "django": ((4, 2), (5, 2)),
    "asgiref": ((3, 6), (3, 13)),
}


class UnsupportedVersion(RuntimeError):
    """:func:`install` met a Django or asgiref version (or layout) it was not tested with."""


_get_ident = threading.get_ident
_real_get_running_loop = asyncio.get_running_loop
_asgiref_sync_to_async: Callable[..., Any] = asgiref.sync.sync_to_async
_asgiref_async_to_sync: Callable[..., Any] = asgiref.sync.async_to_sync


# ---------------------------------------------------------------- the drop-ins


def _call(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    return fn(*args, **kwargs)


# One coroutine function made once (not one async_() wrapper per call): the
# caller's Context is used as is, so ContextVars set by ``fn`` stay set.
_green_call = async_(_call)


def _green(func: Callable[P, T], context: contextvars.Context | None) -> Callable[P, Any]:
    """``func`` as a coroutine function that runs it in a greenlet (in ``context`` if given)."""
    if context is None:

        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            return await _green_call(func, args, kwargs)

    else:

        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            return await _green_call(context.run, (func, *args), kwargs)

    return run


@overload
def sync_to_async(
    func: Callable[P, T],
    *,
    thread_sensitive: bool = True,
    executor: ThreadPoolExecutor | None = None,
    context: contextvars.Context | None = None,
) -> Callable[P, Coroutine[Any, Any, T]]: ...


@overload
def sync_to_async(
    func: None = None,
    *,
    thread_sensitive: bool = True,
    executor: ThreadPoolExecutor | None = None,
    context: contextvars.Context | None = None,
) -> Callable[[Callable[P, T]], Callable[P, Coroutine[Any, Any, T]]]: ...


def sync_to_async(
    func: Callable[P, T] | None = None,
    *,
    thread_sensitive: bool = True,
    executor: ThreadPoolExecutor | None = None,
    context: contextvars.Context | None = None,
) -> Any:
    """asgiref's ``sync_to_async``, running ``func`` in a greenlet on the loop.

    Same signature and use (a call, or a decorator with or without
    arguments).  Calls do not run in a thread: each runs in a pooled
    greenlet on the event loop, so many run at once, and green I/O inside
    (a patched driver, a library imported under
    :func:`greenbridge.patch_blocking`) suspends only that call.  Blocking
    I/O that is not green blocks the loop: hand it to a thread
    (:func:`greenbridge.offload`, or asgiref's own function).

    Context variables: ``func`` runs in the caller's `contextvars.Context`
    itself (or in ``context`` when given), so values it sets are seen by the
    caller afterwards, as asgiref arranges by copying them back.

    Args:
        func: the sync function (None: return a decorator).
        thread_sensitive: accepted for compatibility and otherwise ignored:
            every call runs on the loop's thread, one greenlet at a time, so
            code that asgiref keeps on one thread is on one thread here too.
        executor: given (with ``thread_sensitive=False``), the call runs in
            that executor through asgiref, as the caller asked.
        context: the `contextvars.Context` to run ``func`` in.

    Raises:
        TypeError: ``func`` is not callable or is async, or ``executor`` was
            given with ``thread_sensitive=True`` (asgiref's errors).
    """
    if func is None:
        return lambda f: sync_to_async(
            f, thread_sensitive=thread_sensitive, executor=executor, context=context
        )
    if not callable(func) or is_async_callable(func):
        raise TypeError(
            "sync_to_async can only be applied to sync functions "
            f"(got {func!r}): await an async function directly"
        )
    if executor is not None:
        if thread_sensitive:
            raise TypeError("executor must not be set when thread_sensitive is True")
        return _asgiref_sync_to_async(func, thread_sensitive=False, executor=executor)
    return functools.wraps(func)(_green(func, context))


@overload
def async_to_sync(
    awaitable: Callable[P, Awaitable[T]], *, force_new_loop: bool = False
) -> Callable[P, T]: ...


@overload
def async_to_sync(
    awaitable: None = None, *, force_new_loop: bool = False
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, T]]: ...


def async_to_sync(
    awaitable: Callable[P, Awaitable[T]] | None = None, *, force_new_loop: bool = False
) -> Any:
    """asgiref's ``async_to_sync``, waiting with :func:`greenbridge.await_`.

    Same signature and use (a call, or a decorator).  Where the returned
    function is called decides how it waits:

    * in bridged sync code (a greenlet of :func:`sync_to_async`,
      :func:`greenbridge.async_`, a Django request under
      :class:`GreenASGIHandler`): the coroutine runs on the running loop
      and only the caller is suspended (asgiref would hop to the loop from
      an executor thread);
    * in a thread with no running loop: on greenbridge's private loop of
      that thread, which persists between calls (asgiref makes a loop per
      call);
    * in plain sync code called by a coroutine (a loop runs in this thread
      but the caller cannot be suspended): RuntimeError, as asgiref raises.

    With ``force_new_loop=True`` the coroutine runs on a new loop in a
    worker thread, as asgiref does, while a bridged caller is suspended
    (context variables it sets are then not copied back).
    Context variables: the coroutine runs in the caller's Context, so
    values it sets are seen by the caller afterwards.

    Raises:
        TypeError: ``awaitable`` is not callable.
        RuntimeError: called from plain sync code on a running loop.
    """
    if awaitable is None:
        return lambda f: async_to_sync(f, force_new_loop=force_new_loop)
    if not callable(awaitable):
        raise TypeError(f"async_to_sync expects an async function, not {awaitable!r}")
    fn = awaitable

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        place = where()
        if place is UNBRIDGED and not force_new_loop:
            raise RuntimeError(
                "You cannot use AsyncToSync in the same thread as an async event loop - "
                "just await the async function directly."
            )
        if force_new_loop:
            context = contextvars.copy_context()

            async def in_new_loop() -> T:
                return await fn(*args, **kwargs)

            def new_loop() -> T:
                return context.run(asyncio.run, in_new_loop())

            if place is ASYNCIO or place is TRIO:
                return _run_in_thread(new_loop)
            with ThreadPoolExecutor(max_workers=1) as pool:
                return pool.submit(new_loop).result()
        return await_(fn(*args, **kwargs))

    return run


def _run_in_thread(fn: Callable[[], T]) -> T:
    """From bridged code: run ``fn`` in a new thread, suspending only the caller."""

    async def wait() -> T:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1) as pool:
            return await loop.run_in_executor(pool, fn)

    return await_(wait())


# ---------------------------------------------------------------- the request scope


class _Scope:
    """One request of a GreenASGIHandler: its thread and its own connections."""

    __slots__ = ("connections", "thread")

    def __init__(self) -> None:
        self.thread = _get_ident()
        self.connections: dict[str, Any] = {}


# Set by GreenASGIHandler for its requests (and while it loads middleware).
_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "greenbridge_django_request", default=None
)


def _inside() -> bool:
    """True inside a GreenASGIHandler request, on the thread that serves it."""
    scope = _scope.get()
    return scope is not None and scope.thread == _get_ident()


def _routed_sync_to_async(func: Any = None, **options: Any) -> Any:
    if _inside():
        return sync_to_async(func, **options)
    return _asgiref_sync_to_async(func, **options)


def _routed_async_to_sync(awaitable: Any = None, **options: Any) -> Any:
    if _inside():
        return async_to_sync(awaitable, **options)
    return _asgiref_async_to_sync(awaitable, **options)


_ROUTERS = {"sync_to_async": _routed_sync_to_async, "async_to_sync": _routed_async_to_sync}
_ORIGINALS = {"sync_to_async": _asgiref_sync_to_async, "async_to_sync": _asgiref_async_to_sync}


# ---------------------------------------------------------------- the async-safety guard


def _guard_get_running_loop() -> asyncio.AbstractEventLoop:
    """``get_running_loop`` as Django's ``async_unsafe`` sees it: no loop in bridged code."""
    if isinstance(getcurrent(), BridgeGreenlet):
        raise RuntimeError("no running event loop")
    return _real_get_running_loop()


# ---------------------------------------------------------------- per-request connections

# Connections kept open between requests (CONN_MAX_AGE > 0 or None), by
# (thread, alias): a connection is used by the thread that opened it only.
_idle: dict[tuple[int, str], list[Any]] = {}


class _ConnectionStore:
    """Stands in for ``ConnectionHandler._connections`` (asgiref's Local).

    Attribute access is what Django does (``getattr(store, alias)``,
    ``setattr``, ``delattr``, ``hasattr``); it goes to the request's dict
    inside a GreenASGIHandler request, to the green thread's dict in other
    bridged code, and to Django's Local everywhere else.
    """

    def __init__(self, fallback: Any) -> None:
        object.__setattr__(self, "_fallback", fallback)
        tasks: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        object.__setattr__(self, "_tasks", tasks)

    def _store(self) -> dict[str, Any] | None:
        scope = _scope.get()
        if scope is not None and scope.thread == _get_ident():
            return scope.connections
        if isinstance(getcurrent(), BridgeGreenlet):
            tasks: weakref.WeakKeyDictionary[Any, dict[str, Any]] = self._tasks
            key = thread_key()
            store = tasks.get(key)
            if store is None:
                tasks[key] = store = {}
            return store
        return None

    def __getattr__(self, alias: str) -> Any:
        if alias.startswith("_"):
            raise AttributeError(alias)
        store = self._store()
        if store is None:
            return getattr(self._fallback, alias)
        try:
            return store[alias]
        except KeyError:
            pass
        idle = _idle.get((_get_ident(), alias))
        if idle and _inside():
            store[alias] = conn = idle.pop()
            return conn
        raise AttributeError(alias)

    def __setattr__(self, alias: str, value: Any) -> None:
        store = self._store()
        if store is None:
            setattr(self._fallback, alias, value)
        else:
            store[alias] = value

    def __delattr__(self, alias: str) -> None:
        store = self._store()
        if store is None:
            delattr(self._fallback, alias)
            return
        try:
            del store[alias]
        except KeyError:
            raise AttributeError(alias) from None


def _end_request(scope: _Scope) -> None:
    """Close (or keep idle, per CONN_MAX_AGE) what the request left open.  Runs green."""
    thread = scope.thread
    while scope.connections:
        alias, conn = scope.connections.popitem()
        try:
            if conn.connection is None:
                continue
            if not conn.in_atomic_block:
                conn.close_if_unusable_or_obsolete()
            if (
                conn.connection is not None
                and not conn.in_atomic_block
                and conn.settings_dict.get("CONN_MAX_AGE", 0) != 0
            ):
                _idle.setdefault((thread, alias), []).append(conn)
            else:
                conn.close()
        except Exception:
            logger.exception("closing the database connection %r at the end of a request", alias)


_green_end_request = async_(_end_request)


# ---------------------------------------------------------------- the handler


class GreenASGIHandler(ASGIHandler):  # type: ignore[misc]
    """Django's ``ASGIHandler``, with its sync code in greenlets on the loop.

    Each request runs in a context where Django's ``sync_to_async`` and
    ``async_to_sync`` are this module's (see :func:`install`) and where
    ``django.db.connections`` holds the request's own connections.  When
    the request ends (after ``request_finished``, whose
    ``close_old_connections`` closes connections past their
    ``CONN_MAX_AGE``), every connection still open is closed, unless
    ``CONN_MAX_AGE`` is above 0 (or None) and the connection is healthy and
    outside a transaction: then it is kept idle, and a later request on the
    same thread takes it instead of connecting again (as a thread keeps its
    connection between requests).  With Django's psycopg 3 pool, closing
    returns the connection to the pool.
    """

    def __init__(self) -> None:
        token = _scope.set(_Scope())  # the middleware chain is adapted green
        try:
            super().__init__()
        finally:
            _scope.reset(token)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one ASGI connection as Django does, with the request's sync code green."""
        if len(sys.modules) != _scanned_modules:
            _patch_modules()
        request = _Scope()
        token = _scope.set(request)
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                if request.connections:
                    await _green_end_request(request)
            finally:
                _scope.reset(token)


def get_asgi_application(*, patch_drivers: bool = True) -> GreenASGIHandler:
    """The drop-in for ``django.core.asgi.get_asgi_application()``.

    Sets Django up (``django.setup(set_prefix=False)``), calls
    :func:`install`, and returns a :class:`GreenASGIHandler`.  Serve it as
    usual (``uvicorn mysite.asgi:application``).

    Args:
        patch_drivers: also make the database drivers green: for a
            PostgreSQL database, :func:`greenbridge.patch_psycopg` (psycopg 3)
            or :func:`greenbridge.patch_psycopg2`; for a database with
            Django's pool (``OPTIONS={"pool": ...}``), import ``psycopg_pool``
            under :func:`greenbridge.patch_blocking` (it must not have been
            imported before).

    Raises:
        UnsupportedVersion: see :func:`install`.
        RuntimeError: ``psycopg_pool`` was imported before, with blocking
            locks (import it under :func:`greenbridge.patch_blocking`).
    """
    django.setup(set_prefix=False)
    install()
    if patch_drivers:
        _patch_drivers()
    return GreenASGIHandler()


def _patch_drivers() -> None:
    from django.conf import settings

    databases = [db for db in settings.DATABASES.values() if "postgresql" in db.get("ENGINE", "")]
    if not databases:
        return
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if is_psycopg3:
        patch_psycopg()
    else:
        patch_psycopg2()
    if any(db.get("OPTIONS", {}).get("pool") for db in databases):
        _import_green_pool()


def _import_green_pool() -> None:
    pool = sys.modules.get("psycopg_pool.pool")
    if pool is None:
        with patch_blocking():
            importlib.import_module("psycopg_pool")
        return
    if getattr(pool, "threading", None) is original("threading"):
        raise RuntimeError(
            "psycopg_pool was imported before greenbridge's get_asgi_application() with "
            "blocking locks: a request waiting for a pooled connection would block the "
            "event loop; import it under greenbridge.patch_blocking() "
            "(`with greenbridge.patch_blocking(): import psycopg_pool`) or not at all "
            "before get_asgi_application()"
        )


# ---------------------------------------------------------------- install

_lock = threading.Lock()
# (module, attribute, original) of each replaced global.
_saved: list[tuple[Any, str, Any]] = []
_scanned_modules = 0

#: The modules whose globals must be asgiref's functions for :func:`install`
#: to proceed (the handler stack), with the names each must hold.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "django.core.handlers.base": ("sync_to_async", "async_to_sync"),
    "django.core.handlers.asgi": ("sync_to_async",),
    "django.core.handlers.exception": ("sync_to_async",),
    "django.utils.deprecation": ("sync_to_async",),
    "django.dispatch.dispatcher": ("sync_to_async", "async_to_sync"),
}


def _version(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", text)
    if match is None:
        raise UnsupportedVersion(f"cannot read the version {text!r}")
    return int(match.group(1)), int(match.group(2))


def _check_version(name: str, version: str) -> None:
    oldest, newest = TESTED_VERSIONS[name]
    if not oldest <= _version(version) <= newest:
        tested = f"{oldest[0]}.{oldest[1]} to {newest[0]}.{newest[1]}"
        raise UnsupportedVersion(
            f"greenbridge.integrations.django was tested with {name} {tested}, not "
            f"{name} {version}: it replaces functions inside Django, whose layout changes "
            f"between releases; install a tested {name} version (or a greenbridge release "
            "that supports this one)"
        )


def _patch_modules() -> None:
    """Route the asgiref names of every loaded ``django.*`` module (see the module docs)."""
    global _scanned_modules
    with _lock:
        if not _saved:
            return  # uninstalled meanwhile
        for name, module in list(sys.modules.items()):
            if module is None or not (name == "django" or name.startswith("django.")):
                continue
            namespace = getattr(module, "__dict__", None)
            if namespace is None:
                continue
            for attribute, original_fn in _ORIGINALS.items():
                if namespace.get(attribute) is original_fn:
                    setattr(module, attribute, _ROUTERS[attribute])
                    _saved.append((module, attribute, original_fn))
        _scanned_modules = len(sys.modules)


def install() -> None:
    """Make :class:`GreenASGIHandler` requests run Django's sync code green.

    The four changes of the module documentation: route the
    ``sync_to_async``/``async_to_sync`` globals of Django's modules, let
    bridged code pass Django's async-safety guard, give each request its own
    connections, and (in :func:`get_asgi_application` only) patch the
    drivers.  Outside a :class:`GreenASGIHandler` request nothing behaves
    differently.  Calling it again does nothing.

    Raises:
        UnsupportedVersion: Django or asgiref is a version this module was
            not tested with, or one of the functions to replace is not the
            one it expects (another library replaced it); nothing is changed.
    """
    with _lock:
        if _saved:
            return
        _check_version("django", django.__version__)
        _check_version("asgiref", asgiref.__version__)
        plan: list[tuple[Any, str, Any, Any]] = []
        for module_name, attributes in _REQUIRED.items():
            module = importlib.import_module(module_name)
            for attribute in attributes:
                current = getattr(module, attribute, None)
                if current is not _ORIGINALS[attribute]:
                    raise UnsupportedVersion(
                        f"{module_name}.{attribute} is {current!r}, not asgiref.sync."
                        f"{attribute} as in the tested Django releases (Django "
                        f"{django.__version__}): something else replaced it, or this "
                        "release changed the layout"
                    )
        guard = importlib.import_module("django.utils.asyncio")
        if guard.__dict__.get("get_running_loop") is not _real_get_running_loop:
            raise UnsupportedVersion(
                "django.utils.asyncio.get_running_loop is not asyncio.get_running_loop "
                f"as in the tested Django releases (Django {django.__version__})"
            )
        plan.append((guard, "get_running_loop", _real_get_running_loop, _guard_get_running_loop))
        db = importlib.import_module("django.db")
        handler = db.connections
        local = handler.__dict__.get("_connections")
        if not isinstance(local, asgiref.local.Local):
            raise UnsupportedVersion(
                f"django.db.connections._connections is {local!r}, not an asgiref Local "
                f"as in the tested Django releases (Django {django.__version__})"
            )
        plan.append((handler, "_connections", local, _ConnectionStore(local)))
        for target, attribute, original_value, replacement in plan:
            setattr(target, attribute, replacement)
            _saved.append((target, attribute, original_value))
    _patch_modules()


def uninstall() -> None:
    """Undo :func:`install`: put back every replaced function and Django's connection store.

    Connections opened inside requests and kept idle are closed (call it
    with no request running).  A :class:`GreenASGIHandler` made before
    keeps its green middleware chain but serves with asgiref's functions.
    """
    global _scanned_modules
    with _lock:
        while _saved:
            target, attribute, original_value = _saved.pop()
            setattr(target, attribute, original_value)
        _scanned_modules = 0
        idle = [conn for conns in _idle.values() for conn in conns]
        _idle.clear()
    for conn in idle:
        # (the DB-API connection itself: Django's close() refuses another thread)
        try:
            conn.connection.close()
        except Exception:
            logger.exception("closing an idle database connection")


def installed() -> bool:
    """True between :func:`install` and :func:`uninstall`."""
    return bool(_saved)
