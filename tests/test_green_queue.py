"""Green queue: Queue, LifoQueue, PriorityQueue, SimpleQueue between green and real threads."""

from __future__ import annotations

import queue as std_queue
import threading as real_threading
import time
from typing import Any

import pytest

from greenbridge.green import queue as gq
from greenbridge.green import threading as gt

from .helpers import Backend, run_green


def test_producer_consumer_1000_threads_queue(aio: Backend) -> None:
    def main() -> list[int]:
        q: gq.Queue[int | None] = gq.Queue(maxsize=20)
        got: list[int] = []

        def producer(i: int) -> None:
            for j in range(4):
                q.put(i * 4 + j)

        def consumer() -> None:
            while True:
                item = q.get()
                try:
                    if item is None:
                        return
                    got.append(item)
                finally:
                    q.task_done()

        consumers = [gt.Thread(target=consumer) for _ in range(500)]
        producers = [gt.Thread(target=producer, args=(i,)) for i in range(500)]
        for t in consumers + producers:
            t.start()
        for t in producers:
            t.join()
        q.join()  # every item handed out and marked done
        for _ in consumers:
            q.put(None)
        for t in consumers:
            t.join()
        return got

    got, max_gap = run_green(aio, main, heartbeat=True)
    assert sorted(got) == list(range(2000))
    # A loop turn resumes up to a thousand green threads: generous, for loaded machines.
    assert max_gap < 0.2


def test_timeouts_and_exceptions(aio: Backend) -> None:
    def main() -> list[float]:
        q: gq.Queue[int] = gq.Queue(maxsize=1)
        start = time.monotonic()
        with pytest.raises(gq.Empty):
            q.get(timeout=0.05)
        waited_get = time.monotonic() - start
        q.put(1)
        start = time.monotonic()
        with pytest.raises(gq.Full):
            q.put(2, timeout=0.05)
        waited_put = time.monotonic() - start
        with pytest.raises(gq.Full):
            q.put_nowait(2)
        assert q.get_nowait() == 1
        with pytest.raises(gq.Empty):
            q.get_nowait()
        sq: gq.SimpleQueue[int] = gq.SimpleQueue()
        start = time.monotonic()
        with pytest.raises(gq.Empty):
            sq.get(timeout=0.05)
        waited_simple = time.monotonic() - start
        return [waited_get, waited_put, waited_simple]

    waits, max_gap = run_green(aio, main, heartbeat=True)
    assert all(w >= 0.04 for w in waits)
    assert max_gap < 0.1
    assert gq.Empty is std_queue.Empty and gq.Full is std_queue.Full


def test_ordering_lifo_priority_simple(aio: Backend) -> None:
    def main() -> list[Any]:
        lifo: gq.LifoQueue[int] = gq.LifoQueue()
        prio: gq.PriorityQueue[int] = gq.PriorityQueue()
        for x in (3, 1, 2):
            lifo.put(x)
            prio.put(x)
        sq: gq.SimpleQueue[str] = gq.SimpleQueue()
        gt.Timer(0.02, sq.put, args=("late",)).start()
        return [
            [lifo.get() for _ in range(3)],
            [prio.get() for _ in range(3)],
            sq.get(timeout=5),
            sq.empty(),
        ]

    assert run_green(aio, main) == [[2, 1, 3], [1, 2, 3], "late", True]


def test_real_os_thread_feeds_a_green_consumer(aio: Backend) -> None:
    q: gq.Queue[int] = gq.Queue()
    sq: gq.SimpleQueue[int] = gq.SimpleQueue()

    def feeder() -> None:
        for i in range(100):
            time.sleep(0.0005)
            q.put(i)
            sq.put(i)

    def main() -> tuple[list[int], list[int]]:
        t = real_threading.Thread(target=feeder)
        t.start()
        a = [q.get(timeout=5) for _ in range(100)]
        b = [sq.get(timeout=5) for _ in range(100)]
        t.join()
        return a, b

    (a, b), max_gap = run_green(aio, main, heartbeat=True)
    assert a == list(range(100)) and b == list(range(100))
    assert max_gap < 0.1


def test_outside_any_loop() -> None:
    q: gq.Queue[int] = gq.Queue()
    t = real_threading.Thread(target=lambda: (time.sleep(0.01), q.put(5)))
    t.start()
    assert q.get(timeout=5) == 5
    t.join()


def _queue_edge_cases(m: Any) -> dict[str, list[Any]]:
    """Argument edge values of the queues of module ``m``."""
    nan, inf = float("nan"), float("inf")

    def outcome(fn: Any) -> list[Any]:
        try:
            return ["ok", fn()]
        except Exception as exc:  # noqa: BLE001 - the exception is the result
            return ["raised", type(exc).__name__, str(exc)]

    def full(maxsize: int = 1) -> Any:
        q = m.Queue(maxsize)
        q.put(0)
        return q

    cases = {
        "SimpleQueue get timeout=-1": lambda: m.SimpleQueue().get(timeout=-1),
        "SimpleQueue get block=False timeout=-1": lambda: m.SimpleQueue().get(False, -1),
        "SimpleQueue get timeout=0": lambda: m.SimpleQueue().get(timeout=0),
        "SimpleQueue get timeout=nan": lambda: m.SimpleQueue().get(timeout=nan),
        "SimpleQueue get timeout=inf": lambda: m.SimpleQueue().get(timeout=inf),
        "SimpleQueue get timeout=1e300": lambda: m.SimpleQueue().get(timeout=1e300),
        "SimpleQueue get timeout='1'": lambda: m.SimpleQueue().get(timeout="1"),
        "SimpleQueue get timeout=0.001": lambda: m.SimpleQueue().get(timeout=0.001),
        "SimpleQueue get_nowait": lambda: m.SimpleQueue().get_nowait(),
        "SimpleQueue put ignores block, timeout": lambda: (
            lambda q: (q.put(1, block=False, timeout=-5), q.get())
        )(m.SimpleQueue()),
        "SimpleQueue sizes": lambda: (
            lambda q: (q.put_nowait(2), q.qsize(), q.empty(), q.get_nowait(), q.empty())
        )(m.SimpleQueue()),
        "Queue get timeout=-1": lambda: m.Queue().get(timeout=-1),
        "Queue get timeout=inf": lambda: m.Queue().get(timeout=inf),
        "Queue get timeout=0.001": lambda: m.Queue().get(timeout=0.001),
        "full Queue put timeout=inf": lambda: full().put(2, timeout=inf),
        "full Queue put timeout=0": lambda: full().put(2, timeout=0),
        "full Queue put block=False": lambda: full().put(2, False),
        "Queue task_done too often": lambda: m.Queue().task_done(),
        "LifoQueue order": lambda: (lambda q: (q.put(1), q.put(2), q.get(), q.get()))(
            m.LifoQueue()
        ),
        "PriorityQueue order": lambda: (lambda q: (q.put(2), q.put(1), q.get(), q.get()))(
            m.PriorityQueue()
        ),
    }
    return {name: outcome(case) for name, case in cases.items()}


def test_queue_edge_arguments_behave_as_the_stdlib(aio: Backend) -> None:
    native = _queue_edge_cases(std_queue)
    assert run_green(aio, lambda: _queue_edge_cases(gq)) == native
