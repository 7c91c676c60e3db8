"""The trampoline: run sync code in worker greenlets, step awaitables, pass traps on.

How it works, in one paragraph: a *worker* greenlet runs the sync code.  When
that code calls `await_`, the awaitable's ``__await__`` iterator is
stepped *inside the worker* (`step`); only when it yields a trap (an asyncio
Future, a bare ``None``, a trio trap) do we switch to the *driver* greenlet.
The driver is a small generator-based coroutine (`Pending`) that yields the
trap to the real event loop and switches back into the worker with whatever
the loop sent (or threw).  So an awaitable that completes without suspending
costs no greenlet switch at all, and the same driver works for every loop
family that runs coroutines (asyncio, uvloop, trio).

Worker greenlets are expensive to create (a fresh C stack slice and frame
chain) and cheap to switch into, so finished workers park in a small
per-thread pool and are reused.  A parked worker keeps no reference to its
last call, its Context or its result.

Worker and driver talk by switching `Signal` values to each other (and
the stepper reports to `step` the same way).  One of them, `PARK`, comes
from the layer above: a worker that switches `PARK` to its driver has
arranged for a loop callback to resume it directly.  What its driver does
meanwhile (make its task wait on a Future) is asyncio's business, so it lives
in `greenbridge._park`, which plugs it in with `serve_parking`; this module
uses no event-loop API of its own (the running asyncio loop, recorded for
`_unwind_dead_loops`, comes from `greenbridge._where`).

Nothing here is public API: `greenbridge._bridge`, `greenbridge._portal` and
`greenbridge._private_loop` build the public functions on `launch`,
`Pending` and `step`.
"""

from __future__ import annotations

import contextvars
import gc
import inspect
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, cast

from greenlet import GreenletExit, getcurrent, greenlet

from ._where import BridgeGreenlet, asyncio_loop

if TYPE_CHECKING:
    import asyncio

_monotonic = time.monotonic

__all__ = [
    "ENDED_IN_CALLBACK",
    "FAILED",
    "FINISHED",
    "MAX_DEPTHS",
    "NO_KWARGS",
    "PARK",
    "POOL_SIZE",
    "Pending",
    "Signal",
    "Worker",
    "await_in_worker",
    "call_handling",
    "chain_thrown",
    "ended",
    "handled_exception",
    "iterator",
    "launch",
    "live_workers",
    "parked_workers",
    "new_worker",
    "serve_parking",
    "step",
    "stubborn",
    "thread_pools",
    "unwind",
]

_CO_ITERABLE_COROUTINE = inspect.CO_ITERABLE_COROUTINE

#: Largest number of parked worker greenlets kept per thread and recursion depth.
POOL_SIZE = 64
#: Largest number of recursion depths that keep a pool of workers, per thread.
#: A framework calls bridged code from many depths: Django's handler stack
#: reaches ``sync_to_async`` from about 12 per request (each middleware adds
#: one); with fewer pools than that, every request evicted the oldest pools
#: and made their workers again (a fifth of its instructions, callgrind).
MAX_DEPTHS = 32


class Signal:
    """The one type of the messages worker, driver and stepper switch to each other.

    Each message is a distinct instance, compared by identity only.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<greenbridge {self.name}>"


FINISHED: Any = Signal("finished")  # the call returned (its value is in worker.value)
FAILED: Any = Signal("failed")  # the call raised (the exception is in worker.value)
# The worker parked itself (see greenbridge._park.park): the driver makes its
# task wait on a future, and whoever wakes the worker resumes it (see _park.wake).
PARK: Any = Signal("park")
# What a parked driver's wait returns when the call ended while the worker ran
# in a loop callback (its outcome is then in the driver's ``payload``).
ENDED_IN_CALLBACK: Any = Signal("ended in a callback")
# What `_outcome` returns for a call that has not ended.
_RUNNING: Any = Signal("running")


class Worker(BridgeGreenlet):
    """A pooled greenlet that runs one sync call at a time.

    ``parent`` is always the driver of the current call: it is set by
    `launch` and `Pending` before every switch into the worker, so the
    worker finds its driver explicitly and never by walking an unknown
    parent chain.

    Made by `new_worker` only, which sets every field (a Python
    ``__init__`` would cost a frame and a ``super()`` call per worker):

    - ``home``: the pool it parks in, the one for the recursion depth it was
      created at;
    - ``value``: the outcome of the current call, taken (and cleared) by the
      driver;
    - ``free``: idle steppers (see `_stepper`), each with the box it reports
      into; None until the worker first steps an awaitable (a green thread
      that only waits through the hub never does);
    - ``drv``: while parked (see `greenbridge._park.park`), the `Pending`
      whose task waits for it; for a green thread with no task, its run
      (`greenbridge._bare.Run`);
    - ``pending``: while its call is suspended, a weak reference to the
      `Pending` driving it (weak: the worker's frames are invisible to the
      cycle collector, so a strong one would keep the task alive; see
      `_unwind_dead_loops`);
    - ``inherited``: during a call made from an ``except`` block, the
      caller's exception, handled here too (see `call_handling`), but not
      by the sync code itself;
    - ``since``: when the call last suspended (``time.monotonic``), for
      `greenbridge.dump_stacks`: set on the suspending paths only (one
      clock read next to a greenlet switch and a loop turn), never read by
      the bridge itself;
    - ``thread``: while it runs a green thread (see `greenbridge._bare`),
      that thread's run, which is also its identity; None for any other
      call;
    - ``loop``: the asyncio loop its current call runs on, once the hub
      looked it up (None before, and under trio).  A call never changes
      loops (asyncio refuses to run a loop inside a running one), and the
      slot is cleared when the call ends.  It spares the hub's waits
      ``asyncio._get_running_loop()``, which before Python 3.12 makes a
      ``getpid()`` system call each time.
    """

    __slots__ = (
        "value",
        "free",
        "drv",
        "home",
        "pending",
        "inherited",
        "since",
        "thread",
        "loop",
    )

    home: _Bucket
    value: Any
    free: list[tuple[types.GeneratorType[Any, Any, None], list[Any]]] | None
    drv: Pending | Any
    pending: weakref.ref[Pending] | None
    inherited: BaseException | None
    since: float
    thread: Any
    loop: asyncio.AbstractEventLoop | None


# What the stepper yields when the awaitable it steps has ended.
_RETURNED: Any = Signal("returned")
_RAISED: Any = Signal("raised")


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


class _Bucket(list):  # type: ignore[type-arg]  # of Worker
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
        self.workers: _LiveWorkers | None = None
        self.discard: Callable[[weakref.ref[Worker]], None] | None = None  # workers.discard
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


_state = _ThreadState()


def thread_pools() -> _Pools:
    """This thread's pools of parked workers, by recursion depth.

    ``pools[pools.depth[0]]`` is the pool for the caller's depth (for
    `greenbridge._bare`, which starts its workers itself, and for tests).
    """
    return _state.pools


def _worker_main() -> Any:
    """Body of every worker greenlet: wait for a call, run it, report, park, repeat.

    The outcome is left in ``me.value`` and announced by switching to the
    driver with ``FINISHED`` or ``FAILED``; the driver takes it and clears
    it, so a parked worker's frame holds no reference to the last call.

    A worker is started with no arguments: greenlet holds the arguments of a
    greenlet's first switch (they are ``run``'s arguments) until the greenlet
    ends, which would keep the first call's arguments alive for the worker's
    whole life.  Its first call waits in ``me.value`` instead (set by whoever
    starts it: `launch`, `greenbridge._bare`), which it empties, so a new
    worker costs one switch into it, as a pooled one does.
    """
    me: Worker = getcurrent()  # type: ignore[assignment]  # (no cast(): a call)
    pool = me.home  # a greenlet never leaves its thread, nor does its pool
    first = me.value
    if first is None:
        fn, args, kwargs = me.parent.switch()  # type: ignore[union-attr]
    else:
        me.value = None
        fn, args, kwargs = first
        first = None
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
            end = FINISHED
        except GreenletExit:
            # greenlet is killing this worker (it was garbage collected while
            # suspended): let it die instead of parking it again.
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the driver
            me.value = exc if not isinstance(exc, StopIteration) else _raised_stop(exc)
            end = FAILED
            del exc
        # Drop every reference to the finished call before parking.
        fn = args = kwargs = None
        me.pending = None
        me.loop = None
        if len(pool) >= POOL_SIZE or not pool.live:
            # Pool full or evicted: end this greenlet; its return value reaches the driver.
            return end
        pool.append(me)
        fn, args, kwargs = me.parent.switch(end)  # type: ignore[union-attr]


# The exception being handled where the call is made (None when none is).
# sys.exc_info() builds a tuple; 3.11+ has the cheaper sys.exception().
handled_exception: Callable[[], BaseException | None] = getattr(
    sys, "exception", lambda: sys.exc_info()[1]
)


NO_KWARGS: dict[str, Any] = {}


def _raised_stop(exc: StopIteration) -> RuntimeError:
    """What a coroutine raises when its body raises StopIteration (PEP 479).

    The driver is a generator: raising the StopIteration there would give
    "generator raised StopIteration" instead.
    """
    error = RuntimeError("coroutine raised StopIteration")
    error.__cause__ = error.__context__ = exc
    return error


def call_handling(
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
    me = cast(Worker, getcurrent())
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


def new_worker(pool: _Bucket) -> Worker:
    """A worker that parks in ``pool``, not started yet (it starts with its first call)."""
    worker = Worker(_worker_main)
    worker.home = pool
    worker.value = None
    worker.free = None
    worker.drv = None
    worker.pending = None
    worker.inherited = None
    worker.since = 0.0
    worker.thread = None
    worker.loop = None
    workers = _state.workers
    if workers is None:
        workers = _state.workers = _LiveWorkers()
        # One bound method for every reference's callback, not one per worker.
        _state.discard = workers.discard
        _watch_dead_loops()
        _thread_workers.append(weakref.ref(workers))  # once per thread: see live_workers
    workers.add(_ref(worker, _state.discard))
    return worker


_ref = weakref.ref


class _LiveWorkers(set["weakref.ref[Worker]"]):
    """The live workers of one thread: weak references that drop out as workers die.

    A `weakref.WeakSet` would cost a Python call to add each worker and
    another to drop it; here a reference's callback is the set's own
    ``discard``, so neither runs any Python code.
    """

    __slots__ = ()  # (sets take weak references already)

    def alive(self) -> list[Worker]:
        """The workers still alive (a copy: the set may change meanwhile).

        Copying the set can meet a change (another thread adds a worker, or
        a worker dies in a collection the copy's own allocation started):
        then it is copied again.
        """
        for _ in range(100):
            try:
                refs = list(self)
                break
            except RuntimeError:  # changed size during iteration
                continue
        else:  # pragma: no cover - a set that never holds still
            refs = list(self.copy())
        found = []
        for ref in refs:
            worker = ref()
            if worker is not None:
                found.append(worker)
        return found


# The live-worker sets of every thread that made a worker (weakly: a thread's
# set goes with the thread), for live_workers.  Appended to once per thread,
# never on a call's path.
_thread_workers: list[weakref.ref[_LiveWorkers]] = []


def live_workers() -> list[Worker]:
    """Every live worker of every thread, pooled or in a call (for greenbridge._stacks).

    Any thread may call it (see `_LiveWorkers.alive`).
    """
    _thread_workers[:] = [ref for ref in _thread_workers if ref() is not None]
    found: list[Worker] = []
    for ref in list(_thread_workers):
        workers = ref()
        if workers is not None:
            found.extend(workers.alive())
    return found


def parked_workers() -> list[Worker]:
    """Every worker parked in this thread's pools (for tests)."""
    return [worker for pool in _state.pools.values() for worker in pool]


def launch(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context: contextvars.Context | None,
) -> Any:
    """Start ``fn(*args, **kwargs)`` in a worker; run it until it ends or yields a trap.

    Returns the call's result, raises its exception, or returns a
    `Pending` to be awaited when the call yielded a trap.  A call
    that never suspends thus costs no generator and no trap handling.
    """
    pools = _state.pools
    pool = pools[pools.depth[0]]
    # A new worker starts with its call, here at the caller's depth (see _worker_main).
    worker = pool.pop() if pool else new_worker(pool)
    here = getcurrent()
    if worker.parent is not here:
        worker.parent = here
    # Share the caller's Context (not a copy): a ContextVar set by the sync
    # code is seen by the awaiting coroutine, as for a plain function call.
    worker.gr_context = here.gr_context if context is None else context
    handled = handled_exception()
    if handled is not None:
        fn, args, kwargs = call_handling, (handled, fn, args, kwargs), NO_KWARGS
        del handled
    if worker:  # parked in its pool: it waits for a call
        msg = worker.switch(fn, args, kwargs)
    else:  # new: it starts with its call (see _worker_main)
        worker.value = (fn, args, kwargs)
        msg = worker.switch()
    if msg is FINISHED:
        worker.gr_context = None
        value = worker.value
        worker.value = None
        return value
    return Pending(worker, msg)


def _outcome(worker: Worker, msg: Any) -> Any:
    """If ``msg`` says the worker's call ended, its result; else ``_RUNNING``."""
    if msg is FINISHED:
        worker.gr_context = None
        value = worker.value
        worker.value = None
        return value
    if msg is FAILED:
        worker.gr_context = None
        exc = worker.value
        worker.value = None
        try:
            raise exc
        finally:
            del exc
    return _RUNNING


class Pending:
    """A call that yielded a trap: awaiting this drives it to its end.

    While the worker is parked (see `greenbridge._park.park`), the task waits
    on ``fut`` and ``msg`` is `PARK`; `greenbridge._park.wake` hands over
    what happened next by setting ``msg`` (and ``payload``) before it
    completes ``fut``.  The fields below ``payload`` belong to that park
    protocol; this module only clears them through `serve_parking`'s release.
    """

    __slots__ = ("worker", "msg", "payload", "fut", "task", "trap", "loop", "ref", "__weakref__")

    def __init__(self, worker: Worker, msg: Any) -> None:
        self.worker = worker
        # The asyncio loop the call runs on (None under trio).
        self.loop = _asyncio_loop()
        self.ref = weakref.ref(self)
        if msg is not FAILED:  # (else the call ended: the worker is parked already)
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
        if result is not _RUNNING:
            return result
        switch = worker.switch
        while True:
            if msg is PARK:
                msg = yield from _wait_parked(self, worker)
                if msg is ENDED_IN_CALLBACK:  # the worker ran in a callback to the end
                    return self._take_payload()
            else:
                try:
                    sent = yield msg
                except GeneratorExit:
                    if worker.pending is self.ref:  # (else unwound already: its loop closed)
                        yield from stubborn(worker, unwind(worker))
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
            if msg is FINISHED or msg is FAILED:
                return _outcome(worker, msg)

    def trap_done(self, fut: asyncio.Future[Any]) -> None:
        """Done callback of the Future the parked worker awaits (see `_park.wake`)."""
        if self.trap is fut:
            self.trap = None
            _wake(self.worker, None)

    def yielded(self) -> None:
        """The next turn of the loop, which the parked worker awaited (see `_park.wake`)."""
        self.trap = None
        _wake(self.worker, None)

    def _take_payload(self) -> Any:
        """The outcome of a call that ended in a callback (see `_park`)."""
        payload = self.payload
        self.payload = None
        ended, self.msg = self.msg, None
        if ended is FINISHED:
            return payload
        try:
            raise payload
        finally:
            del payload


def ended(msg: Any) -> bool:
    """Return true if ``msg`` says that the worker's call ended."""
    return msg is FINISHED or msg is FAILED


# ---------------------------------------------------------------------------
# the park protocol's slot
#
# A worker switches `PARK` to its driver only from greenbridge._park.park,
# after arranging for a loop callback to resume it.  Its driver then waits as
# the park protocol says, which is asyncio code and lives in greenbridge._park;
# that module fills these three in when it is imported, so they are in place
# before any worker can park.  (Plain module globals: the driver's loop looks
# them up as it looked up its own methods before, at no extra cost.)


def _no_parking(*args: Any) -> Any:
    raise RuntimeError("greenbridge: a worker parked, but greenbridge._park is not loaded")


# The driver's wait while its worker is parked: a generator returning the
# worker's next message, or ENDED_IN_CALLBACK.
_wait_parked: Callable[[Pending, Worker], Generator[Any, Any, Any]] = _no_parking
# Ends a parked wait early (its call is being unwound); returns the handoff.
_release_parked: Callable[[Pending, Worker], Any] = _no_parking
# Resumes a parked worker from a loop callback (greenbridge._park.wake).
_wake: Callable[[Worker, Any], None] = _no_parking


def serve_parking(
    wait: Callable[[Pending, Worker], Generator[Any, Any, Any]],
    release: Callable[[Pending, Worker], Any],
    wake: Callable[[Worker, Any], None],
) -> None:
    """Plug in the park protocol (called once, by greenbridge._park)."""
    global _wait_parked, _release_parked, _wake
    _wait_parked = wait
    _release_parked = release
    _wake = wake


def chain_thrown(exc: BaseException, handled: BaseException) -> None:
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


# ---------------------------------------------------------------------------
# calls suspended on a dead loop

_asyncio_loop = asyncio_loop


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
    for worker in workers.alive():
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
        if drv.msg is PARK:
            handoff = _release_parked(drv, worker)
            if ended(handoff):
                continue
        try:
            if unwind(worker) is not None:
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


def unwind(worker: Worker) -> Any:
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
    if msg is not FINISHED and msg is not FAILED:
        return msg
    error = worker.value
    worker.value = None
    worker.gr_context = None
    if msg is FAILED and not isinstance(error, GeneratorExit):
        # An error raised while unwinding (in a finally block) comes out of the
        # close, as from a coroutine's close().
        try:
            raise error
        finally:
            del error
    return None


def stubborn(worker: Worker, msg: Any) -> Generator[Any, Any, None]:
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
            msg = unwind(worker)
        else:  # pragma: no cover - nobody can resume a coroutine after close()
            raise RuntimeError("cannot resume sync code that ignored GeneratorExit")


def _new_pair() -> tuple[types.GeneratorType[Any, Any, None], list[Any]]:
    box: list[Any] = [None]
    return _new_stepper(box), box


def iterator(awaitable: Any) -> Any:
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


def step(it: Any, worker: Worker) -> Any:
    """Step ``it`` in this greenlet; switch to the driver only to pass a trap on."""
    # Take an idle stepper (and its result box) off the worker's free list for
    # the whole call.  A stepper in use is never shared: nested await_ calls
    # (portals) and ones made by code that runs between our bytecodes in this
    # greenlet (a finalizer, a signal handler) each get their own.
    free = worker.free
    if free is None:
        free = worker.free = []
    pair = free.pop() if free else _new_pair()
    stepper, box = pair
    try:
        msg = stepper.send(it)
    except StopIteration:  # closed from outside (frame.clear()): replace it
        pair = _new_pair()
        stepper, box = pair
        msg = stepper.send(it)
    del it
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
                # is the caller's (see call_handling), undo it, as natively the
                # awaitable's exception reaches the awaiting frame unchained.
                if exc.__context__ is not context and exc.__context__ is worker.inherited:
                    exc.__context__ = context
                del exc, context
        worker.since = _monotonic()
        try:
            # The driver, looked up at every switch: the greenlet that resumes
            # the task can change between two traps of one awaitable (an eager
            # task's first step runs in its creator's greenlet, the next ones in
            # the loop's), and the driver makes itself the worker's parent first.
            sent = worker.parent.switch(msg)  # type: ignore[union-attr]
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


def await_in_worker(awaitable: Any) -> Any:
    """Await ``awaitable`` in the worker this runs in (a portal's or the private loop's call).

    As `await_` in a worker, except that a coroutine is stepped as it is,
    even when it is suspended already: it may be the task's own coroutine,
    which `greenbridge._portal.ensure_portal` swaps in mid-await, and which
    `await_` would refuse ("being awaited already").
    """
    worker = cast(Worker, getcurrent())
    if type(awaitable) is types.CoroutineType:
        return step(awaitable, worker)
    it = iterator(awaitable)
    if it is None:
        raise TypeError(f"object {type(awaitable).__name__} can't be used in 'await' expression")
    return step(it, worker)
