"""Echo benchmark: 64-byte round trips over TCP loopback, C concurrent connections.

Run: ``python benchmarks/bench_echo.py`` (``--uvloop`` for the uvloop loop,
``--conns 10 100 1000`` to choose C, ``--total N`` round trips per run,
``--gevent-python /path/to/venv/bin/python`` to add gevent).

Every variant runs server and clients in this one process, on one thread:

* ``green``: greenbridge's green sockets; the accept loop, every server handler
  and every client is a green thread (``greenbridge.spawn``) on the loop, written
  as plain blocking code (``sendall`` / ``recv``);
* ``asyncio sock_*``: the same protocol with coroutines on ``loop.sock_recv`` /
  ``loop.sock_sendall`` / ``loop.sock_accept``;
* ``asyncio streams``: ``asyncio.start_server`` / ``open_connection``,
  ``readexactly`` / ``write`` + ``drain``;
* ``gevent``: gevent's green sockets (gevent's own hub), run with
  ``--gevent-python PY`` in a subprocess of that interpreter (a venv with
  gevent; greenbridge does not depend on it), one run at a time, alternating
  with the green runs so that both see the same machine.

Connections are set up first; the clock runs from the moment every client
starts its round trips until the last one finishes.  Each figure is the best
of ``--repeats`` runs, in round trips per second; the ratio columns compare
green with the others measured in this same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket as _stdsocket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

MSG = b"x" * 64
SIZE = len(MSG)


# -- green sockets ------------------------------------------------------------


def green_run(conns: int, rounds: int) -> float:
    """Round trips per second: green server and clients as green threads."""
    from greenbridge import await_, spawn
    from greenbridge.green import socket as gsocket

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


def gevent_subprocess(python: str) -> Callable[[int, int], float]:
    """`gevent_run` in a subprocess of ``python`` (a venv with gevent), one run per call."""

    def run(conns: int, rounds: int) -> float:
        out = subprocess.run(
            [python, os.path.abspath(__file__), "--gevent-run", str(conns), str(rounds)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return float(out.split()[-1])

    return run


def best_of(
    fns: list[Callable[[int, int], float]], conns: int, total: int, repeats: int
) -> list[float]:
    """The best rate of each of ``fns`` over ``repeats`` rounds that run each once, in turn."""
    rounds = max(1, total // conns)
    rates = [0.0] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            rates[i] = max(rates[i], fn(conns, rounds))
    return rates


def main() -> None:
    global _loop_factory
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true", help="run the asyncio variants on uvloop")
    parser.add_argument("--conns", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--total", type=int, default=40000, help="round trips per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--gevent-python",
        default=os.environ.get("GB_BENCH_GEVENT_PYTHON"),
        help="an interpreter with gevent installed: adds the gevent column",
    )
    parser.add_argument("--gevent-run", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gevent_run:  # the subprocess of gevent_subprocess(): one run, one number
        print(gevent_run(*args.gevent_run))
        return
    import greenbridge

    if args.uvloop:
        import uvloop

        _loop_factory = uvloop.new_event_loop
    have_gevent = bool(args.gevent_python)

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
        fns = [green_run, sock_run, streams_run]
        if have_gevent:
            fns.append(gevent_subprocess(args.gevent_python))
        green, sock, streams, *rest = best_of(fns, conns, args.total, args.repeats)
        gev = rest[0] if rest else 0.0
        row = f"{conns:5} {green:10.0f} {sock:10.0f} {streams:10.0f}"
        row += f" {gev:10.0f}" if have_gevent else ""
        row += f" {green / sock:12.2f}x {green / streams:13.2f}x"
        row += f" {green / gev:12.2f}x" if have_gevent else ""
        print(row, flush=True)
    print("targets: green/sock_* >= 1.5x at C=100 (default loop); green/gevent >= 1.1x")


if __name__ == "__main__":
    main()
