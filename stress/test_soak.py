"""Soak: a green echo server under waves of hundreds of concurrent clients.

The server (see ``_green_server.EchoServer``) runs on the loop under test:
green sockets, one green thread per connection.  The clients run in a
process of their own (``_echo_clients.py``: asyncio streams, on uvloop when
installed), a wave at a time: every client connects at once, makes round
trips of random sizes and checks every byte echoed.  For each wave the test
prints and checks, in the server's process:

* every client finished and every byte came back right;
* the open descriptors (``/proc/self/fd``) are back to their count before the
  first wave once the wave's handlers have finished;
* the resident memory (``/proc/self/statm``): the whole series is printed, and
  its growth after the warm-up waves must stay under a generous bound;
* the loop's longest heartbeat gap and the longest GC pause (printed only:
  no timed assertions).

At ``GREENBRIDGE_STRESS_SCALE=1.0`` each backend soaks for 30 s with waves of
500 clients; the scale shrinks the duration and the waves.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from _green_server import (
    EchoServer,
    GcPauses,
    Heartbeat,
    green_group,
    have_proc,
    open_fds,
    rss_bytes,
)
from _scale import SCALE, scaled

CLIENT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_echo_clients.py")
DURATION = scaled(30.0, 2.0)  # seconds of waves, per backend
CLIENTS = int(scaled(500, 100))  # concurrent clients per wave
ROUNDS = 10  # round trips per client
LARGEST = 65536  # largest payload
WARMUP = 3  # waves before the memory baseline
RSS_GROWTH_LIMIT = 48 * 1024 * 1024  # after warm-up; a leak of a connection per client shows


async def run_clients(backend: Any, addr: Any, seed: int) -> dict[str, Any]:
    """One wave of clients in a subprocess, polled from the loop (which keeps serving)."""
    with subprocess.Popen(
        [sys.executable, CLIENT_SCRIPT, addr[0], str(addr[1]), str(CLIENTS), str(ROUNDS)]
        + [str(LARGEST), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        end = time.monotonic() + 120
        while proc.poll() is None:
            if time.monotonic() > end:
                proc.kill()
            await backend.sleep(0.02)
        out, err = proc.communicate()
    assert proc.returncode == 0, f"client process failed:\n{err.decode()[-3000:]}"
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.timeout(60 + DURATION * 4)
def test_soak_echo_waves(backend: Any) -> None:
    if not have_proc():
        pytest.skip("needs /proc/self/fd and /proc/self/statm (Linux)")

    async def main() -> list[dict[str, Any]]:
        server = EchoServer(idle_timeout=30.0)
        heartbeat = Heartbeat(backend)
        waves: list[dict[str, Any]] = []
        with GcPauses() as gc_pauses:
            async with green_group(backend) as group:
                group.start(server.accept_loop, group)
                if backend.is_asyncio:
                    import asyncio

                    beat = asyncio.ensure_future(heartbeat.run())
                else:
                    group.nursery.start_soon(heartbeat.run)
                await backend.sleep(0.05)
                fds_before = open_fds()
                started = time.monotonic()
                seed = 0
                while time.monotonic() - started < DURATION or len(waves) < WARMUP + 2:
                    seed += 1
                    heartbeat.take()
                    gc_pauses.take()
                    t0 = time.monotonic()
                    result = await run_clients(backend, server.addr, seed)
                    elapsed = time.monotonic() - t0
                    await server.settle(backend)
                    result.update(
                        wave=seed,
                        seconds=elapsed,
                        fds=open_fds(),
                        rss=rss_bytes(),
                        gap=heartbeat.take(),
                        gc=gc_pauses.take(),
                    )
                    waves.append(result)
                    print(
                        f"  wave {seed:3}: {result['ok']}/{CLIENTS} clients ok,"
                        f" {result['round_trips']} round trips, {result['bytes'] / 1e6:.1f} MB"
                        f" in {elapsed:.2f} s; fds {result['fds']} (before: {fds_before});"
                        f" RSS {result['rss'] / 2**20:.1f} MiB; longest loop gap"
                        f" {result['gap'] * 1000:.0f} ms; longest GC pause"
                        f" {result['gc'] * 1000:.1f} ms",
                        flush=True,
                    )
                    assert result["failed"] == 0, result["errors"]
                    assert result["fds"] == fds_before, (
                        f"wave {seed}: {result['fds']} descriptors open, {fds_before} before"
                    )
                await server.stop(backend)
                heartbeat.stopped = True
                if backend.is_asyncio:
                    await beat
        assert server.errors == []
        assert server.timeouts == 0 and server.resets == 0
        assert server.bytes == sum(w["bytes"] for w in waves)
        return waves

    print(f"\nsoak on {backend.name}: {CLIENTS} clients a wave, {ROUNDS} round trips each,")
    print(f"  payloads of 1 B to {LARGEST // 1024} KiB, for {DURATION:.0f} s (scale {SCALE})")
    waves = backend.run(main)
    rss = [w["rss"] / 2**20 for w in waves]
    gaps = [w["gap"] * 1000 for w in waves]
    total_bytes = sum(w["bytes"] for w in waves)
    total_clients = sum(w["ok"] for w in waves)
    print(f"  RSS series (MiB): {' '.join(f'{r:.1f}' for r in rss)}")
    print(f"  longest loop gap per wave (ms): {' '.join(f'{g:.0f}' for g in gaps)}")
    print(
        f"  {len(waves)} waves, {total_clients} clients, {total_bytes / 1e6:.0f} MB echoed;"
        f" RSS growth after warm-up: {max(rss[WARMUP:]) - rss[WARMUP - 1]:+.1f} MiB"
    )
    growth = max(w["rss"] for w in waves[WARMUP:]) - waves[WARMUP - 1]["rss"]
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB after warm-up"


def test_clients_catch_a_wrong_echo() -> None:
    """The client process's byte check bites: against a server that flips a bit, it fails."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(65536)
                while data:
                    conn.sendall(bytes([data[0] ^ 1]) + data[1:])
                    data = conn.recv(65536)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        addr = listener.getsockname()
        out = subprocess.run(
            [sys.executable, CLIENT_SCRIPT, addr[0], str(addr[1]), "5", "2", "1024", "1"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join()
    result = json.loads(out)
    assert result["ok"] == 0 and result["failed"] == 5
    assert "echo of" in result["errors"][0]
