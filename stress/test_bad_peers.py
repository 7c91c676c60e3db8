"""Bad peers: a green echo server keeps serving while clients misbehave.

Against one green echo server (``_green_server.EchoServer``, a timeout on every
connection as a real server has), phase after phase of misbehaving clients:

* **idle**: connect and send nothing; the server's ``recv`` times out
  (``settimeout``) and it hangs up;
* **half-close**: send a payload, ``shutdown(SHUT_WR)``, read the echo to EOF;
* **reset**: ``SO_LINGER`` 0 then ``close`` (an RST), before or after sending;
* **1 MiB**: send 1 MiB in one ``sendall`` while another green thread reads the
  echo back;
* **non-reader**: send 1 MiB and never read; the server's ``sendall`` or
  ``recv`` times out;
* **churn**: 10,000 connections opened and closed (plain, with one small
  round trip, or reset), by 50 green threads.

Meanwhile a probe client makes echo round trips with random payloads and
checks every byte: it must keep getting correct echoes in every phase.  After
each phase every handler must finish, and at the end the process has exactly
the descriptors it had before the server started serving.  Every client here
is a green thread too (the peers need socket options and precise timing).
Figures (per phase: duration, probe round trips and the probe's longest
round trip, the loop's longest heartbeat gap, when the server's timeouts fired)
are printed; none is asserted.  ``GREENBRIDGE_STRESS_SCALE`` scales the counts.
"""

from __future__ import annotations

import contextlib
import functools
import random
import socket as _stdsocket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
from _echo_clients import payload
from _green_server import (
    EchoServer,
    Heartbeat,
    green_group,
    have_proc,
    median,
    open_fds,
    recv_all,
    recv_exactly,
    run_all,
)
from _scale import SCALE, scaled

from greenbridge.green import socket as gsocket
from greenbridge.green import time as gtime

IDLE_TIMEOUT = scaled(1.5, 0.75)  # the server's settimeout on every connection
IDLE_PEERS = int(scaled(500, 50))
HALF_CLOSERS = int(scaled(500, 50))
RESETTERS = int(scaled(500, 50))
BIG_SENDERS = int(scaled(16, 2))
NON_READERS = int(scaled(16, 2))
CHURN_WORKERS = 50
CHURN = int(scaled(10_000, 1000)) // CHURN_WORKERS * CHURN_WORKERS
ROUNDS = 1  # rounds of the phases one after the other (then all at once)
MIB = 1 << 20
CLIENT_TIMEOUT = 60.0  # the clients' own timeout: a hang fails instead of blocking


class Probe:
    """A well-behaved client: echo round trips with random payloads, every byte checked."""

    def __init__(self, addr: Any) -> None:
        self.addr = addr
        self.count = 0
        self.longest = 0.0
        self.stop = False
        self.done = False

    def run(self) -> None:
        rng = random.Random(7)
        block = rng.randbytes(4 * 65536)
        try:
            with gsocket.create_connection(self.addr) as s:
                s.settimeout(CLIENT_TIMEOUT)
                while not self.stop:
                    data = payload(rng, block, 65536)
                    t0 = time.monotonic()
                    s.sendall(data)
                    echoed = recv_exactly(s, len(data))
                    self.longest = max(self.longest, time.monotonic() - t0)
                    assert echoed == data, f"probe: echo of {len(data)} bytes differs"
                    self.count += 1
                    gtime.sleep(0.001)
        finally:
            self.done = True

    def take_longest(self) -> float:
        longest, self.longest = self.longest, 0.0
        return longest


def connect(addr: Any) -> Any:
    s = gsocket.create_connection(addr)
    s.settimeout(CLIENT_TIMEOUT)
    return s


def reset(s: Any) -> None:
    """Close with an RST instead of a FIN."""
    s.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def idle_peer(addr: Any) -> None:
    with connect(addr) as s:
        assert s.recv(1) == b"", "the server should hang up on an idle peer"


def half_closer(addr: Any, data: bytes) -> None:
    with connect(addr) as s:
        s.sendall(data)
        s.shutdown(_stdsocket.SHUT_WR)
        assert recv_all(s) == data


def resetter(addr: Any, data: bytes) -> None:
    s = connect(addr)
    if data:
        s.sendall(data)
    reset(s)


def big_send(s: Any, data: bytes) -> None:
    s.sendall(data)
    s.shutdown(_stdsocket.SHUT_WR)


def big_receive(s: Any, data: bytes) -> None:
    try:
        assert recv_all(s) == data, "1 MiB echo differs"
    finally:
        s.close()


def non_reader(addr: Any, data: bytes, server: EchoServer, expected_timeouts: int) -> None:
    with connect(addr) as s:
        # (The server may time out first and hang up.)
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            s.sendall(data)
        # Stay connected (and never read) until the server dropped every non-reader.
        end = time.monotonic() + CLIENT_TIMEOUT
        while server.timeouts < expected_timeouts and time.monotonic() < end:
            gtime.sleep(0.01)


def churner(addr: Any, worker: int, count: int, done: list[int]) -> None:
    rng = random.Random(worker)
    for i in range(count):
        kind = (worker + i) % 3
        s = connect(addr)
        if kind == 0:
            s.close()
        elif kind == 1:
            with s:
                data = rng.randbytes(rng.randint(1, 100))
                s.sendall(data)
                assert recv_exactly(s, len(data)) == data
        else:
            reset(s)
        done[0] += 1


@pytest.mark.timeout(300)
def test_bad_peers_do_not_stop_the_server(backend: Any) -> None:
    if not have_proc():
        pytest.skip("needs /proc/self/fd (Linux)")
    rng = random.Random(42)
    block = rng.randbytes(4 * 65536)
    big = rng.randbytes(MIB)

    async def main() -> None:
        fds_before = open_fds()
        server = EchoServer(idle_timeout=IDLE_TIMEOUT)
        heartbeat = Heartbeat(backend)
        probe = Probe(server.addr)
        async with green_group(backend) as group:
            group.start(server.accept_loop, group)
            if backend.is_asyncio:
                import asyncio

                beat = asyncio.ensure_future(heartbeat.run())
            else:
                group.nursery.start_soon(heartbeat.run)
            group.start(probe.run)
            while probe.count < 3:
                await backend.sleep(0.01)

            async def phase(name: str, fns: list[Callable[[], Any]], clients: int) -> None:
                timeouts, resets, fired = server.timeouts, server.resets, len(server.fired)
                probed = probe.count
                heartbeat.take()
                probe.take_longest()
                t0 = time.monotonic()
                await run_all(backend, fns)
                await server.settle(backend, keep=1)  # the probe's connection stays
                elapsed = time.monotonic() - t0
                # The probe is served after the phase too (and was during it: see below).
                end = time.monotonic() + 30
                while probe.count < probed + 3 and not probe.done:
                    assert time.monotonic() < end, f"{name}: the probe got no echo for 30 s"
                    await backend.sleep(0.01)
                assert not probe.done, f"{name}: the probe client failed"
                fired_now = server.fired[fired:]
                print(
                    f"  {name:11} {clients:6} clients in {elapsed:5.2f} s; probe: "
                    f"{probe.count - probed:5} round trips, longest"
                    f" {probe.take_longest() * 1000:4.0f} ms; loop gap"
                    f" {heartbeat.take() * 1000:4.0f} ms;"
                    f" server timeouts {server.timeouts - timeouts}"
                    + (f" (fired after {median(fired_now):.3f} s median)" if fired_now else "")
                    + f", resets {server.resets - resets}",
                    flush=True,
                )

            addr = server.addr

            def idle() -> list[Callable[[], Any]]:
                return [functools.partial(idle_peer, addr)] * IDLE_PEERS

            def half() -> list[Callable[[], Any]]:
                return [
                    functools.partial(half_closer, addr, payload(rng, block, 65536))
                    for _ in range(HALF_CLOSERS)
                ]

            def resets() -> list[Callable[[], Any]]:
                return [
                    functools.partial(resetter, addr, payload(rng, block, 16384) if i % 2 else b"")
                    for i in range(RESETTERS)
                ]

            async def big_pairs() -> list[Callable[[], Any]]:
                socks = await run_all(backend, [functools.partial(connect, addr)] * BIG_SENDERS)
                pairs: list[Callable[[], Any]] = []
                for s in socks:
                    pairs.append(functools.partial(big_send, s, big))
                    pairs.append(functools.partial(big_receive, s, big))
                return pairs

            def non_readers(expected: int) -> list[Callable[[], Any]]:
                return [functools.partial(non_reader, addr, big, server, expected)] * NON_READERS

            def churn(done: list[int], workers: int) -> list[Callable[[], Any]]:
                per_worker = CHURN // CHURN_WORKERS
                return [
                    functools.partial(churner, addr, w, per_worker, done) for w in range(workers)
                ]

            for _ in range(ROUNDS):
                before = server.timeouts
                await phase("idle", idle(), IDLE_PEERS)
                assert server.timeouts == before + IDLE_PEERS
                await phase("half-close", half(), HALF_CLOSERS)
                await phase("reset", resets(), RESETTERS)
                await phase("1 MiB", await big_pairs(), BIG_SENDERS)
                expected = server.timeouts + NON_READERS
                await phase("non-reader", non_readers(expected), NON_READERS)
                assert server.timeouts == expected
                done = [0]
                t0 = time.monotonic()
                await phase("churn", churn(done, CHURN_WORKERS), CHURN)
                print(f"  churn: {done[0] / (time.monotonic() - t0):.0f} connections/s")
                assert done[0] == CHURN
            # All of them at once (a fifth of the churn).
            expected = server.timeouts + IDLE_PEERS + NON_READERS
            done = [0]
            together = idle() + half() + resets() + await big_pairs()
            together += non_readers(expected) + churn(done, CHURN_WORKERS // 5)
            total = IDLE_PEERS + HALF_CLOSERS + RESETTERS + BIG_SENDERS + NON_READERS + CHURN // 5
            await phase("all at once", together, total)
            assert server.timeouts == expected
            assert done[0] == CHURN // 5

            probe.stop = True
            while not probe.done:
                await backend.sleep(0.01)
            await server.settle(backend)
            await server.stop(backend)
            heartbeat.stopped = True
            if backend.is_asyncio:
                await beat
        assert server.errors == []
        assert open_fds() == fds_before, "descriptors leaked"
        print(
            f"  served {server.accepted} connections, {server.bytes / 1e6:.1f} MB echoed,"
            f" {server.timeouts} timeouts, {server.resets} resets; descriptors back to"
            f" {fds_before}"
        )

    print(f"\nbad peers on {backend.name} (scale {SCALE}, server timeout {IDLE_TIMEOUT} s):")
    backend.run(main)


def test_probe_fails_on_a_wrong_echo(backend: Any) -> None:
    """The probe's check bites: against a server that flips one bit, it raises."""

    def corrupting_server(listener: Any) -> None:
        conn, _ = listener.accept()
        with conn:
            data = conn.recv(65536)
            conn.sendall(bytes([data[0] ^ 1]) + data[1:])
            conn.sendall(recv_all(conn))

    async def main() -> None:
        listener = gsocket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        probe = Probe(listener.getsockname())
        with listener, pytest.raises(AssertionError, match="probe: echo"):
            await run_all(backend, [functools.partial(corrupting_server, listener), probe.run])

    backend.run(main)
