"""Blocking-call detector: find the sync code that stalls the event loop.

How it works.  A *heartbeat* runs on the watched loop every ``interval``
seconds (``threshold / 4``, at most 50 ms): on asyncio and uvloop a
``call_later`` callback, on trio a system task that sleeps.  Each beat bumps a
sequence number and records when the next beat is due.  One helper OS thread
(the *watcher*, shared by every detector of the process) wakes up every
``interval`` and compares the clock with that due time.  When the beat is late
by more than ``threshold`` the loop is stuck in one step, so the watcher takes
the stack of the loop's thread with :func:`sys._current_frames` *while it is
still stuck*.  With greenlets, the frame a thread executes is the frame of the
greenlet running in it, so the sample starts at the sync frame that blocked
(for a C function such as ``time.sleep`` or ``socket.recv``: the Python line
that called it) and ends where that greenlet started.

When the loop comes back, the late beat sees the sample, measures how late it
ran (the duration of the stall, a lower bound accurate to within
``interval``) and reports it, on the loop's thread: through the logger
``greenbridge.detector`` and the detector's callback, once per distinct stack.

Cost: one timer callback every ``interval`` on the loop and one wake-up of the
watcher thread per ``interval``; nothing at all when no detector runs.

Which frames are "greenbridge's own" (left out of a report, so that it shows
the user's code): every file under the package's directory, whatever module
it is, plus asyncio's.  The test is the directory, not a list of file names,
so that moving code between greenbridge's modules never changes a report.

The environment variable ``GREENBRIDGE_DETECT_BLOCKING=<seconds>`` is read at
one point only: when ``greenbridge`` is imported (its ``__init__`` calls
:func:`watch_from_environment` when the variable is set; this is how
``python -m greenbridge`` honours it as well).  It attaches a detector with
that threshold to every asyncio or uvloop event loop when it starts running.
Empty or ``0`` means off; unset or empty, this module is not even imported.
A value that is not a number of seconds is a `RuntimeWarning`, not an error.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from ._stacks import SuspendedStack, internal_file, suspended_stacks
from ._where import asyncio_loop, trio_running

__all__ = [
    "ENV_VAR",
    "BlockingAssertion",
    "BlockingDetected",
    "BlockingDetector",
    "BlockingReport",
    "assert_no_blocking",
    "detect_blocking",
    "internal_file",
    "watch_all_loops",
    "watch_from_environment",
]

logger = logging.getLogger("greenbridge.detector")

ENV_VAR = "GREENBRIDGE_DETECT_BLOCKING"

#: Largest heartbeat interval, whatever the threshold.
MAX_INTERVAL = 0.05


# Which frames are greenbridge's own (left out of a report): see
# greenbridge._stacks.internal_file, shared with dump_stacks.


@dataclass(frozen=True)
class BlockingReport:
    """One stall of the event loop, as reported by :func:`detect_blocking`.

    Attributes:
        duration: how long the loop could not run, in seconds (a lower bound,
            accurate to within ``interval``).
        threshold: the detector's threshold, in seconds.
        stack: the stack of the code that was running, outermost frame
            first; the last entry is the frame that blocked (for a blocking
            C function, the line that called it).
        task: ``repr()`` of the asyncio task that was running, if known.
        suspended: the suspended greenbridge calls and green threads at the
            time of the stall, with what each waits on (see
            :func:`greenbridge.dump_stacks`); empty unless the detector was
            made with ``suspended=True``.
    """

    duration: float
    threshold: float
    stack: traceback.StackSummary
    task: str | None = None
    suspended: tuple[SuspendedStack, ...] = ()

    @property
    def frame(self) -> traceback.FrameSummary | None:
        """The frame that blocked (the innermost one), or None if unknown."""
        return self.stack[-1] if self.stack else None

    def format(self) -> str:
        """A multi-line, human-readable description, as logged."""
        head = f"event loop blocked for {self.duration:.3f} s (threshold {self.threshold:.3f} s)"
        if self.task is not None:
            head += f" in task {self.task}"
        lines = [head + "; the blocking code (most recent call last):"]
        lines.extend(line.rstrip("\n") for line in self.stack.format())
        if self.suspended:
            lines.append(f"{len(self.suspended)} suspended greenbridge call(s) meanwhile:")
            lines.extend(stack.format() for stack in self.suspended)
        return "\n".join(lines)


class BlockingDetected(RuntimeError):
    """Raised in the code that blocks the event loop, by ``detect_blocking(raise_after=...)``.

    The message says how long the loop had been blocked and the limit.
    Raised asynchronously, at the blocked code's next bytecode (or, in the
    main thread, out of a blocking system call such as ``time.sleep``): see
    :func:`detect_blocking`.
    """

    def __init__(self, *args: object) -> None:
        if not args:  # raised by PyThreadState_SetAsyncExc, which passes none
            args = (_messages.pop(_thread.get_ident(), _DEFAULT_MESSAGE),)
        super().__init__(*args)


_DEFAULT_MESSAGE = "the event loop was blocked longer than detect_blocking(raise_after=...)"
# The message of the BlockingDetected about to be raised in each thread.
_messages: dict[int, str] = {}


@dataclass
class _Sample:
    seq: int
    stack: traceback.StackSummary
    task: str | None
    at: float = 0.0  # when it was taken (time.monotonic)
    suspended: tuple[SuspendedStack, ...] = ()


def _extract(frame: FrameType | None) -> traceback.StackSummary:
    """The stack above ``frame``, outermost first, without loop machinery."""
    if frame is None:
        return traceback.StackSummary()
    full = traceback.StackSummary.extract(traceback.walk_stack(frame), lookup_lines=False)
    full.reverse()
    kept = [f for f in full if not internal_file(f.filename)]
    summary = traceback.StackSummary.from_list(kept or list(full))
    for f in summary:
        f.line  # noqa: B018 - load the source line now, while the file is as it ran
    return summary


def _key(stack: traceback.StackSummary) -> tuple[Any, ...]:
    """What makes two stacks "the same": call sites, and the innermost function.

    The innermost line is left out so that a CPU loop caught on different
    lines of the same function counts once.
    """
    if not stack:
        return ()
    *outer, top = stack
    return (*((f.filename, f.lineno, f.name) for f in outer), (top.filename, top.name))


class BlockingDetector:
    """A running blocking-call detector, returned by :func:`detect_blocking`.

    Stop it with :meth:`stop`, or use it as a context manager.  ``reports``
    lists every report made so far (one per distinct stack).
    """

    def __init__(
        self,
        threshold: float,
        callback: Callable[[BlockingReport], object] | None,
        raise_after: float | None = None,
        suspended: bool = False,
    ) -> None:
        self.threshold = threshold
        self.raise_after = raise_after
        limit = threshold if raise_after is None else min(threshold, raise_after)
        self.interval = max(0.001, min(limit / 4, MAX_INTERVAL))
        self.callback = callback
        self.suspended = suspended
        # The beat period in which BlockingDetected was raised last, and how late
        # the beat was then: a step that goes on blocking (it caught the
        # exception) gets it again every raise_after seconds.
        self._raised_seq = -1
        self._raised_late = 0.0
        self._signal = False  # raise through the signal handler (see _raise_in_loop_thread)
        self.reports: list[BlockingReport] = []
        self._seen: set[tuple[Any, ...]] = set()
        # Written by the heartbeat (loop thread), read by the watcher thread.
        self._seq = 0
        self._due = float("inf")  # no beat yet: nothing can be late
        self._thread_id: int | None = None
        self._sample: _Sample | None = None
        self._paused_seq = -1  # a beat period in which the loop was seen stopped
        self._stopped = False
        self._is_running: Callable[[], bool] = lambda: False
        self._current_task: Callable[[], str | None] = lambda: None
        self._cancel: Callable[[], None] = lambda: None

    # -- the heartbeat side (runs on the loop's thread) ----------------------

    def _beat(self) -> None:
        now = time.monotonic()
        if self._thread_id is None:
            self._thread_id = _thread.get_ident()
        late = now - self._due
        sample = self._sample
        if sample is not None:
            self._sample = None
            if sample.seq == self._seq and late > self.threshold and self._paused_seq != self._seq:
                self._report(late, sample)
        self._seq += 1
        self._due = now + self.interval

    def _report(self, duration: float, sample: _Sample) -> None:
        key = _key(sample.stack)
        if key in self._seen:
            return
        self._seen.add(key)
        report = BlockingReport(
            duration, self.threshold, sample.stack, sample.task, sample.suspended
        )
        self.reports.append(report)
        logger.warning("%s", report.format())
        if self.callback is not None:
            try:
                self.callback(report)
            except Exception:  # an application's callback must not stop the heartbeat
                logger.exception("greenbridge: blocking-detector callback failed")

    # -- the watcher side (runs on the watcher thread) ------------------------

    def _check(
        self, now: float, frames: dict[int, FrameType] | None
    ) -> dict[int, FrameType] | None:
        """Take a stack sample if the loop is stuck; returns the frames used."""
        seq = self._seq
        late = now - self._due
        raise_after = self.raise_after
        if raise_after is not None and self._raised_seq == seq and self._undelivered():
            self._raised_late = late  # the next one comes raise_after after this one
        elif (
            raise_after is not None
            and late > raise_after + (self._raised_late if self._raised_seq == seq else 0.0)
            and self._thread_id is not None
            and self._paused_seq != seq
            and self._is_running()
        ):
            self._raised_seq = seq
            self._raised_late = late
            self._raise_in_loop_thread(seq, late)
        if late <= self.threshold:
            return frames
        sample = self._sample
        if sample is not None and sample.seq == seq:
            return frames  # this stall is sampled already
        if self._thread_id is None:
            return frames
        if not self._is_running():
            # A stopped loop is idle, not blocked: its next beat is late, but
            # that lateness is no stall (the loop may be restarted later).
            self._paused_seq = seq
            return frames
        if self._paused_seq == seq:
            return frames  # restarted after a pause; the next beat resets things
        if frames is None:
            frames = sys._current_frames()
        frame = frames.get(self._thread_id)
        try:
            task = self._current_task()
        except Exception:  # noqa: BLE001 - best effort, from another thread
            task = None
        stack = _extract(frame)
        del frame
        suspended = tuple(suspended_stacks()) if self.suspended else ()
        # Keep the sample only if the loop was stuck in the same step all along.
        if self._seq == seq and self._is_running():
            self._sample = _Sample(seq, stack, task, now, suspended)
        return frames

    def _raise_in_loop_thread(self, seq: int, late: float) -> None:
        """Raise `BlockingDetected` in the code that blocks the loop (watcher thread).

        In the main thread, through a signal (see `_SignalRaiser`): it interrupts
        a blocking system call too, and its handler checks, in the loop's thread,
        that the loop is still stuck in the same step.  In any other thread,
        with ``PyThreadState_SetAsyncExc``: raised at the next bytecode, so a
        blocking C call ends first.
        """
        tid = self._thread_id
        assert tid is not None
        message = (
            f"the event loop was blocked for more than {late:.3f} s "
            f"(detect_blocking(raise_after={self.raise_after}))"
        )
        if self._signal and _raiser.send(self, seq, message, tid):
            return
        _messages[tid] = message
        _set_async_exc(tid, BlockingDetected)

    def _prime(self) -> None:
        """Start watching at once, from the loop's thread (not from the first beat on).

        The first beat runs at the loop's next turn: without this, a step
        that blocks right after the detector starts (the rest of the step
        that started it, or a task step queued before the beat) went unseen.
        """
        self._thread_id = _thread.get_ident()
        self._due = time.monotonic() + self.interval

    def _undelivered(self) -> bool:
        """Whether the last BlockingDetected sent is not raised yet."""
        pending = _raiser.pending
        return (pending is not None and pending[0] is self) or self._thread_id in _messages

    def _flush(self) -> None:
        """Report a stall that was sampled but not reported yet (its loop stopped first)."""
        sample = self._sample
        if sample is not None and sample.seq == self._seq:
            self._sample = None
            late = sample.at - self._due
            if late > self.threshold:
                self._report(late, sample)

    # -- control ------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True until :meth:`stop` is called."""
        return not self._stopped

    def stop(self) -> None:
        """Stop the heartbeat and the watching.  Idempotent; any thread."""
        if self._stopped:
            return
        self._stopped = True
        _watcher.remove(self)
        self._cancel()
        if self._signal:
            self._signal = False
            _raiser.release()

    def __enter__(self) -> BlockingDetector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "active" if self.active else "stopped"
        return f"<BlockingDetector threshold={self.threshold} {state}>"


# ---------------------------------------------------------------------------
# the watcher thread, shared by every detector


@dataclass
class _Watcher:
    detectors: list[BlockingDetector] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    thread: threading.Thread | None = None
    pid: int = 0

    def add(self, detector: BlockingDetector) -> None:
        with self.cond:
            self.detectors.append(detector)
            if self.thread is None or not self.thread.is_alive() or self.pid != os.getpid():
                self.pid = os.getpid()
                self.thread = threading.Thread(
                    target=self._run, name="greenbridge-detector", daemon=True
                )
                self.thread.start()
            self.cond.notify()

    def remove(self, detector: BlockingDetector) -> None:
        with self.cond:
            if detector in self.detectors:
                self.detectors.remove(detector)

    def _run(self) -> None:
        cond = self.cond
        while True:
            with cond:
                while not self.detectors:
                    cond.wait()
                detectors = list(self.detectors)
                poll = min(d.interval for d in detectors)
                cond.wait(poll)
            now = time.monotonic()
            frames: dict[int, FrameType] | None = None
            for detector in detectors:
                if not detector._stopped:
                    frames = detector._check(now, frames)
            del frames


_watcher = _Watcher()


# ---------------------------------------------------------------------------
# raising in the blocked code (raise_after)
#
# Two ways to raise in another thread, each with its limit.  A signal handler
# runs only in the main thread, but the signal also interrupts a blocking
# system call there (time.sleep, select, recv: EINTR, and the call raises
# what the handler raises instead of retrying, PEP 475); the handler runs in
# the loop's thread, so it can check that the loop is still stuck in the same
# step before raising.  PyThreadState_SetAsyncExc reaches any thread, but only
# at its next bytecode: a C call that blocks is not interrupted, the exception
# comes when it returns.  So: the signal when the loop runs in the main thread
# (and the handler could be installed), the asynchronous exception otherwise.

# SIGURG: ignored by default and next to never used by Python programs (Go's
# runtime preempts goroutines with it for the same reasons).  None on Windows.
_RAISE_SIGNAL: int | None = getattr(signal, "SIGURG", None)


def _set_async_exc(thread_id: int, exc_type: type[BaseException]) -> None:
    import ctypes

    set_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_exc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))


class _SignalRaiser:
    """The ``SIGURG`` handler that raises `BlockingDetected` in the main thread.

    Installed while a detector with ``raise_after`` watches a loop of the main
    thread; a ``SIGURG`` that is not ours goes to the handler installed before.
    """

    def __init__(self) -> None:
        self.users = 0
        self.installed = False
        self.previous: Any = None
        self.pending: tuple[BlockingDetector, int, str] | None = None

    def acquire(self) -> bool:
        """Install the handler (main thread only); return whether it is in place."""
        if _RAISE_SIGNAL is None or not hasattr(signal, "pthread_kill"):
            return False  # pragma: no cover - Windows
        if not self.installed:
            try:
                previous = signal.signal(_RAISE_SIGNAL, self.handler)
            except ValueError:  # not the main thread
                return False
            self.previous = previous
            self.installed = True
        self.users += 1
        return True

    def release(self) -> None:
        """One user fewer; the last one puts the previous handler back (if in the main thread)."""
        self.users -= 1
        if self.users or _RAISE_SIGNAL is None:
            return
        with contextlib.suppress(ValueError):  # not the main thread: it stays, and chains
            if signal.getsignal(_RAISE_SIGNAL) == self.handler:
                signal.signal(_RAISE_SIGNAL, self.previous)
            self.installed = False
            self.previous = None

    def send(self, detector: BlockingDetector, seq: int, message: str, thread_id: int) -> bool:
        self.pending = (detector, seq, message)
        try:
            signal.pthread_kill(thread_id, _RAISE_SIGNAL)  # type: ignore[arg-type]
        except OSError:  # pragma: no cover - the thread is gone
            self.pending = None
            return False
        return True

    def handler(self, signum: int, frame: FrameType | None) -> Any:
        pending = self.pending
        if pending is not None:
            self.pending = None
            detector, seq, message = pending
            # Still stuck in the step the watcher saw: raise in it.
            if detector._seq == seq and not detector._stopped:
                raise BlockingDetected(message)
            return None
        previous = self.previous
        if callable(previous):
            return previous(signum, frame)
        return None


_raiser = _SignalRaiser()


# ---------------------------------------------------------------------------
# attaching to a loop


def _check_threshold(threshold: float, name: str = "threshold") -> float:
    threshold = float(threshold)
    if not threshold > 0:
        raise ValueError(f"detect_blocking(): {name} must be > 0 seconds, got {threshold!r}")
    return threshold


def _attach_asyncio(detector: BlockingDetector, loop: asyncio.AbstractEventLoop) -> None:
    ref = weakref.ref(loop)
    handle: list[asyncio.TimerHandle | None] = [None]

    def beat() -> None:
        the_loop = ref()
        if detector._stopped or the_loop is None:
            return
        detector._beat()
        handle[0] = the_loop.call_later(detector.interval, beat)

    def is_running() -> bool:
        the_loop = ref()
        if the_loop is None or the_loop.is_closed():
            detector.stop()
            return False
        return the_loop.is_running()

    def current_task() -> str | None:
        the_loop = ref()
        task = asyncio.current_task(the_loop) if the_loop is not None else None
        return None if task is None else repr(task)

    def cancel() -> None:
        the_loop = ref()
        h = handle[0]
        if the_loop is None or h is None or the_loop.is_closed():
            return
        if detector._thread_id == threading.get_ident():
            h.cancel()
        else:
            the_loop.call_soon_threadsafe(h.cancel)

    detector._is_running = is_running
    detector._current_task = current_task
    detector._cancel = cancel
    loop.call_soon_threadsafe(beat)


def _attach_trio(detector: BlockingDetector) -> None:
    import trio

    token = trio.lowlevel.current_trio_token()
    scope = trio.CancelScope()
    running = [True]

    async def heartbeat() -> None:
        try:
            with scope:
                while True:
                    detector._beat()
                    await trio.sleep(detector.interval)
        finally:
            running[0] = False

    def cancel() -> None:
        if detector._thread_id == threading.get_ident():
            scope.cancel()
        else:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)

    detector._is_running = lambda: running[0]
    detector._cancel = cancel
    trio.lowlevel.spawn_system_task(heartbeat, name="greenbridge-detector-heartbeat")


def detect_blocking(
    threshold: float = 0.1,
    callback: Callable[[BlockingReport], object] | None = None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    raise_after: float | None = None,
    suspended: bool = False,
) -> BlockingDetector:
    """Report code that blocks the event loop for longer than ``threshold`` seconds.

    A helper thread watches the loop; when one step of the loop takes longer
    than ``threshold``, it samples the stack of the code running on the loop's
    thread (the greenlet or coroutine that blocked, the blocking frame last),
    and when the loop comes back the stall is reported with its duration:
    logged as a warning on the logger ``greenbridge.detector`` and passed to
    ``callback`` (called on the loop's thread), once per distinct stack.

    Use the returned detector as a context manager, or call its ``stop()``::

        with greenbridge.detect_blocking(0.05, callback=reports.append):
            await main()

    With ``raise_after``, a step that lasts longer than that many seconds
    is also ended: `BlockingDetected` is raised *in the blocked code*, once
    per stall (the stall is reported as well when the loop comes back).
    When the loop runs in the main thread the detector sends it a ``SIGURG``
    whose handler raises (installed while the detector runs; a ``SIGURG``
    that is not the detector's goes to the previous handler), which also
    interrupts a blocking system call such as ``time.sleep`` or
    ``socket.recv``.  In any other thread it is raised with
    ``PyThreadState_SetAsyncExc``, at the blocked code's next bytecode: a
    blocking C call is not interrupted, the exception comes when it returns.
    Either way it can land anywhere in the blocked step, as a
    ``KeyboardInterrupt`` does: code that must not be interrupted should not
    run under ``raise_after``; the loop itself is unharmed (an exception in a
    callback is logged, in a task it ends the task).

    Args:
        threshold: the longest step, in seconds, that is not reported.
        callback: called with a :class:`BlockingReport` for each new report.
        loop: the asyncio loop to watch (it may run in another thread);
            defaults to the running loop of this thread (asyncio, uvloop or
            trio).
        raise_after: seconds after which a blocked step gets `BlockingDetected`
            raised in it; None (the default) only reports.
        suspended: also record, in each report, every suspended greenbridge
            call with what it waits on (`BlockingReport.suspended`, as
            :func:`greenbridge.dump_stacks` prints them); off by default, as it
            walks the frames of every suspended call at each stall.

    Raises:
        ValueError: ``threshold`` or ``raise_after`` is not a positive number.
        RuntimeError: no ``loop`` was given and no event loop runs in this
            thread.
    """
    threshold = _check_threshold(threshold)
    if raise_after is not None:
        raise_after = _check_threshold(raise_after, "raise_after")
    detector = BlockingDetector(threshold, callback, raise_after, suspended)
    here = False  # does the loop run in this thread?
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        here = loop is not None or trio_running()
    if here:
        detector._prime()
        if raise_after is not None:
            detector._signal = _raiser.acquire()  # only in the main thread
    if loop is not None:
        _attach_asyncio(detector, loop)
    elif trio_running():
        _attach_trio(detector)
    else:
        raise RuntimeError(
            "detect_blocking() needs an event loop: call it from code running on the "
            "loop (a coroutine, or sync code run by greenbridge.async_), pass loop=..., "
            f"or set the environment variable {ENV_VAR}=<seconds> before importing "
            "greenbridge to watch every asyncio loop"
        )
    _watcher.add(detector)
    return detector


# ---------------------------------------------------------------------------
# assert_no_blocking


class _Asserting(threading.local):
    def __init__(self) -> None:
        # The sync assertions open in this thread, watching the loops it runs.
        self.active: list[BlockingAssertion] = []


_asserting = _Asserting()


def _wrap_for_assertions(cls: Any) -> None:
    """Make ``cls.run_forever`` watch the loop for the thread's open assertions."""
    original = cls.run_forever
    if getattr(original, "__greenbridge_assertions__", False):
        return

    def run_forever(self: asyncio.AbstractEventLoop) -> None:
        active = _asserting.active
        if not active:
            original(self)
            return
        detectors = [assertion._watch(self) for assertion in active]
        try:
            original(self)
        finally:
            for detector in detectors:
                detector._flush()  # a stall at the very end: the loop stopped first
                detector.stop()

    run_forever.__greenbridge_assertions__ = True  # type: ignore[attr-defined]
    run_forever.__wrapped__ = original  # type: ignore[attr-defined]
    run_forever.__doc__ = original.__doc__
    cls.run_forever = run_forever


class BlockingAssertion:
    """What :func:`assert_no_blocking` returns: a sync and async context manager.

    ``reports`` lists the stalls seen so far inside the block.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = _check_threshold(threshold)
        self.reports: list[BlockingReport] = []
        self._detector: BlockingDetector | None = None
        self._pushed = False

    def _watch(self, loop: asyncio.AbstractEventLoop) -> BlockingDetector:
        detector = BlockingDetector(self.threshold, self.reports.append)
        _attach_asyncio(detector, loop)
        detector._prime()  # the loop runs in this thread, from now on
        _watcher.add(detector)
        return detector

    def __enter__(self) -> BlockingAssertion:
        if asyncio_loop() is not None or trio_running():
            # Sync code on a running loop (under greenbridge): watch that loop.
            self._detector = detect_blocking(self.threshold, self.reports.append)
        else:
            # Around loop.run_until_complete() or asyncio.run(): watch every
            # loop this thread runs until the block ends.
            _wrap_for_assertions(asyncio.BaseEventLoop)
            uvloop = sys.modules.get("uvloop")  # not imported: no uvloop loop can run
            if uvloop is not None:
                _wrap_for_assertions(uvloop.Loop)
            _asserting.active.append(self)
            self._pushed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pushed:
            self._pushed = False
            with contextlib.suppress(ValueError):
                _asserting.active.remove(self)
        detector, self._detector = self._detector, None
        if detector is not None:
            detector._flush()  # a stall that is still going on, in this very step
            detector.stop()
        if exc_type is None:
            self.check()

    async def __aenter__(self) -> BlockingAssertion:
        self._detector = detect_blocking(self.threshold, self.reports.append)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def check(self) -> None:
        """Raise AssertionError if the loop was blocked beyond the threshold so far."""
        if self.reports:
            lines = [
                f"the event loop was blocked longer than {self.threshold:.3f} s "
                f"inside assert_no_blocking() ({len(self.reports)} stall(s)):"
            ]
            lines.extend(report.format() for report in self.reports)
            raise AssertionError("\n".join(lines))


def assert_no_blocking(threshold: float = 0.1) -> BlockingAssertion:
    """Fail (AssertionError) when code inside the block blocks the event loop.

    For tests.  As a sync context manager around code that runs a loop
    (``loop.run_until_complete(...)``, ``asyncio.run(...)``: every asyncio or
    uvloop loop this thread runs inside the block is watched), or inside
    sync code running on a loop under greenbridge; or as an async context
    manager inside a coroutine (asyncio, uvloop or trio)::

        with greenbridge.assert_no_blocking(0.05):
            asyncio.run(main())

        async def test_handler() -> None:
            async with greenbridge.assert_no_blocking(0.05):
                await handler()

    When the block ends (without an exception of its own), AssertionError
    lists every stall longer than ``threshold`` seconds that
    :func:`detect_blocking` reported inside it, with the blocking code's
    stack.  The stalls are logged as well, as the detector logs them.

    The first sync use around a loop wraps ``run_forever`` of asyncio's
    loops (and uvloop's, if imported) for good, as the environment variable
    ``GREENBRIDGE_DETECT_BLOCKING`` does: outside the block the wrapper only
    looks at an empty per-thread list.

    Raises:
        ValueError: ``threshold`` is not a positive number.
    """
    return BlockingAssertion(threshold)


# ---------------------------------------------------------------------------
# the environment variable


_auto_detectors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BlockingDetector] = (
    weakref.WeakKeyDictionary()
)


def _wrap_run_forever(cls: Any, threshold: float) -> None:
    original = cls.run_forever
    if getattr(original, "__greenbridge_detector__", False):
        return

    def run_forever(self: asyncio.AbstractEventLoop) -> None:
        detector = _auto_detectors.get(self)
        if detector is None or not detector.active:
            detector = BlockingDetector(threshold, None)
            _attach_asyncio(detector, self)
            _watcher.add(detector)
            _auto_detectors[self] = detector
        else:
            detector._due = float("inf")  # the loop was stopped, not blocked
        original(self)

    run_forever.__greenbridge_detector__ = True  # type: ignore[attr-defined]
    run_forever.__wrapped__ = original  # type: ignore[attr-defined]
    run_forever.__doc__ = original.__doc__
    cls.run_forever = run_forever


def watch_all_loops(threshold: float) -> None:
    """Attach a detector (logging only) to every asyncio/uvloop loop when it starts running.

    What ``GREENBRIDGE_DETECT_BLOCKING`` does; also the hook for a command-line
    flag.  Wraps ``run_forever`` of ``asyncio.BaseEventLoop`` and ``uvloop.Loop``
    (if installed); each loop keeps one detector for its whole life.
    """
    threshold = _check_threshold(threshold)
    _wrap_run_forever(asyncio.BaseEventLoop, threshold)
    try:
        import uvloop
    except ImportError:
        return
    _wrap_run_forever(uvloop.Loop, threshold)


def watch_from_environment() -> float | None:
    """Honour ``GREENBRIDGE_DETECT_BLOCKING=<seconds>``; return the threshold, or None if off.

    Called by ``import greenbridge`` when the variable is set (and by nothing
    else).  Empty or ``0`` means off.  Any other value that is not a number
    of seconds > 0 leaves the detector off with a `RuntimeWarning` that names
    the variable, the value and what it accepts: a typo in the environment
    must not stop the program from importing greenbridge.
    """
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    try:
        threshold = float(value)
    except ValueError:
        threshold = math.nan
    if threshold == 0:
        return None
    if not threshold > 0:  # also NaN
        warnings.warn(
            f"{ENV_VAR}={value!r} ignored: expected a number of seconds > 0 such as 0.1 "
            "(empty or 0: off); the blocking-call detector stays off",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    watch_all_loops(threshold)
    return threshold
