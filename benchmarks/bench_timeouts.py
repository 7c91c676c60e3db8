"""Timer accuracy and loop responsiveness of green sockets under load, beside gevent's.

Run: ``python benchmarks/bench_timeouts.py`` (``--uvloop`` for uvloop; ``--gevent
PYTHON`` names an interpreter that has gevent installed, e.g. a scratch venv, to
measure gevent's figures in the same run in a subprocess; without it gevent is
measured only when importable here).

Two measurements, each run the same way on greenbridge (green sockets, server
handlers and clients as green threads on an asyncio loop) and on gevent (its
green sockets and greenlets on its own hub):

* **timeouts**: an echo server whose handlers call ``conn.settimeout(T)`` and
  ``recv``; ``--timeouts`` clients connect and send nothing, so that many
  server-side timeouts of T seconds run at once, while ``--load`` echo clients
  keep the server busy.  Printed: when the timeouts fired (seconds from the
  ``recv`` call to ``socket.timeout``): median, 90th percentile, maximum.
* **gaps**: waves of ``--clients`` echo clients (each: connect, ``--rounds``
  round trips of random sizes up to 16 KiB, every byte checked, close) against
  the same server, with a heartbeat (a 5 ms sleep in a loop, on the loop itself)
  recording the longest time between two beats in each wave.  Printed: the
  longest gap of each wave, and the longest garbage-collector pause seen (from
  ``gc.callbacks``).
"""

from __future__ import annotations

import argparse
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
    """The longest and total time spent in the garbage collector while active."""

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


def make_payloads(seed: int, count: int, largest: int) -> list[bytes]:
    rng = random.Random(seed)
    return [os.urandom(rng.randint(1, largest)) for _ in range(count)]


def recv_exactly(sock: Any, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 65536))
        if not chunk:
            raise ConnectionError("server closed early")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


class Scenario:
    """The server and clients, written once against a green ``socket`` module.

    ``spawn(fn, *args)`` starts a green thread; ``sleep`` sleeps in one.  The
    same code runs on greenbridge and on gevent.
    """

    def __init__(self, socket_mod: Any, spawn: Callable[..., Any], sleep: Callable[[float], Any]):
        self.socket = socket_mod
        self.spawn = spawn
        self.sleep = sleep
        self.fired: list[float] = []
        self.errors: list[BaseException] = []
        self.idle_timeout = 0.2
        self.listener: Any = None
        self.addr: Any = None

    def handler(self, conn: Any) -> None:
        with conn:
            conn.settimeout(self.idle_timeout)
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

    def start_server(self) -> None:
        self.listener = self.socket.socket()
        self.listener.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4096)
        self.addr = self.listener.getsockname()
        self.spawn(self.acceptor)

    def idle_client(self, hold: float) -> None:
        with self.socket.create_connection(self.addr) as s:
            s.settimeout(hold + 5)
            try:
                s.recv(1)  # returns b"" when the server's timeout closes it
            except OSError as exc:
                self.errors.append(exc)

    def echo_client(self, payloads: list[bytes], until: Callable[[], bool] | None) -> None:
        try:
            with self.socket.create_connection(self.addr) as s:
                s.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
                i = 0
                while True:
                    data = payloads[i % len(payloads)]
                    s.sendall(data)
                    if recv_exactly(s, len(data)) != data:
                        raise AssertionError("echo mismatch")
                    i += 1
                    if until is None:
                        if i == len(payloads):
                            return
                    elif until():
                        return
        except BaseException as exc:  # noqa: BLE001 - reported
            self.errors.append(exc)


def run_scenario(sc: Scenario, args: argparse.Namespace, join: Callable[[list[Any]], None]) -> Any:
    """The two measurements; ``join(threads)`` waits for the green threads."""
    sc.idle_timeout = args.timeout
    sc.start_server()
    rng = random.Random(1)
    # -- timeouts under load
    done = [False]
    load = [
        sc.spawn(sc.echo_client, make_payloads(rng.random(), 8, 4096), lambda: done[0])
        for _ in range(args.load)
    ]
    sc.sleep(0.1)  # the load runs
    idle = [sc.spawn(sc.idle_client, args.timeout) for _ in range(args.timeouts)]
    join(idle)
    done[0] = True
    join(load)
    fired = sorted(sc.fired)
    sc.fired.clear()
    # -- gaps, waves of echo clients
    payloads = [make_payloads(rng.random(), args.rounds, 16384) for _ in range(args.clients)]
    gaps: list[float] = []
    with GcWatch() as gcw:
        for _ in range(args.waves):
            beats: list[float] = []
            stop = [False]

            def heartbeat(beats: list[float] = beats, stop: list[bool] = stop) -> None:
                last = time.monotonic()
                while not stop[0]:
                    sc.sleep(HEARTBEAT)
                    now = time.monotonic()
                    beats.append(now - last)
                    last = now

            hb = sc.spawn(heartbeat)
            join([sc.spawn(sc.echo_client, p, None) for p in payloads])
            stop[0] = True
            join([hb])
            gaps.append(max(beats))
    sc.listener.close()
    if sc.errors:
        raise sc.errors[0]
    return {
        "timeouts": fired,
        "gaps": gaps,
        "gc_longest": gcw.longest,
        "gc_total": gcw.total,
        "gc_count": gcw.count,
    }


def greenbridge_side(args: argparse.Namespace) -> Any:
    import asyncio

    from greenbridge import async_, await_, spawn
    from greenbridge.green import socket as gsocket
    from greenbridge.green import time as gtime

    def join(tasks: list[Any]) -> None:
        await_(asyncio.gather(*tasks))

    def main() -> Any:
        return run_scenario(Scenario(gsocket, spawn, gtime.sleep), args, join)

    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(async_(main)())
    finally:
        loop.close()


def gevent_side(args: argparse.Namespace) -> Any:
    import gevent
    from gevent import socket as gs

    def join(greenlets: list[Any]) -> None:
        gevent.joinall(greenlets, raise_error=True)

    return run_scenario(Scenario(gs, gevent.spawn, gevent.sleep), args, join)


def summary(name: str, result: dict[str, Any], timeout: float) -> list[str]:
    fired = result["timeouts"]
    q = statistics.quantiles(fired, n=10) if len(fired) > 1 else fired * 9
    return [
        f"{name:12} timeouts of {timeout:.3f} s fired after: median {statistics.median(fired):.3f}"
        f"  p90 {q[8]:.3f}  max {max(fired):.3f}  ({len(fired)} fired)",
        f"{name:12} longest loop gap per wave (ms): "
        + " ".join(f"{g * 1000:.0f}" for g in result["gaps"])
        + f"   gc: longest pause {result['gc_longest'] * 1000:.1f} ms,"
        f" {result['gc_count']} collections, {result['gc_total'] * 1000:.0f} ms in all",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true", help="greenbridge on uvloop")
    parser.add_argument("--timeouts", type=int, default=200, help="concurrent server timeouts")
    parser.add_argument("--timeout", type=float, default=0.2, help="the server's idle timeout")
    parser.add_argument("--load", type=int, default=100, help="echo clients during the timeouts")
    parser.add_argument("--clients", type=int, default=500, help="echo clients per wave")
    parser.add_argument("--rounds", type=int, default=4, help="round trips per client")
    parser.add_argument("--waves", type=int, default=5)
    parser.add_argument("--gevent", metavar="PYTHON", help="an interpreter with gevent")
    parser.add_argument("--side", choices=["greenbridge", "gevent"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "gevent":
        json.dump(gevent_side(args), sys.stdout)
        return
    if args.side == "greenbridge":
        json.dump(greenbridge_side(args), sys.stdout)
        return

    import greenbridge

    loop_name = "uvloop" if args.uvloop else "asyncio default loop"
    print(
        f"{args.timeouts} idle clients (server timeout {args.timeout} s) beside {args.load} echo"
        f" clients; then {args.waves} waves of {args.clients} echo clients x {args.rounds}"
        f" round trips; greenbridge {greenbridge.__version__} on {loop_name};"
        f" Python {sys.version.split()[0]}"
    )
    forwarded = [
        f"--timeouts={args.timeouts}",
        f"--timeout={args.timeout}",
        f"--load={args.load}",
        f"--clients={args.clients}",
        f"--rounds={args.rounds}",
        f"--waves={args.waves}",
    ]
    # Each side in a fresh process: neither inherits the other's heap.
    cmd = [sys.executable, __file__, "--side=greenbridge", *forwarded]
    if args.uvloop:
        cmd.append("--uvloop")
    env = dict(os.environ)
    ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, env=env).stdout)
    for line in summary("greenbridge", ours, args.timeout):
        print(line, flush=True)
    gevent_python = args.gevent
    if gevent_python is None:
        try:
            import gevent  # noqa: F401

            gevent_python = sys.executable
        except ImportError:
            print("gevent: not importable here (pass --gevent PYTHON)")
            return
    cmd = [gevent_python, __file__, "--side=gevent", *forwarded]
    theirs = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
    for line in summary("gevent", theirs, args.timeout):
        print(line, flush=True)


if __name__ == "__main__":
    main()
