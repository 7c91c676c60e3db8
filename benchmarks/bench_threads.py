"""Green threads benchmark: 10,000 green threads vs 10,000 asyncio tasks vs 1,000 real threads.

Run: ``python benchmarks/bench_threads.py`` (``--uvloop`` for the uvloop loop).

Each thread (or task) sleeps twice (``SLEEP`` seconds each).  Every variant
runs in its own fresh subprocess, so its peak RSS (``ru_maxrss``) is its own;
we report the wall time of the whole start-sleep-sleep-join cycle (best of
``REPEATS`` processes) and the peak RSS growth over the process's baseline.
Ratios are against the asyncio-task baseline measured in the same run.
The ``spawn`` row runs the same bodies through ``greenbridge.spawn`` with no
``Thread`` object: the difference to the green row is the threading module's
own cost, the rest is the bridge's and the hub's.
Targets from issue 4: green time <= 1.3x asyncio, green memory <= 2x asyncio.
The "floor" row is the least any design that gives each green thread a task
and a greenlet can pay: bare greenlets, fresh for each task, that switch back
to their task to sleep (no pool, no bookkeeping).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

N_GREEN = 10_000
N_REAL = 1_000
SLEEP = 0.05
REPEATS = 3


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _run_on_new_loop(coro: Any, use_uvloop: bool) -> float:
    """Run ``coro`` to the end on a fresh loop (uvloop's if asked) and close it."""
    import asyncio

    if use_uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return float(loop.run_until_complete(coro))
    finally:
        loop.close()


def variant_asyncio(n: int, use_uvloop: bool) -> float:
    import asyncio

    async def body() -> None:
        await asyncio.sleep(SLEEP)
        await asyncio.sleep(SLEEP)

    async def main() -> float:
        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(body()) for _ in range(n)]
        await asyncio.gather(*tasks)
        return time.perf_counter() - t0

    return _run_on_new_loop(main(), use_uvloop)


def _green_body() -> Callable[[], None]:
    """What each green unit runs: two green sleeps."""
    from greenbridge.green import time as green_time

    def body() -> None:
        green_time.sleep(SLEEP)
        green_time.sleep(SLEEP)

    return body


def variant_green(n: int, use_uvloop: bool) -> float:
    import greenbridge
    from greenbridge.green import threading

    body = _green_body()

    def main() -> float:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=body) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    return _run_on_new_loop(greenbridge.async_(main)(), use_uvloop)


def variant_spawn(n: int, use_uvloop: bool) -> float:
    """The bridge alone: each unit is greenbridge.spawn(body), no Thread object around it."""
    import greenbridge

    body = _green_body()

    def main() -> float:
        t0 = time.perf_counter()
        tasks = [greenbridge.spawn(body) for _ in range(n)]
        for task in tasks:
            greenbridge.await_(task)
        return time.perf_counter() - t0

    return _run_on_new_loop(greenbridge.async_(main)(), use_uvloop)


def variant_floor(n: int, use_uvloop: bool) -> float:
    """The least any greenlet-per-task design pays: each asyncio task runs a fresh
    bare greenlet that asks the task, by switching back to it, to sleep twice.
    No pool, no bookkeeping: a task, a greenlet and two switches per sleep."""
    import asyncio

    from greenlet import getcurrent, greenlet

    async def unit() -> None:
        task_side = getcurrent()

        def body() -> None:
            task_side.switch(SLEEP)
            task_side.switch(SLEEP)

        g = greenlet(body)
        delay = g.switch()
        while delay is not None:
            await asyncio.sleep(delay)
            delay = g.switch()

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*[asyncio.ensure_future(unit()) for _ in range(n)])
        return time.perf_counter() - t0

    return _run_on_new_loop(main(), use_uvloop)


def variant_real(n: int, use_uvloop: bool) -> float:
    import threading

    def body() -> None:
        time.sleep(SLEEP)
        time.sleep(SLEEP)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=body) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


VARIANTS = {
    "asyncio": variant_asyncio,
    "green": variant_green,
    "spawn": variant_spawn,
    "floor": variant_floor,
    "real": variant_real,
}


def child(name: str, n: int, use_uvloop: bool) -> None:
    # Import what every variant needs first, so the baseline is comparable.
    import asyncio  # noqa: F401

    import greenbridge  # noqa: F401

    if use_uvloop:
        import uvloop  # noqa: F401
    base = _rss_kib()
    elapsed = VARIANTS[name](n, use_uvloop)
    print(json.dumps({"time": elapsed, "rss_kib": _rss_kib(), "growth_kib": _rss_kib() - base}))


def measure(name: str, n: int, use_uvloop: bool) -> dict[str, float]:
    best: dict[str, float] | None = None
    for _ in range(REPEATS):
        cmd = [sys.executable, __file__, "--child", name, "-n", str(n)]
        if use_uvloop:
            cmd.append("--uvloop")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        result = json.loads(out)
        if best is None or result["time"] < best["time"]:
            best = result
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--child", choices=sorted(VARIANTS))
    parser.add_argument("-n", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.uvloop)
        return
    loop_name = "uvloop" if args.uvloop else "asyncio"
    print(f"Python {sys.version.split()[0]}, loop {loop_name}; each unit sleeps 2 x {SLEEP} s")
    print(f"best of {REPEATS} fresh processes per variant; RSS growth = peak minus baseline\n")
    base = measure("asyncio", N_GREEN, args.uvloop)
    green = measure("green", N_GREEN, args.uvloop)
    spawned = measure("spawn", N_GREEN, args.uvloop)
    floor = measure("floor", N_GREEN, args.uvloop)
    real = measure("real", N_REAL, args.uvloop)
    rows = [
        (f"{N_GREEN:,} asyncio tasks (baseline)", base, None),
        (f"{N_GREEN:,} green threads", green, (1.3, 2.0)),
        (f"{N_GREEN:,} spawn() calls, no Thread", spawned, None),
        ("floor: tasks + bare greenlets", floor, None),
        (f"{N_REAL:,} real threads", real, None),
    ]
    print(f"{'variant':<34}{'wall s':>9}{'x time':>8}{'RSS MiB':>9}{'growth MiB':>12}{'x mem':>8}")
    for label, r, target in rows:
        time_ratio = r["time"] / base["time"]
        mem_ratio = r["growth_kib"] / base["growth_kib"]
        line = (
            f"{label:<34}{r['time']:>9.3f}{time_ratio:>8.2f}{r['rss_kib'] / 1024:>9.1f}"
            f"{r['growth_kib'] / 1024:>12.1f}{mem_ratio:>8.2f}"
        )
        if target is not None:
            ok = time_ratio <= target[0] and mem_ratio <= target[1]
            line += (
                f"   target <= {target[0]}x time, <= {target[1]}x mem: {'met' if ok else 'MISSED'}"
            )
        print(line)
    per_green = (green["time"] - 2 * SLEEP) / N_GREEN * 1e6
    per_spawn = (spawned["time"] - 2 * SLEEP) / N_GREEN * 1e6
    per_task = (base["time"] - 2 * SLEEP) / N_GREEN * 1e6
    per_floor = (floor["time"] - 2 * SLEEP) / N_GREEN * 1e6
    print(
        f"\noverhead beyond the sleeps: green {per_green:.1f} us/thread "
        f"(spawn() alone {per_spawn:.1f} us, floor {per_floor:.1f} us), "
        f"asyncio {per_task:.1f} us/task"
    )


if __name__ == "__main__":
    main()
