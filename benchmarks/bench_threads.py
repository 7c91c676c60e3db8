"""Green threads benchmark: 10,000 green threads vs 10,000 asyncio tasks vs 1,000 real threads.

Run: ``python benchmarks/bench_threads.py`` (``--uvloop`` for the uvloop loop;
``--gevent-python /path/to/venv/bin/python`` runs the gevent row with a Python
that has gevent; ``--green 100000`` for 100,000 green units).

Each thread (or task) sleeps twice (``SLEEP`` seconds each).  Every variant
runs in its own fresh subprocess, so its peak RSS (``ru_maxrss``) is its own;
we report the wall time of the whole start-sleep-sleep-join cycle (best of
``REPEATS`` processes) and the peak RSS growth over the process's baseline.
Ratios are against the asyncio-task baseline measured in the same run.
The ``spawn`` row runs the same bodies through ``greenbridge.spawn`` with no
``Thread`` object: the difference to the green row is the threading module's
own cost, the rest is the bridge's and the hub's.
Targets from issue 4: green time <= 1.3x asyncio, green memory <= 2x asyncio.
The "floor: tasks + bare greenlets" row is the least any design that gives
each green thread a task and a greenlet can pay: bare greenlets, fresh for
each task, that switch back to their task to sleep (no pool, no bookkeeping).
Green threads have no task any more (issue 15, see greenbridge._bare): the
"floor: bare greenlets, no task" row is the least that design can pay, a fresh
greenlet started by ``call_soon`` and resumed by a ``call_later`` timer per
sleep.  The gevent row runs ``gevent.spawn`` with gevent's ``sleep`` on its own
loop, in the Python given by ``--gevent-python`` (target of issue 15: green
threads <= 0.9x gevent's time, <= its memory).  The "floor: bare greenlets,
heap timers" row is the floor of greenbridge's own design (green threads sleep
in the hub's heap of deadlines, with one loop timer): bare greenlets and that
heap, nothing else.

Memory per suspended unit: with 50 ms sleeps the first units may wake before
the last ones start, so fewer are alive at the peak than were started.  So
the asyncio, green, heap-floor and gevent variants also run once with every
unit suspended at once (each sleep ``hold_seconds(n)`` long), and the issue's
memory target compares those figures (``--no-held`` skips these runs).

``--callgrind`` counts machine instructions per unit instead (valgrind; each
variant run with 1,000 and 3,000 units, the difference divided by 2,000): the
green threads, ``spawn()``, ``run`` (``greenbridge._bare.start`` of the same
body: a green thread without its ``Thread`` object), the two bare-greenlet
floors and gevent, free of the wall clock's noise.
"""

from __future__ import annotations

import argparse
import json
import os
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


def variant_run(n: int, use_uvloop: bool) -> float:
    """What a green thread is without its ``Thread`` object: ``greenbridge._bare.start``."""
    import greenbridge
    from greenbridge import _bare
    from greenbridge.green import threading

    body = _green_body()

    def main() -> float:
        t0 = time.perf_counter()
        finished = threading.Event()
        left = [n]

        def unit() -> None:
            body()
            left[0] -= 1
            if not left[0]:
                finished.set()

        for _ in range(n):
            _bare.start(unit)
        finished.wait()
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


def variant_bare(n: int, use_uvloop: bool) -> float:
    """The least a green thread without a task can pay: a fresh bare greenlet per
    unit, started by a loop callback and resumed by a timer callback for each sleep."""
    import asyncio

    from greenlet import getcurrent, greenlet

    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        left = [n]

        def body() -> None:
            me = getcurrent()
            loop.call_later(SLEEP, me.switch)
            me.parent.switch()  # type: ignore[union-attr]
            loop.call_later(SLEEP, me.switch)
            me.parent.switch()  # type: ignore[union-attr]
            left[0] -= 1
            if not left[0]:
                done.set_result(None)

        t0 = time.perf_counter()
        for _ in range(n):
            loop.call_soon(greenlet(body).switch)
        await done
        return time.perf_counter() - t0

    return _run_on_new_loop(main(), use_uvloop)


def variant_heap(n: int, use_uvloop: bool) -> float:
    """The floor of greenbridge's own design: bare greenlets begun by one ``call_soon``,
    asleep in a heap of deadlines with one loop timer for the earliest (as the hub's
    ``Timers``), with no pool, no ``Thread``, no bookkeeping and no cancellation."""
    import asyncio
    import heapq

    from greenlet import getcurrent, greenlet

    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        left = [n]
        heap: list[float] = []
        due: dict[float, list[Any]] = {}
        armed: list[Any] = [None, float("inf")]  # the loop's timer, its deadline

        def fire() -> None:
            armed[0], armed[1] = None, float("inf")
            end = loop.time() + 1e-9
            batch = []
            while heap and heap[0] < end:
                batch.append(due.pop(heapq.heappop(heap)))
            if heap:
                armed[0], armed[1] = loop.call_at(heap[0], fire), heap[0]
            for sleepers in batch:
                for sleeper in sleepers:
                    sleeper.switch()

        def sleep(me: Any) -> None:
            when = loop.time() + SLEEP
            sleepers = due.get(when)
            if sleepers is not None:
                sleepers.append(me)
            else:
                due[when] = [me]
                heapq.heappush(heap, when)
                if when < armed[1]:
                    if armed[0] is not None:
                        armed[0].cancel()
                    armed[0], armed[1] = loop.call_at(when, fire), when
            me.parent.switch()

        def body() -> None:
            me = getcurrent()
            sleep(me)
            sleep(me)
            left[0] -= 1
            if not left[0]:
                done.set_result(None)

        def begin(units: list[Any]) -> None:
            for unit in units:
                unit.switch()

        t0 = time.perf_counter()
        loop.call_soon(begin, [greenlet(body) for _ in range(n)])
        await done
        return time.perf_counter() - t0

    return _run_on_new_loop(main(), use_uvloop)


def variant_gevent(n: int, use_uvloop: bool) -> float:
    """gevent.spawn, monkey-patching nothing: gevent's own sleep (gevent's own loop)."""
    import gevent

    def body() -> None:
        gevent.sleep(SLEEP)
        gevent.sleep(SLEEP)

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(body) for _ in range(n)])
    return time.perf_counter() - t0


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
    "run": variant_run,
    "floor": variant_floor,
    "bare": variant_bare,
    "heap": variant_heap,
    "gevent": variant_gevent,
    "real": variant_real,
}

#: The Python of a virtualenv with gevent (greenbridge's own venv need not have it):
#: ``--gevent-python``, else the GEVENT_PYTHON environment variable, else this Python.
GEVENT_PYTHON = os.environ.get("GEVENT_PYTHON", sys.executable)


def child(name: str, n: int, use_uvloop: bool, sleep: float | None = None) -> None:
    global SLEEP
    if sleep is not None:
        SLEEP = sleep
    # Import what every variant needs first, so the baseline is comparable.
    import asyncio  # noqa: F401

    if name == "gevent":
        import gevent

        gevent.sleep(0)  # its hub and loop exist before the baseline
    else:
        import greenbridge  # noqa: F401

    if use_uvloop and name != "gevent":
        import uvloop  # noqa: F401
    base = _rss_kib()
    elapsed = VARIANTS[name](n, use_uvloop)
    print(json.dumps({"time": elapsed, "rss_kib": _rss_kib(), "growth_kib": _rss_kib() - base}))


def _run_child(name: str, n: int, use_uvloop: bool, sleep: float | None = None) -> Any:
    python = GEVENT_PYTHON if name == "gevent" else sys.executable
    cmd = [python, __file__, "--child", name, "-n", str(n)]
    if use_uvloop and name != "gevent":
        cmd.append("--uvloop")
    if sleep is not None:
        cmd += ["--sleep", str(sleep)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def measure(name: str, n: int, use_uvloop: bool) -> dict[str, float]:
    best: dict[str, float] | None = None
    for _ in range(REPEATS):
        result = _run_child(name, n, use_uvloop)
        if best is None or result["time"] < best["time"]:
            best = result
    assert best is not None
    return best


def hold_seconds(n: int) -> float:
    """A sleep long enough that every unit is suspended at once (its first sleep
    outlasts the start of the last unit): 1 s, or 50 us per unit beyond 20,000."""
    return max(1.0, n * 50e-6)


def held_kib(name: str, n: int, use_uvloop: bool) -> float:
    """RSS growth per unit with all ``n`` units suspended at once (one process).

    With `SLEEP` (50 ms), the first units can wake before the last ones
    start: then fewer are alive at the peak, and peak / n understates what
    one suspended unit costs.  gevent's loop begins spawned greenlets in
    slices of its switch interval, with timers firing in between, so its
    figure moves with how fast the machine starts them; greenbridge, like
    asyncio with tasks, begins every thread started in one turn at the
    next one.  Here each unit sleeps `hold_seconds` instead.
    """
    return float(_run_child(name, n, use_uvloop, hold_seconds(n))["growth_kib"]) / n


#: What ``--callgrind`` counts: units N1 and N2, instructions per unit = difference / (N2 - N1).
CALLGRIND_UNITS = (1000, 3000)


def instructions(name: str, n: int, use_uvloop: bool) -> int:
    """Machine instructions (callgrind) of one child process running ``n`` units of ``name``."""
    import re
    import tempfile

    python = GEVENT_PYTHON if name == "gevent" else sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out"]
        cmd += [python, __file__, "--child", name, "-n", str(n)]
        if use_uvloop and name != "gevent":
            cmd.append("--uvloop")
        err = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    found = re.search(r"refs:\s+([\d,]+)", err)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{err}")
    return int(found.group(1).replace(",", ""))


def count_instructions(use_uvloop: bool) -> None:
    """Print the instructions per unit of each variant (free of start-up and of noise)."""
    low, high = CALLGRIND_UNITS
    print(f"callgrind: machine instructions per unit ({low:,} and {high:,} units, difference)")
    names = ["green", "spawn", "run", "bare", "heap", "gevent"]
    per_unit: dict[str, float] = {}
    for name in names:
        try:
            first = instructions(name, low, use_uvloop)
            second = instructions(name, high, use_uvloop)
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"  {name:<8} not measured ({exc})")
            continue
        per_unit[name] = (second - first) / (high - low)
    for name, count in per_unit.items():
        ratio = f"{count / per_unit['gevent']:.2f}x gevent" if "gevent" in per_unit else ""
        print(f"  {name:<8} {count / 1000:8.1f}k  {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--child", choices=sorted(VARIANTS))
    parser.add_argument("-n", type=int, default=0)
    parser.add_argument("--sleep", type=float, help="(child) seconds per sleep instead of SLEEP")
    parser.add_argument(
        "--no-held", action="store_true", help="skip the memory runs with every unit suspended"
    )
    parser.add_argument("--gevent-python", help="python of a venv with gevent (GEVENT_PYTHON)")
    parser.add_argument("--green", type=int, default=N_GREEN, help="green units (default 10,000)")
    parser.add_argument(
        "--callgrind", action="store_true", help="count instructions per unit instead (valgrind)"
    )
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.uvloop, args.sleep)
        return
    global GEVENT_PYTHON
    if args.gevent_python:
        GEVENT_PYTHON = args.gevent_python
    if args.callgrind:
        count_instructions(args.uvloop)
        return
    n_green = args.green
    loop_name = "uvloop" if args.uvloop else "asyncio"
    print(f"Python {sys.version.split()[0]}, loop {loop_name}; each unit sleeps 2 x {SLEEP} s")
    print(f"best of {REPEATS} fresh processes per variant; RSS growth = peak minus baseline\n")
    base = measure("asyncio", n_green, args.uvloop)
    green = measure("green", n_green, args.uvloop)
    spawned = measure("spawn", n_green, args.uvloop)
    floor = measure("floor", n_green, args.uvloop)
    bare = measure("bare", n_green, args.uvloop)
    heap = measure("heap", n_green, args.uvloop)
    try:
        gevent_row: dict[str, float] | None = measure("gevent", n_green, False)
    except (subprocess.CalledProcessError, OSError):
        gevent_row = None  # no gevent for that Python: pass --gevent-python
    real = measure("real", N_REAL, args.uvloop)
    rows = [
        (f"{n_green:,} asyncio tasks (baseline)", base, None),
        (f"{n_green:,} green threads", green, (1.3, 2.0)),
        (f"{n_green:,} spawn() calls, no Thread", spawned, None),
        ("floor: tasks + bare greenlets", floor, None),
        ("floor: bare greenlets, no task", bare, None),
        ("floor: bare greenlets, heap timers", heap, None),
    ]
    if gevent_row is not None:
        rows.append((f"{n_green:,} gevent.spawn (gevent's loop)", gevent_row, None))
    rows.append((f"{N_REAL:,} real threads", real, None))
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
    per_green = (green["time"] - 2 * SLEEP) / n_green * 1e6
    per_spawn = (spawned["time"] - 2 * SLEEP) / n_green * 1e6
    per_task = (base["time"] - 2 * SLEEP) / n_green * 1e6
    per_floor = (floor["time"] - 2 * SLEEP) / n_green * 1e6
    per_bare = (bare["time"] - 2 * SLEEP) / n_green * 1e6
    print(
        f"\noverhead beyond the sleeps: green {per_green:.1f} us/thread "
        f"(spawn() alone {per_spawn:.1f} us, floors: task + greenlet {per_floor:.1f} us, "
        f"bare greenlet {per_bare:.1f} us), asyncio {per_task:.1f} us/task"
    )
    print(
        f"memory per unit (RSS growth): green {green['growth_kib'] / n_green:.2f} KiB, "
        f"bare greenlet floor {bare['growth_kib'] / n_green:.2f} KiB"
    )
    held: dict[str, float] = {}
    if not args.no_held:
        for name in ("asyncio", "green", "heap", "gevent"):
            if name == "gevent" and gevent_row is None:
                continue
            held[name] = held_kib(name, n_green, args.uvloop and name != "gevent")
        print(
            f"memory per unit with all {n_green:,} suspended at once (each sleep "
            f"{hold_seconds(n_green):g} s; see held_kib): "
            + ", ".join(f"{name} {kib:.2f} KiB" for name, kib in held.items())
        )
    if gevent_row is not None:
        time_vs = green["time"] / gevent_row["time"]
        mem_vs = green["growth_kib"] / gevent_row["growth_kib"]
        print(
            f"green threads vs gevent.spawn: {time_vs:.2f}x time, {mem_vs:.2f}x peak memory "
            f"(gevent {gevent_row['growth_kib'] / n_green:.2f} KiB/unit)"
        )
        if held:
            mem_vs = held["green"] / held["gevent"]
            print(f"  with every unit suspended at once: {mem_vs:.2f}x memory")
        ok = time_vs <= 0.9 and mem_vs <= 1.0
        print(
            "  target <= 0.9x time, <= 1x memory per suspended unit (issue 15): "
            + ("met" if ok else "MISSED")
        )


if __name__ == "__main__":
    main()
