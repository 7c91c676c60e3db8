"""Hub waits park the worker; a loop callback resumes it on the spot.

These tests pin down the hand-overs of that protocol: what the resumed code
sees (its task, its context), what happens when it ends or awaits something
else while running in a callback, and cancellation at every stage.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
from typing import Any

import pytest

import greenbridge
from greenbridge import _hub, async_, await_, spawn
from greenbridge.green import socket as gsocket

from .conftest import Backend


def _pair() -> tuple[Any, socket.socket]:
    """A green socket (for the sync code) and a stdlib one (for the test to write on)."""
    a, b = socket.socketpair()
    return gsocket.socket(fileno=a.detach()), b


async def _started(fn: Any, *args: Any) -> asyncio.Future[Any]:
    """Run sync ``fn(*args)`` as a task, and give it time to reach its first wait."""
    task = asyncio.ensure_future(async_(fn)(*args))
    await asyncio.sleep(0.01)
    return task


def _registered(loop: asyncio.AbstractEventLoop) -> int:
    reg = _hub._asyncio.registries.get(loop)
    return 0 if reg is None else len(reg.readers) + len(reg.writers)


def test_resumed_code_runs_as_its_task(aio: Backend) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def sync(sock: Any) -> tuple[Any, str, float]:
        var.set("mine")
        sock.recv(1)  # parks; the reader callback resumes it
        task = asyncio.current_task()
        # asyncio.timeout / wait_for need the current task (3.11+)
        await_(asyncio.wait_for(asyncio.sleep(0.001), 5))
        return task, var.get(), 1.0

    async def main() -> None:
        sock, peer = _pair()
        with sock, peer:
            task = await _started(sync, sock)
            peer.send(b"x")
            current, value, _ = await task
            assert current is task
            assert value == "mine"
            assert asyncio.current_task() is not task
            assert _registered(asyncio.get_running_loop()) == 0

    aio.run(main)


def test_call_ending_in_a_callback_hands_over_result_and_error(aio: Backend) -> None:
    def ok(sock: Any) -> bytes:
        return bytes(sock.recv(3))

    def fails(sock: Any) -> None:
        sock.recv(1)
        raise KeyError("after the wait")

    async def main() -> None:
        sock, peer = _pair()
        with sock, peer:
            t1 = await _started(ok, sock)
            peer.send(b"abc")
            assert await t1 == b"abc"
            t2 = await _started(fails, sock)
            peer.send(b"x")
            with pytest.raises(KeyError, match="after the wait") as info:
                await t2
            assert any(entry.name == "fails" for entry in info.traceback)

    aio.run(main)


def test_worker_reused_while_the_previous_driver_has_not_run_yet(aio: Backend) -> None:
    # first() ends in a reader callback and starts second() just before: second's
    # task gets the same pooled worker and parks it before first's task resumes.
    # first's task must not disturb the worker second now owns.
    started: list[asyncio.Task[Any]] = []

    async def main() -> None:
        s1, p1 = _pair()
        s2, p2 = _pair()
        with s1, p1, s2, p2:

            def second() -> bytes:
                return bytes(s2.recv(1))

            def first() -> str:
                s1.recv(1)
                started.append(spawn(second))
                return "first"

            t1 = await _started(first)
            p1.send(b"x")
            assert await t1 == "first"
            await asyncio.sleep(0.01)
            p2.send(b"y")
            assert await asyncio.wait_for(started[0], 5) == b"y"

    aio.run(main)


def test_switching_from_hub_waits_to_futures_and_back(aio: Backend) -> None:
    def sync(sock: Any, fut: asyncio.Future[str]) -> list[Any]:
        got = [bytes(sock.recv(1))]
        got.append(await_(fut))  # a plain Future: handed to the task
        got.append(bytes(sock.recv(1)))
        await_(asyncio.sleep(0))
        greenbridge.green.time.sleep(0)  # type: ignore[attr-defined]
        got.append(bytes(sock.recv(1)))
        return got

    async def main() -> None:
        import greenbridge.green.time  # noqa: F401

        loop = asyncio.get_running_loop()
        sock, peer = _pair()
        with sock, peer:
            fut: asyncio.Future[str] = loop.create_future()
            task = await _started(sync, sock, fut)
            peer.send(b"a")
            await asyncio.sleep(0.01)
            fut.set_result("f")
            await asyncio.sleep(0.01)
            peer.send(b"b")
            await asyncio.sleep(0.01)
            peer.send(b"c")
            assert await task == [b"a", "f", b"b", b"c"]

    aio.run(main)


def test_cancelled_while_parked(aio: Backend) -> None:
    reached: list[str] = []

    def sync(sock: Any) -> None:
        try:
            sock.recv(1)
        except asyncio.CancelledError:
            reached.append("cancelled")
            raise
        finally:
            reached.append("finally")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock, peer = _pair()
        with sock, peer:
            task = await _started(sync, sock)
            assert _registered(loop) == 1
            task.cancel()
            peer.send(b"x")  # readiness and cancellation in the same turn
            with pytest.raises(asyncio.CancelledError):
                await task
            assert reached == ["cancelled", "finally"]
            assert _registered(loop) == 0

    aio.run(main)


def test_task_cancelled_while_its_code_runs_in_a_callback(aio: Backend) -> None:
    def sync(sock: Any) -> str:
        sock.recv(1)
        current = asyncio.current_task()
        assert current is not None
        current.cancel()  # arrives at the next suspension...
        try:
            sock.recv(1)
        except asyncio.CancelledError:
            return "cancel seen at the next wait"
        return "not cancelled"

    async def main() -> None:
        sock, peer = _pair()
        with sock, peer:
            task = await _started(sync, sock)
            peer.send(b"x")
            assert await task == "cancel seen at the next wait"

    aio.run(main)


def test_task_cancelled_then_its_code_ends_in_a_callback(aio: Backend) -> None:
    # The code cancels its own task and returns without waiting again: as for
    # a coroutine, the task ends cancelled; an exception would win instead.
    def returns(sock: Any) -> str:
        sock.recv(1)
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        return "value"

    def raises(sock: Any) -> None:
        sock.recv(1)
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        raise ValueError("boom")

    async def main() -> None:
        sock, peer = _pair()
        with sock, peer:
            t1 = await _started(returns, sock)
            peer.send(b"x")
            with pytest.raises(asyncio.CancelledError):
                await t1
            t2 = await _started(raises, sock)
            peer.send(b"x")
            with pytest.raises(ValueError, match="boom"):
                await t2

    aio.run(main)


def test_writer_then_reader_on_one_descriptor(aio: Backend) -> None:
    # One descriptor, waited on for writing and then for reading by code resumed
    # from the writer's callback (on uvloop both share one poll handle).
    def sync(sock: Any) -> int:
        sock.setblocking(True)
        sock.sendall(b"x" * (4 << 20))  # fills the buffers: waits for writability
        return len(sock.recv(10))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock, peer = _pair()
        with sock, peer:
            peer.setblocking(False)
            task = asyncio.ensure_future(async_(sync)(sock))
            got = 0
            while got < 4 << 20:
                try:
                    got += len(peer.recv(1 << 20))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            await asyncio.sleep(0.01)
            peer.send(b"0123456789")
            assert await asyncio.wait_for(task, 10) == 10
            assert _registered(loop) == 0

    aio.run(main)


def test_many_parked_workers_woken_in_one_turn(aio: Backend) -> None:
    n = 200

    def echo_once(sock: Any) -> bytes:
        data = bytes(sock.recv(16))
        sock.sendall(data.upper())
        return data

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pairs = [_pair() for _ in range(n)]
        try:
            tasks = [asyncio.ensure_future(async_(echo_once)(s)) for s, _ in pairs]
            await asyncio.sleep(0.05)
            for i, (_, peer) in enumerate(pairs):
                peer.send(b"m%d" % i)
            assert await asyncio.gather(*tasks) == [b"m%d" % i for i in range(n)]
            for i, (_, peer) in enumerate(pairs):
                assert peer.recv(16) == b"M%d" % i
            assert _registered(loop) == 0
        finally:
            for s, peer in pairs:
                s.close()
                peer.close()

    aio.run(main)


class _CountingLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.added: list[int] = []

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:
        self.added.append(fd)
        super().add_reader(fd, callback, *args)


def _run_counting(main: Any) -> Any:
    loop = _CountingLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


def test_a_socket_waiting_again_keeps_its_registration() -> None:
    rounds = 20

    def echo(sock: Any) -> None:
        for _ in range(rounds):
            sock.sendall(sock.recv(16))

    async def main(loop: _CountingLoop) -> None:
        sock, peer = _pair()
        with sock, peer:
            peer.setblocking(False)
            task = asyncio.ensure_future(async_(echo)(sock))
            for i in range(rounds):
                await loop.sock_sendall(peer, b"%d" % i)
                assert await loop.sock_recv(peer, 16) == b"%d" % i
            await task
            # One registration for all the rounds: each wait after the first was
            # made by code resumed from the previous one's callback.
            assert loop.added.count(sock.fileno()) == 1
            assert _registered(loop) == 0

    _run_counting(main)


def test_a_kept_registration_is_not_reused_by_a_new_owner_of_the_number() -> None:
    import os

    def sync(first: Any, make_second: Any) -> bytes:
        first.recv(1)  # woken by a callback: its registration is kept for now
        fd = first.detach()
        os.close(fd)  # behind the hub's back: no notify_closing()
        second = make_second()
        assert second.fileno() == fd  # the lowest free number: the same one
        with second:
            return bytes(second.recv(1))  # must register anew, or it would hang

    async def main(loop: _CountingLoop) -> None:
        first, peer1 = _pair()
        holder: list[socket.socket] = []

        def make_second() -> Any:
            a, b = socket.socketpair()
            holder.append(b)
            loop.call_later(0.05, b.send, b"2")
            return gsocket.socket(fileno=a.detach())

        with peer1:
            task = await _started(sync, first, make_second)
            peer1.send(b"1")
            assert await asyncio.wait_for(task, 5) == b"2"
            holder[0].close()
            assert _registered(loop) == 0

    _run_counting(main)


def test_cancelled_while_awaiting_a_future_after_a_callback_resumed_it(aio: Backend) -> None:
    # After a hub wait the code awaits a Future while its task still waits on
    # the park: cancelling the task cancels that Future, as a Task would.
    seen: list[str] = []

    def sync(sock: Any, fut: asyncio.Future[None]) -> None:
        sock.recv(1)
        try:
            await_(fut)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock, peer = _pair()
        with sock, peer:
            fut: asyncio.Future[None] = loop.create_future()
            task = await _started(sync, sock, fut)
            peer.send(b"x")
            await asyncio.sleep(0.01)  # now waiting on fut
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert fut.cancelled()
            assert seen == ["cancelled"]

    aio.run(main)


def test_loop_turns_after_a_callback_resumed_it(aio: Backend) -> None:
    # asyncio.sleep(0) from code resumed by a callback: one turn each, and
    # other tasks run in between; a cancellation arrives at the next one.
    order: list[str] = []

    def sync(sock: Any) -> None:
        sock.recv(1)
        for i in range(3):
            order.append(f"sync {i}")
            await_(asyncio.sleep(0))
        while True:
            await_(asyncio.sleep(0))

    async def other() -> None:
        for i in range(3):
            order.append(f"other {i}")
            await asyncio.sleep(0)

    async def main() -> None:
        sock, peer = _pair()
        with sock, peer:
            task = await _started(sync, sock)
            peer.send(b"x")
            other_task = asyncio.ensure_future(other())
            await other_task
            assert [o for o in order if o.startswith("sync")] == ["sync 0", "sync 1", "sync 2"]
            assert order.index("other 0") < order.index("sync 2")
            assert order.index("sync 0") < order.index("other 2")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    aio.run(main)
