"""Real client libraries imported under patch_blocking(), many requests on one loop.

Servers run in a thread with their own asyncio loop (so they are independent of the
loop under test); the clients are imported fresh inside ``patch_blocking()``, and run
concurrently as bridged sync code.  Each test proves the loop never blocked: N slow
calls take about one call's time, and a heartbeat's largest gap stays small.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import io
import ssl as std_ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

import greenbridge

from .helpers import Backend, require_mariadb, require_redis, run_concurrently

SLOW = 0.3
N = 20

# Modules to import afresh under patch_blocking() (and restore afterwards).
_FRESH = (
    "requests",
    "urllib3",
    "http.client",
    "urllib.request",
    "redis",
    "pymysql",
    "smtplib",
    "ftplib",
    "http",
    "urllib",
    "email.utils",
)


@pytest.fixture(scope="module")
def green_import() -> Iterator[Callable[[str], ModuleType]]:
    """Import a client library (and what it imports) with the green modules in place."""
    saved = {
        name: mod
        for name, mod in sys.modules.items()
        if any(name == p or name.startswith(p + ".") for p in _FRESH)
    }

    def load(name: str) -> ModuleType:
        with greenbridge.patch_blocking():
            return importlib.import_module(name)

    for name in saved:
        del sys.modules[name]
    try:
        yield load
    finally:
        for name in [
            n for n in sys.modules if any(n == p or n.startswith(p + ".") for p in _FRESH)
        ]:
            del sys.modules[name]
        sys.modules.update(saved)


def concurrently(backend: Backend, fns: list[Callable[[], Any]]) -> tuple[list[Any], float, float]:
    """Run sync callables concurrently; return (results, elapsed, heartbeat's max gap)."""
    return run_concurrently(backend, fns)


# ---------------------------------------------------------------- servers


class ThreadServers:
    """Servers on a private asyncio loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.servers: list[asyncio.AbstractServer] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> None:
        self.thread.start()
        self.ready.wait()

    def serve(self, handler: Any, ssl: std_ssl.SSLContext | None = None) -> int:
        async def make() -> asyncio.AbstractServer:
            return await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl, backlog=256)

        server = asyncio.run_coroutine_threadsafe(make(), self.loop).result(10)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        async def close() -> None:
            for s in self.servers:
                s.close()
                await s.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def http_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A small HTTP/1.1 server: GET /slow waits SLOW s; keep-alive; POST echoes the body."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)
            }
            body = b""
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            if path.startswith("/slow"):
                await asyncio.sleep(SLOW)
            payload = body if method == "POST" else f"{method} {path}".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                % (len(payload), payload)
            )
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, ConnectionError, std_ssl.SSLError):
        pass
    finally:
        writer.close()


async def smtp_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal SMTP server: EHLO/HELO, MAIL, RCPT, DATA (slow), QUIT."""

    def reply(line: str) -> None:
        writer.write(line.encode() + b"\r\n")

    reply("220 test ESMTP")
    try:
        while True:
            line = (await reader.readline()).decode().strip()
            if not line:
                break
            cmd = line.split(" ", 1)[0].upper()
            if cmd == "EHLO":
                reply("250-test")
                reply("250 8BITMIME")
            elif cmd in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
                reply("250 OK")
            elif cmd == "DATA":
                reply("354 go ahead")
                await writer.drain()
                while (await reader.readline()) != b".\r\n":
                    pass
                await asyncio.sleep(SLOW)
                reply("250 queued")
            elif cmd == "QUIT":
                reply("221 bye")
                await writer.drain()
                break
            else:
                reply("502 not implemented")
            await writer.drain()
    finally:
        writer.close()


FTP_FILES = {"small.txt": b"hello ftp\r\n", "big.bin": bytes(range(256)) * 4096}


async def _accept_data(
    fut: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    r: asyncio.StreamReader,
    w: asyncio.StreamWriter,
) -> None:
    if fut.done():
        w.close()  # the command it was for has gone
    else:
        fut.set_result((r, w))


async def ftp_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal FTP server: login, TYPE, PASV, RETR (slow), STOR, SIZE, NOOP, QUIT."""
    stored: dict[str, bytes] = {}
    data_conn: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None = None
    data_server: asyncio.AbstractServer | None = None

    def reply(line: str) -> None:
        writer.write(line.encode() + b"\r\n")

    async def open_data() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal data_conn, data_server
        assert data_conn is not None and data_server is not None
        streams = await data_conn
        data_server.close()
        data_conn = data_server = None
        return streams

    def drop_data() -> None:
        nonlocal data_conn, data_server
        if data_server is not None:
            data_server.close()
        if data_conn is not None:
            if data_conn.done():
                data_conn.result()[1].close()
            else:
                data_conn.cancel()
        data_conn = data_server = None

    reply("220 test FTP")
    try:
        while True:
            line = (await reader.readline()).decode().strip()
            if not line:
                break
            cmd, _, arg = line.partition(" ")
            cmd = cmd.upper()
            if cmd == "USER":
                reply("331 password please")
            elif cmd == "PASS":
                reply("230 logged in")
            elif cmd in ("TYPE", "NOOP"):
                reply("200 OK")
            elif cmd == "PASV":
                loop = asyncio.get_running_loop()
                data_conn = loop.create_future()
                data_server = await asyncio.start_server(
                    functools.partial(_accept_data, data_conn), "127.0.0.1", 0
                )
                port = data_server.sockets[0].getsockname()[1]
                reply(f"227 Entering Passive Mode (127,0,0,1,{port >> 8},{port & 255})")
            elif cmd == "SIZE":
                size = len(FTP_FILES.get(arg, stored.get(arg, b"")))
                reply(f"213 {size}")
            elif cmd == "RETR":
                content = FTP_FILES.get(arg, stored.get(arg))
                if content is None:
                    drop_data()
                    reply("550 no such file")
                else:
                    reply("150 sending")
                    _, dw = await open_data()
                    await asyncio.sleep(SLOW)
                    dw.write(content)
                    await dw.drain()
                    dw.close()
                    reply("226 done")
            elif cmd == "STOR":
                reply("150 go ahead")
                await writer.drain()
                dr, dw = await open_data()
                stored[arg] = await dr.read()
                dw.close()
                reply("226 stored")
            elif cmd == "QUIT":
                reply("221 bye")
                await writer.drain()
                break
            else:
                reply("502 not implemented")
            await writer.drain()
    finally:
        drop_data()
        writer.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_ctx = std_ssl.create_default_context(std_ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    other_ca = trustme.CA()
    bad_ctx = std_ssl.create_default_context(std_ssl.Purpose.CLIENT_AUTH)
    other_ca.issue_cert("localhost").configure_cert(bad_ctx)
    ts = ThreadServers()
    ts.start()
    with ca.cert_pem.tempfile() as ca_path:
        yield {
            "http": ts.serve(http_handler),
            "https": ts.serve(http_handler, ssl=server_ctx),
            "https_bad": ts.serve(http_handler, ssl=bad_ctx),
            "smtp": ts.serve(smtp_handler),
            "ftp": ts.serve(ftp_handler),
            "ca": ca_path,
        }
    ts.stop()


def assert_concurrent(elapsed: float, gap: float, n_rounds: int = 1) -> None:
    # N calls of SLOW each: serially N*SLOW; concurrently about SLOW.
    assert elapsed < 3 * SLOW * n_rounds + 0.5, elapsed
    assert gap < 0.2, gap


# ---------------------------------------------------------------- HTTP clients


def test_http_client(backend: Backend, servers: dict[str, Any], green_import: Any) -> None:
    http_client = green_import("http.client")
    assert http_client.socket.__name__ == "greenbridge.green.socket"

    def get(i: int) -> bytes:
        conn = http_client.HTTPConnection("127.0.0.1", servers["http"], timeout=10)
        try:
            conn.request("GET", f"/slow/{i}")
            return conn.getresponse().read()  # type: ignore[no-any-return]
        finally:
            conn.close()

    results, elapsed, gap = concurrently(backend, [lambda i=i: get(i) for i in range(N)])
    assert results == [f"GET /slow/{i}".encode() for i in range(N)]
    assert_concurrent(elapsed, gap)


def test_https_http_client(backend: Backend, servers: dict[str, Any], green_import: Any) -> None:
    http_client = green_import("http.client")
    ssl = green_import("ssl")

    def get(i: int) -> bytes:
        ctx = ssl.create_default_context(cafile=servers["ca"])
        conn = http_client.HTTPSConnection("localhost", servers["https"], timeout=10, context=ctx)
        try:
            conn.request("GET", f"/slow/{i}")
            assert type(conn.sock).__module__ == "greenbridge.green.ssl"
            return conn.getresponse().read()  # type: ignore[no-any-return]
        finally:
            conn.close()

    results, elapsed, gap = concurrently(backend, [lambda i=i: get(i) for i in range(N)])
    assert results == [f"GET /slow/{i}".encode() for i in range(N)]
    assert_concurrent(elapsed, gap)


def test_requests_http_and_https(aio: Backend, servers: dict[str, Any], green_import: Any) -> None:
    requests = green_import("requests")

    def get(i: int) -> tuple[str, str]:
        with requests.Session() as s:
            a = s.get(f"http://127.0.0.1:{servers['http']}/slow/{i}", timeout=10).text
            b = s.post(
                f"https://localhost:{servers['https']}/slow", data=b"x" * i, verify=servers["ca"]
            ).text
            return a, b

    results, elapsed, gap = concurrently(aio, [lambda i=i: get(i) for i in range(N)])
    assert results == [(f"GET /slow/{i}", "x" * i) for i in range(N)]
    assert_concurrent(elapsed, gap, n_rounds=2)


def test_urllib3_pool(aio: Backend, servers: dict[str, Any], green_import: Any) -> None:
    urllib3 = green_import("urllib3")
    pool = urllib3.HTTPSConnectionPool(
        "localhost", servers["https"], maxsize=N, ca_certs=servers["ca"], cert_reqs="CERT_REQUIRED"
    )

    def get(i: int) -> bytes:
        return pool.request("GET", f"/slow/{i}").data  # type: ignore[no-any-return]

    try:
        results, elapsed, gap = concurrently(aio, [lambda i=i: get(i) for i in range(N)])
    finally:
        pool.close()
    assert results == [f"GET /slow/{i}".encode() for i in range(N)]
    assert_concurrent(elapsed, gap)


def test_urllib_request(backend: Backend, servers: dict[str, Any], green_import: Any) -> None:
    request = green_import("urllib.request")
    ssl = green_import("ssl")

    def get(i: int) -> bytes:
        if i % 2:
            url = f"http://127.0.0.1:{servers['http']}/slow/{i}"
            with request.urlopen(url, timeout=10) as r:
                return r.read()  # type: ignore[no-any-return]
        ctx = ssl.create_default_context(cafile=servers["ca"])
        url = f"https://localhost:{servers['https']}/slow/{i}"
        with request.urlopen(url, timeout=10, context=ctx) as r:
            return r.read()  # type: ignore[no-any-return]

    results, elapsed, gap = concurrently(backend, [lambda i=i: get(i) for i in range(N)])
    assert results == [f"GET /slow/{i}".encode() for i in range(N)]
    assert_concurrent(elapsed, gap)


def test_bad_certificate_fails_the_handshake(
    aio: Backend, servers: dict[str, Any], green_import: Any
) -> None:
    http_client = green_import("http.client")
    ssl = green_import("ssl")

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def get() -> type[BaseException]:
            ctx = ssl.create_default_context(cafile=servers["ca"])
            conn = http_client.HTTPSConnection(
                "localhost", servers["https_bad"], timeout=10, context=ctx
            )
            try:
                conn.request("GET", "/")
            except std_ssl.SSLCertVerificationError as exc:
                assert conn.sock is None or conn.sock.fileno() == -1  # closed
                return type(exc)
            finally:
                conn.close()
            raise AssertionError("the bad certificate was accepted")

        assert await greenbridge.async_(get)() is std_ssl.SSLCertVerificationError
        from greenbridge import _hub

        reg = _hub._asyncio.registry(loop)
        assert not reg.readers and not reg.writers

    aio.run(main)


# ---------------------------------------------------------------- databases, mail


def test_redis(aio: Backend, green_import: Any) -> None:
    require_redis()
    redis = green_import("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, max_connections=N + 5)

    def call(i: int) -> Any:
        key = f"greenbridge:test:{i}:{time.monotonic_ns()}"
        assert client.blpop([key], timeout=SLOW) is None  # waits SLOW seconds on the server
        client.set(key, i, ex=5)
        return int(client.get(key))

    try:
        results, elapsed, gap = concurrently(aio, [lambda i=i: call(i) for i in range(N)])
    finally:
        client.close()
    assert results == list(range(N))
    assert_concurrent(elapsed, gap)


def test_pymysql(aio: Backend, green_import: Any) -> None:
    require_mariadb()
    pymysql = green_import("pymysql")

    # Connecting costs CPU (pymysql builds an SSL context per connection, ~20 ms of
    # loading CA certificates): open the connections first, then measure the queries.
    conns = concurrently(
        aio,
        [lambda: pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test")] * 10,
    )[0]

    def call(i: int) -> Any:
        with conns[i].cursor() as cur:
            cur.execute("SELECT SLEEP(%s), %s", (SLOW, i))
            return cur.fetchone()[1]

    try:
        results, elapsed, gap = concurrently(aio, [lambda i=i: call(i) for i in range(10)])
    finally:
        for conn in conns:
            conn.close()
    assert results == list(range(10))
    assert_concurrent(elapsed, gap)


def test_smtplib(backend: Backend, servers: dict[str, Any], green_import: Any) -> None:
    smtplib = green_import("smtplib")

    def send(i: int) -> Any:
        with smtplib.SMTP("127.0.0.1", servers["smtp"], timeout=10) as s:
            return s.sendmail("a@example.com", ["b@example.com"], f"Subject: {i}\r\n\r\nhi {i}")

    results, elapsed, gap = concurrently(backend, [lambda i=i: send(i) for i in range(N)])
    assert results == [{}] * N
    assert_concurrent(elapsed, gap)


def test_ftplib(backend: Backend, servers: dict[str, Any], green_import: Any) -> None:
    ftplib = green_import("ftplib")

    def session(i: int) -> tuple[bytes, bytes, int | None]:
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", servers["ftp"], timeout=10)
            ftp.login("user", "secret")
            chunks: list[bytes] = []
            ftp.retrbinary("RETR big.bin", chunks.append)  # waits SLOW on the server
            lines: list[str] = []
            ftp.retrlines("RETR small.txt", lines.append)
            upload = b"upload %d" % i
            ftp.storbinary(f"STOR up{i}", io.BytesIO(upload))
            return b"".join(chunks), "\n".join(lines).encode(), ftp.size(f"up{i}")

    results, elapsed, gap = concurrently(backend, [lambda i=i: session(i) for i in range(N)])
    for i, (big, small, size) in enumerate(results):
        assert big == FTP_FILES["big.bin"]
        assert small == b"hello ftp"
        assert size == len(b"upload %d" % i)
    assert_concurrent(elapsed, gap, n_rounds=2)  # two slow RETRs per session


def test_ftplib_error_reply(backend: Backend, servers: dict[str, Any], green_import: Any) -> None:
    ftplib = green_import("ftplib")

    def missing() -> str:
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", servers["ftp"], timeout=10)
            ftp.login("user", "secret")
            try:
                ftp.retrbinary("RETR missing", lambda b: None)
            except ftplib.error_perm as exc:
                return str(exc)
            raise AssertionError("no error for a missing file")

    (message,), _elapsed, _gap = concurrently(backend, [missing])
    assert message.startswith("550")
