"""psycopg 3 (sync API) on the event loop.

psycopg 3's sync connections consume generators that yield "wait for the
socket to be readable/writable" requests; the functions that do the waiting
are ``psycopg.waiting.wait`` (queries) and ``psycopg.waiting.wait_conn``
(connecting, non-blocking cancel), looked up on that module at each call.
:func:`patch_psycopg` replaces both with functions that wait through
greenbridge: on the event loop in bridged sync code, blocking in a thread
with no loop running.

Cancellation: when a task waiting for a query is cancelled (or times out), the
query is cancelled on the server, greenbridge waits (at most
:data:`CANCEL_TIMEOUT` seconds) for the server to end it, and the
cancellation is raised to the caller.  The connection **stays open and
usable**: idle in autocommit mode, or in a failed transaction to roll back
(as after any error).  If the server does not answer in time, or a second
cancellation arrives meanwhile, the connection is closed instead.  (This
mirrors what psycopg itself does on Ctrl-C.)
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Generator
from typing import Any

from .. import _hub
from . import _waiting
from ._waiting import CANCEL_TIMEOUT

__all__ = ["patch_psycopg", "wait", "wait_conn", "CANCEL_TIMEOUT"]

logger = logging.getLogger("greenbridge")

_MISSING = (
    "patch_psycopg() needs psycopg 3: install it with `pip install 'psycopg[binary]'` "
    "(or `pip install psycopg` with a system libpq)"
)


class _Api:
    """The psycopg names we use, bound once by :func:`patch_psycopg`."""

    def __init__(self) -> None:
        # Through importlib, typed as Any: psycopg is optional, and its
        # internals we touch differ between versions.
        try:
            psycopg: Any = importlib.import_module("psycopg")
            waiting: Any = importlib.import_module("psycopg.waiting")
        except ImportError as exc:
            raise ImportError(_MISSING, name="psycopg") from exc
        errors = psycopg.errors
        self.psycopg = psycopg
        self.waiting = waiting
        self.errors = errors
        self.ACTIVE = psycopg.pq.TransactionStatus.ACTIVE
        ready = waiting.Ready
        self.READY = {
            (False, False): ready(0),  # Ready.NONE
            (True, False): ready.R,
            (False, True): ready.W,
            (True, True): ready.RW,
        }
        self.WAIT_R = waiting.Wait.R
        self.WAIT_W = waiting.Wait.W
        # psycopg >= 3.2: wait(gen, fileno, interval, timeout), where timeout is
        # a deadline that raises errors._WaitTimeout.  Before: wait(gen, fileno,
        # timeout), where timeout was a wake-up interval (Ready.NONE is sent).
        self.wait_timeout_cls: type[BaseException] | None = getattr(errors, "_WaitTimeout", None)


_api: _Api | None = None


def _get_api() -> _Api:
    global _api
    if _api is None:
        _api = _Api()
    return _api


def _ready(api: _Api, fd: int, s: Any, timeout: float | None) -> Any:
    """Wait for ``fd`` as ``s`` asks; return the Ready value (None: timed out)."""
    want_r = bool(s & api.WAIT_R)
    want_w = bool(s & api.WAIT_W)
    if not _waiting.wait(fd, want_r, want_w, timeout):
        return None
    if want_r and want_w:
        r, w = _waiting.ready_now(fd)
        if r or w:
            return api.READY[(r, w)]
        return api.READY[(True, True)]  # reported ready: let libpq find out which
    return api.READY[(want_r, want_w)]


class _GaveUp(Exception):
    """The server did not end a cancelled query in time."""


def _parse(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[float | None, float | None]:
    """(interval, timeout) from the arguments psycopg passed to its wait function.

    psycopg >= 3.3: ``(interval, timeout)``, ``timeout`` a deadline that raises
    ``errors._WaitTimeout``.  psycopg 3.2: ``(interval)``.  psycopg 3.1:
    ``(timeout)``, which was the interval.  The interval is how often the
    generator gets ``Ready.NONE`` (older versions check their deadlines then).
    """
    if _get_api().wait_timeout_cls is not None:
        interval = kwargs.get("interval", args[0] if args else None)
        timeout = kwargs.get("timeout", args[1] if len(args) > 1 else None)
    else:
        interval = kwargs.get("interval", kwargs.get("timeout", args[0] if args else None))
        timeout = None
    return (interval or None), timeout


def _consume(
    gen: Generator[Any, Any, Any],
    step: Callable[[Any], tuple[int, Any]],
    interval: float | None,
    timeout: float | None,
    timeout_exc: Callable[[str], BaseException] | None = None,
) -> Any:
    api = _get_api()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        fd, s = step(next(gen))
        if s == api.WAIT_R and _waiting.ready_now(fd)[0]:
            # The first read of an operation: the answer to a short query is
            # often there already; skip the wait (and give the loop a turn
            # now and then, as a loop of such queries would never wait).
            if not _waiting.is_shielded():  # a post-cancel drain must not be interrupted
                _hub.share_turn()
            fd, s = step(gen.send(api.READY[(True, False)]))
        while True:
            wait_for = interval
            if deadline is not None:
                remaining = max(0.0, deadline - time.monotonic())
                wait_for = remaining if wait_for is None else min(wait_for, remaining)
            ready = _ready(api, fd, s, wait_for)
            if ready is None:
                if deadline is not None and time.monotonic() >= deadline:
                    exc = timeout_exc or api.wait_timeout_cls or _GaveUp
                    raise exc("wait timeout expired")
                ready = api.READY[(False, False)]
            fd, s = step(gen.send(ready))
    except StopIteration as ex:
        return ex.value


def wait(gen: Generator[Any, Any, Any], fileno: int, *args: Any, **kwargs: Any) -> Any:
    """Green ``psycopg.waiting.wait``: consume ``gen``, waiting on ``fileno``."""
    return _consume(gen, lambda s: (fileno, s), *_parse(args, kwargs))


def wait_conn(gen: Generator[Any, Any, Any], *args: Any, **kwargs: Any) -> Any:
    """Green ``psycopg.waiting.wait_conn``: as :func:`wait`, the fd comes from ``gen``."""
    return _consume(gen, lambda pair: (pair[0], pair[1]), *_parse(args, kwargs))


def _wrap_connection_wait(original: Callable[..., Any]) -> Callable[..., Any]:
    def connection_wait(self: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, gen, *args, **kwargs)
        except BaseException as exc:
            # psycopg handles KeyboardInterrupt/SystemExit itself; greenbridge
            # adds the loop's cancellations (asyncio, trio) and GeneratorExit.
            if (
                _waiting.is_interruption(exc)
                and not isinstance(exc, (KeyboardInterrupt, SystemExit))
                and not self.closed
                and self.pgconn.transaction_status == _get_api().ACTIVE
            ):
                _cancel_on_server(self, gen, exc)
            raise

    connection_wait.__greenbridge__ = True  # type: ignore[attr-defined]
    connection_wait.__wrapped__ = original  # type: ignore[attr-defined]
    connection_wait.__name__ = "wait"
    connection_wait.__doc__ = original.__doc__
    return connection_wait


def _cancel_on_server(conn: Any, gen: Any, exc: BaseException) -> None:
    api = _get_api()
    if isinstance(exc, GeneratorExit):
        # The coroutine is being closed and nothing may wait any more: stop
        # the query (a short blocking round trip) and drop the connection.
        try:
            conn.pgconn.get_cancel().cancel()
        finally:
            conn.pgconn.finish()
        return
    try:
        with _waiting.shielded():
            if hasattr(conn, "cancel_safe"):
                conn.cancel_safe(timeout=CANCEL_TIMEOUT)  # non-blocking with libpq >= 17
            else:  # pragma: no cover - psycopg < 3.2
                conn.cancel()
            fd = conn.pgconn.socket
            _consume(gen, lambda s: (fd, s), None, CANCEL_TIMEOUT, _GaveUp)
    except api.errors.QueryCanceled:
        pass  # the server ended the query: the connection is usable
    except BaseException as other:  # noqa: BLE001 - any failure: unknown state
        logger.warning(
            "greenbridge: query cancellation failed (%s): closing the connection",
            type(other).__name__,
        )
        conn.pgconn.finish()


def patch_psycopg() -> None:
    """Make psycopg 3's sync API wait on the event loop.

    After this call, ``psycopg.connect()`` and every query of a sync
    ``psycopg.Connection`` (existing ones included) wait through greenbridge:
    in sync code run by :func:`greenbridge.async_` / :func:`greenbridge.spawn`
    only the calling greenlet waits for the server, and the event loop keeps
    running.  In a thread with no event loop running, they block as usual.
    psycopg's async API is not affected (it already waits on the loop).
    Idempotent.

    A cancelled query is cancelled on the server and the connection stays
    usable (see the module docstring).  Do not share one connection between
    concurrent tasks: psycopg serialises its users with a thread lock, which
    would block the whole loop.  Host names are resolved by libpq and block
    the loop while they do: use an IP address or ``hostaddr``.

    Raises:
        ImportError: psycopg 3 is not installed (the message names the package).
    """
    api = _get_api()
    api.waiting.wait = wait
    api.waiting.wait_conn = wait_conn
    conn_cls = api.psycopg.Connection
    if not getattr(conn_cls.wait, "__greenbridge__", False):
        conn_cls.wait = _wrap_connection_wait(conn_cls.wait)
