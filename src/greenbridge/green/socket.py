"""Green ``socket``: everything the stdlib ``socket`` module exports, made cooperative.

The :class:`socket` class subclasses the stdlib's.  Its file descriptor is
always non-blocking at the OS level; the timeout you set (``settimeout``,
``setblocking``, ``getdefaulttimeout()``) is kept by the object and emulated:
each blocking method tries the operation first and, only when it would block,
waits through :mod:`greenbridge._hub` (so under greenbridge only the calling
greenlet is suspended, and with no event loop running the thread blocks as
usual).  A socket with a timeout raises ``socket.timeout`` ("timed out") after
that long; a non-blocking socket raises ``BlockingIOError`` at once.

Functions that create sockets (``create_connection``, ``create_server``,
``socketpair``, ``fromfd``, ``socket.accept``, ``socket.dup``) are the stdlib's
own code bound to this module, so they return green sockets with the stdlib's
exact semantics.  Name resolution (``getaddrinfo``, ``gethostbyname(_ex)``,
``gethostbyaddr``, ``getnameinfo``, ``getfqdn``, and host names given to
``connect``/``sendto``) runs in greenbridge's offload threads under a loop, so
it never blocks the loop.

A caveat the stdlib does not have: the descriptor itself is in non-blocking
mode, so a process or a C library that receives ``sock.fileno()`` sees it
non-blocking.
"""

from __future__ import annotations

import errno as _errno
import functools as _functools
import sys as _sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .._hub import notify_closing as _notify_closing
from .._hub import share_turn as _share_turn
from .._hub import sleep as _sleep
from .._hub import wait_socket as _wait_socket
from .._offload import offload as _offload
from .._patcher import original
from .._patcher import rebind as _patcher_rebind
from . import _util
from . import os as _green_os
from . import selectors as _green_selectors

if TYPE_CHECKING:
    import socket as _std
else:
    _std = original("socket")

_c = _std._socket  # type: ignore[attr-defined]  # the C module

_util.reexport(globals(), _std)

_CSocket = _c.socket
_timeout_error = _std.timeout
_waits = _util.waits
_no_loop = _util.no_loop

_c_send = _CSocket.send
_c_sendto = _CSocket.sendto
_c_accept = _CSocket._accept
_c_connect = _CSocket.connect
_c_settimeout = _CSocket.settimeout
_c_gettimeout = _CSocket.gettimeout
_c_close = _CSocket.close
_fileno = _CSocket.fileno
_strerror = original("os").strerror


_rebind = _util.rebinder(globals())  # a stdlib function, with this module as its globals


_DONTWAIT: int = getattr(_c, "MSG_DONTWAIT", 0)  # this call must not block, whatever the timeout


def _flag_arg(args: tuple[Any, ...], index: int) -> int:
    """The flags argument of recvmsg/sendmsg (``index`` in ``args``), 0 if absent."""
    if len(args) > index and isinstance(args[index], int):
        return int(args[index])
    return 0


def _timed_out() -> OSError:
    return _timeout_error("timed out")


# The blocking methods.  Each one calls the C method directly first (the fast
# path: most calls do not block) and, only when it raises BlockingIOError on a
# socket that may wait, waits and retries through ``socket._retry``, outside
# the ``except`` block so that an error of the retry is not chained to the
# BlockingIOError.  One factory per signature: a method taking ``*args`` would
# pay for packing its arguments on every call.


def _name_method(method: Any, op: Any) -> Any:
    method.__name__ = op.__name__
    method.__qualname__ = f"socket.{op.__name__}"
    method.__doc__ = f"``socket.{op.__name__}``; waits cooperatively."
    return method


#: After a read that followed a send found nothing there, how many reads after
#: a send wait before they try; the next one tries first again (see `_read_after_send`).
_WAIT_FIRST = 15


def _read_after_send(sock: socket, op: Any, args: tuple[Any, ...], flags: int, size: Any) -> Any:
    """``op(sock, *args)``, a read right after a send on ``sock``: wait first, or try first.

    In a request/response exchange, the answer to what was just sent is
    often not there yet when the sender reads: trying first then costs a
    ``recv`` that fails with EAGAIN, a system call per exchange, before the
    wait.  When the peer is quicker than the code between the send and the
    read, the answer is there and trying first costs nothing.  So each
    socket learns which it is: a read after a send that finds nothing makes
    the next `_WAIT_FIRST` ones wait for the socket to be readable before
    they read, and then one tries first again; one that finds the answer
    there makes them try first.  (A wait for data that was there already
    ends at the loop's next poll.)  Only reads that may wait (a blocking
    socket or one with a timeout, without ``MSG_DONTWAIT``) of at least one
    byte, on an open socket, ever wait first.
    """
    sock._gb_sent = False
    waits = sock._gb_waits
    if (
        waits
        and type(size) is int
        and size > 0
        and not flags & _DONTWAIT
        and sock._gb_timeout != 0.0
        and _fileno(sock) >= 0
    ):
        sock._gb_waits = waits - 1
        return sock._retry(op, True, args)
    try:
        result = op(sock, *args)
    except BlockingIOError:
        if sock._gb_timeout == 0.0 or flags & _DONTWAIT:
            raise
        sock._gb_waits = _WAIT_FIRST
    else:
        sock._gb_waits = 0
        return result
    return sock._retry(op, True, args)  # (outside the except: not chained to it)


def _nbytes(buffer: Any) -> Any:
    """The size of ``buffer`` in bytes, or None when it has none (C raises then)."""
    try:
        with memoryview(buffer) as view:
            return view.nbytes
    except TypeError:
        return None


def _with_flags(op: Any, readable: bool) -> Any:
    """``recv``, ``recvfrom``, ``send``: ``(bufsize or data, flags=0, /)``."""
    if not readable:

        def send(self: socket, arg: Any, flags: int = 0, /) -> Any:
            try:
                sent = op(self, arg, flags)
                self._gb_sent = True
                return sent
            except BlockingIOError:
                if self._gb_timeout == 0.0 or flags & _DONTWAIT:
                    raise
            sent = self._retry(op, False, (arg, flags))  # (not chained to BlockingIOError)
            self._gb_sent = True
            return sent

        return _name_method(send, op)

    def method(self: socket, arg: Any, flags: int = 0, /) -> Any:
        if self._gb_sent:
            return _read_after_send(self, op, (arg, flags), flags, arg)
        try:
            return op(self, arg, flags)
        except BlockingIOError:
            if self._gb_timeout == 0.0 or flags & _DONTWAIT:
                raise
        if self._gb_timeout is None:  # `_retry`, inlined for a blocking socket
            fd = _fileno(self)
            while True:
                _wait_socket(self, fd, readable, None)
                try:
                    return op(self, arg, flags)
                except BlockingIOError:
                    pass
        return self._retry(op, readable, (arg, flags))

    return _name_method(method, op)


def _into(op: Any) -> Any:
    """``recv_into``, ``recvfrom_into``: ``(buffer, nbytes=0, flags=0)``."""

    def method(self: socket, buffer: Any, nbytes: int = 0, flags: int = 0) -> Any:
        if self._gb_sent:
            size = nbytes or (_nbytes(buffer) if self._gb_waits else 0)
            return _read_after_send(self, op, (buffer, nbytes, flags), flags, size)
        try:
            return op(self, buffer, nbytes, flags)
        except BlockingIOError:
            if self._gb_timeout == 0.0 or flags & _DONTWAIT:
                raise
        if self._gb_timeout is None:  # `_retry`, inlined for a blocking socket
            fd = _fileno(self)
            while True:
                _wait_socket(self, fd, True, None)
                try:
                    return op(self, buffer, nbytes, flags)
                except BlockingIOError:
                    pass
        return self._retry(op, True, (buffer, nbytes, flags))

    return _name_method(method, op)


def _with_args(op: Any, readable: bool) -> Any:
    """``recvmsg``, ``recvmsg_into``, ``sendmsg``, ``sendmsg_afalg``: any arguments."""

    def method(self: socket, *args: Any, **kwargs: Any) -> Any:
        try:
            return op(self, *args, **kwargs)
        except BlockingIOError:
            if self._gb_timeout == 0.0 or _flag_arg(args, 2) & _DONTWAIT:
                raise
        return self._retry(_functools.partial(op, **kwargs) if kwargs else op, readable, args)

    return _name_method(method, op)


class socket(_std.socket):  # noqa: N801 - the stdlib's name
    """A green ``socket.socket``: the stdlib class with cooperative blocking methods."""

    # _gb_timeout: the timeout as the user set it (the fd itself is non-blocking);
    # _gb_sent: whether a send came last, and _gb_waits how many reads after a
    # send wait before they try (see `_read_after_send`).
    __slots__ = ("_gb_timeout", "_gb_sent", "_gb_waits")

    def __init__(
        self, family: int = -1, type: int = -1, proto: int = -1, fileno: Any = None
    ) -> None:
        super().__init__(family, type, proto, fileno)
        self._gb_sent = False
        self._gb_waits = 0
        self._gb_timeout: float | None = _c_gettimeout(self)
        _c_settimeout(self, 0.0)

    # -- timeouts -----------------------------------------------------------

    def settimeout(self, value: float | None, /) -> None:
        """Set the timeout of blocking operations: None blocks, 0.0 is non-blocking."""
        _c_settimeout(self, value)  # the stdlib's argument checks
        self._gb_timeout = _c_gettimeout(self)
        _c_settimeout(self, 0.0)

    def gettimeout(self) -> float | None:
        """Return the timeout in seconds (float), or None for a blocking socket."""
        return self._gb_timeout

    def setblocking(self, flag: bool, /) -> None:
        """``setblocking(True)`` is ``settimeout(None)``; ``False`` is ``settimeout(0.0)``."""
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        """Return False for a non-blocking socket (timeout 0.0), True otherwise."""
        return self._gb_timeout != 0.0

    @property
    def timeout(self) -> float | None:
        """The timeout (None: blocking), as ``gettimeout()``."""
        return self._gb_timeout

    # -- waiting ------------------------------------------------------------

    def _retry(
        self,
        op: Callable[..., Any],
        readable: bool,
        args: tuple[Any, ...],
        time_left: Iterator[float | None] | None = None,
    ) -> Any:
        """``op(self, *args)`` blocked: wait until the fd is ready and retry until it does not.

        Within the socket's timeout, or what is left in ``time_left`` (see
        `greenbridge.green._util.waits`) when one timeout bounds several calls.
        """
        fd = _fileno(self)
        if time_left is None and self._gb_timeout is None:
            # A blocking socket: no deadline to keep (and no iterator to make).
            while True:
                _wait_socket(self, fd, readable, None)
                try:
                    return op(self, *args)
                except BlockingIOError:
                    pass
        for remaining in _waits(self._gb_timeout) if time_left is None else time_left:
            if not _wait_socket(self, fd, readable, remaining):
                break
            try:
                return op(self, *args)
            except BlockingIOError:
                pass
        raise _timed_out()

    # -- receiving ----------------------------------------------------------

    recv = _with_flags(_CSocket.recv, True)
    recvfrom = _with_flags(_CSocket.recvfrom, True)
    recv_into = _into(_CSocket.recv_into)
    recvfrom_into = _into(_CSocket.recvfrom_into)
    if hasattr(_CSocket, "recvmsg"):
        recvmsg = _with_args(_CSocket.recvmsg, True)
        recvmsg_into = _with_args(_CSocket.recvmsg_into, True)

    # -- sending ------------------------------------------------------------

    send = _with_flags(_CSocket.send, False)

    def sendto(self, data: Any, *args: Any) -> int:
        """``socket.sendto(data[, flags], address)``; waits (and resolves names) cooperatively."""
        if args:
            args = (*args[:-1], self._resolve(args[-1]))
        try:
            return _c_sendto(self, data, *args)  # type: ignore[no-any-return]
        except BlockingIOError:
            if self._gb_timeout == 0.0 or (len(args) == 2 and args[0] & _DONTWAIT):
                raise
        return self._retry(_c_sendto, False, (data, *args))  # type: ignore[no-any-return]

    if hasattr(_CSocket, "sendmsg"):
        sendmsg = _with_args(_CSocket.sendmsg, False)
    if hasattr(_CSocket, "sendmsg_afalg"):
        sendmsg_afalg = _with_args(_CSocket.sendmsg_afalg, False)

    def sendall(self, data: Any, flags: int = 0, /) -> None:
        """``socket.sendall``: send everything; a timeout bounds the whole call."""
        try:
            sent = _c_send(self, data, flags)  # also the stdlib's type checks
        except BlockingIOError:
            if self._gb_timeout == 0.0 or flags & _DONTWAIT:
                raise
            sent = 0
        self._gb_sent = True
        if type(data) is bytes and sent == len(data):
            return  # all sent at once: the common case
        with memoryview(data) as view, view.cast("B") as bytes_view:
            total = len(bytes_view)
            if sent >= total:
                return
            timeout = self._gb_timeout
            time_left = _waits(timeout)  # one timeout for the whole call
            while sent < total:
                try:
                    sent += _c_send(self, bytes_view[sent:], flags)
                    continue
                except BlockingIOError:
                    if timeout == 0.0 or flags & _DONTWAIT:
                        raise
                sent += self._retry(_c_send, False, (bytes_view[sent:], flags), time_left)

    # -- connecting ---------------------------------------------------------

    def _resolve(self, address: Any) -> Any:
        """Resolve a host name in an IP address without blocking the loop (as C would)."""
        if (
            type(address) is not tuple or len(address) < 2 or self.family not in (AF_INET, AF_INET6)  # type: ignore[name-defined]  # noqa: F821
        ):
            return address
        host = address[0]
        if not isinstance(host, str) or host in ("", "<broadcast>"):
            return address
        try:
            _c.inet_pton(self.family, host)
            return address
        except (OSError, ValueError):
            pass
        if "%" in host or _no_loop():
            return address  # a scoped IPv6 literal, or no loop: let C do it as usual
        infos = getaddrinfo(host, address[1], self.family)
        return (infos[0][4][0], *address[1:])

    def connect(self, address: Any, /) -> None:
        """``socket.connect``; waits (and resolves names) cooperatively."""
        socket._gb_connect(self, address)

    def _gb_connect(self, address: Any) -> None:
        address = self._resolve(address)
        try:
            _c_connect(self, address)
            return
        except BlockingIOError as exc:
            if self._gb_timeout == 0.0:
                raise
            code = exc.errno
        except InterruptedError:
            code = _errno.EINPROGRESS
        for remaining in _waits(self._gb_timeout):
            if code == _errno.EAGAIN:
                # AF_UNIX with a full backlog: no readiness to wait for, so retry.
                _sleep(0.001 if remaining is None else min(0.001, remaining))
                try:
                    _c_connect(self, address)
                    return
                except BlockingIOError as exc:
                    code = exc.errno
                continue
            if not _wait_socket(self, self.fileno(), False, remaining):
                break
            err = self.getsockopt(SOL_SOCKET, SO_ERROR)  # type: ignore[name-defined]  # noqa: F821
            if err == 0:
                return
            if err in (_errno.EINPROGRESS, _errno.EALREADY):
                continue
            raise OSError(err, _strerror(err))
        raise _timed_out()

    def connect_ex(self, address: Any, /) -> int:
        """``socket.connect_ex``: as connect, but return the error number (0 on success)."""
        try:
            socket._gb_connect(self, address)  # not self.connect: SSLSocket overrides it
        except _timeout_error:
            return _errno.EWOULDBLOCK
        except gaierror:  # type: ignore[name-defined]  # noqa: F821
            raise
        except OSError as exc:
            if exc.errno is None:
                raise
            return exc.errno
        return 0

    def _accept(self) -> tuple[int, Any]:
        """Wait for a connection; return (fd, address) as ``_socket.socket._accept``."""
        if self._gb_timeout != 0.0:
            # Under a burst of connections accept returns at once every time:
            # an accept loop would take the whole backlog in one turn of the
            # loop (and start all their handlers at once), where an OS thread
            # would be preempted.  Give the loop a turn now and then, before
            # taking a connection (a cancellation here leaves it in the backlog).
            _share_turn()
        try:
            return _c_accept(self)  # type: ignore[no-any-return]
        except BlockingIOError:
            if self._gb_timeout == 0.0:
                raise
        return self._retry(_c_accept, True, ())  # type: ignore[no-any-return]

    # -- closing ------------------------------------------------------------

    def _real_close(self, _ss: Any = _CSocket) -> None:
        fd = _ss.fileno(self)
        if fd >= 0:
            _notify_closing(fd)
        _ss.close(self)

    # accept, dup, sendfile: the stdlib's own code, bound to this module, so
    # they build green sockets and wait with the green selectors.
    accept = _rebind(_std.socket.accept)
    if hasattr(_std.socket, "_sendfile_use_sendfile"):
        _sendfile_use_sendfile = _rebind(_std.socket._sendfile_use_sendfile)
    _sendfile_use_send = _rebind(_std.socket._sendfile_use_send)  # type: ignore[attr-defined]


SocketType = _std.SocketType


# ---------------------------------------------------------------------------
# name resolution off the loop


def _offloaded(fn: Any, *args: Any) -> Any:
    if _no_loop():
        return fn(*args)
    return _offload(fn, *args)


def _is_numeric_host(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str):
        return True  # let the C function raise its TypeError
    for family in (_c.AF_INET, getattr(_c, "AF_INET6", None)):
        if family is None:
            continue
        try:
            _c.inet_pton(family, host)
            return True
        except (OSError, ValueError):
            pass
    return False


def _c_getaddrinfo(*args: Any, **kwargs: Any) -> Any:
    if _is_numeric_host(args[0] if args else kwargs.get("host")):
        return _c.getaddrinfo(*args, **kwargs)  # no DNS: nothing to wait for
    return _offloaded(lambda: _c.getaddrinfo(*args, **kwargs))


class _CProxy:
    """``_socket`` for the rebound stdlib getaddrinfo: the resolver goes off the loop."""

    getaddrinfo = staticmethod(_c_getaddrinfo)


def _with_c(fn: Any) -> Any:
    """``fn`` rebound to a copy of this module's globals whose ``_socket`` is `_CProxy`."""
    namespace = dict(globals())
    namespace["_socket"] = _CProxy
    return _patcher_rebind(fn, namespace)


getaddrinfo = _with_c(_std.getaddrinfo)


def gethostbyname(hostname: str, /) -> str:
    """``socket.gethostbyname``, off the loop."""
    if _is_numeric_host(hostname):
        return _c.gethostbyname(hostname)  # type: ignore[no-any-return]
    return _offloaded(_c.gethostbyname, hostname)  # type: ignore[no-any-return]


def gethostbyname_ex(hostname: str, /) -> tuple[str, list[str], list[str]]:
    """``socket.gethostbyname_ex``, off the loop."""
    return _offloaded(_c.gethostbyname_ex, hostname)  # type: ignore[no-any-return]


def gethostbyaddr(ip_address: str, /) -> tuple[str, list[str], list[str]]:
    """``socket.gethostbyaddr``, off the loop."""
    return _offloaded(_c.gethostbyaddr, ip_address)  # type: ignore[no-any-return]


def getnameinfo(sockaddr: Any, flags: int, /) -> tuple[str, str]:
    """``socket.getnameinfo``, off the loop."""
    if not isinstance(sockaddr, tuple):
        # The C function's own check, here, and without keeping a reference to
        # the bad argument in the traceback's frame.
        del sockaddr
        raise TypeError("getnameinfo() argument 1 must be a tuple")
    return _offloaded(_c.getnameinfo, sockaddr, flags)  # type: ignore[no-any-return]


# Socket-creating helpers: the stdlib's code with this module as globals.
create_connection = _rebind(_std.create_connection)
create_server = _rebind(_std.create_server)
has_dualstack_ipv6 = _rebind(_std.has_dualstack_ipv6)
fromfd = _rebind(_std.fromfd)
getfqdn = _rebind(_std.getfqdn)
if _sys.platform != "win32" or hasattr(_std, "socketpair"):
    socketpair = _rebind(_std.socketpair)
if hasattr(_std, "_fallback_socketpair"):  # newer Pythons: the pure-Python socketpair
    _fallback_socketpair = _rebind(_std._fallback_socketpair)
if hasattr(_std, "fromshare"):  # pragma: no cover - Windows
    fromshare = _rebind(_std.fromshare)
# The stdlib module's names for the modules it uses, green.
os = _green_os
selectors = _green_selectors
