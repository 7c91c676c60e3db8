"""The hub shares the loop's turns: many ready sockets do not hold one turn for long.

OS threads blocked in ``recv`` on many sockets that become readable at once
take turns: the interpreter preempts a thread after ``sys.getswitchinterval()``.
Green threads resumed from the loop's reader callbacks get the same: after a
time slice of that length in one turn of an asyncio selector loop, the rest
of the ready descriptors wait for the next turn (see ``_hub._asyncio._time_turns``), so
timers and other tasks run in between.  Each test runs the program with OS
threads and with green threads and compares.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import threading
import time
from typing import Any

import greenbridge
from greenbridge.green import socket as gsocket

from .helpers import Backend

N = 40
SPIN = 0.002  # CPU time each handler takes once its data arrived (N * SPIN = 80 ms in all)
DELAY = 0.1  # from the start of the handlers' recv calls to the data's arrival


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _handler(
    sock: Any, timeout: float | None, spin: float, sent: list[bool], done: list[Any]
) -> None:
    sock.settimeout(timeout)
    try:
        data = sock.recv(16)
    except OSError as exc:  # socket.timeout
        done.append(type(exc).__name__)
        return
    while not sent:  # (threads) no spinning before the data went to every socket
        time.sleep(0.0001)
    _spin(spin)
    done.append(data)


def _largest_batch(seen: list[int]) -> int:
    """The most handlers that finished between two consecutive heartbeats."""
    return max(b - a for a, b in zip(seen, seen[1:]))


def threads_run(timeout: float | None, spin: float = SPIN) -> tuple[list[Any], int]:
    pairs = [socket.socketpair() for _ in range(N)]
    done: list[Any] = []
    seen = [0]
    sent: list[bool] = []
    threads = [
        threading.Thread(target=_handler, args=(a, timeout, spin, sent, done)) for a, _ in pairs
    ]
    for t in threads:
        t.start()
    time.sleep(DELAY)  # every thread waits in recv
    for _, b in pairs:
        b.send(b"x")
    sent.append(True)
    while seen[-1] < N:
        time.sleep(0.0005)
        seen.append(len(done))
    for t in threads:
        t.join()
    for a, b in pairs:
        a.close()
        b.close()
    return done, _largest_batch(seen)


def green_run(backend: Backend, timeout: float | None, spin: float = SPIN) -> tuple[list[Any], int]:
    async def main() -> tuple[list[Any], int]:
        pairs = [gsocket.socketpair() for _ in range(N)]
        done: list[Any] = []
        seen = [0]
        sent: list[bool] = []
        tasks = [greenbridge.spawn(_handler, a, timeout, spin, sent, done) for a, _ in pairs]
        await asyncio.sleep(DELAY)  # every green thread waits in recv
        for _, b in pairs:  # all readable at the same poll of the loop
            b.send(b"x")
        sent.append(True)
        while seen[-1] < N:
            await asyncio.sleep(0)  # one step per turn of the loop
            seen.append(len(done))
        await asyncio.gather(*tasks)
        for a, b in pairs:
            a.close()
            b.close()
        return done, _largest_batch(seen)

    return backend.run(main)  # type: ignore[no-any-return]


def test_many_ready_sockets_take_turns_with_the_loop(aio: Backend) -> None:
    threads_done, threads_batch = threads_run(None)
    done, batch = green_run(aio, None)
    assert threads_done == done == [b"x"] * N
    # Green threads give the loop back after a time slice.  Before, all N ran
    # in the turn that saw them readable: the batch was N.  (OS threads are
    # preempted too, but which waiting thread gets the GIL is up to the OS,
    # so their batch is printed, not asserted.)
    print(f"largest batch between two heartbeats: threads {threads_batch}, green {batch}")
    assert batch < N, f"{batch} handlers ran without a break"


def test_data_that_arrived_before_the_timeout_wins_over_it(aio: Backend) -> None:
    # The handlers' deadlines fall 300 ms after the data arrived (a margin for
    # a busy machine), while the handlers take 600 ms in all to run once it
    # did: the data was there before each deadline, so every recv returns it,
    # as with OS threads, even in the handlers that the loop resumes in a
    # later turn, after their deadline.
    spin = 0.015
    for run in (threads_run, functools.partial(green_run, aio)):
        done, _ = run(DELAY + 0.3, spin)
        assert done == [b"x"] * N, run


ACCEPTS = 50
ACCEPT_SPIN = 0.001  # work per accepted connection (50 ms in all)


def _accept_all(listener: Any, accepted: list[Any]) -> None:
    for _ in range(ACCEPTS):
        conn, _ = listener.accept()  # returns at once: the connections wait in the backlog
        _spin(ACCEPT_SPIN)
        accepted.append(conn)


def test_an_accept_loop_over_a_backlog_takes_turns() -> None:
    def threads() -> tuple[int, int]:
        listener = socket.create_server(("127.0.0.1", 0), backlog=ACCEPTS)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(ACCEPTS)]
        accepted: list[Any] = []
        seen = [0]
        t = threading.Thread(target=_accept_all, args=(listener, accepted))
        t.start()
        while seen[-1] < ACCEPTS:
            time.sleep(0.0005)
            seen.append(len(accepted))
        t.join()
        for s in [listener, *clients, *accepted]:
            s.close()
        return len(accepted), _largest_batch(seen)

    def green() -> tuple[int, int]:
        async def main() -> tuple[int, int]:
            listener = gsocket.create_server(("127.0.0.1", 0), backlog=ACCEPTS)
            clients = [socket.create_connection(listener.getsockname()) for _ in range(ACCEPTS)]
            accepted: list[Any] = []
            seen = [0]
            task = greenbridge.spawn(_accept_all, listener, accepted)
            while seen[-1] < ACCEPTS:
                await asyncio.sleep(0)
                seen.append(len(accepted))
            await task
            for s in [listener, *clients, *accepted]:
                s.close()
            return len(accepted), _largest_batch(seen)

        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(main())
        finally:
            loop.close()

    threads_count, threads_batch = threads()
    count, batch = green()
    assert threads_count == count == ACCEPTS
    # Before: the green accept loop took the whole backlog in one turn.  (An
    # OS thread whose accept releases and retakes the GIL each time can keep
    # it from a waiting thread for long: its batch is printed, not asserted.)
    print(
        f"largest batch of accepts between two heartbeats: threads {threads_batch}, green {batch}"
    )
    assert batch < ACCEPTS, f"{batch} accepts without a break"


def test_a_cancelled_accept_leaves_the_connection_in_the_backlog(aio: Backend) -> None:
    """Cancelled while accept gives the loop a turn, no connection is taken (and lost)."""
    from greenbridge import _hub

    async def native() -> bool:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        client = socket.create_connection(listener.getsockname())
        task = asyncio.ensure_future(loop.sock_accept(listener))
        task.cancel()  # native sock_accept does not yield with a connection pending
        with contextlib.suppress(asyncio.CancelledError):
            await task
        conn, _ = await loop.sock_accept(listener)
        same = conn.getpeername() == client.getsockname()
        for s in (conn, client, listener):
            s.close()
        return same

    async def green() -> bool:
        listener = gsocket.create_server(("127.0.0.1", 0))
        listener.settimeout(10)  # a connection lost: accept times out instead of hanging
        client = socket.create_connection(listener.getsockname())
        _hub.last_turn[0] = 0.0  # the next accept gives the loop a turn first
        task = greenbridge.spawn(listener.accept)
        await asyncio.sleep(0)  # the task runs until it yields in accept
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()
        conn, _ = await greenbridge.async_(listener.accept)()
        same = conn.getpeername() == client.getsockname()
        for s in (conn, client, listener):
            s.close()
        return same

    assert aio.run(native) is True
    assert aio.run(green) is True
