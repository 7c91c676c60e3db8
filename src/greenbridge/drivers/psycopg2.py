"""psycopg2 on the event loop: a wait callback that waits through greenbridge.

psycopg2 lets a program replace the way it waits for the server
(``psycopg2.extensions.set_wait_callback``): with a callback set, every
connection sends its queries without blocking and calls the callback until
the answer is there.  :func:`patch_psycopg2` installs one that waits on the
event loop from bridged sync code (only the calling greenlet is suspended),
and blocks as usual in a thread with no event loop running.

Cancellation: if the task waiting for a query is cancelled (or times out),
the query is cancelled *on the server*, greenbridge waits (at most
:data:`CANCEL_TIMEOUT` seconds in all) for the server to take the request and
end the query, and the cancellation is raised to the caller.  With libpq 17
or newer the cancel request waits on the loop like a query (libpq's
non-blocking cancel API); with an older libpq it is psycopg2's
``conn.cancel()``, a round trip to the server that blocks the whole process.
psycopg2 then **closes the connection** (it closes any connection whose wait
callback raised, as its state cannot be trusted), so a pool discards it and
opens a new one.  Code that keeps the connection must expect ``conn.closed``
to be true after a cancellation.  A connect that is cancelled just stops
(there is nothing to cancel on the server yet).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import time
from typing import Any

from .. import _hub
from . import _waiting
from ._waiting import CANCEL_TIMEOUT

__all__ = ["patch_psycopg2", "wait_callback", "wait_notifies", "CANCEL_TIMEOUT"]

_MISSING = (
    "patch_psycopg2() needs psycopg2: install it with `pip install psycopg2-binary` "
    "(or `pip install psycopg2` to build it from source)"
)


def _extensions() -> Any:
    try:
        # Through importlib: psycopg2 is optional and ships no type stubs.
        return importlib.import_module("psycopg2.extensions")
    except ImportError as exc:
        raise ImportError(_MISSING, name="psycopg2") from exc


def wait_callback(conn: Any) -> None:
    """psycopg2 wait callback: poll ``conn`` until its operation is done.

    Tries one read before waiting (the answer to a short query is often
    there already; then it only gives the loop a turn now and then, see
    ``greenbridge._hub.share_turn``).  Waits on the event loop in bridged
    code and blocks in a thread with no loop (see :mod:`greenbridge._hub`);
    in a running loop from code that is not bridged it raises
    :class:`greenbridge.MissingBridge` (and psycopg2 closes the connection).
    On cancellation the query is cancelled on the server first.  Installed
    by :func:`patch_psycopg2`.
    """
    ext = _ext
    # The waits name no owner (see ``greenbridge._hub.wait_owned``): psycopg2
    # closes its socket without telling the hub (conn.close(), a pool
    # discarding it), so a registration kept on the loop for the connection
    # could outlive the descriptor.  A new one with the same number, opened
    # by the code still running (a new connection, an asyncio client), would
    # then find the closed one's key in asyncio's selector: FileNotFoundError,
    # or a registration that never fires.  libpq also replaces its socket
    # while connecting, when it moves on to the next host.
    connected = conn.status != ext.STATUS_SETUP  # (before poll() moves it on)
    try:
        state = conn.poll()
        if state == ext.POLL_READ:
            # The first poll of a query only flushed it out (psycopg2 does not
            # try to read in that state): try reading once before waiting,
            # the answer is often there already.
            state = conn.poll()
            if state == ext.POLL_OK:
                # Answered without waiting: a loop of such queries must still
                # let the other tasks run now and then.
                _hub.share_turn()
                return
        while True:
            if state == ext.POLL_OK:
                return
            if state == ext.POLL_READ:
                _waiting.wait(conn.fileno(), True, False)
            elif state == ext.POLL_WRITE:
                _waiting.wait(conn.fileno(), False, True)
            else:  # pragma: no cover - psycopg2 returns no other state
                raise ext.OperationalError(f"bad state from poll: {state}")
            state = conn.poll()
    except BaseException as exc:
        if _waiting.is_interruption(exc) and connected:
            _cancel_on_server(conn, exc)  # (while connecting there is nothing to cancel)
        raise


def _cancel_on_server(conn: Any, exc: BaseException) -> None:
    """The wait was interrupted: stop the query on the server, then let the error out."""
    ext = _ext
    if isinstance(exc, GeneratorExit):
        # The coroutine is being closed: nothing may wait any more.  Stop the
        # query with libpq's blocking cancel (a short round trip) and go.
        with contextlib.suppress(Exception):  # nothing was running, or the server is gone
            conn.cancel()
        return
    deadline = time.monotonic() + CANCEL_TIMEOUT
    try:
        with _waiting.shielded():
            if not _request_cancel(conn, deadline):
                return
            fd = conn.fileno()
            while True:
                state = conn.poll()
                if state == ext.POLL_OK:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if not _waiting.wait(
                    fd, state == ext.POLL_READ, state == ext.POLL_WRITE, remaining
                ):
                    return
    except BaseException:  # noqa: BLE001 - interrupted again, or the poll failed:
        return  # psycopg2 closes the connection anyway when the callback raises


# libpq's polling status (PostgresPollingStatusType)
_POLLING_READING = 1
_POLLING_WRITING = 2
_POLLING_OK = 3

_libpq: Any = False  # libpq's non-blocking cancel functions; None: not available


def _cancel_functions() -> Any:
    """libpq (>= 17) as psycopg2 links it, with the non-blocking cancel API; None without it.

    psycopg2 only offers ``conn.cancel()``, libpq's ``PQcancel``: it connects
    to the server, sends the request and waits for the server to hang up, all
    blocking and holding the GIL (the whole process waits; for minutes when
    the server is unreachable).  libpq 17 added ``PQcancelStart`` /
    ``PQcancelPoll``, which connect and wait like a connection does: through
    the loop.  The symbols are looked up through psycopg2's own extension
    module, so they come from the very libpq its connections use.
    """
    global _libpq
    if _libpq is False:
        _libpq = None
        try:
            if _ext.libpq_version() >= 170000:
                lib = ctypes.CDLL(importlib.import_module("psycopg2._psycopg").__file__)
                pointer = ctypes.c_void_p
                for name, restype in (
                    ("PQcancelCreate", pointer),
                    ("PQcancelStart", ctypes.c_int),
                    ("PQcancelPoll", ctypes.c_int),
                    ("PQcancelSocket", ctypes.c_int),
                    ("PQcancelFinish", None),
                ):
                    fn = getattr(lib, name)
                    fn.restype = restype
                    fn.argtypes = [pointer]
                _libpq = lib
        except (OSError, AttributeError, TypeError):  # no such symbol, or no file to load
            _libpq = None
    return _libpq


def _request_cancel(conn: Any, deadline: float) -> bool:
    """Ask the server to cancel ``conn``'s query; False if that failed or timed out."""
    lib = _cancel_functions()
    pgconn = getattr(conn, "pgconn_ptr", None)  # psycopg2 >= 2.8
    if lib is None or pgconn is None:  # libpq < 17: the blocking PQcancel
        try:
            conn.cancel()
        except Exception:  # noqa: BLE001 - nothing was running, or the server is gone
            return False
        return True
    cancel = lib.PQcancelCreate(pgconn)
    if not cancel:
        return False
    try:
        if not lib.PQcancelStart(cancel):
            return False
        while True:
            status = lib.PQcancelPoll(cancel)
            if status == _POLLING_OK:
                return True
            if status not in (_POLLING_READING, _POLLING_WRITING):
                return False  # PGRES_POLLING_FAILED
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable = status == _POLLING_READING
            if not _waiting.wait(lib.PQcancelSocket(cancel), readable, not readable, remaining):
                return False
    finally:
        lib.PQcancelFinish(cancel)


def wait_notifies(conn: Any, timeout: float | None = None) -> list[Any]:
    """Wait for LISTEN/NOTIFY notifications on ``conn`` and return them.

    Returns (and removes from ``conn.notifies``) the notifications received,
    as soon as there is at least one, or an empty list after ``timeout``
    seconds.  ``conn`` must have run ``LISTEN channel`` and be in autocommit
    mode (or have committed), as for any psycopg2 listener.  Waits on the
    event loop from bridged code.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        conn.poll()
        if conn.notifies:
            got = list(conn.notifies)
            del conn.notifies[:]
            return got
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return []
        _waiting.wait(conn.fileno(), True, False, remaining)


_ext: Any = None


def patch_psycopg2() -> None:
    """Make psycopg2 wait on the event loop: install greenbridge's wait callback.

    After this call, every psycopg2 connection in the process (existing ones
    included) sends queries without blocking: in sync code run by
    :func:`greenbridge.async_` / :func:`greenbridge.spawn` only the calling
    greenlet waits for the server, and the event loop keeps running.  In a
    thread with no event loop running, psycopg2 blocks as usual.  Idempotent.

    Limits (psycopg2's, for any wait callback): ``COPY`` (``copy_from``,
    ``copy_to``, ``copy_expert``) and large objects raise
    ``ProgrammingError``; a connection is closed after a cancellation (see
    the module docstring).  Host names are resolved by libpq and block the
    loop while they do: use an IP address or ``hostaddr``.

    Raises:
        ImportError: psycopg2 is not installed (the message names the package).
    """
    global _ext
    ext = _extensions()
    _ext = ext
    if ext.get_wait_callback() is wait_callback:
        return
    ext.set_wait_callback(wait_callback)
