"""The hub: waiting on file descriptors and sleeping, on asyncio, uvloop and trio."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import select
import socket
import time
import weakref
from typing import Any

import pytest

import greenbridge
import greenbridge.green.socket
from greenbridge import _hub

from .helpers import Backend, registered_fds, registrations


def test_wait_readable_suspends_only_the_caller(backend: Backend) -> None:
    a, b = socket.socketpair()
    order: list[str] = []

    def waiter() -> bool:
        ready = _hub.wait_readable(a.fileno())
        order.append("woken")
        return ready

    async def main() -> bool:
        async def writer() -> None:
            await backend.sleep(0.05)
            order.append("write")
            b.send(b"x")

        results = []

        async def run_waiter() -> None:
            results.append(await greenbridge.async_(waiter)())

        if backend.is_asyncio:
            await asyncio.gather(run_waiter(), writer())
        else:
            import trio

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_waiter)
                nursery.start_soon(writer)
        return results[0]

    with a, b:
        assert backend.run(main) is True
    assert order == ["write", "woken"]


def test_timeout_returns_false_and_unregisters(backend: Backend) -> None:
    a, b = socket.socketpair()

    async def main() -> tuple[bool, bool, float]:
        t0 = time.monotonic()
        r = await greenbridge.async_(_hub.wait_readable)(a.fileno(), 0.05)
        elapsed = time.monotonic() - t0
        w = await greenbridge.async_(_hub.wait_writable)(a.fileno(), 0.05)
        if backend.is_asyncio:
            assert a.fileno() not in registered_fds(asyncio.get_running_loop())
        return r, w, elapsed

    with a, b:
        r, w, elapsed = backend.run(main)
    assert r is False
    assert w is True
    assert elapsed >= 0.04


def test_cancellation_unregisters(aio: Backend) -> None:
    a, b = socket.socketpair()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = greenbridge.spawn(_hub.wait_readable, a.fileno())
        await asyncio.sleep(0.01)
        if aio.name == "asyncio":
            assert a.fileno() in registered_fds(loop)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert a.fileno() not in registered_fds(loop)
        assert not _hub._asyncio.registry(loop).readers

    with a, b:
        aio.run(main)


def test_two_waiters_on_one_fd_both_wake(aio: Backend) -> None:
    a, b = socket.socketpair()

    async def main() -> list[bool]:
        tasks = [greenbridge.spawn(_hub.wait_readable, a.fileno(), 5) for _ in range(2)]
        await asyncio.sleep(0.01)
        b.send(b"x")
        results = await asyncio.gather(*tasks)
        assert not _hub._asyncio.registry(asyncio.get_running_loop()).readers
        return results

    with a, b:
        assert aio.run(main) == [True, True]


def test_notify_closing_wakes_waiters_with_ebadf(aio: Backend) -> None:
    a, b = socket.socketpair()

    async def main() -> None:
        task = greenbridge.spawn(_hub.wait_readable, a.fileno())
        await asyncio.sleep(0.01)
        _hub.notify_closing(a.fileno())
        with pytest.raises(OSError) as info:
            await task
        assert info.value.errno == errno.EBADF
        assert a.fileno() not in registered_fds(asyncio.get_running_loop())

    with a, b:
        aio.run(main)


def test_without_a_loop_the_hub_really_blocks() -> None:
    a, b = socket.socketpair()
    with a, b:
        t0 = time.monotonic()
        assert _hub.wait_readable(a, 0.05) is False
        assert time.monotonic() - t0 >= 0.04
        assert _hub.wait_writable(a, 1) is True
        b.send(b"x")
        assert _hub.wait_readable(a.fileno(), None) is True
        t0 = time.monotonic()
        _hub.sleep(0.05)
        assert time.monotonic() - t0 >= 0.04


def test_running_loop_without_bridge_raises_missing_bridge(backend: Backend) -> None:
    a, b = socket.socketpair()

    async def main() -> None:
        with pytest.raises(greenbridge.MissingBridge, match="async_"):
            _hub.wait_readable(a.fileno())
        with pytest.raises(greenbridge.MissingBridge):
            _hub.sleep(0.01)

    with a, b:
        backend.run(main)


def test_sleep_runs_concurrently_and_zero_yields(backend: Backend) -> None:
    ticks: list[int] = []

    def sleeper() -> int:
        _hub.sleep(0.2)
        return 1

    done = []

    def yielder() -> int:
        before = len(ticks)
        _hub.sleep(0)
        _hub.sleep(0)
        done.append(True)
        return len(ticks) - before

    async def main() -> tuple[float, int]:
        async def ticker() -> None:
            while not done:
                ticks.append(1)
                await backend.sleep(0)

        t0 = time.monotonic()
        results: list[int] = []

        async def one(fn: object) -> None:
            results.append(await greenbridge.async_(fn)())  # type: ignore[arg-type]

        if backend.is_asyncio:
            await asyncio.gather(*(one(sleeper) for _ in range(50)))
            await asyncio.gather(ticker(), one(yielder))
        else:
            import trio

            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(one, sleeper)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker)
                nursery.start_soon(one, yielder)
        return time.monotonic() - t0, results[-1]

    elapsed, advanced = backend.run(main)
    assert elapsed < 1.5  # 50 sleeps of 0.2 s: serially 10 s, concurrently about 0.2 s
    assert advanced >= 1  # sleep(0) let the ticker run


def test_sleep_rejects_bad_values(aio: Backend) -> None:
    async def main() -> None:
        for bad, exc in ((-1, ValueError), (float("nan"), ValueError), ("1", TypeError)):
            with pytest.raises(exc):
                await greenbridge.async_(_hub.sleep)(bad)

    aio.run(main)


def test_loop_that_cannot_watch_fds_gets_a_clear_error() -> None:
    class NoReaders(asyncio.SelectorEventLoop):
        def add_reader(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            raise NotImplementedError

    a, b = socket.socketpair()
    loop = NoReaders()
    try:
        with a, b, pytest.raises(greenbridge.UnsupportedLoop, match="SelectorEventLoop"):
            loop.run_until_complete(greenbridge.async_(_hub.wait_readable)(a.fileno()))
    finally:
        loop.close()


def test_a_shielded_wait_outlives_a_cancelled_trio_scope() -> None:
    """``shield=True`` (the drivers' wait after a cancellation) outlives trio's cancellation."""
    trio = pytest.importorskip("trio")
    from greenbridge.drivers import _waiting

    a, b = socket.socketpair()
    results: dict[str, object] = {}

    def body() -> None:
        t0 = time.monotonic()
        results["timed out"] = _hub.wait_any([a.fileno()], [], 0.05, shield=True)
        results["waited"] = time.monotonic() - t0
        with _waiting.shielded():  # the drivers' way to ask for it
            results["driver timed out"] = _waiting.wait(a.fileno(), True, False, 0.01)
        b.send(b"x")
        results["ready"] = _hub.wait_any([a.fileno()], [a.fileno()], 5, shield=True)
        _hub.wait_any([a.fileno()], [], 5)  # not shielded: the cancellation arrives
        results["unshielded"] = "returned"

    async def main() -> bool:
        with trio.CancelScope() as scope:
            scope.cancel()
            await greenbridge.async_(body)()
        return scope.cancelled_caught

    with a, b:
        assert trio.run(main) is True
    assert results["timed out"] is False
    assert results["driver timed out"] is False
    assert results["waited"] >= 0.04  # type: ignore[operator]
    assert results["ready"] is True
    assert "unshielded" not in results


def test_an_exchange_reuses_its_registration_and_leaves_none(aio: Backend) -> None:
    # Two green threads exchanging over a socketpair wait on each socket again
    # and again: the registration kept by the watch that fired serves the
    # next wait (see _hub._asyncio.Watch), and nothing stays registered after.
    from greenbridge.green import socket as gsocket

    rounds = 50

    def server(s: socket.socket) -> None:
        while data := s.recv(64):
            s.sendall(data)

    def client(s: socket.socket) -> list[bytes]:
        got = []
        for i in range(rounds):
            s.sendall(b"%d" % i)
            got.append(s.recv(64))
        return got

    async def main() -> tuple[list[bytes], int]:
        loop = asyncio.get_running_loop()
        calls = [0]
        add_reader = loop.add_reader

        def counting_add_reader(*args: object) -> None:
            calls[0] += 1
            add_reader(*args)  # type: ignore[arg-type]

        loop.add_reader = counting_add_reader  # type: ignore[method-assign]
        a, b = gsocket.socketpair()
        with a, b:
            srv = greenbridge.spawn(server, b)
            got = await greenbridge.spawn(client, a)
            a.shutdown(socket.SHUT_WR)
            await srv
            assert a.fileno() not in registered_fds(loop)
            assert b.fileno() not in registered_fds(loop)
        del loop.add_reader
        return got, calls[0]

    got, add_readers = aio.run(main)
    assert got == [b"%d" % i for i in range(rounds)]  # as with OS threads
    # 2 * rounds waits in all; a registration per wait would be 100 calls.
    assert add_readers < rounds // 2, add_readers


def test_a_socket_wait_with_a_timeout_times_out_and_unregisters(aio: Backend) -> None:
    from greenbridge.green import socket as gsocket

    def recv(s: socket.socket) -> str:
        s.settimeout(0.05)
        try:
            s.recv(1)
        except socket.timeout as exc:  # TimeoutError from 3.10 on, its own class on 3.9
            return str(exc)
        return "no timeout"

    async def main() -> str:
        a, b = gsocket.socketpair()
        with a, b:
            result = await greenbridge.spawn(recv, a)
            assert a.fileno() not in registered_fds(asyncio.get_running_loop())
            return result  # type: ignore[no-any-return]

    assert aio.run(main) == "timed out"


def test_sleeps_wake_in_deadline_order_as_native_sleeps(aio: Backend) -> None:
    # The hub keeps the sleeps of workers in a heap of its own, with one loop
    # timer (greenbridge._hub._asyncio.Timers): they wake in the order native
    # asyncio.sleep() calls of the same lengths wake.
    lengths = [0.05, 0.01, 0.04, 0.02, 0.03, 0.06, 0.015, 0.035]

    def green(i: int, order: list[int]) -> None:
        _hub.sleep(lengths[i])
        order.append(i)

    async def native(i: int, order: list[int]) -> None:
        await asyncio.sleep(lengths[i])
        order.append(i)

    async def main() -> tuple[list[int], list[int]]:
        green_order: list[int] = []
        native_order: list[int] = []
        await asyncio.gather(*(greenbridge.async_(green)(i, green_order) for i in range(8)))
        await asyncio.gather(*(native(i, native_order) for i in range(8)))
        return green_order, native_order

    green_order, native_order = aio.run(main)
    assert green_order == native_order == sorted(range(8), key=lengths.__getitem__)


def test_cancelled_sleeps_leave_no_timer_and_later_sleeps_still_wake(aio: Backend) -> None:
    async def main() -> tuple[list[bool], tuple[int, bool], bool]:
        loop = asyncio.get_running_loop()
        tasks = [greenbridge.spawn(_hub.sleep, 100.0) for _ in range(300)]
        await asyncio.sleep(0.01)  # every one asleep
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        timers = _hub._asyncio.registry(loop).timers
        # A short sleep after them wakes on time (the loop's timer is re-armed).
        t0 = time.monotonic()
        await greenbridge.async_(_hub.sleep)(0.02)
        woke = time.monotonic() - t0 < 5.0
        left = len(timers.heap), timers.handle is None
        return [isinstance(r, asyncio.CancelledError) for r in results], left, woke

    cancelled, left, woke = aio.run(main)
    assert all(cancelled) and len(cancelled) == 300
    assert left == (0, True)  # no entry, no loop timer left for the cancelled sleeps
    assert woke


def _timers_pending(loop: asyncio.AbstractEventLoop) -> int | None:
    """How many timers asyncio's loop holds that are not cancelled (None: uvloop)."""
    scheduled = getattr(loop, "_scheduled", None)
    if scheduled is None:
        return None
    return sum(not handle.cancelled() for handle in scheduled)


@pytest.mark.parametrize("cancelled", ["later", "earlier"])
def test_a_cancelled_sleep_beside_a_live_one_leaves_what_native_leaves(
    aio: Backend, cancelled: str
) -> None:
    # One sleep is cancelled while another still sleeps; once the other has
    # woken, no timer is left on the loop (natively, the cancelled sleep's
    # timer is cancelled with it), and the live sleep woke on time.
    lengths = {"later": (0.05, 100.0), "earlier": (100.0, 0.05)}[cancelled]

    async def twin(green: bool) -> tuple[bool, bool, int | None, int]:
        loop = asyncio.get_running_loop()
        if green:
            first, second = (greenbridge.spawn(_hub.sleep, s) for s in lengths)
        else:
            first, second = (asyncio.ensure_future(asyncio.sleep(s)) for s in lengths)
        await asyncio.sleep(0.01)
        doomed, live = (second, first) if cancelled == "later" else (first, second)
        doomed.cancel()
        t0 = time.monotonic()
        await asyncio.gather(doomed, live, return_exceptions=True)
        on_time = time.monotonic() - t0 < 5.0
        heap = len(_hub._asyncio.registry(loop).timers.heap) if green else 0
        return doomed.cancelled(), on_time, _timers_pending(loop), heap

    async def main() -> tuple[Any, Any]:
        return await twin(False), await twin(True)

    native, green = aio.run(main)
    assert native == green == (True, True, native[2], 0)
    assert native[2] in (0, None)


def test_a_closed_loop_that_waited_on_a_socket_can_be_collected() -> None:
    # A loop is garbage once closed and dropped, as a loop on which no green
    # socket ever waited is; the hub keeps nothing of it alive (its one-entry
    # cache of the last loop's registry included).
    def waits(pair: list[socket.socket]) -> bytes:
        _hub.sleep(0.001)
        return pair[0].recv(1)

    def run_on_a_new_loop() -> weakref.ref[asyncio.AbstractEventLoop]:
        loop = asyncio.new_event_loop()
        a, b = socket.socketpair()
        try:
            green_a = greenbridge.green.socket.socket(fileno=a.detach())

            async def main() -> bytes:
                loop.call_later(0.01, b.send, b"x")
                return await greenbridge.async_(waits)([green_a])  # type: ignore[no-any-return]

            assert loop.run_until_complete(main()) == b"x"
            green_a.close()
        finally:
            b.close()
            loop.close()
        return weakref.ref(loop)

    ref = run_on_a_new_loop()
    gc.collect()
    assert ref() is None


def test_a_pooled_worker_waits_on_the_loop_of_each_call() -> None:
    # A worker remembers the loop of its current call for the hub's waits; a
    # later call, on another loop, must wait on that one (the first is closed).
    from greenlet import getcurrent

    def sleeps_and_reads() -> tuple[int, bytes]:
        _hub.sleep(0.001)
        a, b = socket.socketpair()
        with a, b:
            green_a = greenbridge.green.socket.socket(fileno=a.detach())
            with green_a:
                b.send(b"x")
                return id(getcurrent()), green_a.recv(1)

    async def main() -> tuple[int, bytes]:
        return await greenbridge.async_(sleeps_and_reads)()  # type: ignore[no-any-return]

    first = asyncio.run(main())
    second = asyncio.run(main())
    assert first[1] == second[1] == b"x"
    assert first[0] == second[0]  # the same pooled worker served both calls


# ---------------------------------------------------------------------------
# the hub's own epoll (asyncio's selector loop, many descriptors)

needs_epoll = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's")


def _epoll_watches(epfd: int) -> int:
    """How many descriptors the kernel says the epoll ``epfd`` watches."""
    with open(f"/proc/self/fdinfo/{epfd}") as info:
        return sum(line.startswith("tfd:") for line in info)


def _echo_pairs(pairs: int, rounds: int, make: Any, spawn: Any) -> list[list[bytes]]:
    """``pairs`` echo exchanges at once; what each client got (spawn runs a thread)."""

    def server(s: socket.socket) -> None:
        while data := s.recv(64):
            s.sendall(data)

    def client(s: socket.socket, n: int) -> list[bytes]:
        got = []
        for i in range(rounds):
            s.sendall(b"%d:%d" % (n, i))
            got.append(s.recv(64))
        s.shutdown(socket.SHUT_WR)
        return got

    socks = [make() for _ in range(pairs)]
    try:
        servers = [spawn(server, b) for _a, b in socks]
        clients = [spawn(client, a, n) for n, (a, _b) in enumerate(socks)]
        results = [join() for join in clients]
        for join in servers:
            join()
        return results
    finally:
        for pair in socks:
            for s in pair:
                s.close()


@needs_epoll
def test_many_green_sockets_wait_through_one_epoll_and_leave_nothing() -> None:
    # With INNER_AT descriptors or more registered on asyncio's selector loop,
    # new waits go into the hub's own epoll, which alone is registered with the
    # loop.  The exchange gives what OS threads on blocking sockets give, and
    # once it is over the epoll is closed and nothing stays registered.
    import threading

    from greenbridge.green import socket as gsocket

    pairs, rounds = _hub._asyncio.INNER_AT + 4, 20

    def thread_spawn(fn: Any, *args: Any) -> Any:
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(fn(*args)))
        t.start()
        return lambda: (t.join(), out[0] if out else None)[1]

    native = _echo_pairs(pairs, rounds, socket.socketpair, thread_spawn)

    seen: list[tuple[int, int, bool]] = []

    async def main() -> list[list[bytes]]:
        loop = asyncio.get_running_loop()
        reg = _hub._asyncio.registry(loop)
        fds_before = len(os.listdir("/proc/self/fd"))

        async def watch() -> None:
            while True:
                await asyncio.sleep(0.001)
                if reg.epoll is not None:
                    epfd = reg.epoll.fileno()
                    in_loop = epfd in loop._selector.get_map()  # type: ignore[attr-defined]
                    seen.append((reg.inner, _epoll_watches(epfd), in_loop))

        watcher = asyncio.ensure_future(watch())

        def green_spawn(fn: Any, *args: Any) -> Any:
            task = greenbridge.spawn(fn, *args)
            return lambda: greenbridge.await_(task)

        try:
            got = await greenbridge.async_(_echo_pairs)(
                pairs, rounds, gsocket.socketpair, green_spawn
            )
        finally:
            watcher.cancel()
        assert reg.epoll is None and reg.inner == 0
        assert registrations(loop) == []
        assert len(os.listdir("/proc/self/fd")) == fds_before  # the epoll is closed
        return got  # type: ignore[no-any-return]

    assert asyncio.run(main()) == native
    # The epoll was in use, registered with the loop, with the kernel's
    # registrations matching the hub's count of them.
    assert seen, "the exchange never used the hub's epoll"
    assert all(in_loop for _n, _k, in_loop in seen)
    assert any(inner > 0 and inner == kernel for inner, kernel, _in in seen), seen


@needs_epoll
def test_waits_in_the_hub_epoll_behave_as_waits_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every wait through the hub's epoll (INNER_AT = 0): a read and a write
    # waiting on one socket at once, a timeout, a cancellation, a close,
    # a hang-up, and a descriptor epoll refuses: each as through the loop.
    from greenbridge.green import socket as gsocket

    inner: list[int] = []  # the waits in the hub's epoll while both wait

    def scenario() -> list[Any]:
        out: list[Any] = []
        a, b = gsocket.socketpair()
        with a, b:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            big = b"y" * (1 << 20)
            reader = greenbridge.spawn(a.recv, 8)  # waits to read...
            writer = greenbridge.spawn(a.sendall, big)  # ...and to write, on one fd
            _hub.sleep(0.01)
            inner.append(_hub._asyncio.registry(asyncio.get_running_loop()).inner)
            received = 0
            while received < len(big):
                received += len(b.recv(1 << 16))
            b.sendall(b"answer")
            out.append(greenbridge.await_(reader))
            out.append(greenbridge.await_(writer))
            out.append(_hub.wait_readable(a.fileno(), 0.02))  # a timeout
            task = greenbridge.spawn(_hub.wait_readable, a.fileno())
            _hub.sleep(0.01)
            task.cancel()
            try:
                greenbridge.await_(task)
            except asyncio.CancelledError:
                out.append("cancelled")
            task = greenbridge.spawn(_hub.wait_readable, a.fileno())
            _hub.sleep(0.01)
            _hub.notify_closing(a.fileno())
            try:
                greenbridge.await_(task)
            except OSError as exc:
                out.append(errno.errorcode[exc.errno])
            task = greenbridge.spawn(b.recv, 8)
            _hub.sleep(0.01)
            a.close()  # hang-up: the peer reads the end
            out.append(greenbridge.await_(task))
        with open(__file__, "rb") as f:  # epoll refuses regular files
            try:
                _hub.wait_readable(f.fileno(), 0.01)
            except OSError as exc:
                out.append(type(exc).__name__)
            else:
                out.append("waited")
        return out

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        out = await greenbridge.async_(scenario)()
        out.append(registrations(loop))
        reg = _hub._asyncio.registry(loop)
        out.append((reg.epoll, reg.inner))
        return out  # type: ignore[no-any-return]

    on_loop = asyncio.run(main())
    monkeypatch.setattr(_hub._asyncio, "INNER_AT", 0)
    assert asyncio.run(main()) == on_loop
    assert inner == [0, 2]  # on the loop, then both in the hub's epoll
    assert on_loop[:7] == [b"answer", None, False, "cancelled", "EBADF", b"", "PermissionError"]


@pytest.mark.parametrize("inner_ends", ["first", "last"])
@needs_epoll
def test_the_hub_epoll_closes_when_few_waits_are_left(
    monkeypatch: pytest.MonkeyPatch, inner_ends: str
) -> None:
    # INNER_AT = 4: four waits go on the loop, the fifth into the hub's epoll.
    # Below two waits (half of INNER_AT) the epoll is closed, and a wait still
    # in it goes back to the loop, where it is woken as any other.
    monkeypatch.setattr(_hub._asyncio, "INNER_AT", 4)
    pairs = [socket.socketpair() for _ in range(5)]

    async def main() -> list[tuple[bool, int]]:
        loop = asyncio.get_running_loop()
        reg = _hub._asyncio.registry(loop)
        fds = len(os.listdir("/proc/self/fd"))
        states = []
        tasks = []
        for a, _b in pairs:
            tasks.append(greenbridge.spawn(_hub.wait_readable, a.fileno(), 5))
            await asyncio.sleep(0.01)
        states.append((reg.epoll is not None, reg.inner))
        order = list(zip(pairs, tasks))
        if inner_ends == "first":
            order.reverse()
        for (_a, b), task in order:
            b.send(b"x")
            assert await task is True
            states.append((reg.epoll is not None, reg.inner))
        assert registrations(loop) == []
        assert len(os.listdir("/proc/self/fd")) == fds  # the epoll is closed
        return states

    try:
        states = asyncio.run(main())
    finally:
        for pair in pairs:
            for s in pair:
                s.close()
    if inner_ends == "first":
        # 4 left, 3, 2 (the epoll stays, empty), 1: closed.
        assert states == [(True, 1), (True, 0), (True, 0), (True, 0), (False, 0), (False, 0)]
    else:
        # The per-loop waits end first: at 1 left, the fifth goes back to the loop.
        assert states == [(True, 1), (True, 1), (True, 1), (True, 1), (False, 0), (False, 0)]


@needs_epoll
def test_a_report_for_nobody_in_the_hub_epoll_drops_that_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A descriptor left in the hub's epoll with no wait on it (its watch gone
    # from the registry without unregistering: not something the hub does)
    # is unregistered at its first report, instead of being reported again
    # at every turn of the loop (the epoll is level-triggered).
    monkeypatch.setattr(_hub._asyncio, "INNER_AT", 0)
    a, b = socket.socketpair()
    c, d = socket.socketpair()

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        reg = _hub._asyncio.registry(loop)
        other = greenbridge.spawn(_hub.wait_readable, c.fileno(), 5)
        task = greenbridge.spawn(_hub.wait_readable, a.fileno(), 5)
        await asyncio.sleep(0.01)
        epfd = reg.epoll.fileno()
        counts = [_epoll_watches(epfd)]
        watch = reg.readers.pop(a.fileno())
        b.send(b"x")
        await asyncio.sleep(0.01)
        counts.append(_epoll_watches(epfd))
        reg.readers[a.fileno()] = watch  # (put back, so that the wait ends cleanly)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        d.send(b"x")
        assert await other is True
        assert reg.epoll is None and reg.inner == 0
        assert registrations(loop) == []
        return counts

    try:
        assert asyncio.run(main()) == [2, 1]
    finally:
        for s in (a, b, c, d):
            s.close()
