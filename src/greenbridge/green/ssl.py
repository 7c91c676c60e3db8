"""Green ``ssl``: everything the stdlib ``ssl`` module exports, with a cooperative SSLSocket.

:class:`SSLSocket` combines the stdlib's ``ssl.SSLSocket`` with the green
socket: the descriptor is non-blocking, so OpenSSL reports
``SSLWantReadError``/``SSLWantWriteError`` instead of blocking, and the green
methods wait for the descriptor through the hub and retry (handshake, read,
write, unwrap), within the socket's timeout.  A socket with timeout 0.0 sees
those exceptions, as with the stdlib.

:class:`SSLContext` is the stdlib's with ``sslsocket_class`` set to the green
SSLSocket; ``create_default_context``, ``wrap_socket`` (where the Python has
it) and ``get_server_certificate`` are the stdlib's own code bound to this
module.  Certificate and host name verification are OpenSSL's and the
stdlib's, unchanged: never weaker.

Only contexts created through this module (or anything imported while it was
patched in) produce green sockets; an ``SSLContext`` of the original module
wraps sockets in the original, blocking class.
"""

from __future__ import annotations

from typing import Any

from .._hub import wait_socket as _wait_socket
from .._patcher import original
from . import _util
from . import os as _green_os
from . import socket as _gsocket

# Typed as Any: this module subclasses and rebinds stdlib internals that typeshed omits.
_std: Any = original("ssl")
_util.reexport(globals(), _std)

_WantRead = _std.SSLWantReadError
_std_read = _std.SSLSocket.read  # called with self: no super() object per call
_std_write = _std.SSLSocket.write
_WantWrite = _std.SSLWantWriteError
_timeout_error: Any = _gsocket.timeout  # type: ignore[attr-defined]

# The stdlib ssl code we rebind refers to these as globals.
socket = _gsocket.socket
create_connection = _gsocket.create_connection


_rebind = _util.rebinder(globals())  # a stdlib function, with this module as its globals


class SSLSocket(_std.SSLSocket, _gsocket.socket):  # type: ignore[misc]
    """A green ``ssl.SSLSocket``; create it with :meth:`SSLContext.wrap_socket`."""

    _sslobj: Any

    def _ssl_retry(self, what: str, fn: Any, *args: Any) -> Any:
        """Call ``fn`` until OpenSSL stops asking to wait, within the socket's timeout."""
        timeout = self._gb_timeout
        time_left = None  # the deadline, made at the first wait (most calls make none)
        while True:
            try:
                return fn(*args)
            except _WantRead:
                if timeout == 0.0:
                    raise
                readable = True
            except _WantWrite:
                if timeout == 0.0:
                    raise
                readable = False
            if time_left is None:
                time_left = _util.waits(timeout)
            remaining = next(time_left, 0.0)
            if remaining == 0.0 or not _wait_socket(self, self.fileno(), readable, remaining):
                raise _timeout_error(f"The {what} operation timed out")

    def do_handshake(self, block: bool = False) -> None:
        """Perform the TLS handshake, waiting cooperatively (``block``: as the stdlib)."""
        self._check_connected()
        timeout = self._gb_timeout
        if timeout == 0.0 and block:
            self._gb_timeout = None
        try:
            self._ssl_retry("handshake", self._sslobj.do_handshake)
        finally:
            self._gb_timeout = timeout

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # noqa: A002 - stdlib signature
        """``SSLSocket.read``; waits cooperatively."""
        return self._ssl_retry("read", _std_read, self, len, buffer)

    def write(self, data: Any) -> int:
        """``SSLSocket.write``; waits cooperatively."""
        return self._ssl_retry("write", _std_write, self, data)  # type: ignore[no-any-return]

    def send(self, data: Any, flags: int = 0) -> int:
        """``SSLSocket.send``; waits cooperatively."""
        if self._sslobj is None:
            return super().send(data, flags)  # type: ignore[no-any-return]
        return self._ssl_retry("write", super().send, data, flags)  # type: ignore[no-any-return]

    def unwrap(self) -> Any:
        """Shut TLS down and return the plain socket (waits cooperatively)."""
        if self._sslobj is None:
            raise ValueError("No SSL wrapper around " + str(self))
        plain = self._ssl_retry("shutdown", self._sslobj.shutdown)
        self._sslobj = None
        return plain


class SSLContext(_std.SSLContext):  # type: ignore[misc]
    """``ssl.SSLContext`` whose ``wrap_socket`` returns green :class:`SSLSocket` objects."""

    sslsocket_class = SSLSocket


create_default_context = _rebind(_std.create_default_context)
_create_unverified_context = _rebind(_std._create_unverified_context)
_create_default_https_context = create_default_context
_create_stdlib_context = _create_unverified_context
get_server_certificate = _rebind(_std.get_server_certificate)
if hasattr(_std, "wrap_socket"):  # Python < 3.12
    wrap_socket = _rebind(_std.wrap_socket)
os = _green_os  # the stdlib module's ``os`` name, green
