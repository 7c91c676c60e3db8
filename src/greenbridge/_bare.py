"""Bare green threads: a worker greenlet driven by loop callbacks, with no task.

A green ``threading.Thread`` mostly waits through the hub (sockets, sleeps)
and the green waiter (locks, queues, joins), and both resume a parked worker
straight from a loop callback with `greenbridge._park.wake`.  Such a thread
needs no asyncio task, so it gets none: `start` runs it in a pooled worker
that a loop callback starts (one ``call_soon`` starts every thread started
since the last one ran, in order: `_begin_all`); when it parks, the worker
switches back to whoever resumed it (the loop's greenlet, in a callback), and
``wake`` resumes it through its `Run` (the worker's ``drv``).  A suspended thread costs
its greenlet, its frames and whatever will wake it: no Task, no Future, no
driver generator, no done callbacks (see docs/how-it-works.md, "What a
suspended green thread costs").

A task is made only when one is needed: the first time the thread calls
``await_`` (the awaitable may ask for ``asyncio.current_task()``, enter an
``asyncio.timeout``, be cancelled...), the worker switches `ADOPT` to the loop
side, which creates a task whose first step switches back into the worker,
with the task current; from there on the task's driver
(`greenbridge._trampoline.Pending`) runs the thread as it runs any `spawn`,
until it ends.  (Any other trap reaching the loop side without ``await_``
is handed to a new task the same way.)

Shutdown: while bare threads live on a loop, one task per loop (`_guard`)
waits for them.  ``asyncio.run`` cancels every task when its main coroutine
ends, so it cancels this one, which throws ``CancelledError`` into every bare
thread still parked on that loop: each one ends as its task ended when a
green thread was a task (its ``finally`` blocks run).

Identity: the `Run` is the green thread's key (`green._ident` gives
``id(run)`` as ``get_ident()``, before and after adoption).  The worker
points at its run (``Worker.thread``); nothing points back at the worker but
what will wake it, so a thread parked on something nobody can reach any more
is garbage, as a gevent greenlet is: greenlet raises ``GreenletExit`` in it
when it is collected, and its ``finally`` blocks run.
"""

from __future__ import annotations

import _thread
import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

from greenlet import getcurrent

from ._park import PARK
from ._trampoline import (
    FAILED,
    FINISHED,
    NO_KWARGS,
    Pending,
    Signal,
    Worker,
    live_workers,
    new_worker,
    thread_pools,
)
from ._where import asyncio_loop

__all__ = ["ADOPT", "Run", "start"]

#: What a bare worker switches to the loop side when it needs a task (see `Run.adopt`).
ADOPT: Any = Signal("adopt")


class Run:
    """One green thread run by a bare worker; its identity, and its ``drv`` while bare.

    ``task`` is None until the thread needs a task (see `adopt`), then that task.
    """

    # parked: the worker switched PARK to the loop side and waits for resume();
    # guard: the _Guard of its loop, counting it until it ends.
    __slots__ = ("parked", "task", "guard", "__weakref__")

    def __init__(self, guard: _Guard) -> None:
        self.parked = False
        self.task: asyncio.Task[Any] | None = None
        self.guard = guard
        guard.count += 1

    def _ended(self) -> None:
        guard = self.guard
        guard.count -= 1
        if not guard.count:
            guard.release()

    def resume(self, worker: Worker, value: Any) -> None:
        """Resume the parked worker with ``value`` (called by `greenbridge._park.wake`).

        Does nothing when the worker is not parked (a stale wake-up).
        """
        if not self.parked:
            return
        self.parked = False
        here = getcurrent()
        if worker.parent is not here:
            worker.parent = here
        msg = worker.switch(value)
        if msg is PARK:  # _handle(), inlined for the common case
            self.parked = True
            return
        self._handle(worker, msg)

    def adopt(self, worker: Worker) -> None:
        """In the worker: give this thread a task, and go on running as that task.

        Called by ``await_`` before it steps anything, so the awaitable sees
        its task from its first line.
        """
        worker.parent.switch(ADOPT)  # type: ignore[union-attr]

    def _handle(self, worker: Worker, msg: Any) -> None:
        """What the worker switched to the loop side: it parked, needs a task, or ended."""
        if msg is PARK:
            self.parked = True
            return
        if msg is FINISHED or msg is FAILED:
            error = worker.value
            worker.value = None
            worker.gr_context = None
            worker.thread = None
            worker.drv = None
            guard = self.guard
            guard.count -= 1
            if not guard.count:
                guard.release()
            if msg is FAILED and not isinstance(error, asyncio.CancelledError):
                _report(error)
            del error
            return
        # ADOPT, or a trap yielded without await_: a task takes the worker over.
        worker.drv = None
        loop = asyncio_loop()
        assert loop is not None  # resumed by a callback of this loop
        self.task = loop.create_task(_adopted(worker, msg))

    def cancel(self, worker: Worker) -> None:
        """Throw ``CancelledError`` into the parked worker (its loop is shutting down)."""
        if not self.parked:
            return
        self.parked = False
        here = getcurrent()
        if worker.parent is not here:
            worker.parent = here
        self._handle(worker, worker.throw(asyncio.CancelledError()))


class _Guard:
    """The bare threads alive on one loop, and the task that ends them at shutdown."""

    __slots__ = ("loop", "count", "fut", "native_id", "starting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.count = 0
        # The OS thread id of the loop's thread (made here, where it runs), which
        # its green threads run on: one system call per loop, not per thread.
        self.native_id = _thread.get_native_id()
        # The threads started since the loop last ran `_begin_all`, in order.
        self.starting: list[tuple[Run, Callable[..., Any], tuple[Any, ...], Any]] = []
        self.fut: asyncio.Future[None] = loop.create_future()
        loop.create_task(_guard(self), name="greenbridge green threads")

    def release(self) -> None:
        """No bare thread is left on the loop: end the guarding task."""
        if _guards.get(self.loop) is self:
            del _guards[self.loop]
        if not self.fut.done():
            self.fut.set_result(None)


# loop -> the _Guard of its bare threads, while it has some.
_guards: dict[asyncio.AbstractEventLoop, _Guard] = {}


async def _guard(guard: _Guard) -> None:
    """Wait while bare threads live on the loop; cancelled, cancel them (see above)."""
    try:
        await guard.fut
    except asyncio.CancelledError:
        if _guards.get(guard.loop) is guard:
            del _guards[guard.loop]
        for worker in live_workers():
            run = worker.drv
            if type(run) is Run and run.guard is guard and run.parked:
                run.cancel(worker)
        raise


async def _adopted(worker: Worker, msg: Any) -> Any:
    """The task of a green thread that needed one: drive its worker to the end."""
    try:
        if msg is ADOPT:
            # The first step: resume the worker in its await_, with this task current.
            here = getcurrent()
            if worker.parent is not here:
                worker.parent = here
            msg = worker.switch(None)
            if msg is FINISHED:
                worker.gr_context = None
                value = worker.value
                worker.value = None
                return value
        return await Pending(worker, msg)
    finally:
        run = worker.thread
        worker.thread = None  # back in its pool (or dead): no thread's any more
        if run is not None:
            run._ended()


def _report(error: BaseException) -> None:
    """An exception that ended a bare green thread: to the loop's exception handler."""
    loop = asyncio_loop()
    if loop is not None:
        loop.call_exception_handler({"message": "Exception in a green thread", "exception": error})


def _begin_all(guard: _Guard) -> None:
    """Loop callback: begin every thread started since the last one, in order.

    Each runs in a pooled worker until it parks or ends.  One callback per
    turn of the loop, not one per thread: 10,000 threads started at once
    cost one ``Handle``, one Context copy for it and one entry in the ready
    queue, not 10,000.  (A thread started by one of them waits for the next
    turn, as it did with its own callback.)
    """
    batch = guard.starting
    guard.starting = []
    here = getcurrent()
    pools = thread_pools()
    for index, (run, fn, args, context) in enumerate(batch):
        try:
            # A worker of the pool for this depth, where it starts if it is new.
            pool = pools[pools.depth[0]]
            worker = pool.pop() if pool else new_worker(pool)
            if worker.parent is not here:
                worker.parent = here
            worker.gr_context = context
            worker.thread = run
            worker.drv = run
            worker.loop = guard.loop
            if worker:  # parked in its pool: it waits for a call
                msg = worker.switch(fn, args, NO_KWARGS)
            else:  # new: it starts with its call (see greenbridge._trampoline._worker_main)
                worker.value = (fn, args, NO_KWARGS)
                msg = worker.switch()
            if msg is PARK:  # run._handle(), inlined for the common case
                run.parked = True
            else:
                run._handle(worker, msg)
        except BaseException:
            # (The loop reports it.)  The rest begin at the next turn, first.
            rest = batch[index + 1 :]
            if rest:
                if not guard.starting:
                    guard.loop.call_soon(_begin_all, guard)
                guard.starting[:0] = rest
            raise


def start(
    fn: Callable[..., Any],
    args: tuple[Any, ...] = (),
    loop: asyncio.AbstractEventLoop | None = None,
) -> Run:
    """Run ``fn(*args)`` as a bare green thread on the running asyncio loop.

    It starts at the loop's next turn, in a copy of the caller's Context (as
    `greenbridge.spawn` runs its task), and gets a task only if it needs one
    (see the module docstring).  Raises RuntimeError with no loop running.
    ``loop``: the running loop, when the caller has it at hand already.
    """
    if loop is None:
        loop = asyncio_loop()
    if loop is None:
        raise RuntimeError("greenbridge: a green thread needs a running asyncio loop")
    guard = _guards.get(loop)
    if guard is None:
        guard = _guards[loop] = _Guard(loop)
    run = Run(guard)
    starting = guard.starting
    if not starting:
        loop.call_soon(_begin_all, guard)
    starting.append((run, fn, args, contextvars.copy_context()))
    return run
