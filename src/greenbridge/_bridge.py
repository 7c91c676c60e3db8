"""The bridge: ``async_``, ``await_``, ``spawn`` and portals.

How it works, in one paragraph: a *worker* greenlet runs the sync code.  When
that code calls `await_`, the awaitable's ``__await__`` iterator is
stepped *inside the worker*; only when it yields a trap (an asyncio Future, a
bare ``None``, a trio trap) do we switch to the *driver* greenlet.  The driver
is a small generator-based coroutine (`_drive`) that yields the trap to
the real event loop and switches back into the worker with whatever the loop
sent (or threw).  So an awaitable that completes without suspending costs no
greenlet switch at all, and the same driver works for every loop family that
runs coroutines (asyncio, uvloop, trio).

Worker greenlets are expensive to create (a fresh C stack slice and frame
chain) and cheap to switch into, so finished workers park in a small
per-thread pool and are reused.  A parked worker keeps no reference to its
last call, its Context or its result.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import importlib
import inspect
import signal
import sys
import threading
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from greenlet import GreenletExit, getcurrent, greenlet

from ._errors import MissingBridge
from ._where import BridgeGreenlet

_current_task = asyncio.current_task
_Future = asyncio.Future
_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task

if sys.version_info >= (3, 10) or TYPE_CHECKING:
    from typing import ParamSpec

__all__ = [
    "MissingBridge",
    "async_",
    "await_",
    "spawn",
    "ensure_portal",
    "install_portal_factory",
    "has_portal",
    "close_private_loop",
]

T = TypeVar("T")
if sys.version_info >= (3, 10) or TYPE_CHECKING:
    P = ParamSpec("P")
else:  # pragma: no cover - 3.9: annotations are strings, P is never evaluated
    P = TypeVar("P")

_CO_ITERABLE_COROUTINE = inspect.CO_ITERABLE_COROUTINE

#: Largest number of parked worker greenlets kept per thread and recursion depth.
POOL_SIZE = 64
#: Largest number of recursion depths that keep a pool of workers, per thread.
MAX_DEPTHS = 8


class _Finished:
    """Sentinel a worker switches to its driver with when its call ended."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<greenbridge finished>"


_FINISHED: Any = _Finished()  # the call returned (its value is in worker.value)
_FAILED: Any = _Finished()  # the call raised (the exception is in worker.value)
# The worker parked itself in the hub (see park()): the driver makes its task
# wait on a future, and whoever wakes the worker resumes it (see wake()).
_PARK: Any = _Finished()
# Handed to a parked driver: "switch into the worker with the value in payload".
_RESUME: Any = _Finished()


class _Worker(BridgeGreenlet):
    """A pooled greenlet that runs one sync call at a time.

    ``parent`` is always the driver of the current call: it is set by
    `_launch` and `_Pending` before every switch into the worker, so the
    worker finds its driver explicitly and never by walking an unknown
    parent chain.
    """

    __slots__ = ("value", "free", "drv", "home", "pending", "inherited")

    def __init__(self, home: _Bucket) -> None:
        super().__init__(_worker_main)
        # The pool it parks in: the one for the recursion depth it was created at.
        self.home = home
        # The outcome of the current call, taken (and cleared) by the driver.
        self.value: Any = None
        # Idle steppers (see _stepper), each with the box it reports into.
        self.free: list[tuple[types.GeneratorType[Any, Any, None], list[Any]]] = []
        # While parked (see park()): the _Pending whose task waits for it.
        self.drv: _Pending | None = None
        # While its call is suspended: a weak reference to the _Pending driving
        # it (weak: the worker's frames are invisible to the cycle collector, so
        # a strong one would keep the task alive; see _unwind_dead_loops).
        self.pending: weakref.ref[_Pending] | None = None
        # During a call made from an ``except`` block: the caller's exception,
        # handled here too (see _call_handling), but not by the sync code itself.
        self.inherited: BaseException | None = None


_RETURNED: Any = object()
_RAISED: Any = object()


@types.coroutine
def _stepper(box: list[Any]) -> Generator[Any, Any, None]:
    """Step awaitables for `await_`, without ever raising StopIteration.

    ``send(awaitable)`` starts one; every trap it yields comes out of the
    ``send``/``throw`` call, and what the caller sends or throws goes back
    in.  When it ends, the result (or exception) is put in ``box[0]`` and
    ``_RETURNED`` (or ``_RAISED``) is yielded.  ``yield from`` collects the
    return value in C; catching StopIteration in Python, across greenlet
    switches, costs several times more.  A stepper lives as long as its
    worker and is reused for each call.
    """
    awaitable = yield
    while True:
        try:
            box[0] = yield from awaitable
            end = _RETURNED
        except BaseException as exc:  # noqa: BLE001 - handed to await_
            # Leave this generator's frame out of the traceback: code that clears
            # a traceback's frames (unittest's assertRaises does) would otherwise
            # close this stepper, which is reused by the next await_.
            tb = exc.__traceback__
            box[0] = exc if tb is None else exc.with_traceback(tb.tb_next)
            del exc, tb
            end = _RAISED
        # Park outside the except block: a generator suspended inside one
        # would keep the exception (and every frame of its traceback) alive.
        awaitable = None
        awaitable = yield end


def _new_stepper(box: list[Any]) -> types.GeneratorType[Any, Any, None]:
    stepper = cast("types.GeneratorType[Any, Any, None]", _stepper(box))
    stepper.send(None)
    return stepper


# ---------------------------------------------------------------------------
# recursion depth
#
# greenlet saves the interpreter's recursion counter when a greenlet switches
# out and restores it when it switches back in, so every greenlet has its own
# depth, fixed by where it was created: a worker created 750 frames deep
# keeps running its calls 750 frames deep, whoever calls it later.  A plain
# call runs at its caller's depth plus one.  So the pool is keyed by the
# caller's depth: a call reuses only a worker that was created at the very
# depth it is called from, and gets the same recursion headroom as a fresh
# worker (its caller's plus the three frames of the bridge).  (Padding a
# worker created shallow up to the caller's depth would cost frames on every
# call; resetting the counter would mean writing into the thread state.)
#
# Python has no API for the current depth, and walking frames costs O(depth)
# on every call.  The counter lives in the thread state (3.9/3.10:
# ``recursion_depth``; 3.11: ``recursion_remaining``; 3.12+:
# ``py_recursion_remaining``), so we find its offset once by looking at what
# changes by exactly k when we nest k Python calls, and read it through a
# ctypes cell (one C int read, ~30-80 ns).  If it cannot be found exactly, all
# workers share one pool, as before.


def _thread_state_address() -> int | None:
    try:
        import ctypes

        get = ctypes.PYFUNCTYPE(ctypes.c_void_p)(("PyThreadState_Get", ctypes.pythonapi))
    except (ImportError, AttributeError, OSError):  # pragma: no cover - not CPython
        return None
    return cast("int | None", get())


def _ints_at(address: int, count: int) -> list[int]:
    import ctypes

    return list((ctypes.c_int * count).from_address(address))


def _nested(k: int, read: Callable[[], list[int]]) -> list[int]:
    if k:
        return _nested(k - 1, read)
    return read()


def _find_depth_offset() -> int | None:
    """The offset of the recursion counter in a PyThreadState, or None."""
    address = _thread_state_address()
    if address is None:  # pragma: no cover - not CPython
        return None
    count = 64  # 256 bytes: every PyThreadState from 3.9 on is larger

    def read() -> list[int]:
        return _ints_at(address, count)

    base = _nested(0, read)
    up = set(range(count))  # a depth: one more per nested call
    down = set(up)  # a remaining headroom: one less per nested call
    for k in (3, 7, 12):
        now = _nested(k, read)
        up &= {i for i in range(count) if now[i] - base[i] == k}
        down &= {i for i in range(count) if base[i] - now[i] == k}
    found = up | down
    if len(found) != 1:  # pragma: no cover - an interpreter we do not know
        return None
    return 4 * found.pop()


class _Pools(dict[int, "_Bucket"]):
    """A thread's parked workers, by the recursion counter they were created at.

    ``depth[0]`` reads this thread's counter (a one-int view of the thread
    state), or is always 0 when it could not be located.
    """

    __slots__ = ("depth",)

    def __init__(self, depth: Any) -> None:
        super().__init__()
        self.depth = depth

    def __missing__(self, depth: int) -> _Bucket:
        """A new pool for ``depth`` (evicting the oldest one beyond `MAX_DEPTHS`)."""
        if len(self) >= MAX_DEPTHS:
            # End the parked workers of the depth that got its pool first.
            evicted = self.pop(next(iter(self)))
            evicted.live = False
            here = getcurrent()
            while evicted:
                worker = evicted.pop()
                worker.parent = here
                worker.throw(GreenletExit)
        pool = self[depth] = _Bucket()
        return pool


class _Bucket(list):  # type: ignore[type-arg]  # of _Worker
    """The parked workers that were created at one recursion depth.

    ``live`` turns false when the bucket is evicted (more than `MAX_DEPTHS`
    depths in use): a worker of it that finishes then ends instead of parking.
    """

    __slots__ = ("live",)

    def __init__(self) -> None:
        super().__init__()
        self.live = True


_DEPTH_OFFSET: int | None = None
_depth_probed = False


class _ThreadState(threading.local):
    def __init__(self) -> None:
        global _DEPTH_OFFSET, _depth_probed
        # Every live worker of this thread (see _unwind_dead_loops).
        self.workers: weakref.WeakSet[_Worker] | None = None
        if not _depth_probed:
            try:
                _DEPTH_OFFSET = _find_depth_offset()
                _depth_probed = True
            except RecursionError:  # first used at the very limit: this thread goes without
                pass
        address = _thread_state_address() if _DEPTH_OFFSET is not None else None
        if address is None or _DEPTH_OFFSET is None:
            depth: Any = (0,)
        else:
            import ctypes

            # This thread's counter (a memoryview indexes faster than c_int.value).
            cell = (ctypes.c_int * 1).from_address(address + _DEPTH_OFFSET)
            depth = memoryview(cell).cast("B").cast("i")
        self.pools = _Pools(depth)
        self.private_loop: asyncio.AbstractEventLoop | None = None
        self.holder: object = None


_state = _ThreadState()


def _worker_main() -> Any:
    """Body of every worker greenlet: wait for a call, run it, report, park, repeat.

    The outcome is left in ``me.value`` and announced by switching to the
    driver with ``_FINISHED`` or ``_FAILED``; the driver takes it and clears
    it, so a parked worker's frame holds no reference to the last call.

    A worker is started with no arguments and waits for its first call like
    for any other: greenlet holds the arguments of a greenlet's first switch
    (they are ``run``'s arguments) until the greenlet ends, which would keep
    the first call's arguments alive for the worker's whole life.
    """
    me = cast(_Worker, getcurrent())
    pool = me.home  # a greenlet never leaves its thread, nor does its pool
    fn, args, kwargs = me.parent.switch()  # type: ignore[union-attr]
    while True:
        try:
            # A plain call with positional arguments runs in this C-level eval
            # loop; fn(*args, **kwargs) would nest another one, which every
            # switch of a suspended call then copies and which stays in
            # memory while it waits.
            if kwargs:
                me.value = fn(*args, **kwargs)
            elif not args:
                me.value = fn()
            elif len(args) == 1:
                me.value = fn(args[0])
            elif len(args) == 2:
                me.value = fn(args[0], args[1])
            else:
                me.value = fn(*args)
            end = _FINISHED
        except GreenletExit:
            # greenlet is killing this worker (it was garbage collected while
            # suspended): let it die instead of parking it again.
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the driver
            me.value = exc if not isinstance(exc, StopIteration) else _raised_stop(exc)
            end = _FAILED
            del exc
        # Drop every reference to the finished call before parking.
        fn = args = kwargs = None
        me.pending = None
        if len(pool) >= POOL_SIZE or not pool.live:
            # Pool full or evicted: end this greenlet; its return value reaches the driver.
            return end
        pool.append(me)
        fn, args, kwargs = me.parent.switch(end)  # type: ignore[union-attr]


# The exception being handled where the call is made (None when none is).
# sys.exc_info() builds a tuple; 3.11+ has the cheaper sys.exception().
_handled: Callable[[], BaseException | None] = getattr(sys, "exception", lambda: sys.exc_info()[1])


_NO_KWARGS: dict[str, Any] = {}


def _raised_stop(exc: StopIteration) -> RuntimeError:
    """What a coroutine raises when its body raises StopIteration (PEP 479).

    The driver is a generator: raising the StopIteration there would give
    "generator raised StopIteration" instead.
    """
    error = RuntimeError("coroutine raised StopIteration")
    error.__cause__ = error.__context__ = exc
    return error


def _call_handling(
    handled: BaseException, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call ``fn`` while ``handled`` is the exception being handled, as in its caller.

    A greenlet has its own exception state, so a worker starts with none:
    ``sys.exc_info()``, a bare ``raise`` and ``traceback.format_exc()`` in
    the sync code would not see the exception its caller handles (a plain
    call and a coroutine do).  Raising it here puts it back; its traceback is
    restored at once, so the exception is left as it was.  (On 3.9/3.10 the
    handled traceback is stored apart from the exception, and
    ``sys.exc_info()[2]`` keeps one entry more: this frame.)
    """
    tb = handled.__traceback__
    me = cast(_Worker, getcurrent())
    try:
        raise handled
    except BaseException:
        with_us = handled.__traceback__  # 3.9/3.10: what sys.exc_info()[2] holds
        handled.__traceback__ = tb
        me.inherited = handled
        try:
            result = fn(*args, **kwargs)
        finally:
            me.inherited = None
        if handled.__traceback__ is with_us:  # 3.9/3.10: a bare raise caught in fn
            handled.__traceback__ = tb
        return result


def _new_worker(pool: _Bucket) -> _Worker:
    """A worker that parks in ``pool``."""
    worker = _Worker(pool)
    workers = _state.workers
    if workers is None:
        workers = _state.workers = weakref.WeakSet()
        _watch_dead_loops()
    workers.add(worker)
    return worker


def _parked_workers() -> list[_Worker]:
    """Every worker parked in this thread's pools (for tests)."""
    return [worker for pool in _state.pools.values() for worker in pool]


def _launch(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context: contextvars.Context | None,
) -> Any:
    """Start ``fn(*args, **kwargs)`` in a worker; run it until it ends or yields a trap.

    Returns the call's result, raises its exception, or returns a
    `_Pending` to be awaited when the call yielded a trap.  A call
    that never suspends thus costs no generator and no trap handling.
    """
    pools = _state.pools
    pool = pools[pools.depth[0]]
    if pool:
        worker = pool.pop()
    else:
        worker = _new_worker(pool)
        worker.switch()  # start it here, at the caller's depth: it waits for a call
    here = getcurrent()
    if worker.parent is not here:
        worker.parent = here
    # Share the caller's Context (not a copy): a ContextVar set by the sync
    # code is seen by the awaiting coroutine, as for a plain function call.
    worker.gr_context = here.gr_context if context is None else context
    handled = _handled()
    if handled is None:
        msg = worker.switch(fn, args, kwargs)
    else:
        msg = worker.switch(_call_handling, (handled, fn, args, kwargs), _NO_KWARGS)
        del handled
    if msg is _FINISHED:
        worker.gr_context = None
        value = worker.value
        worker.value = None
        return value
    return _Pending(worker, msg)


def _outcome(worker: _Worker, msg: Any) -> Any:
    """If ``msg`` says the worker's call ended, its result; else ``_Pending``."""
    if msg is _FINISHED:
        worker.gr_context = None
        value = worker.value
        worker.value = None
        return value
    if msg is _FAILED:
        worker.gr_context = None
        exc = worker.value
        worker.value = None
        try:
            raise exc
        finally:
            del exc
    return _Pending


class _Pending:
    """A call that yielded a trap: awaiting this drives it to its end.

    While the worker is parked (see `park`), the task waits on ``fut`` and
    ``msg`` is ``_PARK``; `wake` hands over what happened next by setting
    ``msg`` (and ``payload``) before it completes ``fut``.
    """

    __slots__ = ("worker", "msg", "payload", "fut", "task", "trap", "loop", "ref", "__weakref__")

    def __init__(self, worker: _Worker, msg: Any) -> None:
        self.worker = worker
        # The asyncio loop the call runs on (None under trio).
        self.loop = _running_asyncio_loop()
        self.ref = weakref.ref(self)
        if msg is not _FAILED:  # (else the call ended: the worker is parked already)
            worker.pending = self.ref
        self.msg = msg
        self.payload: Any = None
        self.fut: asyncio.Future[None] | None = None
        self.task: asyncio.Task[Any] | None = None
        # While the task waits on ``fut``, what the worker awaits in its place:
        # a Future (resumed by its done callback) or, for a bare yield, the
        # Handle that resumes it at the next turn of the loop.
        self.trap: Any = None

    def __await__(self) -> Generator[Any, Any, Any]:
        worker = self.worker
        msg = self.msg
        self.msg = None
        result = _outcome(worker, msg)  # the first step may have failed
        if result is not _Pending:
            return result
        switch = worker.switch
        while True:
            if msg is _PARK:
                msg = yield from self._parked(worker)
                if msg is _Pending:  # the call ended while the worker ran in a callback
                    return self._take_payload()
            else:
                try:
                    sent = yield msg
                except GeneratorExit:
                    if worker.pending is self.ref:  # (else unwound already: its loop closed)
                        yield from _stubborn(worker, _unwind(worker))
                    raise
                except BaseException as exc:  # noqa: BLE001 - forwarded to the sync code
                    here = getcurrent()
                    if worker.parent is not here:
                        worker.parent = here
                    # The three-argument form keeps the exception's traceback
                    # (greenlet's throw(exc) would start a fresh one).
                    msg = worker.throw(type(exc), exc, exc.__traceback__)
                    del exc
                else:
                    # Normally the same greenlet resumes us every time; it differs
                    # when, e.g., an eager task's first step ran in another greenlet.
                    here = getcurrent()
                    if worker.parent is not here:
                        worker.parent = here
                    msg = switch(sent)
            if msg is _FINISHED or msg is _FAILED:
                return _outcome(worker, msg)

    def _parked(self, worker: _Worker) -> Generator[Any, Any, Any]:
        """Wait while the worker is parked; return its next message.

        Returns ``_Pending`` when the call ended while the worker ran in a
        loop callback (its outcome is then in ``payload``).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.fut = fut
        self.task = _current_task(loop)
        self.msg = _PARK
        worker.drv = self
        fut._asyncio_future_blocking = True  # what Future.__await__ sets for the Task
        try:
            yield fut
        except GeneratorExit:
            handoff = self._release(worker)
            if _ended(handoff):
                self.payload = None
            elif worker.pending is self.ref:  # still suspended in the sync code
                yield from _stubborn(worker, _unwind(worker))
            raise
        except BaseException as exc:  # noqa: BLE001 - forwarded to the sync code
            task = self.task
            cancelled = isinstance(exc, asyncio.CancelledError)
            # The message of task.cancel(msg), which a Task passes on to the future.
            why = exc.args[0] if cancelled and exc.args else None
            handoff = self._release(worker, cancelled, why)
            if _ended(handoff):
                if (
                    cancelled
                    and not fut.cancelled()
                    and task is not None
                ):
                    # The call ended in a loop callback, and its task was cancelled
                    # after that, before it took the outcome.  A native task would
                    # have run on at once: it takes the outcome (result or error),
                    # and the cancellation reaches it where it waits next, if it
                    # does.  (Cancelled while the call ran, fut is cancelled: the
                    # cancellation wins, below, as for a coroutine that cancels
                    # its own task and returns.)
                    loop.call_soon(_cancel_again, task, exc.args)
                    self.msg = handoff
                    return _Pending
                # The call ended in a callback before this reached it.  An error
                # wins over the exception thrown here (as in a Task's step).
                if handoff is _FAILED:
                    self.msg = handoff
                    return _Pending
                self.payload = None
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
        handoff = self._release(worker)
        if handoff is _RESUME:
            value = self.payload
            self.payload = None
            here = getcurrent()
            if worker.parent is not here:
                worker.parent = here
            return worker.switch(value)
        if _ended(handoff):
            self.msg = handoff
            return _Pending
        return handoff  # a trap for the task (_PARK cannot be: fut is done)

    def _release(self, worker: _Worker, cancel: bool = False, why: Any = None) -> Any:
        if worker.drv is self:
            worker.drv = None
        # (Else the call ended in a callback: the worker went back to the pool
        # and may be parked for another call already.)
        trap = self.trap
        if trap is not None:  # the worker waits on it: it is resumed another way now
            self.trap = None
            if isinstance(trap, asyncio.Future):
                trap.remove_done_callback(self._trap_done)
                if cancel:  # as a Task cancels the future it waits on
                    trap.cancel(why)
            else:
                trap.cancel()
        self.fut = None
        self.task = None
        handoff = self.msg
        self.msg = None
        return handoff

    def _trap_done(self, fut: asyncio.Future[Any]) -> None:
        if self.trap is fut:
            self.trap = None
            wake(self.worker, None)

    def _yielded(self) -> None:
        self.trap = None
        wake(self.worker, None)

    def _take_payload(self) -> Any:
        """The outcome of a call that ended in a callback (see `_parked`)."""
        payload = self.payload
        self.payload = None
        ended, self.msg = self.msg, None
        if ended is _FINISHED:
            return payload
        try:
            raise payload
        finally:
            del payload


def _ended(msg: Any) -> bool:
    return msg is _FINISHED or msg is _FAILED


def _cancel_again(task: asyncio.Task[Any], args: tuple[Any, ...]) -> None:
    """Cancel ``task`` again, where it waits now (see `_Pending._parked`).

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

    Only for the hub, in a `_Worker` under a running asyncio loop, after
    arranging for a loop callback (a reader, a timer) to call `wake`.  An
    exception thrown into the task (a cancellation) is raised here.
    """
    handled = _handled()
    try:
        return getcurrent().parent.switch(_PARK)  # type: ignore[union-attr]
    except BaseException as exc:
        if handled is not None:
            _chain(exc, handled)
        raise


def _chain(exc: BaseException, handled: BaseException) -> None:
    """Give ``exc``, thrown into a worker, the ``__context__`` a raise there gives it.

    greenlet's throw raises the exception in the worker without chaining it to
    the exception being handled there (a coroutine's throw() and a raise do),
    so a cancellation arriving in an ``except`` block lost its context.
    """
    if exc is handled or handled is getattr(getcurrent(), "inherited", None):
        # Natively, an exception thrown into a coroutine is chained only to the
        # exceptions that coroutine handles itself, not to its caller's.
        return
    # As the interpreter does: cut exc out of handled's context chain first.
    link = handled
    while (above := link.__context__) is not None:
        if above is exc:
            link.__context__ = None
            break
        link = above
    exc.__context__ = handled


def wake(worker: _Worker, value: Any) -> None:
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
            if msg is _PARK:
                return
            # Await a Future or take a turn of the loop without the task: resumed
            # from the Future's done callback or the next turn, as the task would be.
            if msg is None:
                drv.trap = loop.call_soon(drv._yielded)
                return
            if isinstance(msg, _Future) and msg._asyncio_future_blocking and msg.get_loop() is loop:
                msg._asyncio_future_blocking = False
                drv.trap = msg
                msg.add_done_callback(drv._trap_done)
                return
            worker.drv = None
            if msg is _FINISHED or msg is _FAILED:
                # The worker is back in the pool: take its outcome now.
                drv.payload = worker.value
                worker.value = None
                worker.gr_context = None
            drv.msg = msg
            if not fut.done():  # the sync code may have cancelled its own task
                fut.set_result(None)
            return
    worker.drv = None
    drv.msg = _RESUME
    drv.payload = value
    fut.set_result(None)


_running_asyncio_loop = asyncio.events._get_running_loop


def _watch_dead_loops() -> None:
    global _watching
    if not _watching:
        _watching = True
        gc.callbacks.append(_unwind_dead_loops)


_watching = False


def _unwind_dead_loops(phase: str, info: dict[str, int]) -> None:
    """Before a full collection, unwind the calls suspended on a closed loop.

    A task whose loop was closed while it was pending can never run again.
    Natively it is garbage: the collector destroys it ("Task was destroyed but
    it is pending!") and closes its coroutine, whose ``finally`` blocks run.
    Bridged, the sync code's frames (which the collector cannot see into: they
    live in a suspended greenlet) hold what the task waits on, so the task
    stays reachable forever.  So we do here what closing the coroutine would
    do: raise ``GeneratorExit`` at the sync code's `await_`.  Its frames are
    then gone, and this very collection finds the task, logs it and closes
    its coroutine, as natively.  (Only workers of the collecting thread can
    be switched into; the others are unwound when their thread collects.)
    """
    if phase != "start" or info.get("generation") != 2 or sys.is_finalizing():
        return
    workers = _state.workers
    if not workers:
        return
    running = set()  # the current greenlet and those it runs on top of
    try:
        current: Any = getcurrent()
    except RuntimeError:  # greenlet is being finalized (interpreter exit)
        return
    while current is not None:
        running.add(current)
        current = current.parent
    for worker in list(workers):
        if worker in running:
            continue
        ref = worker.pending
        drv = None if ref is None else ref()
        if drv is None or worker.dead or worker in worker.home:
            continue
        loop = drv.loop
        if loop is None or not loop.is_closed():
            continue
        worker.pending = None
        if drv.msg is _PARK:
            handoff = drv._release(worker)
            if _ended(handoff):
                continue
        try:
            if _unwind(worker) is not None:
                raise RuntimeError("sync code ignored GeneratorExit and awaited again")
        except BaseException as exc:  # noqa: BLE001 - as for an error in a finalizer
            # Reported like an exception in a coroutine's finalizer; go on with the others.
            hook = sys.unraisablehook
            hook(_Unraisable(exc, drv))  # type: ignore[arg-type]
            del exc


class _Unraisable:
    """What sys.unraisablehook receives for an error while unwinding a dead call."""

    __slots__ = ("exc_type", "exc_value", "exc_traceback", "err_msg", "object")

    def __init__(self, exc: BaseException, obj: object) -> None:
        self.exc_type = type(exc)
        self.exc_value = exc
        self.exc_traceback = exc.__traceback__
        self.err_msg = "Exception ignored while unwinding sync code of a task on a closed loop"
        self.object = obj


def _unwind(worker: _Worker) -> Any:
    """The driving coroutine was closed early: unwind the sync code.

    ``GeneratorExit`` is raised at the sync code's pending `await_`, so
    its ``finally`` blocks and context managers run, and the awaitable it
    was waiting on is closed too.  Returns None, or the trap the sync code
    yielded when it ignored ``GeneratorExit`` and awaited again: it is still
    suspended then, as a coroutine that ignores ``close()`` is.
    """
    try:
        worker.parent = getcurrent()
        msg = worker.throw(GeneratorExit)
    except greenlet.error:  # closed from another thread (e.g. by the GC)
        return None
    if msg is not _FINISHED and msg is not _FAILED:
        return msg
    error = worker.value
    worker.value = None
    worker.gr_context = None
    if msg is _FAILED and not isinstance(error, GeneratorExit):
        # An error raised while unwinding (in a finally block) comes out of the
        # close, as from a coroutine's close().
        try:
            raise error
        finally:
            del error
    return None


def _stubborn(worker: _Worker, msg: Any) -> Generator[Any, Any, None]:
    """Sync code that ignored ``GeneratorExit`` awaits ``msg``: stay suspended on it.

    Yielding while being closed makes ``close()`` raise "ignored GeneratorExit",
    as for a native coroutine that awaits in its ``except GeneratorExit``.
    The coroutine that awaits us then lets go of this generator, whose
    finalizer closes it again: ``GeneratorExit`` is raised in the sync code a
    second time, at once (natively: when the coroutine is collected), so no
    suspended worker is left behind.
    """
    while msg is not None:
        try:
            yield msg
        except GeneratorExit:
            msg = _unwind(worker)
        else:  # pragma: no cover - nobody can resume a coroutine after close()
            raise RuntimeError("cannot resume sync code that ignored GeneratorExit")


# ---------------------------------------------------------------------------
# async_

_CoroutineType = types.CoroutineType
_CO_ASYNC = inspect.CO_COROUTINE | _CO_ITERABLE_COROUTINE
_FunctionType = types.FunctionType
@overload
def async_(
    fn: Callable[P, T], *, with_context: bool = True
) -> Callable[P, Coroutine[Any, Any, T]]: ...


@overload
def async_(
    fn: None = None, *, with_context: bool = True
) -> Callable[[Callable[P, T]], Callable[P, Coroutine[Any, Any, T]]]: ...


def async_(fn: Callable[P, T] | None = None, *, with_context: bool = True) -> Any:
    """Turn a sync function into a coroutine function that runs it in a greenlet.

    Use it as a call (``await async_(fn)(*args)``) or a decorator (``@async_`` or
    ``@async_()``).  The result is a real coroutine function with ``fn``'s
    name, docstring and signature.  Inside ``fn`` (and anything it calls),
    `await_` suspends only this call, never the event loop.

    Args:
        fn: the sync function.
        with_context: if true (the default), ``fn`` runs in its caller's
            `contextvars.Context` itself, so values it sets are seen by
            the caller afterwards, as with a plain call.  If false, it runs in
            a copy taken when the coroutine starts.

    Raises:
        TypeError: ``fn`` is not callable, or is async (a coroutine function,
            a ``functools.partial`` of one, an object with an ``async def
            __call__``).  Awaiting the coroutine function raises TypeError
            (and closes the coroutine) if ``fn`` returns a coroutine.
    """
    if fn is None:

        def decorate(f: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
            return async_(f, with_context=with_context)

        return decorate
    if not callable(fn):
        raise _not_callable("async_", fn, "await it directly")
    if _is_async_callable(fn):
        kind = (
            "a coroutine function"
            if inspect.iscoroutinefunction(fn)
            else "async (calling it returns a coroutine)"
        )
        raise TypeError(
            f"async_() expects a sync function, but {_name(fn)} is already {kind}: "
            "await it directly"
        )

    if with_context:

        @functools.wraps(fn)
        async def run_shared(*args: P.args, **kwargs: P.kwargs) -> T:
            result = _launch(fn, args, kwargs, None)
            if type(result) is _Pending:
                result = await result
            if type(result) is _CoroutineType:
                _returned_coroutine("async_", fn, result)
            return cast(T, result)

        return run_shared

    @functools.wraps(fn)
    async def run_copied(*args: P.args, **kwargs: P.kwargs) -> T:
        context = contextvars.copy_context()
        result = _launch(fn, args, kwargs, context)
        if type(result) is _Pending:
            result = await result
        if type(result) is _CoroutineType:
            _returned_coroutine("async_", fn, result)
        return cast(T, result)

    return run_copied


def _not_callable(where: str, obj: object, coroutine_fix: str) -> TypeError:
    """The error for ``where(obj)`` with a non-callable; a coroutine is closed first."""
    if inspect.iscoroutine(obj):
        obj.close()  # no "never awaited" warning on top of this error
        return TypeError(
            f"{where}() expects a sync callable, got the coroutine {obj.__qualname__}(): "
            f"{coroutine_fix}"
        )
    return TypeError(f"{where}() expects a sync callable, got {type(obj).__name__!r}")


def _name(fn: object) -> str:
    """How error messages name the callable ``fn``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str) and name:
        return name
    if callable(fn) and not isinstance(fn, type):
        name = getattr(type(fn), "__qualname__", None)
        if isinstance(name, str) and name:
            return f"the {name} object"
    return repr(fn)


def _is_async_callable(fn: object) -> bool:
    """True if calling ``fn`` makes a coroutine, as far as can be told without calling it.

    Coroutine functions and methods, ``functools.partial`` objects of them,
    objects whose class has an ``async def __call__``, and generator-based
    coroutine functions (``@types.coroutine``).
    """
    if type(fn) is _FunctionType:  # the usual case, kept cheap for spawn()
        if fn.__code__.co_flags & _CO_ASYNC:
            return True
        # inspect.markcoroutinefunction() (3.12+) leaves a mark in __dict__.
        return bool(fn.__dict__) and inspect.iscoroutinefunction(fn)
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn) or _is_generator_coroutine_function(fn):
        return True
    if isinstance(fn, type):  # calling a class makes an instance
        return False
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the method, not callable()
    return call is not None and (
        inspect.iscoroutinefunction(call) or _is_generator_coroutine_function(call)
    )


def _is_generator_coroutine_function(fn: object) -> bool:
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    return (
        isinstance(code, types.CodeType)
        and bool(code.co_flags & inspect.CO_GENERATOR)
        and bool(code.co_flags & _CO_ITERABLE_COROUTINE)
    )


def _returned_coroutine(where: str, fn: object, coro: types.CoroutineType[Any, Any, Any]) -> None:
    """``fn`` run by async_/spawn returned a coroutine: close it and say what to do."""
    name = _name(fn)
    coro.close()  # never started: closing it runs nothing, and no "never awaited" warning
    raise TypeError(
        f"{where}() expects a sync function, but {name} returned a coroutine "
        f"({coro.__qualname__}); it is async: await it directly (or "
        f"asyncio.create_task() it) instead of passing it to {where}()"
    )


# ---------------------------------------------------------------------------
# spawn


async def _call(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    result = _launch(fn, args, kwargs, None)
    if type(result) is _Pending:
        result = await result
    return cast(T, result)


async def _spawned(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    """A spawn() task's coroutine (renamed after ``fn`` by `spawn`)."""
    result = _launch(fn, args, kwargs, None)
    if type(result) is _Pending:
        result = await result
    if type(result) is _CoroutineType:
        _returned_coroutine("spawn", fn, result)
    return cast(T, result)


def spawn(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Task[T]:
    """Start ``fn(*args, **kwargs)`` as a concurrent asyncio Task and return it.

    ``fn`` runs in a greenlet, in the task's own Context (a copy of the
    caller's, as for `asyncio.create_task`), and may call
    `await_`.  Works from coroutines and from bridged sync code alike.

    The task's coroutine carries ``fn``'s name, so the task's repr and
    asyncio's "Task exception was never retrieved" log name ``fn``; the task
    gets the default name (``Task-N``), as with `asyncio.create_task`.

    Raises:
        TypeError: ``fn`` is not a sync callable (see `async_`).
        RuntimeError: no asyncio event loop is running in this thread.
    """
    if not callable(fn):
        raise _not_callable("spawn", fn, "for a coroutine use asyncio.create_task()")
    if _is_async_callable(fn):
        raise TypeError(
            f"spawn() expects a sync callable, but {_name(fn)} is async: "
            "use asyncio.create_task() on the coroutine it returns"
        )
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "spawn() needs a running asyncio event loop in this thread; "
            "call it from async code or from sync code run by async_()/spawn() "
            "(under trio, use nursery.start_soon(async_(fn), ...))"
        ) from None
    coro: Any = _spawned(fn, args, kwargs)
    # Name the coroutine after fn, so the task's repr and asyncio's "exception
    # was never retrieved" log show the user's function (as create_task(af())
    # would show af), not greenbridge's wrapper.
    try:
        coro.__qualname__ = fn.__qualname__
        coro.__name__ = fn.__name__
    except (AttributeError, TypeError):  # a partial, a callable object...
        coro.__name__ = coro.__qualname__ = _name(fn)
    return loop.create_task(coro)


# ---------------------------------------------------------------------------
# await_


@overload
def await_(awaitable: Callable[P, Awaitable[T]]) -> Callable[P, T]: ...


@overload
def await_(awaitable: Awaitable[T]) -> T: ...


def await_(awaitable: Any) -> Any:
    """Wait for an awaitable from sync code and return its result.

    Accepts coroutines, Futures, Tasks and any object with ``__await__``;
    raises the awaitable's exception with its traceback.  Where it may run:

    * in sync code started by `async_` or `spawn`, or called
      from a task that has a portal (`ensure_portal`,
      `install_portal_factory`): only this call is suspended, the
      event loop keeps running;
    * in a thread with no running event loop: the awaitable runs to the end
      on this thread's private loop (see `close_private_loop`), in the
      caller's Context, as `asyncio.run` runs its main task: Ctrl-C
      cancels it (its ``finally`` blocks see CancelledError) and then raises
      KeyboardInterrupt here; when KeyboardInterrupt, SystemExit or another
      BaseException (not CancelledError) leaves this call, every task still
      pending on the private loop is cancelled and run to its end (the loop
      stays open);
    * anywhere else `MissingBridge` is raised (and a coroutine passed
      in is closed, so no "never awaited" warning follows).

    Given an async function instead of an awaitable (a coroutine function,
    a ``functools.partial`` of one, or an object with an ``async def
    __call__``), ``await_`` acts as a decorator and returns a sync function
    with the same signature.  Any other callable, even one that returns an
    awaitable, raises TypeError: pass the awaitable itself.
    """
    current = getcurrent()
    if type(current) is _Worker:
        cls = type(awaitable)
        if cls is types.CoroutineType:
            if awaitable.cr_await is not None:
                # What `await` checks first (GET_AWAITABLE): another task is
                # suspended in this coroutine; stepping it would steal its wake-ups.
                raise RuntimeError("coroutine is being awaited already")
            return _step(awaitable, current)
        if isinstance(awaitable, asyncio.Future):
            # What Future.__await__ does, without a stepper: yield it (as a
            # trap) unless it is done, then take its result.
            if not awaitable.done():
                awaitable._asyncio_future_blocking = True
                handled = _handled()
                try:
                    current.parent.switch(awaitable)  # type: ignore[union-attr]
                except BaseException as exc:
                    if handled is not None:
                        _chain(exc, handled)
                    raise
                if not awaitable.done():
                    raise RuntimeError("await wasn't used with future")
            return awaitable.result()
        it = _iterator(awaitable)
        if it is None:
            return _not_awaitable(awaitable)
        return _step(it, current)
    if not inspect.isawaitable(awaitable):
        return _not_awaitable(awaitable)
    if getattr(current, "__sqlalchemy_greenlet_provider__", False):
        # Inside SQLAlchemy's greenlet_spawn(): hand the awaitable to its driver.
        return current.parent.switch(awaitable)  # type: ignore[union-attr]
    return _await_outside(awaitable)


def _new_pair() -> tuple[types.GeneratorType[Any, Any, None], list[Any]]:
    box: list[Any] = [None]
    return _new_stepper(box), box


def _iterator(awaitable: Any) -> Any:
    """What ``await awaitable`` would iterate over (None: not awaitable)."""
    cls = type(awaitable)
    if cls is types.GeneratorType and awaitable.gi_code.co_flags & _CO_ITERABLE_COROUTINE:
        return awaitable
    try:
        await_method = cls.__await__
    except AttributeError:
        return None
    it = await_method(awaitable)
    if not hasattr(it, "__next__"):
        raise TypeError(f"__await__() returned non-iterator of type {type(it).__name__!r}")
    return it


def _not_awaitable(obj: Any) -> Any:
    """await_() of something that is not awaitable: the decorator form, or a TypeError."""
    if _is_async_callable(obj):
        return _sync_wrapper(obj)
    if inspect.isasyncgenfunction(obj):
        raise TypeError(
            f"await_() expects an awaitable, or an async function to turn into a sync one, "
            f"but {_name(obj)} is an async generator function: iterate what it returns "
            "with greenbridge.sync_iter()"
        )
    if callable(obj):
        name = _name(obj)
        raise TypeError(
            f"await_() expects an awaitable, or an async function to turn into a sync "
            f"one (the decorator form), but {name} is a sync callable: call it directly; "
            f"if it returns an awaitable, pass that to await_(): await_({name}(...))"
        )
    raise TypeError(f"object {type(obj).__name__} can't be used in 'await' expression")


def _step(it: Any, worker: _Worker) -> Any:
    """Step ``it`` in this greenlet; switch to the driver only to pass a trap on."""
    # Take an idle stepper (and its result box) off the worker's free list for
    # the whole call.  A stepper in use is never shared: nested await_ calls
    # (portals) and ones made by code that runs between our bytecodes in this
    # greenlet (a finalizer, a signal handler) each get their own.
    free = worker.free
    if free:
        pair = free.pop()
        if pair[0].gi_frame is None:  # closed from outside (frame.clear()): replace
            pair = _new_pair()
    else:
        pair = _new_pair()
    stepper, box = pair
    msg = stepper.send(it)
    del it
    if msg is not _RETURNED:
        switch = worker.parent.switch  # type: ignore[union-attr]
        while msg is not _RETURNED:
            if msg is _RAISED:
                exc = box[0]
                box[0] = None
                free.append(pair)
                context = exc.__context__
                try:
                    raise exc
                finally:
                    # The raise chained exc to the exception handled here; when that
                    # is the caller's (see _call_handling), undo it, as natively the
                    # awaitable's exception reaches the awaiting frame unchained.
                    if exc.__context__ is not context and exc.__context__ is worker.inherited:
                        exc.__context__ = context
                    del exc, context
            try:
                sent = switch(msg)
            except BaseException as exc:  # noqa: BLE001 - thrown in by the loop
                thrown = exc
            else:
                msg = stepper.send(sent)
                continue
            # Throw outside the except block: the awaitable runs in this frame's
            # exception state, and must not see ``thrown`` as being handled
            # (sys.exc_info(), the __context__ of its next exception) once its
            # own except block is over.
            msg = stepper.throw(thrown)
            del thrown
    value = box[0]
    box[0] = None
    free.append(pair)
    return value


def _sync_wrapper(fn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return await_(fn(*args, **kwargs))

    return call


def _running_loop() -> object | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return cast(object, trio.lowlevel.current_trio_token())
        except RuntimeError:
            pass
    return None


_MISSING_MESSAGE = (
    "await_() was called from sync code that is not running under greenbridge, "
    "while an event loop is running in this thread. Fix it by calling the sync "
    "function through greenbridge: `await greenbridge.async_(fn)(...)` or "
    "`greenbridge.spawn(fn, ...)`; or give the calling task a portal with "
    "`await greenbridge.ensure_portal()` (or every task of the loop with "
    "`greenbridge.install_portal_factory()`). await_() cannot run in a loop "
    "callback."
)

# Under trio there is no spawn() and no task factory: name trio's fixes.
_MISSING_MESSAGE_TRIO = (
    "await_() was called from sync code that is not running under greenbridge, "
    "while trio is running in this thread. Fix it by calling the sync function "
    "through greenbridge: `await greenbridge.async_(fn)(...)`, or "
    "`nursery.start_soon(greenbridge.async_(fn), ...)` for a concurrent task; or "
    "give the calling task a portal with `await greenbridge.ensure_portal()`. "
    "await_() cannot run in a trio system task or outside a task."
)


def _missing_message(running: object) -> str:
    """The MissingBridge message for the loop family of ``running``."""
    if isinstance(running, asyncio.AbstractEventLoop):
        return _MISSING_MESSAGE
    return _MISSING_MESSAGE_TRIO


def _await_outside(awaitable: Any) -> Any:
    running = _running_loop()
    if running is not None:
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        raise MissingBridge(_missing_message(running))
    loop = _private_loop()
    # The awaitable runs in the caller's own Context (not a copy), as a native
    # ``await`` would: a ContextVar it sets is seen by the caller afterwards.
    # The Task is made directly (not through the loop's portal factory): its
    # coroutine starts a worker itself, so sync code the awaitable calls can
    # await_ too.
    context = getcurrent().gr_context
    if context is None:  # no Context in this thread yet: copying makes the thread's one
        contextvars.copy_context()
        context = getcurrent().gr_context
    coro: Any = _outside(awaitable, cast(contextvars.Context, context), _handled())
    if type(awaitable) is _CoroutineType:  # the task's repr names it, as asyncio.run's would
        coro.__name__ = awaitable.__name__
        coro.__qualname__ = awaitable.__qualname__
    task = asyncio.Task(coro, loop=loop)
    return _run_private(loop, task)


async def _outside(
    awaitable: Any, context: contextvars.Context, handling: BaseException | None
) -> Any:
    """The private loop's task for one `await_` call (see `_await_outside`).

    ``handling``: the exception the caller is handling, seen by the awaitable
    as by a native ``await`` in an ``except`` block.
    """
    if handling is None:
        result = _launch(_await_in_current_worker, (awaitable,), _NO_KWARGS, context)
    else:
        call = (handling, _await_in_current_worker, (awaitable,), _NO_KWARGS)
        result = _launch(_call_handling, call, _NO_KWARGS, context)
    if type(result) is _Pending:
        result = await _no_trio_traps(result)
    return result


@types.coroutine
def _no_trio_traps(pending: _Pending) -> Generator[Any, Any, Any]:
    """Drive ``pending`` for the private loop, stopping trio traps at the door.

    A trio awaitable yields trio's own traps, which asyncio cannot run ("Task
    got bad yield").  The trap is answered instead by throwing `MissingBridge`
    into the awaitable, so its ``finally`` blocks run and the error says what
    to do.
    """
    it = pending.__await__()
    value: Any = None
    exc: BaseException | None = None
    while True:
        try:
            trap = it.send(value) if exc is None else it.throw(exc)
        except StopIteration as stop:
            return stop.value
        value = exc = None
        if trap is not None and _is_trio_trap(trap):
            exc = MissingBridge(
                "await_() got a trio awaitable while no event loop runs in this thread; "
                "trio awaitables need a running trio.run(): call this code from a trio "
                "task (through greenbridge.async_, or after greenbridge.ensure_portal())"
            )
            continue
        try:
            value = yield trap
        except GeneratorExit:
            it.close()
            raise
        except BaseException as thrown:  # noqa: BLE001 - forwarded to the awaitable
            exc = thrown
            del thrown


def _is_trio_trap(trap: Any) -> bool:
    if hasattr(trap, "_asyncio_future_blocking"):
        return False
    cls = trap if isinstance(trap, type) else type(trap)
    module = getattr(cls, "__module__", None) or ""
    return module == "trio" or module.startswith("trio.")


def _run_private(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> Any:
    """Run ``task`` to its end on the private ``loop``, as `asyncio.run` runs its main task.

    Ctrl-C: as `asyncio.Runner` does (3.11+), a SIGINT handler is installed
    while the loop runs (main thread, default handler only); the first
    Ctrl-C cancels the task, so its ``finally`` blocks see CancelledError,
    and KeyboardInterrupt is raised here once it has ended; a second one
    raises KeyboardInterrupt at once.  Whenever an exception that is not an
    ``Exception`` nor CancelledError (KeyboardInterrupt, SystemExit...) leaves this call, every
    task still pending on the private loop is cancelled and run to its end,
    as `asyncio.run` does when it finishes; the loop itself stays open.  So
    is it when the loop stops before the task has ended (``loop.stop()``).
    """
    interrupts = 0

    def on_sigint(signum: int, frame: types.FrameType | None) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1 and not task.done():
            task.cancel()
            loop.call_soon_threadsafe(_nothing)  # wake the loop out of its selector
            return
        raise KeyboardInterrupt()

    handler: Any = None
    if (
        threading.current_thread() is threading.main_thread()
        and _getsignal(_SIGINT) is _default_int_handler
    ):
        handler = on_sigint
        _setsignal(_SIGINT, handler)
    try:
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupts:
                uncancel = getattr(task, "uncancel", None)  # 3.11+
                if uncancel is None or uncancel() == 0:
                    raise KeyboardInterrupt()  # noqa: B904 - chained to the CancelledError, as asyncio.Runner
            raise
        finally:
            if handler is not None and _getsignal(_SIGINT) is handler:
                _setsignal(_SIGINT, _default_int_handler)
    except (Exception, asyncio.CancelledError):
        if not task.done():  # the loop was stopped (loop.stop()) before the task ended
            _cancel_pending(loop)
        raise  # else an outcome of the awaitable: the loop's other tasks go on
    except BaseException:
        _cancel_pending(loop)
        raise


def _nothing() -> None:
    pass


# The C functions under signal.getsignal()/signal.signal(): those wrappers try
# to turn the handler they return into an enum member, which for a function
# fails through a ValueError and costs several microseconds per await_.
_c_signal: Any = importlib.import_module("_signal")
_getsignal: Callable[[int], Any] = _c_signal.getsignal
_setsignal: Callable[[int, Any], Any] = _c_signal.signal
_SIGINT = int(signal.SIGINT)
_default_int_handler = signal.default_int_handler


def _cancel_pending(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel every task pending on ``loop`` and run them to their end (as asyncio.run)."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not pending:
        return
    for t in pending:
        t.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    for t in pending:
        if t.cancelled():
            continue
        exc = t.exception()
        if exc is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during greenbridge private loop shutdown",
                    "exception": exc,
                    "task": t,
                }
            )


# ---------------------------------------------------------------------------
# the private per-thread loop


def _private_loop() -> asyncio.AbstractEventLoop:
    loop = _state.private_loop
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        install_portal_factory(loop)
        _state.private_loop = loop
        # The holder lives in this thread's local state; when the thread ends
        # (for the main thread: at interpreter exit) it dies and closes the loop.
        holder = _Holder()
        _state.holder = holder
        main = threading.current_thread() is threading.main_thread()
        weakref.finalize(holder, _close_quietly, loop, main)
    return loop


class _Holder:
    __slots__ = ("__weakref__",)


def _close_quietly(loop: asyncio.AbstractEventLoop, main: bool) -> None:
    """Close a private loop whose thread ended, or the main thread's at exit.

    At interpreter exit (atexit, in the main thread) the main thread's loop is
    shut down as `close_private_loop` does, as `asyncio.run` would have done:
    pending tasks run their ``finally`` blocks.  Another thread's loop is only
    closed: this runs while that thread's state is torn down, where running
    the loop (and its worker greenlets) is not safe.
    """
    if loop.is_closed() or loop.is_running():
        return
    if main and threading.current_thread() is threading.main_thread():
        try:
            _shutdown(loop)
            return
        except Exception:  # noqa: BLE001 - at exit: close the loop whatever happened
            pass
    loop.close()


def _shutdown(loop: asyncio.AbstractEventLoop) -> None:
    """Shut ``loop`` down as asyncio.run does when it ends, then close it."""
    try:
        _cancel_pending(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def close_private_loop() -> None:
    """Close this thread's private event loop, if it has one.

    With no event loop running in a thread, `await_` runs awaitables on
    a private loop of that thread.  The loop persists between calls, so
    objects bound to it (connections, locks, futures) stay usable.  It is
    closed when the thread ends (for the main thread: at interpreter exit) or
    when you call this function; the next `await_` then creates a new
    one.  This function shuts the loop down as `asyncio.run` does when it
    ends: tasks still pending on it are cancelled and run to their end,
    then async generators are finalized and the default executor is shut down.
    The main thread's loop is shut down that way at interpreter exit; call
    this at the end of other threads that used `await_` with no loop
    running, or their pending tasks never finish.
    """
    loop = _state.private_loop
    _state.private_loop = None
    if loop is None or loop.is_closed():
        return
    if loop.is_running():
        _state.private_loop = loop
        raise RuntimeError("close_private_loop() called while the private loop is running")
    _shutdown(loop)


# ---------------------------------------------------------------------------
# portals


async def _portal(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` inside a worker, so sync code it calls can await_."""
    return cast(T, await _call(_await_in_current_worker, (awaitable,), {}))


def _await_in_current_worker(awaitable: Any) -> Any:
    if type(awaitable) is types.CoroutineType:
        # The task's own coroutine, maybe suspended already (ensure_portal swaps
        # it in mid-await): resume it, which await_ would refuse.
        return _step(awaitable, cast(_Worker, getcurrent()))
    return await_(awaitable)


def has_portal() -> bool:
    """Return true if `await_` can suspend the code calling this, right here."""
    return type(getcurrent()) is _Worker


def install_portal_factory(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Give every task created on ``loop`` from now on a portal.

    Installs a task factory (chained with one already set) whose tasks run
    their coroutine through greenbridge, so plain sync functions called from
    those coroutines can use `await_`.  Each time such a task suspends
    it pays two greenlet switches.  ``task.get_coro()`` returns the wrapping
    coroutine.  Idempotent.  ``loop`` defaults to the running loop.
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "install_portal_factory() with no loop argument needs a running asyncio "
                "loop: call it from a coroutine, or pass the loop"
            ) from None
    elif not isinstance(loop, asyncio.AbstractEventLoop):
        raise TypeError(
            f"install_portal_factory() expects an asyncio event loop, got "
            f"{type(loop).__name__!r}; under trio use `await greenbridge.ensure_portal()` "
            "in each task"
        )
    previous = loop.get_task_factory()
    if getattr(previous, "__greenbridge_portal__", False):
        return

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        wrapped: Any = _portal_task(coro)
        if type(coro) is _CoroutineType:  # the task's repr names coro, as without a portal
            wrapped.__name__ = coro.__name__
            wrapped.__qualname__ = coro.__qualname__
        wrapped.send(None)  # to its first await: see _portal_task
        if previous is None:
            return asyncio.Task(wrapped, loop=loop, **kwargs)
        return previous(loop, wrapped, **kwargs)

    factory.__greenbridge_portal__ = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)


@types.coroutine
def _first_step() -> Generator[None, None, None]:
    yield


async def _portal_task(coro: Any) -> Any:
    """The coroutine of a task made by the portal factory, which steps it once.

    Started before the task is created, this waits in ``_first_step`` for the
    task's first step.  If that step throws an exception in instead (the task
    was cancelled before it started), ``coro`` never started: it is closed
    and the exception raised, as the task would do for ``coro`` itself.
    Unstarted, a wrapper like `_portal` would let the exception through
    without ever closing ``coro`` (reported as never awaited).
    """
    try:
        await _first_step()
    except GeneratorExit:  # the task was destroyed unstarted: so was coro, as natively
        raise
    except BaseException:
        coro.close()
        raise
    return await _call(_await_in_current_worker, (coro,), {})


class _EnsurePortal:
    """Awaitable returned by `ensure_portal`."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, None]:
        if type(getcurrent()) is _Worker:
            return
        yield from _rebind_current_task()


def ensure_portal() -> Awaitable[None]:
    """Give the current task a portal: ``await greenbridge.ensure_portal()``.

    Afterwards, sync functions called directly from this task's coroutine can
    use `await_`.  A no-op in a task that already has one (for example
    under `install_portal_factory`, or inside `async_`).
    """
    return _EnsurePortal()


def _rebind_current_task() -> Generator[Any, Any, None]:
    from ._portal import rebind_current_task

    return rebind_current_task(_portal)
