"""Drivers when connections fail, move or are replaced (found by stress/test_server_faults.py).

Each test runs the same sync program natively (in a plain thread, the driver
blocking as usual) and through ``greenbridge.async_`` on the loop, and
compares the outcomes.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import greenbridge
from greenbridge.green import socket as gsocket

from .helpers import PG_DSN, Backend, Heartbeat, require_postgres

psycopg2 = pytest.importorskip("psycopg2")
extensions = pytest.importorskip("psycopg2.extensions")


@pytest.fixture(autouse=True)
def _postgres() -> None:
    require_postgres()
    greenbridge.patch_psycopg2()


def in_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a plain OS thread (no event loop): the native run."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(("ok", fn()))
        except BaseException as exc:  # noqa: BLE001 - compared by the test
            out.append(("raised", type(exc).__name__))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out[0]


def on_loop(aio: Backend, fn: Callable[[], Any], bound: float = 10.0) -> Any:
    """``fn()`` through async_ on the loop; a wait that never ends fails after ``bound`` s."""

    async def main() -> Any:
        try:
            return ("ok", await asyncio.wait_for(greenbridge.async_(fn)(), bound))
        except asyncio.TimeoutError:
            return ("hung", None)
        except Exception as exc:  # noqa: BLE001 - compared by the test
            return ("raised", type(exc).__name__)

    return aio.run(main)


def closed_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_psycopg2_connect_moves_on_to_the_next_host(aio: Backend) -> None:
    # libpq tries the hosts in turn: the first refuses, so it closes that
    # socket and opens another, usually with the same descriptor number.  A
    # registration kept on the loop for the closed one never fired: connect hung.
    dsn = f"host=127.0.0.1,127.0.0.1 port={closed_port()},5432 user=postgres dbname=test"

    def connect_and_query() -> tuple[int, int]:
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 42")
                return conn.info.port, cur.fetchone()[0]
        finally:
            conn.close()

    callback = extensions.get_wait_callback()
    extensions.set_wait_callback(None)  # psycopg2's own blocking connect
    try:
        native = in_thread(connect_and_query)
    finally:
        extensions.set_wait_callback(callback)
    assert native == ("ok", (5432, 42))
    assert on_loop(aio, connect_and_query) == native


def _query_close(conn: Any) -> int:
    """A query that waits for the server, then close: returns the freed descriptor."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_sleep(0.01)")
        cur.fetchone()
    fd: int = conn.fileno()
    conn.close()
    return fd


def test_psycopg2_reconnect_at_once_after_close(aio: Backend) -> None:
    # Query, close, connect again in one go (as a pool replacing a connection):
    # the new connection's socket gets the closed one's number while the loop
    # still held a registration for the old one, and asyncio raised
    # FileNotFoundError (epoll_ctl MOD of a descriptor it no longer watched).
    def work() -> list[Any]:
        out: list[Any] = []
        conn = psycopg2.connect(PG_DSN)
        for _ in range(3):
            fd = _query_close(conn)
            conn = psycopg2.connect(PG_DSN)
            out.append(conn.fileno() == fd)  # the number was reused (the point of the test)
        with conn.cursor() as cur:
            cur.execute("SELECT 7")
            out.append(cur.fetchone()[0])
        conn.close()
        return out

    native = in_thread(work)
    assert native == ("ok", [True, True, True, 7])
    assert on_loop(aio, work) == native


def test_green_socket_after_a_psycopg2_connection_closed_at_once(aio: Backend) -> None:
    # The same with a green socket taking the number and waiting to write.
    def work() -> list[Any]:
        fd = _query_close(psycopg2.connect(PG_DSN))
        a, b = gsocket.socketpair()
        try:
            out: list[Any] = [a.fileno() == fd]
            a.settimeout(0.2)
            try:
                a.sendall(b"x" * 20_000_000)  # more than the buffers hold: waits to write
            except socket.timeout:
                out.append("timed out")
            return out
        finally:
            a.close()
            b.close()

    native = in_thread(work)
    assert native == ("ok", [True, "timed out"])
    assert on_loop(aio, work) == native


async def _ssl_request() -> bytes:
    """A plain asyncio client: ask PostgreSQL for TLS and return its one-byte answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", 5432)
    writer.write(struct.pack("!ii", 8, 80877103))  # SSLRequest
    await writer.drain()
    answer = await reader.readexactly(1)
    writer.close()
    await writer.wait_closed()
    return answer


def test_asyncio_client_after_a_psycopg2_connection_closed_at_once(aio: Backend) -> None:
    # The same with an asyncio client awaited from the same sync code: its
    # socket gets the number, and asyncio's own add_writer met the key left
    # for the closed connection (FileNotFoundError; a reader would never fire).
    def work() -> bytes:
        _query_close(psycopg2.connect(PG_DSN))
        return greenbridge.await_(_ssl_request())

    native = in_thread(work)  # await_ with no loop running uses a private loop
    assert native[0] == "ok", native
    assert on_loop(aio, work) == native


# A TCP proxy to PostgreSQL, in its own process, that holds every cancel
# request (a connection opening with CancelRequest) for DELAY seconds first:
# a slow or distant server.  (Its own process: libpq's blocking PQcancel
# holds the GIL, which would also stop a proxy thread.)
_PROXY = r"""
import asyncio, struct, sys

DELAY = float(sys.argv[1])

async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

async def serve(client_r, client_w):
    try:
        head = await client_r.readexactly(8)
        if struct.unpack("!ii", head) == (16, 80877102):  # CancelRequest
            await asyncio.sleep(DELAY)
        up_r, up_w = await asyncio.open_connection("127.0.0.1", 5432)
        up_w.write(head)
        await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
        up_w.close()
    except (OSError, asyncio.IncompleteReadError):
        pass
    client_w.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""

CANCEL_DELAY = 1.5


def test_psycopg2_cancel_waits_for_the_server_on_the_loop(aio: Backend) -> None:
    # psycopg2's conn.cancel() (libpq's PQcancel) connects to the server and
    # waits for its answer blocking, holding the GIL: the loop stood still for
    # the whole round trip of every cancelled query (here 1.5 s).  psycopg's
    # AsyncConnection (the native twin) waits for it on the loop, and so does
    # psycopg 3's sync API under patch_psycopg() (its cancel_safe, libpq >= 17).
    psycopg = pytest.importorskip("psycopg")
    greenbridge.patch_psycopg()
    proxy = subprocess.Popen(
        [sys.executable, "-c", _PROXY, str(CANCEL_DELAY)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proxy.stdout is not None
        dsn = f"host=127.0.0.1 port={int(proxy.stdout.readline())} user=postgres dbname=test"
        outcomes = aio.run(lambda: _cancel_through(psycopg, dsn))
    finally:
        proxy.kill()
        proxy.wait()
        if proxy.stdout is not None:
            proxy.stdout.close()
    assert outcomes["native"] == ("TimeoutError", 0, True), outcomes
    assert outcomes["green"] == outcomes["native"], outcomes
    assert outcomes["green psycopg 3"] == outcomes["native"], outcomes


async def _cancel_through(psycopg: Any, dsn: str) -> dict[str, Any]:
    admin = await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True)
    marker = f"gb-slow-cancel-{uuid.uuid4().hex}"

    def green_query(conn: Any, sql: str) -> None:
        with conn.cursor() as cur:
            cur.execute(sql)

    out: dict[str, Any] = {"max gaps": {}}
    try:
        for name in ("native", "green", "green psycopg 3"):
            sql = f"SELECT pg_sleep(30) -- {marker}-{name}"
            if name == "native":
                conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
                run = conn.execute(sql)
            elif name == "green psycopg 3":
                conn = await greenbridge.async_(psycopg.connect)(dsn, autocommit=True)
                run = greenbridge.async_(conn.execute)(sql)
            else:
                conn = await greenbridge.async_(psycopg2.connect)(dsn)
                run = greenbridge.async_(green_query)(conn, sql)
            async with Heartbeat() as beat:
                try:
                    await asyncio.wait_for(run, 0.2)
                    outcome = "finished"
                except asyncio.TimeoutError:
                    outcome = "TimeoutError"
            cur = await admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE %s AND pid <> pg_backend_pid()",
                (f"%{marker}-{name}%",),
            )
            left = (await cur.fetchone())[0]
            # The loop kept running while the cancel request waited (a generous bound).
            out[name] = (outcome, left, beat.max_gap < CANCEL_DELAY / 2)
            out["max gaps"][name] = round(beat.max_gap, 3)
            if name == "native":
                await conn.close()
            else:
                await greenbridge.async_(conn.close)()
    finally:
        await admin.close()
    return out


@pytest.mark.parametrize("libpq", ["17 or newer", "older (PQcancel)"])
def test_psycopg2_cancel_either_way(aio: Backend, libpq: str, monkeypatch: Any) -> None:
    # The fallback for a libpq without the non-blocking cancel API ends the same way.
    from greenbridge.drivers import psycopg2 as driver

    if libpq.startswith("older"):
        monkeypatch.setattr(driver, "_libpq", None)
    else:
        assert driver._cancel_functions() is not None, "this libpq has no PQcancelStart"
    marker = f"gb-cancel-either-{uuid.uuid4().hex}"

    def query(conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(f"SELECT pg_sleep(30) -- {marker}")

    def active() -> int:
        admin = psycopg2.connect(PG_DSN)
        try:
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE %s AND pid <> pg_backend_pid()",
                    (f"%{marker}%",),
                )
                return int(cur.fetchone()[0])
        finally:
            admin.close()

    async def main() -> tuple[str, int, bool]:
        conn = await greenbridge.async_(psycopg2.connect)(PG_DSN)
        try:
            await asyncio.wait_for(greenbridge.async_(query)(conn), 0.3)
            outcome = "finished"
        except asyncio.TimeoutError:
            outcome = "TimeoutError"
        return outcome, await greenbridge.async_(active)(), bool(conn.closed)

    assert aio.run(main) == ("TimeoutError", 0, True)


def test_psycopg2_connect_cut_by_a_timeout_returns_at_once(aio: Backend) -> None:
    # A connect to a server that never answers, cut by wait_for: there is no
    # query to cancel on the server yet.  The cancel request (to a connection
    # not established) kept the TimeoutError waiting CANCEL_TIMEOUT (5 s).
    # psycopg's AsyncConnection (the native twin) gives up at once.
    psycopg = pytest.importorskip("psycopg")
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        dsn = (
            f"host=127.0.0.1 port={silent.getsockname()[1]} user=postgres dbname=test "
            "sslmode=disable gssencmode=disable"
        )

        async def cut(connect: Any) -> tuple[str, bool]:
            start = time.perf_counter()
            try:
                await asyncio.wait_for(connect(dsn), 0.2)
                outcome = "connected"
            except asyncio.TimeoutError:
                outcome = "TimeoutError"
            return outcome, time.perf_counter() - start < 2.5  # a generous bound

        async def main() -> dict[str, Any]:
            return {
                "native": await cut(psycopg.AsyncConnection.connect),
                "green": await cut(greenbridge.async_(psycopg2.connect)),
            }

        outcomes = aio.run(main)
    assert outcomes["native"] == ("TimeoutError", True), outcomes
    assert outcomes["green"] == outcomes["native"], outcomes
