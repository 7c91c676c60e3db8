"""Park and wake: suspend a worker, and resume it straight from a loop callback.

The hub (green I/O, timers) and the green waiter do not wait through
`greenbridge.await_`: that would cost a Future, a Task wake-up and a trip
through the driver for every wait.  Instead the waiting worker arranges for a
loop callback (a reader, a timer, a done callback) to call `wake`, and calls
`park`, which switches `PARK` to its driver (see `greenbridge._trampoline`).
The driver makes its task wait on a fresh Future (`_wait_parked`), so the
task looks suspended to asyncio, as it is.  When the callback calls `wake`,
it switches straight into the worker, which runs as its task (for
``asyncio.current_task()``) until it parks again: no Future completes, no
Task step runs.  Only when the worker does something just its task can do
(it ends, or awaits something else) is that handed over to the driver, by
setting the driver's ``msg``/``payload`` (`RESUME` for "switch into the
worker with this value") and completing the Future the task waits on.

This is the only asyncio code under the trampoline: under trio the hub waits
through `await_` on trio's own primitives.  The trampoline's driver hands its
parked waits to this module through `greenbridge._trampoline.serve_parking`,
done once when this module is imported: no worker can park before, since only
`park` (or code that switches `PARK` as it does) parks one.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Generator
from typing import Any

from greenlet import getcurrent

from ._trampoline import (
    ENDED_IN_CALLBACK,
    FAILED,
    FINISHED,
    PARK,
    Pending,
    Signal,
    Worker,
    chain_thrown,
    ended,
    handled_exception,
    serve_parking,
    stubborn,
    unwind,
)

__all__ = ["PARK", "RESUME", "park", "wake"]

_monotonic = time.monotonic
_current_task = asyncio.current_task
_Future = asyncio.Future
_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task

# Handed to a parked driver: "switch into the worker with the value in payload".
RESUME: Any = Signal("resume")


def _wait_parked(drv: Pending, worker: Worker) -> Generator[Any, Any, Any]:
    """Wait while the worker is parked; return its next message.

    Returns `ENDED_IN_CALLBACK` when the call ended while the worker ran in
    a loop callback (its outcome is then in ``payload``).
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    drv.fut = fut
    drv.task = _current_task(loop)
    drv.msg = PARK
    worker.drv = drv
    fut._asyncio_future_blocking = True  # what Future.__await__ sets for the Task
    try:
        yield fut
    except GeneratorExit:
        handoff = _release(drv, worker)
        if ended(handoff):
            drv.payload = None
        elif worker.pending is drv.ref:  # still suspended in the sync code
            yield from stubborn(worker, unwind(worker))
        raise
    except BaseException as exc:  # noqa: BLE001 - forwarded to the sync code
        task = drv.task
        cancelled = isinstance(exc, asyncio.CancelledError)
        # The message of task.cancel(msg), which a Task passes on to the future.
        why = exc.args[0] if cancelled and exc.args else None
        handoff = _release(drv, worker, cancelled, why)
        if ended(handoff):
            if cancelled and not fut.cancelled() and task is not None:
                # The call ended in a loop callback, and its task was cancelled
                # after that, before it took the outcome.  A native task would
                # have run on at once: it takes the outcome (result or error),
                # and the cancellation reaches it where it waits next, if it
                # does.  (Cancelled while the call ran, fut is cancelled: the
                # cancellation wins, below, as for a coroutine that cancels
                # its own task and returns.)
                loop.call_soon(_cancel_again, task, exc.args)
                drv.msg = handoff
                return ENDED_IN_CALLBACK
            # The call ended in a callback before this reached it.  An error
            # wins over the exception thrown here (as in a Task's step).
            if handoff is FAILED:
                drv.msg = handoff
                return ENDED_IN_CALLBACK
            drv.payload = None
            raise
        if isinstance(exc, asyncio.CancelledError) and isinstance(handoff, asyncio.Future):
            # A Future the worker handed over but the task never waited on:
            # the task's cancellation would have cancelled it.
            handoff.cancel(why)
        here = getcurrent()
        if worker.parent is not here:
            worker.parent = here
        msg = worker.throw(type(exc), exc, exc.__traceback__)
        del exc
        return msg
    handoff = _release(drv, worker)
    if handoff is RESUME:
        value = drv.payload
        drv.payload = None
        here = getcurrent()
        if worker.parent is not here:
            worker.parent = here
        return worker.switch(value)
    if ended(handoff):
        drv.msg = handoff
        return ENDED_IN_CALLBACK
    return handoff  # a trap for the task (PARK cannot be: fut is done)


def _release(drv: Pending, worker: Worker, cancel: bool = False, why: Any = None) -> Any:
    """End ``drv``'s parked wait; return what was handed over meanwhile (its ``msg``).

    Whatever the worker awaits in the task's place (a Future, a turn of the
    loop) is let go: the worker is resumed another way now.  ``cancel``: the
    task was cancelled, and that Future is cancelled too (with ``why``).
    """
    if worker.drv is drv:
        worker.drv = None
    # (Else the call ended in a callback: the worker went back to the pool
    # and may be parked for another call already.)
    trap = drv.trap
    if trap is not None:  # the worker waits on it: it is resumed another way now
        drv.trap = None
        if isinstance(trap, asyncio.Future):
            trap.remove_done_callback(drv.trap_done)
            if cancel:  # as a Task cancels the future it waits on
                trap.cancel(why)
        else:
            trap.cancel()
    drv.fut = None
    drv.task = None
    handoff = drv.msg
    drv.msg = None
    return handoff


def _cancel_again(task: asyncio.Task[Any], args: tuple[Any, ...]) -> None:
    """Cancel ``task`` again, where it waits now (see `_wait_parked`).

    Runs once the step in which the task took a call's outcome is over.  Nothing
    to do if the task ended meanwhile (the cancellation came too late, as for a
    native task that had finished), or (3.11+) if the request was taken back: an
    ``asyncio.timeout`` block that ended meanwhile, as natively its timer would
    then never have fired.
    """
    if task.done():
        return
    if sys.version_info >= (3, 11):
        if not task.cancelling():
            return
        task.uncancel()  # the request is made again, not added to
    task.cancel(*args[:1])


def park() -> Any:
    """Suspend the calling worker until `wake` resumes it; return what it sent.

    Only for the hub, in a `Worker` under a running asyncio loop, after
    arranging for a loop callback (a reader, a timer) to call `wake`.  An
    exception thrown into the task (a cancellation) is raised here.
    """
    handled = handled_exception()
    current = getcurrent()
    current.since = _monotonic()  # type: ignore[attr-defined]  # for dump_stacks
    try:
        return current.parent.switch(PARK)  # type: ignore[union-attr]
    except BaseException as exc:
        if handled is not None:
            chain_thrown(exc, handled)
        raise


def wake(worker: Worker, value: Any) -> None:
    """Resume parked ``worker``, making its `park` call return ``value``.

    Called from a loop callback, this switches straight into the worker
    (which runs as its task, for ``asyncio.current_task()``) until it parks
    again, so an I/O wait costs no Future, no Task wake-up and no trip
    through the driver.  While its task keeps waiting, the worker may also
    await a Future of this loop (its done callback resumes the worker the
    same way) or take a turn of the loop (``asyncio.sleep(0)``).  Anything
    else (it ends, or awaits something only the task can wait on) is handed
    to the driver through the future the task waits on.  Does nothing when
    the worker is no longer parked, or when its task was cancelled meanwhile
    (the cancellation is on its way to it).
    """
    drv = worker.drv
    if drv is None:
        return
    if type(drv) is not Pending:  # a green thread with no task (greenbridge._bare)
        run: Any = drv
        run.resume(worker, value)
        return
    fut = drv.fut
    if fut is None or fut.done():
        return
    task = drv.task
    if task is not None and getcurrent() is worker.parent:
        loop = fut.get_loop()
        try:
            _enter_task(loop, task)
        except RuntimeError:  # a task is running (a re-entrant loop): go through it
            pass
        else:
            try:
                msg = worker.switch(value)
            finally:
                _leave_task(loop, task)
            if msg is PARK:
                return
            # Await a Future or take a turn of the loop without the task: resumed
            # from the Future's done callback or the next turn, as the task would be.
            if msg is None:
                drv.trap = loop.call_soon(drv.yielded)
                return
            if isinstance(msg, _Future) and msg._asyncio_future_blocking and msg.get_loop() is loop:
                msg._asyncio_future_blocking = False
                drv.trap = msg
                msg.add_done_callback(drv.trap_done)
                return
            worker.drv = None
            if msg is FINISHED or msg is FAILED:
                # The worker is back in the pool: take its outcome now.
                drv.payload = worker.value
                worker.value = None
                worker.gr_context = None
            drv.msg = msg
            if not fut.done():  # the sync code may have cancelled its own task
                fut.set_result(None)
            return
    worker.drv = None
    drv.msg = RESUME
    drv.payload = value
    fut.set_result(None)


serve_parking(_wait_parked, _release, wake)
