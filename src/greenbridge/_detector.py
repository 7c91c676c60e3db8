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

import asyncio
import contextlib
import logging
import math
import os
import sys
import threading
import time
import traceback
import types
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from ._where import trio_running

__all__ = [
    "ENV_VAR",
    "BlockingDetector",
    "BlockingReport",
    "detect_blocking",
    "internal_file",
    "watch_all_loops",
    "watch_from_environment",
]

logger = logging.getLogger("greenbridge.detector")

ENV_VAR = "GREENBRIDGE_DETECT_BLOCKING"

#: Largest heartbeat interval, whatever the threshold.
MAX_INTERVAL = 0.05


def _directory_of(module: types.ModuleType) -> str:
    file = module.__file__
    assert file is not None  # a package imported from source files
    return os.path.dirname(os.path.abspath(file)) + os.sep


# Frames in these directories (greenbridge, at any depth, and asyncio) are the
# machinery between the loop and the user's code: the trampoline that runs
# sync code, portals, the hub, the green modules, the CLI, this module.  They
# are dropped from a report so that it shows the user's code, and a blocking
# call made inside one of them is reported at the user's line that called it
# (as for a C function).  The package is found through its top-level module,
# so the test does not depend on where this file sits in it.
_PACKAGE_DIR = _directory_of(sys.modules[__name__.partition(".")[0]])
_ASYNCIO_DIR = _directory_of(asyncio)


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
    """

    duration: float
    threshold: float
    stack: traceback.StackSummary
    task: str | None = None

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
        return "\n".join(lines)


@dataclass
class _Sample:
    seq: int
    stack: traceback.StackSummary
    task: str | None


def internal_file(filename: str) -> bool:
    """Return true for a frame's file that a report leaves out (see `_PACKAGE_DIR`)."""
    return filename.startswith(_PACKAGE_DIR) or filename.startswith(_ASYNCIO_DIR)


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
    ) -> None:
        self.threshold = threshold
        self.interval = max(0.001, min(threshold / 4, MAX_INTERVAL))
        self.callback = callback
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
            self._thread_id = threading.get_ident()
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
        report = BlockingReport(duration, self.threshold, sample.stack, sample.task)
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
        if now - self._due <= self.threshold:
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
        # Keep the sample only if the loop was stuck in the same step all along.
        if self._seq == seq and self._is_running():
            self._sample = _Sample(seq, stack, task)
        return frames

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

    def __enter__(self) -> BlockingDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
# attaching to a loop


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not threshold > 0:
        raise ValueError(f"detect_blocking(): threshold must be > 0 seconds, got {threshold!r}")
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

    Args:
        threshold: the longest step, in seconds, that is not reported.
        callback: called with a :class:`BlockingReport` for each new report.
        loop: the asyncio loop to watch (it may run in another thread);
            defaults to the running loop of this thread (asyncio, uvloop or
            trio).

    Raises:
        ValueError: ``threshold`` is not a positive number.
        RuntimeError: no ``loop`` was given and no event loop runs in this
            thread.
    """
    threshold = _check_threshold(threshold)
    detector = BlockingDetector(threshold, callback)
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
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
