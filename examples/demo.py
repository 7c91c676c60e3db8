"""greenbridge in ten seconds.

Fifty "blocking-style" sync functions wait on simulated I/O and run
concurrently on one asyncio event loop, with no threads, while a heartbeat
coroutine checks that the loop never stalls.  Then: a sync function awaiting
a coroutine, sync -> async -> sync nesting, spawn, a portal, and await_ with
no loop running at all.

Run it with:

    pip install . && python examples/demo.py
"""

from __future__ import annotations

import asyncio
import sys
import time

import greenbridge

N = 50  # concurrent sync calls
IO_SECONDS = 0.2  # simulated I/O latency of each call
TICK = 0.01  # heartbeat period


# --------------------------------------------------------------------------
# Plain sync code.  Nothing here is async; await_ suspends only the caller.


def handle_request(i: int) -> int:
    """Looks like ordinary blocking code: wait for I/O, then compute."""
    greenbridge.await_(asyncio.sleep(IO_SECONDS))  # e.g. a database round trip
    return sum(j * j for j in range(5_000)) + i  # some CPU work on the reply


async def lookup_user(uid: int) -> str:
    await asyncio.sleep(0.01)
    return f"user-{uid}"


def greet(uid: int) -> str:
    """A sync function awaiting a coroutine."""
    name = greenbridge.await_(lookup_user(uid))
    return f"hello, {name}"


# @await_ on an async function gives a sync function with the same signature.
lookup_user_sync = greenbridge.await_(lookup_user)


def leaf() -> str:
    greenbridge.await_(asyncio.sleep(0.01))
    return "leaf"


async def middle() -> str:
    return "middle > " + await greenbridge.async_(leaf)()


def outer() -> str:
    """sync -> async -> sync -> async, all on one loop."""
    return "outer > " + greenbridge.await_(middle())


# --------------------------------------------------------------------------
# The async side.


async def heartbeat(stop: asyncio.Event) -> float:
    """Tick every TICK seconds; return the largest gap seen between ticks."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    largest = 0.0
    while not stop.is_set():
        await asyncio.sleep(TICK)
        now = loop.time()
        largest = max(largest, now - last)
        last = now
    return largest


async def main() -> int:
    print(f"1) {N} sync calls, each waiting {IO_SECONDS}s on I/O, on one event loop")
    stop = asyncio.Event()
    beat = asyncio.create_task(heartbeat(stop))
    await asyncio.sleep(TICK)  # let the heartbeat start

    start = time.perf_counter()
    results = await asyncio.gather(*(greenbridge.async_(handle_request)(i) for i in range(N)))
    wall = time.perf_counter() - start

    stop.set()
    largest_gap = await beat
    sequential = N * IO_SECONDS
    expected = [sum(j * j for j in range(5_000)) + i for i in range(N)]
    assert results == expected, "wrong results"
    print(f"   wall time:          {wall:6.2f} s")
    print(f"   one after another:  {sequential:6.2f} s   ({N} x {IO_SECONDS} s)")
    print(f"   speedup:            {sequential / wall:6.1f} x")
    gap_ms, tick_ms = largest_gap * 1000, TICK * 1000
    print(f"   heartbeat:          largest gap {gap_ms:.1f} ms (ticks every {tick_ms:.0f} ms)")

    print("2) a sync function awaiting a coroutine")
    print("  ", await greenbridge.async_(greet)(1))
    print("   @await_ made a sync function:", await greenbridge.async_(lookup_user_sync)(2))

    print("3) nesting")
    print("  ", await greenbridge.async_(outer)())

    print("4) spawn: a sync function as an asyncio Task")
    task = greenbridge.spawn(greet, 3)
    print("  ", await task)

    print("5) a portal: plain sync calls straight from this coroutine")
    await greenbridge.ensure_portal()
    print("  ", greet(4))

    # Ten times faster than sequential is a loose bar: expect about N times.
    if wall > sequential / 10:
        print("!! the calls did not run concurrently", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    status = asyncio.run(main())
    print("6) no event loop running: await_ uses a private per-thread loop")
    print("  ", greet(5))
    greenbridge.close_private_loop()
    sys.exit(status)
