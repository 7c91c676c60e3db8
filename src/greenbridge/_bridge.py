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
import inspect
import sys
import threading
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from greenlet import GreenletExit, getcurrent, greenlet

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

#: Largest number of parked worker greenlets kept per thread.
POOL_SIZE = 64


class MissingBridge(RuntimeError):
    """`await_` was called where nothing can drive the awaitable.

    Raised when an event loop is running in this thread but the calling sync
    code does not run under greenbridge (it was not started by
    `async_` / `spawn`, and its task has no portal).  The message
    names the ways to fix it.
    """


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


class _Worker(greenlet):
    """A pooled greenlet that runs one sync call at a time.

    ``parent`` is always the driver of the current call: it is set by
    `_launch` and `_Pending` before every switch into the worker, so the
    worker finds its driver explicitly and never by walking an unknown
    parent chain.
    """

    __slots__ = ("value", "free", "drv")

    def __init__(self) -> None:
        super().__init__(_worker_main)
        # The outcome of the current call, taken (and cleared) by the driver.
        self.value: Any = None
        # Idle steppers (see _stepper), each with the box it reports into.
        self.free: list[tuple[types.GeneratorType[Any, Any, None], list[Any]]] = []
        # While parked (see park()): the _Pending whose task waits for it.
        self.drv: _Pending | None = None


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


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.pool: list[_Worker] = []
        self.private_loop: asyncio.AbstractEventLoop | None = None
        self.holder: object = None


_state = _ThreadState()


def _worker_main(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Body of every worker greenlet: run a call, report, park, repeat.

    The outcome is left in ``me.value`` and announced by switching to the
    driver with ``_FINISHED`` or ``_FAILED``; the driver takes it and clears
    it, so a parked worker's frame holds no reference to the last call.
    """
    me = cast(_Worker, getcurrent())
    pool = _state.pool  # a greenlet never leaves its thread, nor does its pool
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
            me.value = exc
            end = _FAILED
            del exc
        # Drop every reference to the finished call before parking.
        fn = args = kwargs = None  # type: ignore[assignment]
        if len(pool) >= POOL_SIZE:
            # Pool full: end this greenlet; its return value reaches the driver.
            return end
        pool.append(me)
        fn, args, kwargs = me.parent.switch(end)  # type: ignore[union-attr]


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
    pool = _state.pool
    worker = pool.pop() if pool else _Worker()
    here = getcurrent()
    if worker.parent is not here:
        worker.parent = here
    # Share the caller's Context (not a copy): a ContextVar set by the sync
    # code is seen by the awaiting coroutine, as for a plain function call.
    worker.gr_context = here.gr_context if context is None else context
    msg = worker.switch(fn, args, kwargs)
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

    __slots__ = ("worker", "msg", "payload", "fut", "task", "trap")

    def __init__(self, worker: _Worker, msg: Any) -> None:
        self.worker = worker
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
                    _unwind(worker)
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
            else:
                _unwind(worker)  # still suspended in the sync code
            raise
        except BaseException as exc:  # noqa: BLE001 - forwarded to the sync code
            handoff = self._release(worker, isinstance(exc, asyncio.CancelledError))
            if _ended(handoff):
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
                handoff.cancel()
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

    def _release(self, worker: _Worker, cancel: bool = False) -> Any:
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
                    trap.cancel()
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


def park() -> Any:
    """Suspend the calling worker until `wake` resumes it; return what it sent.

    Only for the hub, in a `_Worker` under a running asyncio loop, after
    arranging for a loop callback (a reader, a timer) to call `wake`.  An
    exception thrown into the task (a cancellation) is raised here.
    """
    return getcurrent().parent.switch(_PARK)  # type: ignore[union-attr]


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


def _unwind(worker: _Worker) -> None:
    """The driving coroutine was closed early: unwind the sync code.

    ``GeneratorExit`` is raised at the sync code's pending `await_`, so
    its ``finally`` blocks and context managers run, and the awaitable it
    was waiting on is closed too.
    """
    try:
        worker.parent = getcurrent()
        msg = worker.throw(GeneratorExit)
    except greenlet.error:  # closed from another thread (e.g. by the GC)
        return
    worker.value = None
    if msg is not _FINISHED and msg is not _FAILED:
        raise RuntimeError(
            "greenbridge: sync code ignored GeneratorExit and kept awaiting "
            "while its coroutine was being closed"
        )
    worker.gr_context = None


# ---------------------------------------------------------------------------
# async_


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
        TypeError: ``fn`` is not callable, or is already a coroutine function.
    """
    if fn is None:

        def decorate(f: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
            return async_(f, with_context=with_context)

        return decorate
    if not callable(fn):
        raise TypeError(f"async_() expects a sync callable, got {type(fn).__name__!r}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"async_() expects a sync function, but {_name(fn)} is already a coroutine "
            "function: await it directly"
        )

    if with_context:

        @functools.wraps(fn)
        async def run_shared(*args: P.args, **kwargs: P.kwargs) -> T:
            result = _launch(fn, args, kwargs, None)
            if type(result) is _Pending:
                result = await result
            return cast(T, result)

        return run_shared

    @functools.wraps(fn)
    async def run_copied(*args: P.args, **kwargs: P.kwargs) -> T:
        result = _launch(fn, args, kwargs, contextvars.copy_context())
        if type(result) is _Pending:
            result = await result
        return cast(T, result)

    return run_copied


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


# ---------------------------------------------------------------------------
# spawn


async def _call(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    result = _launch(fn, args, kwargs, None)
    if type(result) is _Pending:
        result = await result
    return cast(T, result)


def spawn(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Task[T]:
    """Start ``fn(*args, **kwargs)`` as a concurrent asyncio Task and return it.

    ``fn`` runs in a greenlet, in the task's own Context (a copy of the
    caller's, as for `asyncio.create_task`), and may call
    `await_`.  Works from coroutines and from bridged sync code alike.

    Raises:
        TypeError: ``fn`` is not a sync callable.
        RuntimeError: no asyncio event loop is running in this thread.
    """
    if not callable(fn) or inspect.iscoroutinefunction(fn):
        raise TypeError(
            "spawn() expects a sync callable; for a coroutine function use asyncio.create_task()"
        )
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "spawn() needs a running asyncio event loop in this thread; "
            "call it from async code or from sync code run by async_()/spawn() "
            "(under trio, use nursery.start_soon(async_(fn), ...))"
        ) from None
    return loop.create_task(_call(fn, args, kwargs))


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
      on this thread's private loop (see `close_private_loop`);
    * anywhere else `MissingBridge` is raised (and a coroutine passed
      in is closed, so no "never awaited" warning follows).

    Given an async function instead of an awaitable, ``await_`` acts as a
    decorator and returns a sync function with the same signature.
    """
    current = getcurrent()
    if type(current) is _Worker:
        cls = type(awaitable)
        if cls is types.CoroutineType:
            return _step(awaitable, current)
        if isinstance(awaitable, asyncio.Future):
            # What Future.__await__ does, without a stepper: yield it (as a
            # trap) unless it is done, then take its result.
            if not awaitable.done():
                awaitable._asyncio_future_blocking = True
                current.parent.switch(awaitable)  # type: ignore[union-attr]
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
    if callable(obj):
        return _sync_wrapper(obj)
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
                try:
                    raise exc
                finally:
                    del exc
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


def _await_outside(awaitable: Any) -> Any:
    if _running_loop() is not None:
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        raise MissingBridge(_MISSING_MESSAGE)
    loop = _private_loop()
    # Run through a portal, so sync code the awaitable calls can await_ too.
    return loop.run_until_complete(_portal(awaitable))


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
        weakref.finalize(holder, _close_quietly, loop)
    return loop


class _Holder:
    __slots__ = ("__weakref__",)


def _close_quietly(loop: asyncio.AbstractEventLoop) -> None:
    if not loop.is_closed() and not loop.is_running():
        loop.close()


def close_private_loop() -> None:
    """Close this thread's private event loop, if it has one.

    With no event loop running in a thread, `await_` runs awaitables on
    a private loop of that thread.  The loop persists between calls, so
    objects bound to it (connections, locks, futures) stay usable.  It is
    closed when the thread ends (for the main thread: at interpreter exit) or
    when you call this function; the next `await_` then creates a new
    one.  Pending async generators are finalized first.
    """
    loop = _state.private_loop
    _state.private_loop = None
    if loop is None or loop.is_closed():
        return
    if loop.is_running():
        raise RuntimeError("close_private_loop() called while the private loop is running")
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


# ---------------------------------------------------------------------------
# portals


async def _portal(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` inside a worker, so sync code it calls can await_."""
    return cast(T, await _call(_await_in_current_worker, (awaitable,), {}))


def _await_in_current_worker(awaitable: Any) -> Any:
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
        loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    if getattr(previous, "__greenbridge_portal__", False):
        return

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        wrapped = _portal_task(coro)
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
