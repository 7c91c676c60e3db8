"""Green ssl: client and server SSLSockets on one loop, with the stdlib's semantics.

Both ends of every connection are green SSLSockets run as bridged sync code on the
loop under test (certificates from trustme), so each test also proves that a TLS
peer in the same loop is served while the other end waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl as std_ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from greenbridge import _hub
from greenbridge.green import socket as gsocket
from greenbridge.green import ssl as gssl
from greenbridge.green import time as gtime

from .helpers import Backend, run_concurrently

trustme = pytest.importorskip("trustme")


class Certs:
    """A CA, a server certificate for localhost/127.0.0.1, and green contexts."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.server = gssl.SSLContext(gssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(self.server)
        self.client = gssl.create_default_context()
        self.ca.configure_trust(self.client)
        other = trustme.CA()
        self.untrusting = gssl.create_default_context()
        other.configure_trust(self.untrusting)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


def run(backend: Backend, *fns: Callable[[], Any], listener: Any = None) -> list[Any]:
    """Run sync callables concurrently as green code; their results, then the max heartbeat gap.

    On asyncio loops, also assert that nothing of ours is left registered at the end
    (but the still-open listening socket, whose registration is kept until it closes).
    """

    def nothing_left() -> None:
        if not backend.is_asyncio:
            return
        reg = _hub._asyncio.registry(asyncio.get_running_loop())
        keep = {listener.fileno()} if listener is not None else set()
        left = (set(reg.readers) | set(reg.writers)) - keep
        assert not left, f"registrations left on the loop: {left}"

    results, _elapsed, gap = run_concurrently(backend, list(fns), after=nothing_left)
    return [*results, gap]


@pytest.fixture
def listener() -> Iterator[gsocket.socket]:
    srv = gsocket.create_server(("127.0.0.1", 0))
    yield srv
    srv.close()


def port_of(srv: gsocket.socket) -> int:
    return srv.getsockname()[1]  # type: ignore[no-any-return]


def test_round_trip_client_and_server(backend: Backend, certs: Certs, listener: Any) -> None:
    def server() -> bytes:
        conn, _ = listener.accept()
        with certs.server.wrap_socket(conn, server_side=True) as tls:
            assert isinstance(tls, gssl.SSLSocket)
            data = tls.recv(100)
            buf = bytearray(100)
            n = tls.recv_into(buf)
            tls.sendall(data + bytes(buf[:n]))
            assert tls.read(10) == b"bye"
            return data

    def client() -> tuple[bytes, Any, str | None]:
        raw = gsocket.create_connection(("127.0.0.1", port_of(listener)))
        with certs.client.wrap_socket(raw, server_hostname="localhost") as tls:
            assert raw.fileno() == -1  # detached into the SSLSocket, as with the stdlib
            tls.sendall(b"hello ")
            gtime.sleep(0.01)
            tls.write(b"world")
            got = b""
            while len(got) < 11:
                got += tls.recv(100)
            tls.sendall(b"bye")
            return got, tls.getpeercert(), tls.version()

    sent, (got, peercert, version), _gap = run(backend, server, client, listener=listener)
    assert sent == b"hello "
    assert got == b"hello world"
    assert ("commonName", "localhost") in [pair for rdn in peercert["subject"] for pair in rdn] or (
        peercert["subjectAltName"]
    )
    assert version is not None and version.startswith("TLS")


def test_explicit_handshake(backend: Backend, certs: Certs, listener: Any) -> None:
    def server() -> None:
        conn, _ = listener.accept()
        tls = certs.server.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        tls.do_handshake()
        tls.sendall(b"ok")
        tls.close()

    def client() -> tuple[str, bytes]:
        raw = gsocket.create_connection(("127.0.0.1", port_of(listener)))
        tls = certs.client.wrap_socket(
            raw, server_hostname="localhost", do_handshake_on_connect=False
        )
        with tls:
            with pytest.raises(ValueError, match="handshake not done"):
                tls.getpeercert()
            tls.do_handshake()
            cert = tls.getpeercert()
            assert cert
            return "done", tls.recv(10)

    _, (what, data), _gap = run(backend, server, client, listener=listener)
    assert (what, data) == ("done", b"ok")


def test_non_blocking_raises_want_read(backend: Backend, certs: Certs, listener: Any) -> None:
    release: list[bool] = []

    def server() -> None:
        conn, _ = listener.accept()
        with certs.server.wrap_socket(conn, server_side=True) as tls:
            while not release:
                gtime.sleep(0.01)
            tls.sendall(b"late")
            tls.recv(1)  # until the client closes

    def client() -> list[str]:
        seen = []
        raw = gsocket.create_connection(("127.0.0.1", port_of(listener)))
        raw.setblocking(False)
        tls = certs.client.wrap_socket(
            raw, server_hostname="localhost", do_handshake_on_connect=False
        )
        with tls:
            # Non-blocking handshake: the stdlib raises instead of waiting.
            while True:
                try:
                    tls.do_handshake()
                    break
                except std_ssl.SSLWantReadError:
                    seen.append("handshake-want-read")
                    gtime.sleep(0.005)
            with pytest.raises(std_ssl.SSLWantReadError):
                tls.recv(10)
            seen.append("recv-want-read")
            release.append(True)
            tls.setblocking(True)
            assert tls.recv(10) == b"late"
        return seen

    _, seen, _gap = run(backend, server, client, listener=listener)
    assert "handshake-want-read" in seen and seen[-1] == "recv-want-read"
    assert gssl.SSLWantReadError is std_ssl.SSLWantReadError


def test_handshake_timeout(backend: Backend, certs: Certs, listener: Any) -> None:
    def silent_server() -> None:
        conn, _ = listener.accept()
        conn.recv(10000)  # the ClientHello; never answer
        gtime.sleep(0.6)
        conn.close()

    def client() -> tuple[type[BaseException], str, float, int]:
        raw = gsocket.create_connection(("127.0.0.1", port_of(listener)), timeout=0.2)
        t0 = time.monotonic()
        try:
            certs.client.wrap_socket(raw, server_hostname="localhost")
        except OSError as exc:
            return type(exc), str(exc), time.monotonic() - t0, raw.fileno()
        raise AssertionError("no timeout")

    _, (exc_type, message, elapsed, fd), _gap = run(
        backend, silent_server, client, listener=listener
    )
    assert issubclass(exc_type, std_ssl.socket_error) and exc_type is gsocket.timeout
    assert "handshake" in message and "timed out" in message
    assert 0.15 < elapsed < 2.0
    assert fd == -1


def test_unwrap_back_to_plain_socket(backend: Backend, certs: Certs, listener: Any) -> None:
    def server() -> bytes:
        conn, _ = listener.accept()
        tls = certs.server.wrap_socket(conn, server_side=True)
        assert tls.recv(5) == b"plain"
        plain = tls.unwrap()
        with plain:
            assert plain is tls  # the stdlib's unwrap() returns the same object, now plain
            plain.sendall(b"clear text")
            return plain.recv(100)  # type: ignore[no-any-return]

    def client() -> bytes:
        raw = gsocket.create_connection(("127.0.0.1", port_of(listener)))
        tls = certs.client.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"plain")
        plain = tls.unwrap()
        with plain:
            assert plain is tls
            data = b""
            while len(data) < 10:
                data += plain.recv(100)
            plain.sendall(b"client clear")
            return data

    from_client, from_server, _gap = run(backend, server, client, listener=listener)
    assert from_server == b"clear text"
    assert from_client == b"client clear"


def test_sendfile_and_makefile_over_tls(backend: Backend, certs: Certs, listener: Any) -> None:
    payload = os.urandom(300_000)
    with tempfile.TemporaryFile() as f:
        f.write(payload)
        f.flush()

        def server() -> tuple[bytes, bytes]:
            conn, _ = listener.accept()
            with certs.server.wrap_socket(conn, server_side=True) as tls:
                rfile = tls.makefile("rb")
                line = rfile.readline()
                body = rfile.read(len(payload))
                wfile = tls.makefile("wb")
                wfile.write(b"thanks\n")
                wfile.flush()
                rfile.close()
                wfile.close()
                return line, body

        def client() -> tuple[int, bytes]:
            raw = gsocket.create_connection(("127.0.0.1", port_of(listener)))
            with certs.client.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"file follows\n")
                f.seek(0)
                sent = tls.sendfile(f)
                with tls.makefile("rb") as rfile:
                    return sent, rfile.readline()

        (line, body), (sent, reply), _gap = run(backend, server, client, listener=listener)
    assert line == b"file follows\n"
    assert sent == len(payload) and body == payload
    assert reply == b"thanks\n"


def test_many_tls_clients_concurrently(backend: Backend, certs: Certs) -> None:
    n, slow = 20, 0.4
    listeners = [gsocket.create_server(("127.0.0.1", 0)) for _ in range(n)]

    def server(i: int) -> None:
        with listeners[i]:
            conn, _ = listeners[i].accept()
        with certs.server.wrap_socket(conn, server_side=True) as tls:
            request = tls.recv(100)
            gtime.sleep(slow)  # a slow server: the clients must overlap
            tls.sendall(b"re: " + request)

    def client(i: int) -> bytes:
        raw = gsocket.create_connection(("127.0.0.1", port_of(listeners[i])))
        with certs.client.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"%d" % i)
            return tls.recv(100)  # type: ignore[no-any-return]

    t0 = time.monotonic()
    results = run(
        backend,
        *[lambda i=i: server(i) for i in range(n)],
        *[lambda i=i: client(i) for i in range(n)],
    )
    elapsed = time.monotonic() - t0
    replies, gap = results[n:-1], results[-1]
    assert replies == [b"re: %d" % i for i in range(n)]
    # Serially: n * slow = 8 s.  Concurrently: about one slow call.
    assert elapsed < 3 * slow + 0.5, elapsed
    assert gap < 0.2, gap


def test_untrusted_certificate(backend: Backend, certs: Certs, listener: Any) -> None:
    def server() -> None:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(std_ssl.SSLError):  # the client aborts the handshake
            certs.server.wrap_socket(conn, server_side=True)

    def client() -> tuple[type[BaseException], str, int]:
        raw = gsocket.create_connection(("127.0.0.1", port_of(listener)))
        try:
            certs.untrusting.wrap_socket(raw, server_hostname="localhost")
        except std_ssl.SSLCertVerificationError as exc:
            return type(exc), exc.verify_message, raw.fileno()
        raise AssertionError("an untrusted certificate was accepted")

    _, (exc_type, why, fd), _gap = run(backend, server, client, listener=listener)
    assert exc_type is std_ssl.SSLCertVerificationError
    assert "certificate" in why
    assert fd == -1


def test_hostname_mismatch(backend: Backend, certs: Certs, listener: Any) -> None:
    def server() -> None:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(std_ssl.SSLError):
            certs.server.wrap_socket(conn, server_side=True)

    def client() -> str:
        raw = gsocket.create_connection(("127.0.0.1", port_of(listener)))
        try:
            certs.client.wrap_socket(raw, server_hostname="example.org")
        except std_ssl.SSLCertVerificationError as exc:
            return exc.verify_message  # type: ignore[no-any-return]
        raise AssertionError("a certificate for another host was accepted")

    _, why, _gap = run(backend, server, client, listener=listener)
    assert "Hostname mismatch" in why or "hostname" in why.lower()


def test_peer_closes_without_close_notify(backend: Backend, certs: Certs, listener: Any) -> None:
    def server() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            tls = certs.server.wrap_socket(conn, server_side=True)
            tls.recv(10)
            gtime.sleep(0.05)
            # Close the TCP connection under TLS: no close_notify.
            plain = gsocket.socket(fileno=tls.detach())
            plain.close()

    def client(ragged_ok: bool) -> Any:
        raw = gsocket.create_connection(("127.0.0.1", port_of(listener)))
        tls = certs.client.wrap_socket(
            raw, server_hostname="localhost", suppress_ragged_eofs=ragged_ok
        )
        with tls:
            tls.sendall(b"x")
            try:
                return tls.recv(10)
            except std_ssl.SSLError as exc:
                return type(exc)

    def clients() -> tuple[Any, Any]:
        return client(True), client(False)

    _, (suppressed, raised), _gap = run(backend, server, clients, listener=listener)
    assert suppressed == b""
    if sys.version_info >= (3, 10):
        assert raised is std_ssl.SSLEOFError
    else:  # 3.9's ssl module reports OpenSSL 3's unexpected EOF as a clean one
        assert raised in (b"", std_ssl.SSLEOFError)


def test_closed_socket_raises_like_the_stdlib(
    backend: Backend, certs: Certs, listener: Any
) -> None:
    def server() -> None:
        conn, _ = listener.accept()
        with certs.server.wrap_socket(conn, server_side=True) as tls:
            tls.recv(10)

    def client() -> type[BaseException]:
        raw = gsocket.create_connection(("127.0.0.1", port_of(listener)))
        tls = certs.client.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"x")
        tls.close()
        try:
            tls.recv(10)
        except OSError as exc:
            return type(exc)
        raise AssertionError("recv on a closed SSLSocket succeeded")

    _, exc_type, _gap = run(backend, server, client, listener=listener)
    assert issubclass(exc_type, OSError)
