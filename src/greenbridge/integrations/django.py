"""Django under ASGI: sync views, sync middleware and the ORM in greenlets on the event loop.

Django's ASGI handler runs every piece of sync code through asgiref's
``sync_to_async(thread_sensitive=True)``: sync middleware, sync views, the
receivers of ``request_started``/``request_finished``, ``response.close()``,
the exception handlers.  Each request gets an executor thread of its own and
hops between the loop and that thread at every sync/async boundary.
:func:`get_asgi_application` returns a :class:`GreenASGIHandler` instead,
which serves each request as Django's WSGI handler serves one in a thread,
with the middleware chain in Django's sync mode, but in ONE greenlet on the
loop (:func:`greenbridge.async_`, in the server's task for the request):
``request_started``, the ``ASGIRequest``, the middleware and the view, the
response out, ``response.close()`` and the end of the request's connections
run there with no hop through the loop.  Async views and async middleware
are called through Django's ``async_to_sync``, which in the request is
:func:`async_to_sync` here: the coroutine runs in the request's greenlet,
on the loop, with no thread.

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
   "no running loop" to bridged sync code (in a greenbridge worker
   greenlet, with no coroutine frame between it and the worker's start:
   it never runs in parallel with the loop) and asks asyncio everywhere
   else, so a coroutine still gets the exception.
   ``DJANGO_ALLOW_ASYNC_UNSAFE`` is never set.
3. **One set of connections per request.**  ``django.db.connections`` keeps
   connections in an asgiref ``Local(thread_critical=True)``: one per OS
   thread, which every greenlet on the loop would share.  Its store is
   replaced by one that, inside a :class:`GreenASGIHandler` request, keeps
   the request's own connections (so transactions are isolated between
   concurrent requests, as between threads), and in other bridged code
   (``async_`` outside a request) keeps them per green thread (the asyncio
   or trio task).  Everything else uses Django's ``Local`` as before.  The
   request is the unit, not the green thread: the code of an async view
   or middleware calls Django's ``sync_to_async`` (the async ORM
   methods), whose greenlets must see the request's connections.
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
import inspect
import logging
import sys
import threading
import types
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
    from asgiref.sync import ThreadSensitiveContext
    from django.conf import settings as _settings
    from django.core import signals
    from django.core.exceptions import RequestDataTooBig
    from django.core.handlers.asgi import ASGIHandler
    from django.http import FileResponse
    from django.urls import set_script_prefix
except ImportError as exc:  # pragma: no cover - exercised only without Django
    raise ImportError(
        "greenbridge.integrations.django needs Django and asgiref: "
        "install them with `pip install 'greenbridge[django]'`",
        name=exc.name,
    ) from exc

from .._bridge import async_, await_
from .._callables import is_async_callable
from .._offload import offload
from .._patcher import original, patch_blocking
from .._where import UNBRIDGED, BridgeGreenlet, where
from ..drivers import patch_psycopg, patch_psycopg2
from ..green._ident import thread_key
from ._versions import check_release, release
from .wsgi import _client_left, _Input, _make_gate, _Request

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
    "django": ((4, 2), (6, 1)),
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
    return functools.wraps(func)(_sync_to_async(func, thread_sensitive, executor, context))


def _sync_to_async(
    func: Callable[P, T],
    thread_sensitive: bool,
    executor: ThreadPoolExecutor | None,
    context: contextvars.Context | None,
) -> Callable[P, Any]:
    """:func:`sync_to_async` without the decorator form and the copied metadata."""
    if not callable(func) or is_async_callable(func):
        raise TypeError(
            "sync_to_async can only be applied to sync functions "
            f"(got {func!r}): await an async function directly"
        )
    if executor is not None:
        if thread_sensitive:
            raise TypeError("executor must not be set when thread_sensitive is True")
        return _asgiref_sync_to_async(  # type: ignore[no-any-return]
            func, thread_sensitive=False, executor=executor
        )
    return _green(func, context)


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
      but the caller cannot be suspended): RuntimeError, as asgiref raises
      (asgiref 3.13 raises it with ``force_new_loop=True`` too).

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
        if where() is UNBRIDGED:
            raise RuntimeError(
                "You cannot use AsyncToSync in the same thread as an async event loop - "
                "just await the async function directly."
            )
        if force_new_loop:

            async def in_new_loop() -> T:
                return await fn(*args, **kwargs)

            # asyncio.run in a worker thread (with a copy of the context);
            # a bridged caller is suspended meanwhile, else the thread waits.
            result: T = offload(asyncio.run, in_new_loop())
            return result
        return await_(fn(*args, **kwargs))

    return run


# ---------------------------------------------------------------- the request scope


class _Scope:
    """One request of a GreenASGIHandler: its thread and its own connections.

    ``others`` holds the connections that the request's code opened in other
    OS threads (asgiref's executor threads, reached through asgiref's own
    ``sync_to_async`` called by a third-party module): closed at the end of
    the request too, which Django's ``request_finished``, run on the loop's
    thread, would not do.
    """

    __slots__ = ("connections", "others", "thread")

    def __init__(self) -> None:
        self.thread = _get_ident()
        self.connections: dict[str, Any] = {}
        self.others: dict[int, dict[str, Any]] = {}


# Set by GreenASGIHandler for its requests (and while it loads middleware).
_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "greenbridge_django_request", default=None
)


def _inside() -> bool:
    """True inside a GreenASGIHandler request, on the thread that serves it."""
    scope = _scope.get()
    return scope is not None and scope.thread == _get_ident()


def _routed_sync_to_async(
    func: Any = None,
    *,
    thread_sensitive: bool = True,
    executor: Any = None,
    context: contextvars.Context | None = None,
) -> Any:
    if not _inside():
        if context is None:  # (older asgiref releases have no context argument)
            return _asgiref_sync_to_async(
                func, thread_sensitive=thread_sensitive, executor=executor
            )
        return _asgiref_sync_to_async(
            func, thread_sensitive=thread_sensitive, executor=executor, context=context
        )
    if func is None:
        return sync_to_async(thread_sensitive=thread_sensitive, executor=executor, context=context)
    # (Django's calls need no copied name and docstring: skip functools.wraps)
    return _sync_to_async(func, thread_sensitive, executor, context)


def _routed_async_to_sync(awaitable: Any = None, **options: Any) -> Any:
    if _inside():
        return async_to_sync(awaitable, **options)
    return _asgiref_async_to_sync(awaitable, **options)


_ROUTERS = {"sync_to_async": _routed_sync_to_async, "async_to_sync": _routed_async_to_sync}
_ORIGINALS = {"sync_to_async": _asgiref_sync_to_async, "async_to_sync": _asgiref_async_to_sync}


# ---------------------------------------------------------------- the async-safety guard


# A frame of a coroutine (or async generator) function.
_ASYNC_CODE = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _guard_get_running_loop() -> asyncio.AbstractEventLoop:
    """``get_running_loop`` as Django's ``async_unsafe`` sees it: no loop in bridged code.

    Bridged sync code is what runs in a worker greenlet, but not everything
    that runs there is sync code: ``await_`` steps the awaited coroutine
    right there (see greenbridge._trampoline).  A Django async view reached
    from a sync middleware's ``async_to_sync`` runs so, and must still be
    refused the sync ORM, as natively.  So the frames of the call are walked
    up to the worker's first one (a greenlet's frame chain ends there): a
    coroutine frame on the way means the caller is async code.

    The walk stops early at Django's sync ``BaseHandler._get_response`` (the
    frame that calls a view): below it in the same greenlet there is only
    the sync handler path (sync middleware, :class:`GreenASGIHandler`'s
    request), since an async middleware reaches it through
    ``sync_to_async``, i.e. from another greenlet.  (A request's stack is
    some 45 frames deep; the view's queries walk only their own 20.)
    """
    if isinstance(getcurrent(), BridgeGreenlet):
        frame: types.FrameType | None = sys._getframe(1)
        boundary = _SYNC_VIEW_CALLER
        while frame is not None:
            code = frame.f_code
            if code.co_flags & _ASYNC_CODE:
                break
            if code is boundary:
                frame = None
                break
            frame = frame.f_back
        if frame is None:
            raise RuntimeError("no running event loop")
    return _real_get_running_loop()


# The code of Django's sync BaseHandler._get_response (see the guard above).
_SYNC_VIEW_CALLER: types.CodeType = ASGIHandler._get_response.__code__


# ---------------------------------------------------------------- per-request connections

# Connections kept open between requests (CONN_MAX_AGE > 0 or None), by
# (thread, alias): a connection is used by the thread that opened it only.
_idle: dict[tuple[int, str], list[Any]] = {}
# Closed connection objects (Django's DatabaseWrapper) of ended requests, by
# (thread, alias), for later requests to connect again with, as a thread
# keeps its DatabaseWrapper between requests: making one per request costs
# Django's load_backend() and the wrapper's set-up (about 80 k instructions).
# Django's connect() resets a wrapper's state as it does for a thread's.
_spare: dict[tuple[int, str], list[Any]] = {}
_SPARE_WRAPPERS = 256  # (at most this many per thread and alias)


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
        if scope is not None:
            ident = _get_ident()
            if scope.thread == ident:
                return scope.connections
            store = scope.others.get(ident)
            if store is None:
                scope.others[ident] = store = {}
            return store
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
        key = (_get_ident(), alias)
        kept = _idle.get(key) or _spare.get(key)
        if kept and _inside():
            store[alias] = conn = kept.pop()
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
            if conn.connection is not None:
                if not conn.in_atomic_block:
                    conn.close_if_unusable_or_obsolete()
                if (
                    conn.connection is not None
                    and not conn.in_atomic_block
                    and conn.settings_dict.get("CONN_MAX_AGE", 0) != 0
                ):
                    _idle.setdefault((thread, alias), []).append(conn)
                    continue
                conn.close()
            if conn.connection is None and not conn.in_atomic_block:
                spare = _spare.setdefault((thread, alias), [])
                if len(spare) < _SPARE_WRAPPERS:
                    spare.append(conn)
        except Exception:
            logger.exception("closing the database connection %r at the end of a request", alias)
    while scope.others:
        _, connections = scope.others.popitem()
        for alias, conn in connections.items():
            # Opened in a thread that is done with it: Django's own way to
            # let another thread close it.
            conn.inc_thread_sharing()
            try:
                conn.close()
            except Exception:
                logger.exception("closing the database connection %r of a worker thread", alias)
            finally:
                conn.dec_thread_sharing()


# ---------------------------------------------------------------- the handler


class GreenASGIHandler(ASGIHandler):  # type: ignore[misc]
    """Django's request handling for ASGI servers, each request in one greenlet on the loop.

    An ASGI application, and a subclass of Django's ``ASGIHandler`` (what
    ``isinstance`` checks and ``request_class`` see), that serves each HTTP
    request as Django's ``WSGIHandler`` serves one in a thread: the
    middleware chain is loaded in Django's *sync* mode, and the whole
    request, ``request_started``, the request object, the middleware, the
    view, the response's headers and body out, ``response.close()`` (which
    sends ``request_finished``) and the end of the request's connections,
    runs in one greenlet (:func:`greenbridge.async_`), in the server's task
    for the request.  Its waits (queries through a patched driver, a pooled
    connection, the client reading the response) suspend only that
    greenlet; nothing hops through the loop between the view and the return
    of its connection.

    What Django code sees is what it sees under Django's ``ASGIHandler``:

    * the request is Django's ``ASGIRequest`` (``request.scope``, the same
      ``META``), whose body is read on demand from ASGI ``receive`` (a read
      suspends only the request; Django's handler reads the whole body into
      a temporary file before the view);
    * async views and async middleware are called through Django's
      ``async_to_sync``, which is this module's inside the request: the
      coroutine runs right there, on the loop, with no thread; the ORM still
      refuses to be called from it (``SynchronousOnlyOperation``);
    * a ``StreamingHttpResponse`` is sent chunk by chunk, each chunk waited
      for (the server's flow control), from a sync iterator or an async one
      alike (Django's handlers buffer the former under ASGI, the latter
      under WSGI, whole, with a warning);
    * a client that disconnects cancels the request: the greenlet gets
      `asyncio.CancelledError` at its next wait (a query is cancelled,
      ``transaction.atomic()`` rolls back), then ``request_finished`` is
      sent and the connections closed, as Django 5.0+ does under ASGI (and
      Django 4.2 too, whose handler did not notice disconnects);
    * the server cancelling the handler (a shutdown timeout) cancels the
      request the same way; it ends before the handler does.

    When the request ends (after ``request_finished``, whose
    ``close_old_connections`` closes connections past their
    ``CONN_MAX_AGE``), every connection still open is closed, unless
    ``CONN_MAX_AGE`` is above 0 (or None) and the connection is healthy and
    outside a transaction: then it is kept idle, and a later request on the
    same thread takes it instead of connecting again (as a thread keeps its
    connection between requests).  With Django's psycopg 3 pool, closing
    returns the connection to the pool.

    ``concurrency`` is the most requests in Django at once (None, the
    default: no limit); the others wait for a place, in order of arrival,
    before Django sees them (see :func:`get_asgi_application`).

    Only HTTP is served: other scope types raise ``ValueError``, as Django's
    handler does.
    """

    def __init__(self, *, concurrency: int | None = None) -> None:
        self._gate = _make_gate(concurrency)
        install()
        loading = _Scope()
        token = _scope.set(loading)  # async middleware is adapted with our async_to_sync
        try:
            self.load_middleware(is_async=False)
        finally:
            _scope.reset(token)
            # (a middleware that queried the database while being set up)
            _end_request(loading)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one ASGI HTTP request, all of Django's part in one greenlet."""
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        if len(sys.modules) != _scanned_modules:
            _patch_modules()
        # (As WSGIMiddleware serves a request: the greenlet in the server's
        # task, a receiver task watching for a disconnect only after
        # WATCH_AFTER; see greenbridge.integrations.wsgi.)
        loop = asyncio.get_running_loop()
        request = _Request(receive, send, loop)
        request.begin()
        try:
            gate = self._gate
            if gate is not None:
                await gate.enter(loop)
            try:
                # (asgiref's own thread-sensitive sync_to_async, called by a
                # third-party module, gets a thread of the request's, as under
                # Django's handler, not a thread shared by the whole process.)
                async with ThreadSensitiveContext():
                    await _serve_green(self, scope, request)
            finally:
                if gate is not None:
                    gate.leave()
        except asyncio.CancelledError:
            # The client left: the request is over (and rolled back).  Cancelled
            # by the server: the greenlet has ended, the cancellation goes on.
            if not _client_left(request):
                raise
        finally:
            request.end()


class _Body(_Input):
    """The request's body file: WSGIMiddleware's ``wsgi.input`` (reads wait green), closable.

    Reading it all (``request.body``, a urlencoded ``request.POST``) stops
    with Django's ``RequestDataTooBig`` once more than
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (or the request's Content-Length, if
    larger) came in: Django checks the Content-Length itself, and (6.1+)
    the size of the body it spooled, for a body sent without one.
    """

    __slots__ = ("_headers",)

    def __init__(self, request: _Request, headers: Any) -> None:
        super().__init__(request)
        self._headers = headers

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` bytes (all the rest of the body, within the limit above, if < 0)."""
        if size is None or size < 0:
            limit = _settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            if limit is not None:
                limit = max(limit, self._declared_length())
                body = self._request.body
                while len(body) <= limit and self._fill():
                    pass
                if len(body) > limit:
                    raise RequestDataTooBig(
                        "Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE."
                    )
        return super().read(size)

    def _declared_length(self) -> int:
        for name, value in self._headers:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0

    def seekable(self) -> bool:
        """False: the body streams in (Django 6.1 asks before measuring a spooled body)."""
        return False

    def close(self) -> None:
        """Nothing to release: what was read is gone, the rest is never received."""


def _serve(handler: GreenASGIHandler, scope: Any, request: _Request) -> None:
    """One request, in its greenlet, with its own connections; they end with it."""
    connections = _Scope()
    token = _scope.set(connections)
    try:
        _respond(handler, scope, request)
    finally:
        _scope.reset(token)
        if connections.connections or connections.others:
            _end_request(connections)


_serve_green = async_(_serve)


def _respond(handler: GreenASGIHandler, scope: Any, request: _Request) -> None:
    """What Django's ``ASGIHandler.handle`` does, in sync code (the request's greenlet)."""
    cls = type(handler)
    set_script_prefix(_get_script_prefix(scope))
    signals.request_started.send(sender=cls, scope=scope)
    django_request, response = handler.create_request(
        scope, _Body(request, scope.get("headers", ()))
    )
    if django_request is not None:
        try:
            response = handler.get_response(django_request)
        except BaseException:
            # (cancelled: no response to close, which would send it)
            signals.request_finished.send(sender=cls)
            raise
        response._handler_class = cls
        if isinstance(response, FileResponse):
            response.block_size = handler.chunk_size
    try:
        _send_response(response, request)
    finally:
        response.close()


def _get_script_prefix(scope: Any) -> str:
    """The script prefix of a request: ``FORCE_SCRIPT_NAME``, else ASGI's ``root_path``."""
    forced = _settings.FORCE_SCRIPT_NAME
    if forced:
        return str(forced)
    return scope.get("root_path", "") or ""


def _send_response(response: Any, request: _Request) -> None:
    """Send ``response`` as Django's ``ASGIHandler.send_response`` does, waiting green."""
    headers = []
    for name, value in response.items():
        if isinstance(name, str):
            name = name.encode("ascii")
        if isinstance(value, str):
            value = value.encode("latin1")
        headers.append((bytes(name), bytes(value)))
    for cookie in response.cookies.values():
        headers.append((b"Set-Cookie", cookie.output(header="").encode("ascii").strip()))
    send = request.send
    await_(
        send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    )
    if not response.streaming:
        # (The whole body in one message: the server chunks the socket writes.)
        request.complete = True  # (a http.disconnect from now on is the end, not a client leaving)
        await_(send({"type": "http.response.body", "body": response.content}))
        return
    if response.is_async:
        # Django's WSGIHandler would gather the whole iterator first; here
        # each chunk goes out as the iterator yields it.
        content = response.streaming_content
        try:
            while True:
                try:
                    part = await_(content.__anext__())
                except StopAsyncIteration:
                    break
                if part:
                    await_(send({"type": "http.response.body", "body": part, "more_body": True}))
        finally:
            await_(content.aclose())
    else:
        for part in response.streaming_content:
            if part:
                await_(send({"type": "http.response.body", "body": part, "more_body": True}))
    request.complete = True
    await_(send({"type": "http.response.body", "body": b"", "more_body": False}))


def get_asgi_application(
    *, patch_drivers: bool = True, concurrency: int | None = None
) -> GreenASGIHandler:
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
            imported before); for a MySQL database, check that Django gets
            PyMySQL imported green as ``MySQLdb`` (see the guide).
        concurrency: the most requests in Django at once (None, the
            default: no limit).  The others wait for a place, in order of
            arrival, before Django sees them (no greenlet, no request
            object, no middleware).  Where every request waits for the same
            few connections (a pool of 20), a limit a little above the
            pool's size keeps out of Django the requests that would only
            queue for one: less memory per waiting request, and less for
            the garbage collector to go through (see the guide's figures).

    Raises:
        TypeError, ValueError: ``concurrency`` is not None or an int of at
            least 1.
        UnsupportedVersion: see :func:`install`.
        RuntimeError: ``psycopg_pool`` was imported before, with blocking
            locks (import it under :func:`greenbridge.patch_blocking`), or
            Django's MySQL backend would use mysqlclient or PyMySQL with
            blocking sockets.
    """
    _make_gate(concurrency)  # (checked before anything is set up)
    django.setup(set_prefix=False)
    install()
    if patch_drivers:
        _patch_drivers()
    return GreenASGIHandler(concurrency=concurrency)


def _patch_drivers() -> None:
    from django.conf import settings

    engines = [db.get("ENGINE", "") for db in settings.DATABASES.values()]
    if any("mysql" in engine for engine in engines):
        _check_mysql_driver()
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


_PYMYSQL_FIX = (
    "import it under greenbridge.patch_blocking() before Django loads its MySQL backend: "
    "`with greenbridge.patch_blocking(): import pymysql` then `pymysql.install_as_MySQLdb()`"
)


def _check_mysql_driver() -> None:
    """Django's MySQL backend must get green PyMySQL as ``MySQLdb``, not mysqlclient."""
    try:
        mysqldb = importlib.import_module("MySQLdb")
    except ImportError:
        return  # Django raises its own error when the backend loads
    if not mysqldb.__name__.startswith("pymysql"):
        raise RuntimeError(
            "Django's MySQL backend uses mysqlclient here, whose C calls block the event "
            f"loop for every query of every request: use PyMySQL instead, {_PYMYSQL_FIX}"
        )
    connections = sys.modules.get("pymysql.connections")
    if connections is not None and getattr(connections, "socket", None) is original("socket"):
        raise RuntimeError(
            "PyMySQL was imported with the blocking socket module: each query would "
            f"block the event loop; {_PYMYSQL_FIX}"
        )


# The psycopg_pool modules that bind ``threading`` (3.2+: _acompat; before: pool).
_POOL_MODULES = ("psycopg_pool._acompat", "psycopg_pool.pool")


def _import_green_pool() -> None:
    if "psycopg_pool" not in sys.modules:
        with patch_blocking():
            importlib.import_module("psycopg_pool")
        return
    blocking = original("threading")
    if any(getattr(sys.modules.get(name), "threading", None) is blocking for name in _POOL_MODULES):
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
#: to proceed (the handler stack), with the names each must hold and the
#: first Django release that has them (signals became async in 5.0).
_REQUIRED: dict[str, tuple[tuple[str, ...], tuple[int, int]]] = {
    "django.core.handlers.base": (("sync_to_async", "async_to_sync"), (4, 2)),
    "django.core.handlers.asgi": (("sync_to_async",), (4, 2)),
    "django.core.handlers.exception": (("sync_to_async",), (4, 2)),
    "django.utils.deprecation": (("sync_to_async",), (4, 2)),
    "django.dispatch.dispatcher": (("sync_to_async", "async_to_sync"), (5, 0)),
}


def _version(text: str) -> tuple[int, int]:
    return release(text, UnsupportedVersion)


def _check_version(name: str, version: str) -> None:
    check_release("django", name, version, TESTED_VERSIONS, UnsupportedVersion)


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
        release = _version(django.__version__)
        for module_name, (attributes, since) in _REQUIRED.items():
            if release < since:
                continue
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
        _spare.clear()
    for conn in idle:
        # (the DB-API connection itself: Django's close() refuses another thread)
        try:
            conn.connection.close()
        except Exception:
            logger.exception("closing an idle database connection")


def installed() -> bool:
    """True between :func:`install` and :func:`uninstall`."""
    return bool(_saved)
