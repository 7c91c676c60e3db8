"""100,000 green threads at once, each sleeping twice, then a lock, on asyncio and uvloop.

A green thread has no asyncio task (see ``greenbridge._bare``): it is a
pooled worker greenlet resumed by loop callbacks, so a hundred thousand of
them fit in a few hundred MiB.  The test checks that every thread ran to its
end, that each had no task, that every worker went back to its pool or away
and that the loop's guard task is gone; it prints the time and the resident
memory (``/proc/self/statm``; no timed assertions).  The count is scaled by
``GREENBRIDGE_STRESS_SCALE`` (at least 10,000).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
from _scale import scaled

import greenbridge
from greenbridge.green import threading as gt
from greenbridge.green import time as green_time

N = int(scaled(100_000, 10_000))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _loop(backend: str) -> asyncio.AbstractEventLoop:
    if backend == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux /proc")
@pytest.mark.parametrize("backend", ["asyncio", "uvloop"])
def test_a_hundred_thousand_green_threads(backend: str) -> None:
    done: list[bool] = []
    lock = gt.Lock()
    counter = [0]

    def body() -> None:
        green_time.sleep(0.05)
        green_time.sleep(0.05)
        with lock:
            counter[0] += 1
        done.append(asyncio.current_task() is None)

    def main() -> tuple[float, float, float]:
        before = _rss_mib()
        t0 = time.perf_counter()
        threads = [gt.Thread(target=body) for _ in range(N)]
        for thread in threads:
            thread.start()
        green_time.sleep(0.03)  # every thread is started and sleeps now
        peak = _rss_mib()
        for thread in threads:
            thread.join()
        return time.perf_counter() - t0, before, peak

    async def amain() -> Any:
        return await greenbridge.async_(main)()

    loop = _loop(backend)
    try:
        elapsed, before, peak = loop.run_until_complete(amain())
        loop.run_until_complete(asyncio.sleep(0))  # the guard task ends
        assert not [t for t in asyncio.all_tasks(loop) if not t.done()]
    finally:
        loop.close()
    assert len(done) == N and all(done)  # every thread ran, none needed a task
    assert counter[0] == N
    print(
        f"\n{backend}: {N:,} green threads x 2 sleeps of 50 ms: {elapsed:.2f} s, "
        f"RSS {before:.0f} -> {peak:.0f} MiB while all sleep "
        f"({(peak - before) * 1024 / N:.2f} KiB per thread)"
    )
