"""Stacks of suspended sync code: `dump_stacks` and `suspended_stacks`.

A sync call run by greenbridge that waits (on a socket, a sleep, a green
lock, a Future) is a *suspended worker greenlet*: no OS thread runs it, so
``faulthandler`` and ``sys._current_frames()`` never show it.  This module
finds every one of them and says what it waits on, the way
``faulthandler.dump_traceback(all_threads=True)`` prints threads.

How, at almost no cost to the code that waits: the only thing recorded
when a worker suspends is the time (``Worker.since``, one clock read beside
the greenlet switch).  The trampoline already keeps a weak set of its live workers per
thread (`greenbridge._trampoline.live_workers` reads them all); a worker is
suspended when its greenlet has a frame that is not the idle loop of a
pooled worker.  What it waits on is read from its innermost frames, which
are greenbridge's own and hold the facts in their locals: the hub's ``wait``
(descriptor, direction, timeout and its timer), the green waiter's ``wait``
(and the green primitive that called it: ``Lock.acquire``, ``Queue.get``,
``Thread.join``...), or ``await_`` (the awaitable).  Since when: a timed
wait has a loop timer whose deadline, minus the timeout, is when the wait
began; any other wait of a worker began when the worker last suspended.
(SQLAlchemy's greenlets record nothing: their age is unknown.)

Its green thread: the task that drives a worker awaits the trampoline's
`~greenbridge._trampoline.Pending`, found by walking the await chain of the
tasks of the worker's loop; a green ``Thread``'s ident is ``id(task)``.
The green modules and the hub backend are looked up in ``sys.modules``, not
imported: when a module is not loaded, nothing can be waiting in it, and a
dump must not load (or patch) anything.
"""

from __future__ import annotations

import asyncio
import os
import reprlib
import sys
import threading
import time
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import IO, Any

from ._bridge import await_
from ._trampoline import Pending, Worker, live_workers

__all__ = [
    "SuspendedStack",
    "dump_stacks",
    "internal_file",
    "suspended_stacks",
    "suspended_workers",
]


def _directory_of(module: types.ModuleType) -> str:
    file = module.__file__
    assert file is not None  # a package imported from source files
    return os.path.dirname(os.path.abspath(file)) + os.sep


# Frames in these directories (greenbridge, at any depth, and asyncio) are the
# machinery between the loop and the user's code: the trampoline, portals, the
# hub, the green modules, the CLI.  The package is found through its top-level
# module, so the test does not depend on where this file sits in it.
_PACKAGE_DIR = _directory_of(sys.modules[__name__.partition(".")[0]])
_ASYNCIO_DIR = _directory_of(asyncio)


def internal_file(filename: str) -> bool:
    """Return true for a frame's file that a report leaves out (greenbridge's or asyncio's)."""
    return filename.startswith(_PACKAGE_DIR) or filename.startswith(_ASYNCIO_DIR)


@dataclass(frozen=True)
class SuspendedStack:
    """One suspended greenbridge call (a worker greenlet), as `dump_stacks` prints it.

    Attributes:
        name: the green thread's name (a `greenbridge.green.threading.Thread`,
            or ``MainThread`` under ``python -m greenbridge``), else None.
        task: the name of the asyncio task that drives the call, if found.
        waiting_on: what it waits on, e.g. ``"fd 7 readable"``,
            ``"sleep(5.0)"``, ``"green Lock.acquire"``,
            ``"<Future pending ...>"``.
        since: the `time.monotonic` time the wait began, or None when
            unknown (an untimed wait leaves no trace of its start).
        stack: the sync code's stack, outermost frame first, without
            greenbridge's and asyncio's frames.
        worker_id: ``id()`` of the worker greenlet (to tell calls apart).
    """

    name: str | None
    task: str | None
    waiting_on: str
    since: float | None
    stack: traceback.StackSummary
    worker_id: int = 0

    @property
    def age(self) -> float | None:
        """Seconds since the wait began (None when unknown)."""
        return None if self.since is None else max(0.0, time.monotonic() - self.since)

    def format(self) -> str:
        """A faulthandler-like block: a head line, then the frames, most recent call first."""
        who = f"Green thread {self.name!r}" if self.name is not None else "Suspended call"
        if self.task is not None:
            who += f" (task {self.task!r})"
        age = self.age
        when = "age unknown" if age is None else f"for {age:.3f} s"
        lines = [f"{who}, waiting on {self.waiting_on} ({when}), most recent call first:"]
        for frame in reversed(self.stack):
            lines.append(f'  File "{frame.filename}", line {frame.lineno} in {frame.name}')
        return "\n".join(lines)


_short = reprlib.Repr()
_short.maxstring = 120
_short.maxother = 120


def _code_of(module_name: str, *path: str) -> CodeType | None:
    """The code object of a function in a module, if that module is loaded."""
    obj: Any = sys.modules.get(module_name)
    for name in path:
        obj = getattr(obj, name, None)
    return getattr(obj, "__code__", None)


def _name(frame: FrameType) -> str:
    """The qualified name of the function ``frame`` runs (``Lock.acquire``)."""
    code = frame.f_code
    qualname: str | None = getattr(code, "co_qualname", None)  # 3.11+
    if qualname is not None:
        return qualname
    # 3.9/3.10: find the class that defines the method ``self`` runs.
    this = frame.f_locals.get("self")
    if this is not None:
        for cls in type(this).__mro__:
            if getattr(cls.__dict__.get(code.co_name), "__code__", None) is code:
                return f"{cls.__qualname__}.{code.co_name}"
    return code.co_name


def _timer_start(timer: Any, timeout: Any, loop: Any) -> float | None:
    """When a timed wait began, on `time.monotonic`'s clock, from its loop timer."""
    when = getattr(timer, "when", None)  # asyncio's TimerHandle, uvloop's (not a Handle)
    if when is None or not isinstance(timeout, (int, float)):
        return None
    try:
        age = loop.time() - (when() - timeout)
    except Exception:  # noqa: BLE001 - best effort, from any thread
        return None
    return time.monotonic() - max(0.0, float(age))


def _timeout(timeout: Any) -> str:
    return "" if timeout is None else f", timeout {timeout:g} s"


def _describe_hub(locs: dict[str, Any]) -> tuple[str, float | None]:
    fd, more, timeout = locs.get("fd"), locs.get("more"), locs.get("timeout")
    if fd is not None:
        what = f"fd {fd} {'readable' if locs.get('readable') else 'writable'}"
    elif more is not None:
        readers, writers = (list(fds) for fds in more)
        what = f"fds readable {readers} / writable {writers}"
    else:
        return f"sleep({timeout:g})", _timer_start(locs.get("timer"), timeout, locs.get("loop"))
    start = _timer_start(locs.get("timer"), timeout, locs.get("loop"))
    return what + _timeout(timeout), start


def _describe_sleep(locs: dict[str, Any]) -> tuple[str, float | None]:
    """A worker's sleep (`greenbridge._hub._asyncio.sleep_worker`): its length, its start."""
    seconds, deadline, loop = locs.get("seconds"), locs.get("deadline"), locs.get("loop")
    if not isinstance(seconds, (int, float)):
        return "a sleep", None
    start = None
    if isinstance(deadline, float) and loop is not None:
        try:
            age = loop.time() - (deadline - seconds)
        except Exception:  # noqa: BLE001 - best effort, from any thread
            pass
        else:
            start = time.monotonic() - max(0.0, float(age))
    return f"sleep({seconds:g})", start


def _innermost_awaited(awaitable: Any) -> Any:
    """Follow a coroutine's await chain to the object it waits on at the end."""
    for _ in range(100):
        inner = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
        if inner is None:
            break
        awaitable = inner
    return awaitable


def _describe_await(locs: dict[str, Any]) -> str:
    awaitable = locs.get("awaitable")
    frame = getattr(awaitable, "cr_frame", None)
    if frame is not None:
        # The trio backend's waits: the hub's descriptor wait, trio.sleep.
        code = frame.f_code
        if code is _code_of("greenbridge._hub._trio", "_wait"):
            inner = frame.f_locals
            readers, writers = list(inner.get("readers", ())), list(inner.get("writers", ()))
            if len(readers) + len(writers) == 1:
                fd, readable = (readers[0], True) if readers else (writers[0], False)
                what = f"fd {fd} {'readable' if readable else 'writable'}"
            else:
                what = f"fds readable {readers} / writable {writers}"
            return what + _timeout(inner.get("timeout"))
        if code.co_name == "sleep" and "trio" in code.co_filename:
            return f"sleep({frame.f_locals.get('seconds')!r})"
    inner = _innermost_awaited(awaitable)
    what = _short.repr(awaitable)
    if inner is not awaitable:
        what += f" awaiting {_short.repr(inner)}"
    return what


def _describe(frames: list[FrameType]) -> tuple[str, float | None]:
    """What the innermost frames (innermost first) say the worker waits on."""
    hub_waits = (
        _code_of("greenbridge._hub._asyncio", "wait"),
        _code_of("greenbridge._hub._asyncio", "wait_owned"),  # the green socket's
    )
    sleep_code = _code_of("greenbridge._hub._asyncio", "sleep_worker")
    waiter_wait = _code_of("greenbridge.green._waiter", "Waiter", "wait")
    # (The locks' and semaphores' shared helpers for taking and waiting for their
    # hand-over: not what the user called.)
    helpers = (
        _code_of("greenbridge.green._locks", "_granted"),
        _code_of("greenbridge.green._locks", "_take"),
    )
    await_code = getattr(await_, "__code__", None)
    # The greenbridge frames next to the innermost one; the outermost known
    # wait among them says most (a green lock's wait awaits a Future inside).
    run = []
    for frame in frames:
        if not internal_file(frame.f_code.co_filename):
            break
        run.append(frame)
    found: tuple[str, float | None] | None = None
    for i, frame in enumerate(run):
        code = frame.f_code
        if code in hub_waits:
            found = _describe_hub(frame.f_locals)
        elif code is sleep_code:
            found = _describe_sleep(frame.f_locals)
        elif code is waiter_wait:
            locs = frame.f_locals
            callers = [f for f in run[i + 1 :] if f.f_code not in helpers]
            what = "green " + (_name(callers[0]) if callers else "waiter")
            if len(callers) > 1 and len(run) < len(frames):
                # The green call the user's code made: Event.wait for its Condition.wait.
                # (When no frame of the user's is left, a green thread's target is
                # the primitive itself: its stack shows it.)
                what += f" (in {_name(run[-1])})"
            loop = getattr(locs.get("self"), "_loop", None)
            start = _timer_start(locs.get("timer"), locs.get("timeout"), loop)
            found = what + _timeout(locs.get("timeout")), start
        elif code is await_code and found is None:
            found = _describe_await(frame.f_locals), None
    return found if found is not None else ("an unknown wait", None)


def _frames(frame: FrameType | None) -> list[FrameType]:
    """``frame`` and its callers, innermost first."""
    out = []
    while frame is not None:
        out.append(frame)
        frame = frame.f_back
    return out


def _summary(frames: list[FrameType]) -> traceback.StackSummary:
    """Outermost first, without greenbridge's and asyncio's frames (all of them if none is left)."""
    pairs = [(f, f.f_lineno) for f in reversed(frames)]
    full = traceback.StackSummary.extract(iter(pairs), lookup_lines=False)
    kept = [f for f in full if not internal_file(f.filename)]
    summary = traceback.StackSummary.from_list(kept or list(full))
    for f in summary:
        f.line  # noqa: B018 - load the source line now
    return summary


def _suspended_workers() -> Iterator[tuple[Worker, FrameType]]:
    for worker in live_workers():
        frame = worker.gr_frame
        if frame is None or worker.dead or worker in worker.home:
            continue  # running (in its thread), ended, or pooled
        yield worker, frame


def suspended_workers() -> list[Worker]:
    """The worker greenlets whose call is suspended, in every thread (for the pytest plugin)."""
    return [worker for worker, _ in _suspended_workers()]


def _tasks_by_worker(loops: set[Any]) -> dict[Worker, Any]:
    """The task that awaits each suspended call's `Pending`, on these asyncio loops."""
    pending_code = Pending.__await__.__code__
    found: dict[Worker, Any] = {}
    for loop in loops:
        try:
            tasks = list(asyncio.all_tasks(loop))
        except RuntimeError:  # changed size (another thread)
            continue
        for task in tasks:
            node: Any = task.get_coro()
            for _ in range(100):
                if node is None:
                    break
                code = getattr(node, "gi_code", None)
                if code is pending_code and node.gi_frame is not None:
                    drv = node.gi_frame.f_locals.get("self")
                    if isinstance(drv, Pending):
                        found[drv.worker] = task
                    break
                node = getattr(node, "cr_await", None) or getattr(node, "gi_yieldfrom", None)
    return found


def _green_thread_names() -> dict[int, str]:
    """Green threads by ident (``id(task)``), if green threading is in use."""
    module = sys.modules.get("greenbridge.green.threading")
    if module is None:
        return {}
    return {t.ident: t.name for t in module.enumerate() if t.ident is not None}


def suspended_stacks() -> list[SuspendedStack]:
    """Every suspended greenbridge call (worker greenlet) of every thread, with what it waits on.

    Safe to call from any thread, a signal handler included; it imports
    nothing and changes nothing.  Costs a walk of the frames of each
    suspended call and of the await chains of the tasks of their loops.
    """
    workers = list(_suspended_workers())
    loops = set()
    for worker, _ in workers:
        ref = worker.pending
        drv = None if ref is None else ref()
        if drv is not None and drv.loop is not None:
            loops.add(drv.loop)
    tasks = _tasks_by_worker(loops)
    names = _green_thread_names()
    out = []
    for worker, frame in workers:
        frames = _frames(frame)
        waiting_on, since = _describe(frames)
        if since is None:
            since = worker.since or None  # when the call last suspended
        task = tasks.get(worker)
        thread = worker.thread  # a green thread's run: its identity (greenbridge._bare)
        ident = id(thread) if thread is not None else None if task is None else id(task)
        out.append(
            SuspendedStack(
                name=None if ident is None else names.get(ident),
                task=None if task is None else task.get_name(),
                waiting_on=waiting_on,
                since=since,
                stack=_summary(frames),
                worker_id=id(worker),
            )
        )
        del frames, frame
    return out


def _thread_names() -> dict[int, str]:
    # The threading module imported when this one was: the stdlib's, unless
    # the program was patched before; both list the OS threads they started.
    return {t.ident: t.name for t in threading.enumerate() if t.ident is not None}


def dump_stacks(file: IO[str] | None = None, *, all_threads: bool = True) -> None:
    """Print the stack of every suspended greenbridge call and green thread.

    For each sync call run by greenbridge that is suspended (a worker greenlet
    waiting on a socket, a sleep, a green lock, condition, queue or join, or
    an awaitable given to ``await_``): its green thread's name, its task,
    what it waits on and for how long (when known), then its frames, most
    recent call first, as ``faulthandler.dump_traceback(all_threads=True)``
    prints threads.  With ``all_threads`` (the default), the OS threads'
    running stacks are printed first, as faulthandler does; no OS thread
    shows a suspended call.

    Safe in a signal handler (``python -m greenbridge --dump-on-signal=SIGUSR1``
    installs one) and from any thread.

    Args:
        file: where to write; ``sys.stderr`` (at the time of the call) if None.
        all_threads: also print every OS thread's current stack.
    """
    out = sys.stderr if file is None else file
    blocks = []
    if all_threads:
        names = _thread_names()
        current = threading.get_ident()
        for ident, frame in sys._current_frames().items():
            head = "Current thread" if ident == current else "Thread"
            name = names.get(ident)
            label = f"{head} 0x{ident:016x}" + (f" {name!r}" if name else "")
            lines = [f"{label} (most recent call first):"]
            for f in _frames(frame):
                lines.append(
                    f'  File "{f.f_code.co_filename}", line {f.f_lineno} in {f.f_code.co_name}'
                )
            blocks.append("\n".join(lines))
            del frame
    stacks = suspended_stacks()
    for stack in stacks:
        blocks.append(stack.format())
    if not stacks:
        blocks.append("No suspended greenbridge call.")
    out.write("\n\n".join(blocks) + "\n")
    out.flush()
