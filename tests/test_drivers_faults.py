"""Drivers when connections fail, move or are replaced (found by stress/test_server_faults.py).

Each test runs the same sync program natively (in a plain thread, the driver
blocking as usual) and through ``greenbridge.async_`` on the loop, and
compares the outcomes.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

import greenbridge

from .conftest import Backend, require_service

psycopg2 = pytest.importorskip("psycopg2")
extensions = pytest.importorskip("psycopg2.extensions")


@pytest.fixture(autouse=True)
def _postgres() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
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
