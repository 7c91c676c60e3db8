"""Green threads without a task each: a task is made only when the thread awaits asyncio code."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import greenbridge
from greenbridge.green import threading as gt
from greenbridge.green import time as green_time

from .helpers import Backend, run_green


def test_hub_wait_then_asyncio_code_then_hub_wait_again(aio: Backend) -> None:
    """Before it awaits, the thread has no task; asyncio code then sees one, and keeps it."""

    async def needs_task() -> tuple[Any, bool]:
        task = asyncio.current_task()
        async with asyncio.timeout(5) if hasattr(asyncio, "timeout") else _nothing():
            await asyncio.sleep(0.01)
        assert asyncio.current_task() is task
        return task, task is not None

    def body(seen: list[Any], local: Any) -> None:
        local.name = "mine"
        seen.append(("before", asyncio.current_task(), gt.get_ident(), gt.current_thread()))
        green_time.sleep(0.01)
        task, has_task = greenbridge.await_(needs_task())
        seen.append(("awaited", task, has_task))
        green_time.sleep(0.01)  # a hub wait again, now driven by its task
        event = gt.Event()
        gt.Timer(0.01, event.set).start()
        event.wait()
        seen.append(("after", asyncio.current_task(), gt.get_ident(), gt.current_thread()))
        seen.append(("local", local.name))

    def main() -> tuple[list[Any], gt.Thread]:
        seen: list[Any] = []
        local = gt.local()
        thread = gt.Thread(target=body, args=(seen, local))
        thread.start()
        thread.join()
        assert not hasattr(local, "name")  # the thread's namespace was its own
        return seen, thread

    seen, thread = run_green(aio, main)
    before, awaited, after, local = seen
    assert before[1] is None  # no task while it only waits through the hub
    assert awaited[2] and awaited[1] is not None
    assert after[1] is awaited[1]  # kept from then on
    # One identity before and after it got a task.
    assert before[2] == after[2] == thread.ident
    assert before[3] is after[3] is thread
    assert local == ("local", "mine")


class _nothing:  # noqa: N801 - a stand-in for asyncio.timeout before 3.11
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_exception_after_adoption_goes_to_excepthook(aio: Backend) -> None:
    def main() -> list[Any]:
        got: list[Any] = []
        saved = gt.excepthook
        gt.excepthook = lambda args: got.append((args.exc_type, args.thread))

        def body() -> None:
            green_time.sleep(0)
            greenbridge.await_(asyncio.sleep(0))
            raise KeyError("late")

        try:
            bare = gt.Thread(target=lambda: 1 / 0)  # never gets a task
            bare.start()
            bare.join()
            adopted = gt.Thread(target=body)
            adopted.start()
            adopted.join()
        finally:
            gt.excepthook = saved
        return [got, bare, adopted]

    got, bare, adopted = run_green(aio, main)
    assert got == [(ZeroDivisionError, bare), (KeyError, adopted)]


def test_a_thousand_waiting_threads_make_no_task(aio: Backend) -> None:
    def main() -> int:
        event = gt.Event()
        threads = [gt.Thread(target=event.wait) for _ in range(1000)]
        for thread in threads:
            thread.start()
        green_time.sleep(0.05)
        tasks = len(asyncio.all_tasks())
        event.set()
        for thread in threads:
            thread.join()
        return tasks

    # The main call's task and one per loop that ends the bare threads at shutdown.
    assert run_green(aio, main) <= 2


def test_shutdown_cancels_parked_daemon_threads_as_their_tasks_were() -> None:
    """asyncio.run ends a parked green thread with CancelledError, and its finally runs."""
    seen: list[str] = []

    def sleeper() -> None:
        try:
            green_time.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append("finally")

    def waiter(event: Any) -> None:
        try:
            event.wait()
        finally:
            seen.append("waiter finally")

    async def main() -> None:
        gt.Thread(target=sleeper, daemon=True).start()
        gt.Thread(target=waiter, args=(gt.Event(),), daemon=True).start()
        await asyncio.sleep(0.05)

    asyncio.run(main())  # cancels every task left: one of them ends the green threads
    assert sorted(seen) == ["cancelled", "finally", "waiter finally"]


def test_context_is_a_copy_of_the_starters() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def body(seen: list[str]) -> None:
        seen.append(var.get())
        var.set("changed in the thread")

    def main() -> list[str]:
        seen: list[str] = []
        var.set("starter")
        thread = gt.Thread(target=body, args=(seen,))
        thread.start()
        thread.join()
        seen.append(var.get())
        return seen

    async def amain() -> list[str]:
        return await greenbridge.async_(main)()

    assert asyncio.run(amain()) == ["starter", "starter"]


def test_sharing_the_loop_turn_makes_no_task(aio: Backend) -> None:
    """A busy loop of ready selects gives the loop turns without getting a task."""
    from greenbridge.green import select as green_select
    from greenbridge.green import socket as green_socket

    def body(seen: list[Any]) -> None:
        a, b = green_socket.socketpair()
        try:
            end = time.monotonic() + 0.05  # several switch intervals
            while time.monotonic() < end:
                green_select.select([], [a], [], 0)  # ready at once: shares the turn
            seen.append(asyncio.current_task())
        finally:
            a.close()
            b.close()

    def ticker(ticks: list[int]) -> None:
        for _ in range(3):
            green_time.sleep(0)
            ticks.append(1)

    def main() -> tuple[list[Any], list[int]]:
        seen: list[Any] = []
        ticks: list[int] = []
        busy = gt.Thread(target=body, args=(seen,))
        other = gt.Thread(target=ticker, args=(ticks,))
        busy.start()
        other.start()
        busy.join()
        other.join()
        return seen, ticks

    seen, ticks = run_green(aio, main)
    assert seen == [None]
    assert ticks == [1, 1, 1]  # the other thread ran meanwhile


def test_a_done_future_needs_no_task_a_pending_one_gets_one(aio: Backend) -> None:
    def body(seen: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        done.set_result("done")
        seen.append((greenbridge.await_(done), asyncio.current_task() is None))
        pending = loop.create_future()
        loop.call_later(0.01, pending.set_result, "pending")
        seen.append((greenbridge.await_(pending), asyncio.current_task() is None))

    def main() -> list[Any]:
        seen: list[Any] = []
        thread = gt.Thread(target=body, args=(seen,))
        thread.start()
        thread.join()
        return seen

    assert run_green(aio, main) == [("done", True), ("pending", False)]
