"""Core bridge benchmark: greenbridge's costs as ratios to baselines measured in this run.

Run: ``python benchmarks/bench_bridge.py`` (add ``--uvloop`` for the uvloop loop).
Each figure is the best of several repeats, in nanoseconds per operation;
the ratio column compares it with the baseline named beside it, and the
target column says what the issue asks for.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from greenlet import getcurrent, greenlet

import greenbridge
from greenbridge import async_, await_, spawn

REPEATS = 7


def best_ns(run: Callable[[int], None], n: int) -> float:
    """Best time per operation of ``run(n)`` over REPEATS runs."""
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter_ns()
        run(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def abest_ns(
    loop: asyncio.AbstractEventLoop, run: Callable[[int], Awaitable[None]], n: int
) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter_ns()
        loop.run_until_complete(run(n))
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


# -- baselines -------------------------------------------------------------


def switch_pair(n: int) -> None:
    """A raw greenlet switch there and back, n times."""
    main = getcurrent()

    def bounce() -> None:
        while True:
            main.switch()

    g = greenlet(bounce)
    sw = g.switch
    for _ in range(n):
        sw()


def fresh_greenlet(n: int) -> None:
    """Create and run a fresh greenlet(f) n times."""

    def f() -> None:
        return None

    for _ in range(n):
        greenlet(f).switch()


# -- measured --------------------------------------------------------------


def rows(loop: asyncio.AbstractEventLoop) -> list[tuple[str, float, str, float, float]]:
    n = 200_000
    out = []

    # Baselines run where the measured code runs: inside a coroutine on the loop.
    async def in_loop(body: Callable[[int], None], k: int) -> None:
        body(k)

    sw = abest_ns(loop, lambda k: in_loop(switch_pair, k), n)
    fresh = abest_ns(loop, lambda k: in_loop(fresh_greenlet, k), 50_000)

    fut = loop.create_future()
    fut.set_result(1)

    def await_done_future(k: int) -> None:
        for _ in range(k):
            await_(fut)

    async def trivial() -> int:
        return 1

    def await_trivial(k: int) -> None:
        for _ in range(k):
            await_(trivial())

    def in_bridge(body: Callable[[int], None], k: int) -> float:
        async def run(m: int) -> None:
            await async_(body)(m)

        return abest_ns(loop, run, k)

    out.append(
        ("await_(completed Future)", in_bridge(await_done_future, n), "switch pair", sw, 0.5)
    )
    out.append(("await_(trivial coroutine)", in_bridge(await_trivial, n), "switch pair", sw, 1.0))

    sleeps = 50_000

    def await_sleep0(k: int) -> None:
        for _ in range(k):
            await_(asyncio.sleep(0))

    async def native_sleep0(k: int) -> None:
        for _ in range(k):
            await asyncio.sleep(0)

    native = abest_ns(loop, native_sleep0, sleeps)

    # The floor for any greenlet bridge: a minimal driver that forwards the
    # trap of asyncio.sleep(0) with two bare greenlet switches and nothing
    # else (no pool, no context, no error handling).  Shown for reference.
    @types.coroutine
    def bare_driver(k: int) -> Generator[Any, Any, None]:
        def body() -> None:
            driver = getcurrent().parent
            for _ in range(k):
                steps = asyncio.sleep(0).__await__()
                trap = steps.send(None)
                driver.switch(trap)
                for _ in steps:  # finishes without raising StopIteration here
                    pass

        worker = greenlet(body)
        trap = worker.switch()
        while not worker.dead:
            sent = yield trap
            trap = worker.switch(sent)

    async def floor_sleep0(k: int) -> None:
        await bare_driver(k)

    floor = abest_ns(loop, floor_sleep0, sleeps)
    out.append(
        ("floor: 2 bare switches/sleep(0)", floor, "await asyncio.sleep(0)", native, float("nan"))
    )
    out.append(
        (
            "await_(asyncio.sleep(0))",
            in_bridge(await_sleep0, sleeps),
            "await asyncio.sleep(0)",
            native,
            1.3,
        )
    )

    def f() -> None:
        return None

    af = async_(f)

    async def call_async(k: int) -> None:
        for _ in range(k):
            await af()

    out.append(
        ("await async_(f)()", abest_ns(loop, call_async, n // 2), "fresh greenlet(f)", fresh, 0.2)
    )

    async def g() -> None:
        return None

    async def native_tasks(k: int) -> None:
        for _ in range(k):
            await asyncio.create_task(g())

    async def spawned(k: int) -> None:
        for _ in range(k):
            await spawn(f)

    tasks = abest_ns(loop, native_tasks, 50_000)
    out.append(
        ("await spawn(f)", abest_ns(loop, spawned, 50_000), "await create_task(af())", tasks, 2.0)
    )

    # Portal: the per-yield overhead of a task driven through a portal.
    async def yields(k: int) -> None:
        for _ in range(k):
            await asyncio.sleep(0)

    # run_until_complete() wraps the coroutine in a task through the factory.
    plain_task = abest_ns(loop, yields, sleeps)
    greenbridge.install_portal_factory(loop)
    portal_task = abest_ns(loop, yields, sleeps)
    loop.set_task_factory(None)
    out.append(
        (
            "portal task: one sleep(0)",
            portal_task,
            "plain task: one sleep(0)",
            plain_task,
            float("nan"),
        )
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uvloop", action="store_true", help="measure on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    print(f"Python {sys.version.split()[0]}, loop {type(loop).__module__}.{type(loop).__name__}")
    print(f"{'operation':28} {'ns/op':>8}   {'baseline':26} {'ns/op':>8}  {'ratio':>6}  target")
    sys.stdout.flush()
    ok = True
    for name, value, base_name, base, target in rows(loop):
        ratio = value / base
        verdict = "" if target != target else ("ok" if ratio <= target else "MISSED")
        if verdict == "MISSED":
            ok = False
        shown = "-" if target != target else f"<= {target:.1f}x"
        print(
            f"{name:28} {value:8.0f}   {base_name:26} {base:8.0f}  {ratio:5.2f}x  {shown} {verdict}"
        )
    loop.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
