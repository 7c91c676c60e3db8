"""Echo benchmark: 64-byte round trips over TCP loopback, C concurrent connections.

Run: ``python benchmarks/bench_echo.py`` (``--uvloop`` for the uvloop loop,
``--conns 10 100 1000`` to choose C, ``--total N`` round trips per run).

Every variant runs server and clients in this one process, on one thread:

* ``green``: greenbridge's green sockets; the accept loop, every server handler
  and every client is a green thread (``greenbridge.spawn``) on the loop, written
  as plain blocking code (``sendall`` / ``recv``);
* ``asyncio sock_*``: the same protocol with coroutines on ``loop.sock_recv`` /
  ``loop.sock_sendall`` / ``loop.sock_accept``;
* ``asyncio streams``: ``asyncio.start_server`` / ``open_connection``,
  ``readexactly`` / ``write`` + ``drain``;
* ``gevent``: gevent's green sockets, when gevent is importable (it is not a
  dependency of greenbridge; install it in the benchmark environment).

Connections are set up first; the clock runs from the moment every client
starts its round trips until the last one finishes.  Each figure is the best
of ``--repeats`` runs, in round trips per second; the ratio columns compare
green with the others measured in this same run.
"""

from __future__ import annotations

import argparse
import asyncio
import socket as _stdsocket
import sys
import time
from collections.abc import Callable
from typing import Any

import greenbridge
from greenbridge import await_, spawn
from greenbridge.green import socket as gsocket

MSG = b"x" * 64
SIZE = len(MSG)


# -- green sockets ------------------------------------------------------------


def green_run(conns: int, rounds: int) -> float:
    """Round trips per second: green server and clients as green threads."""

    def handler(conn: Any) -> None:
        with conn:
            conn.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            recv, sendall = conn.recv, conn.sendall
            while True:
                data = recv(SIZE)
                if not data:
                    return
                sendall(data)

    handlers: list[Any] = []

    def acceptor(listener: Any) -> None:
        for _ in range(conns):
            conn, _addr = listener.accept()
            handlers.append(spawn(handler, conn))

    def client(addr: Any, start: asyncio.Event, done: list[float]) -> None:
        with gsocket.create_connection(addr) as s:
            s.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            await_(start.wait())
            recv, sendall = s.recv, s.sendall
            for _ in range(rounds):
                sendall(MSG)
                got = len(recv(SIZE))
                while got < SIZE:
                    got += len(recv(SIZE - got))
        done.append(time.perf_counter())

    async def main() -> float:
        listener = gsocket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(conns)
        addr = listener.getsockname()
        start = asyncio.Event()
        done: list[float] = []
        acc = spawn(acceptor, listener)
        clients = [spawn(client, addr, start, done) for _ in range(conns)]
        await acc
        await asyncio.sleep(0.05)  # every client connected and waiting
        t0 = time.perf_counter()
        start.set()
        await asyncio.gather(*clients)
        listener.close()
        await asyncio.gather(*handlers)  # they see EOF
        return conns * rounds / (max(done) - t0)

    return _run(main)


# -- asyncio loop.sock_* --------------------------------------------------------


def sock_run(conns: int, rounds: int) -> float:
    """Round trips per second: coroutines on loop.sock_recv / sock_sendall."""

    async def handler(loop: asyncio.AbstractEventLoop, conn: _stdsocket.socket) -> None:
        with conn:
            conn.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            while True:
                data = await loop.sock_recv(conn, SIZE)
                if not data:
                    return
                await loop.sock_sendall(conn, data)

    async def acceptor(loop: asyncio.AbstractEventLoop, listener: _stdsocket.socket) -> None:
        for _ in range(conns):
            conn, _addr = await loop.sock_accept(listener)
            conn.setblocking(False)
            asyncio.ensure_future(handler(loop, conn))

    async def client(addr: Any, start: asyncio.Event, done: list[float]) -> None:
        loop = asyncio.get_running_loop()
        s = _stdsocket.socket()
        s.setblocking(False)
        with s:
            await loop.sock_connect(s, addr)
            s.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            await start.wait()
            for _ in range(rounds):
                await loop.sock_sendall(s, MSG)
                got = len(await loop.sock_recv(s, SIZE))
                while got < SIZE:
                    got += len(await loop.sock_recv(s, SIZE - got))
        done.append(time.perf_counter())

    async def main() -> float:
        loop = asyncio.get_running_loop()
        listener = _stdsocket.socket()
        listener.setblocking(False)
        listener.bind(("127.0.0.1", 0))
        listener.listen(conns)
        addr = listener.getsockname()
        start = asyncio.Event()
        done: list[float] = []
        acc = asyncio.ensure_future(acceptor(loop, listener))
        clients = [asyncio.ensure_future(client(addr, start, done)) for _ in range(conns)]
        await acc
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        start.set()
        await asyncio.gather(*clients)
        listener.close()
        await asyncio.sleep(0)
        return conns * rounds / (max(done) - t0)

    return _run(main)


# -- asyncio streams -------------------------------------------------------------


def streams_run(conns: int, rounds: int) -> float:
    """Round trips per second: asyncio streams."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(
            _stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1
        )
        while True:
            data = await reader.read(SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    async def client(addr: Any, start: asyncio.Event, done: list[float]) -> None:
        reader, writer = await asyncio.open_connection(*addr)
        await start.wait()
        for _ in range(rounds):
            writer.write(MSG)
            await writer.drain()
            await reader.readexactly(SIZE)
        done.append(time.perf_counter())
        writer.close()
        await writer.wait_closed()

    async def main() -> float:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=conns)
        addr = server.sockets[0].getsockname()
        start = asyncio.Event()
        done: list[float] = []
        clients = [asyncio.ensure_future(client(addr, start, done)) for _ in range(conns)]
        await asyncio.sleep(0.05 + conns / 5000)
        t0 = time.perf_counter()
        start.set()
        await asyncio.gather(*clients)
        server.close()
        await server.wait_closed()
        return conns * rounds / (max(done) - t0)

    return _run(main)


# -- gevent ------------------------------------------------------------------------


def gevent_run(conns: int, rounds: int) -> float:
    """Round trips per second: gevent green sockets and greenlets (gevent's own hub)."""
    import gevent
    import gevent.event
    from gevent import socket as gs

    def handler(conn: Any) -> None:
        with conn:
            conn.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            while True:
                data = conn.recv(SIZE)
                if not data:
                    return
                conn.sendall(data)

    listener = gs.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(conns)
    addr = listener.getsockname()
    start = gevent.event.Event()
    done: list[float] = []

    def acceptor() -> None:
        for _ in range(conns):
            conn, _addr = listener.accept()
            gevent.spawn(handler, conn)

    def client() -> None:
        with gs.create_connection(addr) as s:
            s.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            start.wait()
            for _ in range(rounds):
                s.sendall(MSG)
                got = len(s.recv(SIZE))
                while got < SIZE:
                    got += len(s.recv(SIZE - got))
        done.append(time.perf_counter())

    acc = gevent.spawn(acceptor)
    clients = [gevent.spawn(client) for _ in range(conns)]
    acc.join()
    gevent.sleep(0.05)
    t0 = time.perf_counter()
    start.set()
    gevent.joinall(clients)
    listener.close()
    gevent.sleep(0)
    return conns * rounds / (max(done) - t0)


# -- driver --------------------------------------------------------------------------

_loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop


def _run(main: Callable[[], Any]) -> float:
    loop = _loop_factory()
    try:
        return loop.run_until_complete(main())  # type: ignore[no-any-return]
    finally:
        loop.close()


def best(fn: Callable[[int, int], float], conns: int, total: int, repeats: int) -> float:
    rounds = max(1, total // conns)
    return max(fn(conns, rounds) for _ in range(repeats))


def main() -> None:
    global _loop_factory
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true", help="run the asyncio variants on uvloop")
    parser.add_argument("--conns", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--total", type=int, default=40000, help="round trips per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        _loop_factory = uvloop.new_event_loop
    try:
        import gevent  # noqa: F401

        have_gevent = True
    except ImportError:
        have_gevent = False

    loop_name = "uvloop" if args.uvloop else "asyncio default loop"
    print(
        f"echo, 64-byte round trips, {args.total} per run, best of {args.repeats}; "
        f"{loop_name}; Python {sys.version.split()[0]}; greenbridge {greenbridge.__version__}"
    )
    head = f"{'C':>5} {'green':>10} {'sock_*':>10} {'streams':>10}"
    head += f" {'gevent':>10}" if have_gevent else ""
    head += f" {'green/sock_*':>13} {'green/streams':>14}"
    head += f" {'green/gevent':>13}" if have_gevent else ""
    print(head + "   (round trips/s)")
    for conns in args.conns:
        green = best(green_run, conns, args.total, args.repeats)
        sock = best(sock_run, conns, args.total, args.repeats)
        streams = best(streams_run, conns, args.total, args.repeats)
        row = f"{conns:5} {green:10.0f} {sock:10.0f} {streams:10.0f}"
        gev = best(gevent_run, conns, args.total, args.repeats) if have_gevent else 0.0
        row += f" {gev:10.0f}" if have_gevent else ""
        row += f" {green / sock:12.2f}x {green / streams:13.2f}x"
        row += f" {green / gev:12.2f}x" if have_gevent else ""
        print(row, flush=True)
    print("target: green/sock_* >= 1.5x at C=100 (default loop); green >= gevent with --uvloop")


if __name__ == "__main__":
    main()
