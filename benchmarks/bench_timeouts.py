"""Timer accuracy and loop responsiveness of a green-socket server under load, beside gevent's.

Run: ``python benchmarks/bench_timeouts.py`` (``--gevent PYTHON`` names an
interpreter that has gevent installed, e.g. a scratch venv: gevent's figures
are then measured in the same run, in a subprocess; ``--waves``, ``--idle``,
``--clients`` change the load).

One echo server per variant, in a process of its own, with a heartbeat (a
5 ms sleep in a loop, on the server's loop) and ``gc.callbacks`` watching it.
Every connection gets ``settimeout(T)`` (``--timeout``, 0.2 s), as a real server
has.  The clients run in another process (asyncio streams, on uvloop when it
is installed) and come in waves: each wave opens ``--idle`` connections that
send nothing, so that many server-side timeouts of T run at once, and
``--clients`` echo clients (``--rounds`` round trips of random sizes up to
16 KiB each, every byte checked) at the same moment.  (An echo client that
waits longer than T for its echo is dropped by the server's timeout too: that
timeout counts like the others.)  Variants:

* ``green``: greenbridge's green sockets on the asyncio default loop (and on
  uvloop with ``--uvloop``): one green thread accepts, one green thread
  (``greenbridge.spawn``) per connection;
* ``asyncio``: the same server written with asyncio streams and
  ``asyncio.wait_for`` (the native reference on the same loop);
* ``gevent``: gevent's green sockets and greenlets, the same code as ``green``.

Printed per variant: when the server's timeouts fired (seconds from the
``recv`` call to ``socket.timeout``: median, 90th percentile, maximum), the
longest heartbeat gap of each wave, and the longest garbage-collector pause.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import socket as _stdsocket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

HEARTBEAT = 0.005


class GcWatch:
    """The longest garbage-collector pause while active (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.longest = 0.0
        self.total = 0.0
        self.count = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self.start = now
        else:
            pause = now - self.start
            self.total += pause
            self.count += 1
            self.longest = max(self.longest, pause)

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


# -- the client process ---------------------------------------------------------


async def _idle_client(host: str, port: int, hold: float) -> bool:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await asyncio.wait_for(reader.read(1), hold)  # b"" once the server hangs up
    finally:
        writer.close()
    return False


async def _echo_client(host: str, port: int, rounds: int, seed: int, block: bytes) -> bool:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(rounds):
            size = rng.randint(1, 16384)
            start = rng.randrange(len(block) - size)
            data = block[start : start + size]
            writer.write(data)
            await writer.drain()
            try:
                echoed = await reader.readexactly(size)
            except (ConnectionError, asyncio.IncompleteReadError):
                return False  # the server's timeout dropped this client: it counts the timeout
            if echoed != data:
                raise AssertionError("echo differs")
    finally:
        writer.close()
    return True


def clients_side(args: argparse.Namespace) -> None:
    async def wave() -> None:
        block = os.urandom(65536)
        host, port = args.host, args.port
        done = await asyncio.gather(
            *(_echo_client(host, port, args.rounds, i, block) for i in range(args.clients)),
            *(_idle_client(host, port, args.timeout + 30) for _ in range(args.idle)),
        )
        print(sum(1 for ok in done[: args.clients] if ok))  # echo clients that finished

    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(wave())
    finally:
        loop.close()


def run_wave(args: argparse.Namespace, addr: Any, sleep: Callable[[float], Any]) -> int:
    """Run a wave of clients in a process, polling with ``sleep``; return echo clients served."""
    python = args.client_python or sys.executable
    cmd = [python, __file__, "--side=clients", f"--host={addr[0]}", f"--port={addr[1]}"]
    cmd += [f"--idle={args.idle}", f"--clients={args.clients}", f"--rounds={args.rounds}"]
    cmd += [f"--timeout={args.timeout}"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        while proc.poll() is None:
            sleep(0.02)
        out = proc.stdout.read() if proc.stdout else b""
    if proc.returncode:
        raise RuntimeError("client process failed")
    return int(out)


# -- the servers ----------------------------------------------------------------------


class GreenServer:
    """The server, written once against a green ``socket`` module (greenbridge or gevent)."""

    def __init__(self, socket_mod: Any, spawn: Callable[..., Any], timeout: float) -> None:
        self.socket = socket_mod
        self.spawn = spawn
        self.timeout = timeout
        self.fired: list[float] = []
        self.listener = socket_mod.socket()
        self.listener.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4096)
        self.addr = self.listener.getsockname()

    def handler(self, conn: Any) -> None:
        with conn:
            conn.settimeout(self.timeout)
            while True:
                t0 = time.monotonic()
                try:
                    data = conn.recv(65536)
                except self.socket.timeout:
                    self.fired.append(time.monotonic() - t0)
                    return
                except OSError:
                    return
                if not data:
                    return
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def acceptor(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.spawn(self.handler, conn)


def green_waves(
    server: GreenServer, args: argparse.Namespace, sleep: Callable[[float], Any]
) -> dict[str, Any]:
    """Waves of clients against a green server; the heartbeat is a green thread too."""
    gaps: list[float] = []
    longest = [0.0]
    stop = [False]
    served = 0

    def heartbeat() -> None:
        last = time.monotonic()
        while not stop[0]:
            sleep(HEARTBEAT)
            now = time.monotonic()
            longest[0] = max(longest[0], now - last)
            last = now

    server.spawn(server.acceptor)
    server.spawn(heartbeat)
    sleep(0.1)
    with GcWatch() as gcw:
        for _ in range(args.waves):
            longest[0] = 0.0
            served += run_wave(args, server.addr, sleep)
            gaps.append(longest[0])
    stop[0] = True
    return {
        "fired": server.fired,
        "gaps": gaps,
        "gc": gcw.longest,
        "gc_count": gcw.count,
        "served": served,
    }


def green_side(args: argparse.Namespace) -> dict[str, Any]:
    from greenbridge import async_, spawn
    from greenbridge.green import socket as gsocket
    from greenbridge.green import time as gtime

    def main() -> dict[str, Any]:
        server = GreenServer(gsocket, spawn, args.timeout)
        result = green_waves(server, args, gtime.sleep)
        server.listener.close()
        return result

    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(async_(main)())  # type: ignore[no-any-return]
    finally:
        loop.close()


def gevent_side(args: argparse.Namespace) -> dict[str, Any]:
    import gevent
    from gevent import socket as gs

    server = GreenServer(gs, gevent.spawn, args.timeout)
    result = green_waves(server, args, gevent.sleep)
    server.listener.close()
    return result


def asyncio_side(args: argparse.Namespace) -> dict[str, Any]:
    """The native reference: asyncio streams, ``wait_for`` as the timeout."""
    fired: list[float] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                t0 = time.monotonic()
                try:
                    data = await asyncio.wait_for(reader.read(65536), args.timeout)
                except asyncio.TimeoutError:
                    fired.append(time.monotonic() - t0)
                    return
                if not data:
                    return
                writer.write(data)
                await asyncio.wait_for(writer.drain(), args.timeout)
        except OSError:
            return
        finally:
            writer.close()

    async def main() -> dict[str, Any]:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=4096)
        addr = server.sockets[0].getsockname()
        longest = [0.0]
        stop = [False]

        async def heartbeat() -> None:
            last = time.monotonic()
            while not stop[0]:
                await asyncio.sleep(HEARTBEAT)
                now = time.monotonic()
                longest[0] = max(longest[0], now - last)
                last = now

        beat = asyncio.ensure_future(heartbeat())
        gaps = []
        served = 0
        with GcWatch() as gcw:
            for _ in range(args.waves):
                longest[0] = 0.0
                served += await asyncio.to_thread(run_wave, args, addr, time.sleep)
                gaps.append(longest[0])
        stop[0] = True
        await beat
        server.close()
        await server.wait_closed()
        return {
            "fired": fired,
            "gaps": gaps,
            "gc": gcw.longest,
            "gc_count": gcw.count,
            "served": served,
        }

    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


# -- driver ------------------------------------------------------------------------------


def summary(name: str, result: dict[str, Any], timeout: float) -> str:
    fired = sorted(result["fired"])
    p90 = fired[int(len(fired) * 0.9)] if fired else float("nan")
    return (
        f"{name:14} timeouts of {timeout} s fired after: median"
        f" {statistics.median(fired) if fired else float('nan'):.3f}  p90 {p90:.3f}"
        f"  max {max(fired, default=float('nan')):.3f} ({len(fired)});"
        f" longest gap per wave (ms): "
        + " ".join(f"{g * 1000:.0f}" for g in result["gaps"])
        + f"; longest GC pause {result['gc'] * 1000:.1f} ms ({result['gc_count']} collections);"
        f" echo clients served to the end: {result['served']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true", help="also the green server on uvloop")
    parser.add_argument("--idle", type=int, default=200, help="idle clients per wave")
    parser.add_argument("--timeout", type=float, default=0.2, help="the server's timeout")
    parser.add_argument("--clients", type=int, default=500, help="echo clients per wave")
    parser.add_argument("--rounds", type=int, default=10, help="round trips per echo client")
    parser.add_argument("--waves", type=int, default=8)
    parser.add_argument("--gevent", metavar="PYTHON", help="an interpreter with gevent")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # comma-separated variants
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--client-python", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sides = {"green": green_side, "gevent": gevent_side, "asyncio": asyncio_side}
    if args.side == "clients":
        clients_side(args)
        return
    if args.side is not None:
        json.dump(sides[args.side](args), sys.stdout)
        return

    import greenbridge

    print(
        f"{args.waves} waves of {args.idle} idle + {args.clients} echo clients"
        f" (x {args.rounds} round trips); server timeout {args.timeout} s;"
        f" greenbridge {greenbridge.__version__}; Python {sys.version.split()[0]}"
    )
    forwarded = [f"--idle={args.idle}", f"--timeout={args.timeout}", f"--waves={args.waves}"]
    forwarded += [f"--clients={args.clients}", f"--rounds={args.rounds}"]
    # Every variant's clients run on this interpreter (on uvloop when installed here).
    forwarded += [f"--client-python={sys.executable}"]
    variants: list[tuple[str, list[str]]] = [
        ("green asyncio", [sys.executable, __file__, "--side=green"]),
        ("native asyncio", [sys.executable, __file__, "--side=asyncio"]),
    ]
    if args.uvloop:
        variants.append(("green uvloop", [sys.executable, __file__, "--side=green", "--uvloop"]))
        variants.append(("native uvloop", [sys.executable, __file__, "--side=asyncio", "--uvloop"]))
    gevent_python = args.gevent
    if gevent_python is None:
        try:
            import gevent  # noqa: F401

            gevent_python = sys.executable
        except ImportError:
            print("gevent: not importable here (pass --gevent PYTHON)")
    if gevent_python is not None:
        variants.append(("gevent", [gevent_python, __file__, "--side=gevent"]))
    only = args.only.split(",") if args.only else None
    for name, cmd in variants:
        if only and name not in only:
            continue
        # Each variant in a fresh process: none inherits another's heap.
        out = subprocess.run(cmd + forwarded, check=True, stdout=subprocess.PIPE).stdout
        print(summary(name, json.loads(out), args.timeout), flush=True)


if __name__ == "__main__":
    main()
