"""Green threading and _thread: threads are tasks, primitives suspend only the waiting task."""

from __future__ import annotations

import asyncio
import collections
import threading as real_threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import greenbridge
from greenbridge.green import _thread as green_thread
from greenbridge.green import queue as gq
from greenbridge.green import threading as gt
from greenbridge.green import time as green_time

from .helpers import Backend, run_green


def test_producer_consumer_1000_threads_lock_condition(aio: Backend) -> None:
    def main() -> tuple[list[int], int]:
        cond = gt.Condition(gt.Lock())
        buffer: list[int] = []
        consumed: list[int] = []
        limit = 10

        def producer(base: int) -> None:
            for i in range(5):
                with cond:
                    while len(buffer) >= limit:
                        cond.wait()
                    buffer.append(base * 5 + i)
                    cond.notify_all()

        def consumer() -> None:
            for _ in range(5):
                with cond:
                    while not buffer:
                        cond.wait()
                    consumed.append(buffer.pop())
                    cond.notify_all()

        threads = [gt.Thread(target=producer, args=(i,)) for i in range(500)]
        threads += [gt.Thread(target=consumer) for _ in range(500)]
        for t in threads:
            t.start()
        peak = gt.active_count()
        for t in threads:
            t.join()
        return consumed, peak

    consumed, peak = run_green(aio, main)
    assert sorted(consumed) == list(range(2500))
    assert peak >= 1000  # all green threads were alive at once


def test_thread_attributes_and_identity(aio: Backend) -> None:
    def main() -> None:
        seen: dict[str, Any] = {}
        gate = gt.Event()

        def body(x: int, *, y: int) -> None:
            me = gt.current_thread()
            seen.update(me=me, ident=gt.get_ident(), args=(x, y), alive=me.is_alive())
            seen["child_daemon"] = gt.Thread().daemon
            try:
                me.join()
            except RuntimeError as exc:
                seen["self_join"] = exc
            gate.wait()

        t = gt.Thread(target=body, args=(1,), kwargs={"y": 2}, name="worker", daemon=False)
        assert t.ident is None and not t.is_alive()
        # A task not started by Thread is a non-daemon dummy thread: what it starts is not daemonic.
        assert not gt.current_thread().daemon and not gt.Thread().daemon
        assert gt.Thread(daemon=True).daemon
        t.start()
        assert t.is_alive() and t in gt.enumerate()
        t.join(0.05)  # times out: the thread waits on the gate
        assert t.is_alive()
        gate.set()
        t.join()
        assert not t.is_alive()
        assert seen["me"] is t and seen["ident"] == t.ident and seen["args"] == (1, 2)
        assert seen["alive"] and not seen["child_daemon"]  # inherited from a non-daemon thread
        assert t.name == "worker" and t.native_id == real_threading.get_native_id()
        assert t not in gt.enumerate()
        with pytest.raises(RuntimeError, match="only be started once"):
            t.start()
        with pytest.raises(RuntimeError, match="before it is started"):
            gt.Thread(target=print).join()
        assert "cannot join current thread" in str(seen["self_join"])

    run_green(aio, main)


def test_join_by_green_threads_an_os_thread_and_a_cancelled_task(aio: Backend) -> None:
    def main() -> None:
        gate = gt.Event()
        t = gt.Thread(target=gate.wait)
        t.start()
        t.join(0.01)
        t.join(0)
        t.join(-1)
        assert t.is_alive()
        assert not t._joiners  # a join that timed out leaves no waiter behind
        cancelled = greenbridge.spawn(t.join)
        gt.Event().wait(0.01)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            greenbridge.await_(cancelled)
        assert not t._joiners  # nor does a cancelled one

        ended: list[int] = []

        def joiner(i: int) -> None:
            t.join()
            ended.append(i)

        joiners = [gt.Thread(target=joiner, args=(i,)) for i in range(3)]
        for j in joiners:
            j.start()
        # A real OS thread joins the green thread too: it blocks on a real lock.
        os_join = asyncio.get_running_loop().run_in_executor(None, t.join)
        gt.Event().wait(0.02)
        assert ended == [] and not os_join.done() and t.is_alive()
        gate.set()
        for j in joiners:
            j.join()
        greenbridge.await_(os_join)
        assert sorted(ended) == [0, 1, 2]
        assert not t.is_alive() and t._joiners is None
        t.join()  # an ended thread joins at once

    run_green(aio, main)


def test_target_arguments_in_every_form(aio: Backend) -> None:
    def main() -> None:
        calls: list[tuple[Any, ...]] = []

        def record(*args: Any, **kwargs: Any) -> None:
            calls.append((args, kwargs))

        forms: list[tuple[Any, Any]] = [
            ((), None),
            ((1,), None),
            ((1, 2), None),
            ((1, 2, 3), None),
            ([4, 5], None),  # any iterable, as the stdlib
            ((6,), {"k": 7}),
        ]
        threads = [gt.Thread(target=record, args=a, kwargs=k) for a, k in forms]
        for t in threads:
            t.start()
            t.join()
        assert calls == [
            ((), {}),
            ((1,), {}),
            ((1, 2), {}),
            ((1, 2, 3), {}),
            ((4, 5), {}),
            ((6,), {"k": 7}),
        ]
        errors: list[type[BaseException]] = []
        old_hook = gt.excepthook
        gt.excepthook = lambda args: errors.append(args.exc_type)
        try:
            bad = gt.Thread(target=record, kwargs=[])  # type: ignore[arg-type]
            bad.start()
            bad.join()
        finally:
            gt.excepthook = old_hook
        assert errors == [TypeError]  # ** of a non-mapping fails, as in the stdlib

    run_green(aio, main)


def test_identity_survives_every_kind_of_wait(aio: Backend) -> None:
    """get_ident, current_thread, local and RLock ownership are the same after each resume."""

    def main() -> dict[int, list[bool]]:
        loc = gt.local()
        rlock = gt.RLock()
        results: dict[int, list[bool]] = {}

        def same(i: int, ident: int, me: gt.Thread) -> bool:
            return (
                gt.get_ident() == ident
                and gt.current_thread() is me
                and loc.value == i
                and rlock._is_owned()
            )

        def body(i: int) -> None:
            me = gt.current_thread()
            ident = gt.get_ident()
            loc.value = i
            checks = []
            with rlock:  # held across every wait below: its owner is this green thread
                green_time.sleep(0.005)  # a timed sleep
                checks.append(same(i, ident, me))
                green_time.sleep(0)  # one turn of the loop
                checks.append(same(i, ident, me))
                gt.Event().wait(0.005)  # a timed wait that times out
                checks.append(same(i, ident, me))
                with rlock:  # re-entrant: still recognised as the owner
                    checks.append(same(i, ident, me))
            results[i] = checks

        threads = [gt.Thread(target=body, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    assert run_green(aio, main) == {i: [True] * 4 for i in range(5)}


def test_threads_are_concurrent_and_the_loop_keeps_running(aio: Backend) -> None:
    def main() -> float:
        def slow() -> None:
            gt.Event().wait(0.2)

        threads = [gt.Thread(target=slow) for _ in range(50)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - start

    elapsed, max_gap = run_green(aio, main, heartbeat=True)
    assert elapsed < 0.6  # 50 waits of 0.2 s overlapped (< 3x one wait)
    assert max_gap < 0.1


def test_excepthook_receives_the_exception(aio: Backend) -> None:
    def main() -> list[Any]:
        got: list[Any] = []
        saved = gt.excepthook
        gt.excepthook = lambda args: got.append((args.exc_type, str(args.exc_value), args.thread))
        try:
            t = gt.Thread(target=lambda: 1 / 0)
            t.start()
            t.join()
            quiet = gt.Thread(target=lambda: (_ for _ in ()).throw(SystemExit))
            quiet.start()
            quiet.join()
        finally:
            gt.excepthook = saved
        return [got, t]

    got, t = run_green(aio, main)
    # The hook sees SystemExit too, as in the stdlib (only the default hook ignores it).
    assert got[0] == (ZeroDivisionError, "division by zero", t)
    assert [g[0] for g in got] == [ZeroDivisionError, SystemExit]


def test_local_is_private_to_each_green_thread(aio: Backend) -> None:
    class Ctx(gt.local):
        def __init__(self, tag: str) -> None:
            self.tag = tag
            self.inits = 1

    def main() -> None:
        plain = gt.local()
        ctx = Ctx("t")
        plain.value = "main"
        ctx.inits = 100
        results: dict[int, tuple[Any, ...]] = {}
        barrier = gt.Barrier(20)

        def body(i: int) -> None:
            before = hasattr(plain, "value")
            plain.value = i
            ctx.tag += str(i)
            barrier.wait()  # every thread has written before anyone reads
            results[i] = (before, plain.value, ctx.tag, ctx.inits)

        threads = [gt.Thread(target=body, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: (False, i, f"t{i}", 1) for i in range(20)}
        assert plain.value == "main" and ctx.tag == "t" and ctx.inits == 100

    run_green(aio, main)


def test_timer_fires_and_cancel_prevents_it(aio: Backend) -> None:
    def main() -> tuple[list[str], float]:
        fired: list[str] = []
        start = time.monotonic()
        t1 = gt.Timer(0.05, fired.append, args=("first",))
        t2 = gt.Timer(0.05, fired.append, args=("cancelled",))
        t1.start()
        t2.start()
        t2.cancel()
        t1.join()
        t2.join()
        return fired, time.monotonic() - start

    fired, elapsed = run_green(aio, main)
    assert fired == ["first"]
    assert elapsed >= 0.04


def test_event_wait_timeout_and_set(aio: Backend) -> None:
    def main() -> tuple[bool, float, bool]:
        ev = gt.Event()
        start = time.monotonic()
        timed_out = ev.wait(0.1)
        waited = time.monotonic() - start
        gt.Timer(0.02, ev.set).start()
        return timed_out, waited, ev.wait(5)

    (timed_out, waited, got), max_gap = run_green(aio, main, heartbeat=True)
    assert timed_out is False and waited >= 0.09
    assert got is True
    assert max_gap < 0.1


def test_rlock_semaphore_barrier(aio: Backend) -> None:
    def main() -> None:
        rl = gt.RLock()
        with rl, rl:
            assert rl._is_owned()
        errors: list[BaseException] = []

        def foreign_release() -> None:
            try:
                rl.release()
            except RuntimeError as exc:
                errors.append(exc)

        rl.acquire()
        t = gt.Thread(target=foreign_release)
        t.start()
        t.join()
        rl.release()
        assert len(errors) == 1

        sem = gt.BoundedSemaphore(3)
        running = [0, 0]

        def limited() -> None:
            with sem:
                running[0] += 1
                running[1] = max(running)
                gt.Event().wait(0.01)
                running[0] -= 1

        threads = [gt.Thread(target=limited) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert running[1] == 3
        with pytest.raises(ValueError):
            sem.release()

        actions: list[int] = []
        barrier = gt.Barrier(5, action=lambda: actions.append(1))
        indexes: list[int] = []
        threads = [gt.Thread(target=lambda: indexes.append(barrier.wait())) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(indexes) == [0, 1, 2, 3, 4] and actions == [1]
        lonely = gt.Barrier(2)
        with pytest.raises(gt.BrokenBarrierError):
            lonely.wait(0.02)
        assert lonely.broken

    run_green(aio, main)


def test_real_os_thread_contends_on_a_green_lock(aio: Backend) -> None:
    lock = gt.Lock()
    counter = [0]

    def os_worker() -> None:
        for _ in range(200):
            with lock:
                value = counter[0]
                time.sleep(0.0001)  # a real thread may really block while holding it
                counter[0] = value + 1

    def main() -> float:
        lock.acquire()
        os_thread = real_threading.Thread(target=os_worker)
        os_thread.start()
        gt.Event().wait(0.05)  # the OS thread is now blocked on our lock
        assert os_thread.is_alive() and counter[0] == 0
        lock.release()

        def green_worker() -> None:
            for _ in range(200):
                with lock:
                    value = counter[0]
                    gt.Event().wait(0)  # let others run while holding the lock
                    counter[0] = value + 1

        greens = [gt.Thread(target=green_worker) for _ in range(3)]
        for t in greens:
            t.start()
        for t in greens:
            t.join()
        greenbridge.await_(asyncio.get_running_loop().run_in_executor(None, os_thread.join))
        return counter[0]

    total, max_gap = run_green(aio, main, heartbeat=True)
    assert total == 800
    assert max_gap < 0.1  # green waiters never blocked the loop while the OS thread held it


def test_real_os_threads_contend_on_a_green_semaphore(aio: Backend) -> None:
    """Permits handed over between two OS threads and three green threads: never more than 2 out."""
    sem = gt.BoundedSemaphore(2)
    guard = real_threading.Lock()
    out = [0, 0, 0]  # permits out now, most at once, uses

    def use(pause: Callable[[], object]) -> None:
        with sem:
            with guard:
                out[0] += 1
                out[1] = max(out[1], out[0])
                out[2] += 1
            pause()
            with guard:
                out[0] -= 1

    def os_worker() -> None:
        for _ in range(100):
            use(lambda: time.sleep(0.0001))

    def main() -> list[int]:
        os_threads = [real_threading.Thread(target=os_worker) for _ in range(2)]
        for t in os_threads:
            t.start()

        def green_worker() -> None:
            for _ in range(100):
                use(lambda: gt.Event().wait(0.0001))

        greens = [gt.Thread(target=green_worker) for _ in range(3)]
        for t in greens:
            t.start()
        for t in greens:
            t.join()
        for t in os_threads:
            greenbridge.await_(asyncio.get_running_loop().run_in_executor(None, t.join))
        return [*out, sem._value]

    # (out now, most out at once, uses, free permits at the end)
    result, max_gap = run_green(aio, main, heartbeat=True)
    assert result == [0, 2, 500, 2]
    assert max_gap < 0.25  # green waiters never blocked the loop while OS threads held permits


def test_cancelled_waiter_leaves_the_lock_usable(aio: Backend) -> None:
    async def main() -> bool:
        lock = gt.Lock()
        lock.acquire()
        task = greenbridge.spawn(lock.acquire)
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        lock.release()
        assert not lock.locked()  # not handed to the cancelled waiter
        return await greenbridge.async_(lock.acquire)(timeout=1)

    assert aio.run(main) is True


def test_start_new_thread_and_allocate_lock(aio: Backend) -> None:
    def main() -> list[Any]:
        done = green_thread.allocate_lock()
        done.acquire()
        out: list[Any] = []

        def body(a: int, b: int = 0) -> None:
            out.append((a, b, green_thread.get_ident()))
            done.release()

        ident = green_thread.start_new_thread(body, (1,), {"b": 2})
        assert done.acquire(timeout=5)
        return [ident, out]

    ident, out = run_green(aio, main)
    assert out == [(1, 2, ident)]


def test_start_new_thread_passes_arguments_in_every_form(aio: Backend) -> None:
    def main() -> list[tuple[Any, ...]]:
        calls: list[tuple[Any, ...]] = []
        done = gt.Semaphore(0)

        def record(*args: Any, **kwargs: Any) -> None:
            calls.append((args, kwargs))
            done.release()

        forms: list[tuple[tuple[Any, ...], Any]] = [
            ((), None),
            ((1,), None),
            ((1, 2), None),
            ((1, 2, 3), None),
            ((4,), {}),
            ((5,), {"k": 6}),
        ]
        for args, kwargs in forms:
            green_thread.start_new_thread(record, args, kwargs)
            assert done.acquire(timeout=5)
        return calls

    assert run_green(aio, main) == [
        ((), {}),
        ((1,), {}),
        ((1, 2), {}),
        ((1, 2, 3), {}),
        ((4,), {}),
        ((5,), {"k": 6}),
    ]


def test_outside_any_loop_behaves_like_the_stdlib() -> None:
    results: list[Any] = []
    lock = gt.Lock()
    lock.acquire()

    def body() -> None:
        results.append(gt.current_thread().name)
        results.append(lock.acquire(timeout=5))

    t = gt.Thread(target=body, name="real")
    t.start()  # no loop: a real OS thread
    assert t.native_id != real_threading.get_native_id()
    time.sleep(0.02)
    lock.release()
    t.join()
    assert results == ["real", True]
    assert gt.Event().wait(0.01) is False
    assert gt.main_thread().name == "MainThread"


# ---------------------------------------------------------------------------
# The same calls on real threading (in an OS thread) and green threading (in a
# green thread): same results, same exceptions and messages.


def _outcome(fn: Callable[[], Any]) -> list[Any]:
    try:
        return ["ok", fn()]
    except Exception as exc:  # noqa: BLE001 - the exception is the result
        return ["raised", type(exc).__name__, str(exc)]


def _held(m: Any, kind: str = "Lock") -> Any:
    lock = getattr(m, kind)()
    lock.acquire()
    return lock


def _owned_condition(m: Any, lock: Any = None) -> Any:
    cond = m.Condition(lock)
    cond.acquire()
    return cond


def _edge_cases(m: Any) -> dict[str, list[Any]]:
    """Argument edge values of every primitive, against module ``m``."""
    nan, inf = float("nan"), float("inf")
    cases: dict[str, Callable[[], Any]] = {
        "Lock timeout=-1": lambda: m.Lock().acquire(timeout=-1),
        "Lock timeout=-2": lambda: m.Lock().acquire(timeout=-2),
        "Lock timeout=-0.5": lambda: m.Lock().acquire(timeout=-0.5),
        "Lock timeout=0": lambda: m.Lock().acquire(timeout=0),
        "Lock blocking=False timeout=0": lambda: m.Lock().acquire(False, 0),
        "Lock blocking=False timeout=-1": lambda: m.Lock().acquire(False, -1),
        "Lock blocking=False timeout=1": lambda: m.Lock().acquire(False, 1),
        "Lock timeout=inf": lambda: m.Lock().acquire(timeout=inf),
        "Lock timeout=nan": lambda: m.Lock().acquire(timeout=nan),
        "Lock timeout=None": lambda: m.Lock().acquire(timeout=None),
        "Lock timeout='1'": lambda: m.Lock().acquire(timeout="1"),
        "Lock timeout>TIMEOUT_MAX": lambda: m.Lock().acquire(timeout=m.TIMEOUT_MAX * 2),
        "held Lock timeout=0": lambda: _held(m).acquire(timeout=0),
        "held Lock timeout=0.01": lambda: _held(m).acquire(timeout=0.01),
        "held Lock blocking=False": lambda: _held(m).acquire(False),
        "held Lock timeout=-2": lambda: _held(m).acquire(timeout=-2),
        "held Lock timeout=nan": lambda: _held(m).acquire(timeout=nan),
        "Lock release unlocked": lambda: m.Lock().release(),
        "RLock blocking=False timeout=1": lambda: m.RLock().acquire(False, 1),
        "owned RLock blocking=False timeout=1": lambda: _held(m, "RLock").acquire(False, 1),
        "owned RLock timeout=-2": lambda: _held(m, "RLock").acquire(timeout=-2),
        "owned RLock timeout=inf": lambda: _held(m, "RLock").acquire(timeout=inf),
        "owned RLock timeout=0": lambda: _held(m, "RLock").acquire(timeout=0),
        "RLock release unowned": lambda: m.RLock().release(),
        "RLock _release_save unowned": lambda: m.RLock()._release_save(),
        "Condition wait unowned": lambda: m.Condition().wait(0),
        "Condition notify unowned": lambda: m.Condition().notify(),
        "Condition wait -1": lambda: _owned_condition(m).wait(-1),
        "Condition wait 0": lambda: _owned_condition(m).wait(0),
        "Condition wait nan": lambda: _owned_condition(m).wait(nan),
        "Condition wait '1'": lambda: _owned_condition(m).wait("1"),
        "Condition wait inf": lambda: _owned_condition(m).wait(inf),
        "Condition wait_for true": lambda: _owned_condition(m).wait_for(lambda: 5, 0),
        "Condition wait_for false": lambda: _owned_condition(m).wait_for(lambda: 0, 0.01),
        "Condition wait_for -1": lambda: _owned_condition(m).wait_for(lambda: [], -1),
        "Condition notify 0, -3": lambda: (lambda c: (c.notify(0), c.notify(-3)))(
            _owned_condition(m)
        ),
        "Condition(Lock) wait 0": lambda: _owned_condition(m, m.Lock()).wait(0),
        "Condition(RLock) twice wait 0": lambda: (
            lambda c: (c.acquire(), c.wait(0), c._is_owned())
        )(_owned_condition(m, m.RLock())),
        "Event wait -1": lambda: m.Event().wait(-1),
        "Event wait 0": lambda: m.Event().wait(0),
        "Event wait nan": lambda: m.Event().wait(nan),
        "Event wait inf": lambda: m.Event().wait(inf),
        "set Event wait -1": lambda: (lambda e: (e.set(), e.wait(-1)))(m.Event()),
        "Event wait '1'": lambda: m.Event().wait("1"),
        "Event wait 0.001": lambda: m.Event().wait(0.001),
        "Semaphore(-1)": lambda: m.Semaphore(-1),
        "Semaphore blocking=False timeout=1": lambda: m.Semaphore(0).acquire(False, 1),
        "Semaphore blocking=False timeout=None": lambda: m.Semaphore(0).acquire(False, None),
        "Semaphore timeout=0": lambda: m.Semaphore(0).acquire(timeout=0),
        "Semaphore timeout=-1": lambda: m.Semaphore(0).acquire(timeout=-1),
        "free Semaphore timeout=-1": lambda: m.Semaphore(1).acquire(timeout=-1),
        "Semaphore release(0)": lambda: m.Semaphore(0).release(0),
        "Semaphore release(3)": lambda: (lambda s: (s.release(3), s._value))(m.Semaphore(0)),
        "BoundedSemaphore over": lambda: m.BoundedSemaphore(1).release(),
        "BoundedSemaphore over by n": lambda: (lambda s: (s.acquire(), s.release(2)))(
            m.BoundedSemaphore(2)
        ),
        "Barrier(0) parties": lambda: m.Barrier(0).parties,
        "Barrier(1) wait": lambda: m.Barrier(1).wait(),
        "Barrier action raises": lambda: (lambda b: (_outcome(b.wait), b.broken, _outcome(b.wait)))(
            m.Barrier(1, action=lambda: 1 / 0)
        ),
        "Barrier wait timeout": lambda: m.Barrier(2).wait(0.01),
        "Barrier default timeout -1": lambda: m.Barrier(2, timeout=-1).wait(),
        "Barrier abort": lambda: (lambda b: (b.abort(), b.broken, _outcome(b.wait)))(m.Barrier(2)),
        "Barrier reset": lambda: (
            lambda b: (b.abort(), b.reset(), b.broken, b.n_waiting, b.parties)
        )(m.Barrier(2)),
        "Thread join unstarted": lambda: m.Thread().join(),
        "Thread join -1": lambda: (lambda t: (t.start(), t.join(-1), t.join(), t.is_alive()))(
            m.Thread(target=lambda: None)
        ),
        "Thread join '1'": lambda: (lambda t: (t.start(), t.join("1")))(
            m.Thread(target=m.Event().wait, args=(0.01,))
        ),
        "Thread join nan": lambda: (lambda t: (t.start(), _outcome(lambda: t.join(nan)), t.join()))(
            m.Thread(target=m.Event().wait, args=(0.01,))
        ),
        "Thread start twice": lambda: (lambda t: (t.start(), t.start()))(
            m.Thread(target=lambda: None)
        ),
        "Thread daemon after start": lambda: (lambda t: (t.start(), setattr(t, "daemon", True)))(
            m.Thread(target=lambda: None)
        ),
        "Thread name=5": lambda: m.Thread(name=5).name,
        "Thread ident before start": lambda: (m.Thread().ident, m.Thread().native_id),
        "Timer cancelled": lambda: (
            lambda t: (t.start(), t.cancel(), t.join(), t.finished.is_set())
        )(m.Timer(10, print)),
        "local(1) without __init__": lambda: m.local(1),
        "local missing attribute": lambda: m.local().x,
        "ThreadError": lambda: m.ThreadError is RuntimeError,
    }
    return {name: _outcome(case) for name, case in cases.items()}


def test_edge_arguments_behave_as_real_threading(aio: Backend) -> None:
    native = _edge_cases(real_threading)
    green = run_green(aio, lambda: _edge_cases(gt))
    # The same results and exceptions, messages included (but the local class's name).
    for result in green.values():
        if result[0] == "raised":
            result[2:] = (result[2].replace("'local'", "'_thread._local'"),)
    assert green == native


def _with_threads(m: Any) -> dict[str, Any]:
    """Primitives shared by several threads of module ``m``: what each call returns."""
    out: dict[str, Any] = {}

    def start(fn: Callable[..., Any], *args: Any) -> Any:
        t = m.Thread(target=fn, args=args)
        t.start()
        return t

    # Thread.join with a timeout on a running thread, then for good.
    gate = m.Event()
    t = start(gate.wait)
    out["join(0.01) while running"] = (t.join(0.01), t.is_alive())
    gate.set()
    out["join() after"] = (t.join(), t.is_alive())

    # Event.wait: set by another thread while waiting; timing out.
    event, ready = m.Event(), m.Event()
    results: list[Any] = []
    t = start(lambda: (ready.set(), results.append(event.wait(30))))
    ready.wait()
    event.set()
    t.join()
    out["Event.wait set meanwhile"] = results
    out["Event.wait times out"] = m.Event().wait(0.01)

    # Lock.acquire(timeout) against a holder that releases it, and one that keeps it.
    lock, taken, release = m.Lock(), m.Event(), m.Event()

    def hold() -> None:
        lock.acquire()
        taken.set()
        release.wait()
        lock.release()

    t = start(hold)
    taken.wait()
    out["Lock held elsewhere, timeout=0.01"] = lock.acquire(timeout=0.01)
    out["Lock held elsewhere, blocking=False"] = lock.acquire(False)
    release.set()
    out["Lock released meanwhile, timeout=30"] = lock.acquire(timeout=30)
    t.join()
    lock.release()  # a plain Lock may be released by any thread
    out["Lock released by another thread"] = lock.locked()

    # RLock: owned by another thread.
    rlock, taken, release = m.RLock(), m.Event(), m.Event()

    def own() -> None:
        with rlock:
            taken.set()
            release.wait()

    t = start(own)
    taken.wait()
    out["RLock release by non-owner"] = _outcome(rlock.release)
    out["RLock owned elsewhere, timeout=0.01"] = rlock.acquire(timeout=0.01)
    out["RLock owned elsewhere, blocking=False"] = rlock.acquire(False)
    release.set()
    t.join()
    out["RLock free again"] = (rlock.acquire(False), rlock.acquire(False), rlock._is_owned())
    rlock.release()
    rlock.release()

    # Condition.notify(n): exactly n of three waiters wake; notify_all the rest.
    cond = m.Condition()
    woken: list[Any] = []
    parked = m.Semaphore(0)

    def waiter(i: int) -> None:
        with cond:
            parked.release()
            woken.append((i, cond.wait(30)))

    threads = [start(waiter, i) for i in range(3)]
    for _ in threads:
        parked.acquire()
    with cond:
        cond.notify(2)
    while len(woken) < 2:
        m.Event().wait(0.001)
    m.Event().wait(0.02)
    out["notify(2) of 3"] = len(woken)
    with cond:
        out["still waiting"] = len(cond._waiters)
        cond.notify_all()
    for t in threads:
        t.join()
    out["notify_all"] = sorted(woken)

    # Condition.wait(timeout): False on time-out; True when notified.
    with cond:
        out["Condition.wait(0.01)"] = cond.wait(0.01)

    # Semaphore.acquire(timeout) released by another thread.
    sem = m.Semaphore(0)
    t = start(lambda: (m.Event().wait(0.01), sem.release()))
    out["Semaphore released meanwhile"] = sem.acquire(timeout=30)
    t.join()

    # Barrier: the indices; a lone waiter times out and breaks it for the next.
    barrier = m.Barrier(3)
    indices: list[int] = []
    threads = [start(lambda: indices.append(barrier.wait())) for _ in range(3)]
    for t in threads:
        t.join()
    out["Barrier indices"] = sorted(indices)
    lone = m.Barrier(2)
    out["Barrier times out"] = _outcome(lambda: lone.wait(0.01))
    out["then broken"] = (lone.broken, _outcome(lone.wait))

    # An exception in a thread goes to excepthook; join() returns normally.
    seen: list[Any] = []
    old_hook = m.excepthook
    m.excepthook = lambda args: seen.append((args.exc_type, args.thread.name))
    try:
        t = m.Thread(target=lambda: 1 / 0, name="failing")
        t.start()
        out["join a failed thread"] = t.join()
    finally:
        m.excepthook = old_hook
    out["excepthook"] = seen

    # local: each thread sees its own attributes; a subclass re-runs __init__.
    class Local(m.local):  # type: ignore[misc, name-defined]
        def __init__(self, value: int) -> None:
            self.value = value
            self.inits = getattr(self, "inits", 0) + 1

    loc = Local(7)
    loc.value = 8
    other: list[Any] = []
    t = start(lambda: other.append((loc.value, loc.inits, hasattr(loc, "extra"))))
    loc.extra = 1
    t.join()
    out["local in another thread"] = other
    out["local here"] = (loc.value, loc.inits)
    return out


def test_primitives_shared_by_threads_behave_as_real_threads(aio: Backend) -> None:
    native = _with_threads(real_threading)
    assert run_green(aio, lambda: _with_threads(gt)) == native


def _local_init_fails_once(m: Any) -> tuple[list[Any], int]:
    calls: list[int] = []

    class Local(m.local):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            calls.append(1)
            if len(calls) == 2:
                raise KeyError("the second thread's first __init__ fails")
            self.x = len(calls)

    loc = Local()
    seen: list[Any] = []

    def body() -> None:
        for _ in range(2):
            try:
                seen.append(loc.x)
            except KeyError as exc:
                seen.append(repr(exc))

    t = m.Thread(target=body)
    t.start()
    t.join()
    return seen, len(calls)


def test_local_init_that_fails_runs_again_at_the_next_access(aio: Backend) -> None:
    native = _local_init_fails_once(real_threading)
    assert native[1] == 3
    assert run_green(aio, lambda: _local_init_fails_once(gt)) == native


def test_a_wait_that_would_block_the_loop_raises_missing_bridge(aio: Backend) -> None:
    """From a coroutine, a green wait cannot suspend: it raises instead of stopping the loop.

    (Blocking would stop every green thread of the loop, including the one that
    would end the wait: a deadlock.)  Calls that do not wait still work, and the
    primitives stay consistent.
    """

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        lock = gt.Lock()
        lock.acquire()
        releaser = real_threading.Timer(0.2, lock.release)  # a real thread: no deadlock
        releaser.start()
        gate = gt.Event()
        sleeper = greenbridge.spawn(gate.wait)
        await asyncio.sleep(0)
        thread = gt.Thread(target=gate.wait)
        thread.start()
        cond = gt.Condition()
        waits: dict[str, Callable[[], Any]] = {
            "Lock.acquire()": lock.acquire,
            "Lock.acquire(timeout=0.05)": lambda: lock.acquire(timeout=0.05),
            "Event.wait(0.05)": lambda: gt.Event().wait(0.05),
            "Condition.wait(0.05)": lambda: cond.__enter__() and cond.wait(0.05),
            "Semaphore.acquire(timeout=0.05)": lambda: gt.Semaphore(0).acquire(timeout=0.05),
            "Queue.get(timeout=0.05)": lambda: gq.Queue().get(timeout=0.05),
            "SimpleQueue.get(timeout=0.05)": lambda: gq.SimpleQueue().get(timeout=0.05),
            "Thread.join(0.05)": lambda: thread.join(0.05),
        }
        raised: dict[str, Any] = {}
        for name, wait in waits.items():
            try:
                raised[name] = wait()
            except greenbridge.MissingBridge as exc:
                raised[name] = "MissingBridge" if "async_(" in str(exc) else str(exc)
        assert cond._is_owned()  # re-taken after the failed wait
        cond.release()
        polls = {
            "Lock.acquire(False)": lock.acquire(False),
            "Event.wait(0)": gt.Event().wait(0),
            "Condition.wait(0)": (cond.acquire(), cond.wait(0), cond.release())[1],
            "Semaphore.acquire(False)": gt.Semaphore(0).acquire(False),
            "Thread.join(0)": thread.join(0),
        }
        releaser.join()
        polls["Lock once released"] = lock.acquire(False)
        gate.set()
        await sleeper
        await greenbridge.async_(thread.join)()
        polls["no waiter left"] = (lock._waiters, cond._waiters, gate._cond._waiters)
        return raised, polls

    raised, polls = aio.run(main)
    assert raised == dict.fromkeys(raised, "MissingBridge")
    assert polls == {
        "Lock.acquire(False)": False,
        "Event.wait(0)": False,
        "Condition.wait(0)": False,
        "Semaphore.acquire(False)": False,
        "Thread.join(0)": None,
        "Lock once released": True,
        "no waiter left": (collections.deque(), collections.deque(), collections.deque()),
    }


def _excepthook_output(m: Any) -> list[Any]:
    """What the default and a failing ``excepthook`` print: header and last line."""
    import io
    import sys

    def fail() -> None:
        raise ValueError("bug")

    def summary(text: str) -> tuple[str, str]:
        lines = text.strip().splitlines()
        return lines[0], lines[-1]

    out: list[Any] = []
    saved = sys.stderr, m.excepthook, sys.excepthook
    # The default hook (pytest wraps the real module's; 3.9 has no __excepthook__).
    m.excepthook = getattr(m, "__excepthook__", None) or green_thread._excepthook
    try:
        sys.stderr = io.StringIO()
        t = m.Thread(target=fail, name="failing")
        t.start()
        t.join()
        out.append(summary(sys.stderr.getvalue()))

        sys.stderr = io.StringIO()
        t = m.Thread(target=lambda: sys.exit(3), name="exiting")
        t.start()
        t.join()
        out.append(sys.stderr.getvalue())  # SystemExit is silent

        sys.stderr = io.StringIO()
        try:
            fail()
        except ValueError:
            m.excepthook(m.ExceptHookArgs([*sys.exc_info(), None]))
        out.append(summary(sys.stderr.getvalue().replace(str(m.get_ident()), "<ident>")))

        def broken_hook(args: Any) -> None:
            raise KeyError("hook")

        seen: list[Any] = []
        sys.stderr = io.StringIO()
        m.excepthook = broken_hook
        sys.excepthook = lambda *exc_info: seen.append(exc_info[0])
        t = m.Thread(target=fail, name="failing")
        t.start()
        t.join()
        out.append((sys.stderr.getvalue(), seen))
    finally:
        sys.stderr, m.excepthook, sys.excepthook = saved
    return out


def test_excepthook_output_as_real_threads(aio: Backend) -> None:
    native = _excepthook_output(real_threading)
    assert native[0] == ("Exception in thread failing:", "ValueError: bug")
    assert run_green(aio, lambda: _excepthook_output(gt)) == native
