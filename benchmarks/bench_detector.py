"""Blocking-call detector overhead on an echo benchmark, as a ratio measured in this run.

Run: ``python benchmarks/bench_detector.py`` (``--uvloop`` for the uvloop loop).

An asyncio-streams echo server and CLIENTS concurrent clients on loopback,
each doing ROUNDS request/response round trips of a small message; once with
the clients as coroutines and once as bridged sync code (``async_`` +
``await_`` on the streams).  Each configuration runs with the detector off
and on (threshold 0.1 s, its default), alternating, REPEATS times; the figure
is the best time per round trip.  The issue's target: overhead <= 5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import greenbridge

CLIENTS = 20
ROUNDS = 500
REPEATS = 7
MESSAGE = b"x" * 64 + b"\n"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()


async def coroutine_client(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(ROUNDS):
        writer.write(MESSAGE)
        await writer.drain()
        await reader.readline()
    writer.close()
    await writer.wait_closed()


def sync_client(port: int) -> None:
    await_ = greenbridge.await_
    reader, writer = await_(asyncio.open_connection("127.0.0.1", port))
    for _ in range(ROUNDS):
        writer.write(MESSAGE)
        await_(writer.drain())
        await_(reader.readline())
    writer.close()
    await_(writer.wait_closed())


async def one_run(port: int, client: Callable[[int], Awaitable[None]], detect: bool) -> float:
    detector = greenbridge.detect_blocking(0.1) if detect else None
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(port) for _ in range(CLIENTS)))
        return (time.perf_counter() - t0) / (CLIENTS * ROUNDS)
    finally:
        if detector is not None:
            detector.stop()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients: dict[str, Callable[[int], Awaitable[None]]] = {
        "coroutine clients": coroutine_client,
        "sync clients (async_ + await_)": greenbridge.async_(sync_client),
    }
    print(f"{CLIENTS} clients x {ROUNDS} round trips, best of {REPEATS}, µs per round trip")
    print(f"{'clients':34} {'detector off':>13} {'detector on':>12} {'overhead':>9}")
    for name, client in clients.items():
        await one_run(port, client, False)  # warm up
        off = on = float("inf")
        for _ in range(REPEATS):
            off = min(off, await one_run(port, client, False))
            on = min(on, await one_run(port, client, True))
        print(f"{name:34} {off * 1e6:13.2f} {on * 1e6:12.2f} {(on / off - 1) * 100:+8.1f}%")
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    print("loop:", type(loop).__module__ + "." + type(loop).__name__)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
