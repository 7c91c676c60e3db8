"""pytest's side of the suite: the loop fixtures and the leak check after every test.

What tests share beyond fixtures (backends, services, the heartbeat, the
registrations check) is in ``helpers.py``; import it from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any

import pytest

from .helpers import BACKENDS, Backend, registrations


@pytest.fixture(params=["asyncio", "uvloop", "trio"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every loop family greenbridge supports."""
    return BACKENDS[request.param]


@pytest.fixture(params=["asyncio", "uvloop"])
def aio(request: pytest.FixtureRequest) -> Backend:
    """The asyncio-API loops (asyncio's own and uvloop)."""
    return BACKENDS[request.param]


# ---------------------------------------------------------------- leak check
#
# After every test (once its fixtures are torn down) nothing it started may
# outlive it: no worker greenlet outside its thread's pool, no pending asyncio
# Task, no open event loop with registered readers/writers (the thread's
# private loop may stay open, but with nothing registered), no running thread,
# no open file descriptor.  A test that deliberately leaves something says so
# with ``@pytest.mark.leaks_ok(reason=...)``.
#
# Cost.  A full gc.collect() and a pass over gc.get_objects() take ~0.1 s
# each on this suite's heap (100k objects, mostly modules), more than most
# tests.  So after each check everything still alive is moved to gc's
# permanent generation (gc.freeze()): the next check collects and scans only
# what was created since, i.e. by the test.  Every object is thus scanned once,
# at the check that follows its creation; the workers and loops found are
# remembered (weakly) and checked again at every later check, as they can be
# reused.  A frozen object that became cyclic garbage is not freed, so when
# something looks leaked the freeze is undone and every generation collected
# before anything is reported.  Threads and file descriptors are compared with
# a snapshot taken before the test's setup.  What a fixture of a wider scope
# (module, session) creates is its own, never a test's leak; what was reported
# (or allowed) once is not reported again.

_LEAKS_OK = "leaks_ok"
# Seconds a thread, a descriptor or a thread's pool may take to go (a server
# thread closing its end...); only a test that looks leaky waits for it.
_GRACE = float(os.environ.get("GREENBRIDGE_LEAK_GRACE", "1.0"))

_workers: weakref.WeakSet[Any] = weakref.WeakSet()  # every worker greenlet seen
_loops: weakref.WeakSet[Any] = weakref.WeakSet()  # every event loop seen
_seen: weakref.WeakSet[Any] = weakref.WeakSet()  # already reported or allowed
_owned_loops: weakref.WeakSet[Any] = weakref.WeakSet()  # loops of wider-scoped fixtures
_seen_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_seen_fds: set[tuple[int, str]] = set()
_seen_registrations: set[tuple[int, int, str]] = set()  # (id(loop), fd, "reader"/"writer")
_before_key = pytest.StashKey[tuple[set[threading.Thread], set[tuple[int, str]]]]()
_failed_key = pytest.StashKey[bool]()
_cost = [0, 0.0]  # tests checked, seconds spent checking (setup and teardown)
_started: list[bool] = []  # [True] once the first test's setup froze the imports


def _kind(cls: type) -> str:
    from greenbridge._trampoline import Worker

    if issubclass(cls, Worker):
        return "worker"
    if issubclass(cls, (asyncio.Task, asyncio.tasks._PyTask)):  # type: ignore[attr-defined]
        return "task"
    if issubclass(cls, asyncio.AbstractEventLoop):
        return "loop"
    return ""


def _scan() -> list[Any]:
    """The pending tasks among the objects gc tracks; remember its workers and loops."""
    tasks = []
    # type -> "worker" / "task" / "loop" / "": only for this pass, which must
    # keep no class (and what its methods hold) alive.
    kinds: dict[type, str] = {}
    for obj in gc.get_objects():
        cls = type(obj)
        kind = kinds.get(cls)
        if kind is None:
            kind = kinds[cls] = _kind(cls)
        if not kind:
            continue
        if kind == "worker":
            _workers.add(obj)
        elif kind == "loop":
            _loops.add(obj)
        elif not obj.done():
            tasks.append(obj)
    return tasks


def _fds() -> set[tuple[int, str]]:
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # not Linux: no descriptor check
        return set()
    fds = set()
    for name in names:
        fd = int(name)
        if fd <= 2:  # stdio: pytest's capture swaps these around
            continue
        # (The listing's own descriptor is gone by now, and so may be others.)
        with contextlib.suppress(OSError):
            fds.add((fd, os.readlink(f"/proc/self/fd/{name}")))
    return fds


def _loop_fds(loop: Any) -> set[int]:
    """A loop's own descriptors: its selector and its self-pipe."""
    fds = set()
    for name in ("_selector", "_ssock", "_csock"):
        holder = getattr(loop, name, None)
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fds.add(holder.fileno())
    fds.discard(-1)
    return fds


def _kept_threads(private_loop: Any) -> set[threading.Thread]:
    """Threads of process-wide pools and watchers that rightly outlive a test."""
    from greenbridge import _detector, _offload

    kept: set[threading.Thread] = set()
    if _detector._watcher.thread is not None:
        kept.add(_detector._watcher.thread)
    pools = []
    if _offload._default_pool is not None:
        pools.append(_offload._default_pool._executor)
    if private_loop is not None:
        pools.append(getattr(private_loop, "_default_executor", None))
    for pool in pools:
        kept.update(getattr(pool, "_threads", ()))
    return kept


def _describe_worker(worker: Any) -> str:
    frames = []
    frame = worker.gr_frame
    while frame is not None and len(frames) < 8:
        code = frame.f_code
        frames.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
    where = "\n        ".join(frames) or "(no frame)"
    return f"{worker!r} suspended at:\n        {where}"


def _describe_thread(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or -1)
    lines = traceback.format_stack(frame, limit=4) if frame is not None else []
    return f"{thread!r}\n" + "".join("      " + ln.strip() + "\n" for ln in lines)


@dataclass
class _Suspects:
    """What looks left behind by a test, before anything is marked as seen."""

    workers: list[Any] = field(default_factory=list)
    loops: list[tuple[Any, list[tuple[int, str, Any]]]] = field(default_factory=list)
    private: list[tuple[int, str, Any]] = field(default_factory=list)
    tasks: list[Any] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    fds: list[tuple[int, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(vars(self).values())


def _suspects(
    tasks: list[Any], before_threads: set[threading.Thread], before_fds: set[tuple[int, str]]
) -> _Suspects:
    from greenbridge._private_loop import current_private_loop
    from greenbridge._trampoline import parked_workers

    found = _Suspects()
    private_loop = current_private_loop()
    pooled = {id(w) for w in parked_workers()}
    for worker in list(_workers):
        if worker.dead or not worker or id(worker) in pooled:  # dead, unstarted or parked
            _seen.discard(worker)  # (a worker reported once may be reused later)
        elif worker not in _seen:
            found.workers.append(worker)
    for loop in list(_loops):
        if loop in _seen or loop in _owned_loops or loop is private_loop or loop.is_closed():
            continue
        regs = registrations(loop)
        if regs:  # (an open loop with nothing registered is checked again next time)
            found.loops.append((loop, regs))
    if private_loop is not None and not private_loop.is_closed():
        found.private = [
            (fd, what, cb)
            for fd, what, cb in registrations(private_loop)
            if (id(private_loop), fd, what) not in _seen_registrations
        ]
    found.tasks = [
        task
        for task in tasks
        if not task.done() and task not in _seen and task.get_loop() not in _owned_loops
    ]
    kept = _kept_threads(private_loop)
    found.threads = [
        t
        for t in threading.enumerate()
        if t not in before_threads and t not in _seen_threads and t not in kept
    ]
    own = _loop_fds(private_loop) if private_loop is not None else set()
    own.add(_pytest_log_file_fd())
    found.fds = sorted(
        (fd, target) for fd, target in _fds() - before_fds - _seen_fds if fd not in own
    )
    return found


def _leaks(
    before_threads: set[threading.Thread], before_fds: set[tuple[int, str]], grace: float
) -> list[str]:
    """What the test left behind (marking all of it as seen), as report lines."""
    from greenbridge._private_loop import current_private_loop

    gc.collect()
    tasks = _scan()
    found = _suspects(tasks, before_threads, before_fds)
    if not found:
        return []
    # Make sure: collect every generation (see "Cost" above), and give what is
    # still ending a moment (a thread's last lines, a server closing its end,
    # the pool of a thread that just ended).
    gc.unfreeze()
    deadline = time.monotonic() + grace
    while True:
        del found, tasks  # (what they hold may be garbage now)
        gc.collect()
        tasks = _scan()
        found = _suspects(tasks, before_threads, before_fds)
        if not found or time.monotonic() >= deadline:
            break
        for thread in found.threads:
            thread.join(0.02)
        if not found.threads:
            time.sleep(0.02)

    report: list[str] = []
    for worker in found.workers:
        _seen.add(worker)
        report.append(f"worker greenlet outside the pool: {_describe_worker(worker)}")
    for loop, regs in found.loops:
        _seen.add(loop)
        listed = ", ".join(f"{what} fd {fd}: {cb!r}" for fd, what, cb in regs)
        report.append(f"open event loop {loop!r} with registrations: {listed}")
    for fd, what, cb in found.private:
        _seen_registrations.add((id(current_private_loop()), fd, what))
        report.append(f"{what} left on the private loop, fd {fd}: {cb!r}")
    for task in found.tasks:
        _seen.add(task)
        report.append(f"pending task {task!r} (coroutine {task.get_coro()!r})")
    for thread in found.threads:
        _seen_threads.add(thread)
        report.append(f"thread still running: {_describe_thread(thread)}")
    for fd, target in found.fds:
        _seen_fds.add((fd, target))
        report.append(f"file descriptor {fd} left open: {target}")
    return report


_logging_plugin: Any = None


def _pytest_log_file_fd() -> int:
    """The descriptor of pytest's own log file (``--log-file``, else os.devnull).

    A test that reconfigures logging (uvicorn does, with ``dictConfig``) closes
    every handler, pytest's log file included; that handler reopens its file
    at the next record it writes, during the test: pytest's, not a leak.
    """
    handler = getattr(_logging_plugin, "log_file_handler", None)
    stream = getattr(handler, "stream", None)
    try:
        return stream.fileno() if stream is not None else -1
    except (OSError, ValueError):  # closed
        return -1


def pytest_sessionstart(session: pytest.Session) -> None:
    global _logging_plugin
    _logging_plugin = session.config.pluginmanager.get_plugin("logging-plugin")
    # libuv opens a process-wide pipe with its first loop, for good: open it now.
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return
    uvloop.new_event_loop().close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    gc.unfreeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Any:
    """What a module- or session-scoped fixture creates is its own, not a test's leak."""
    if fixturedef.scope == "function":
        yield
        return
    start = time.perf_counter()
    loops = set(_loops)
    threads = set(threading.enumerate())
    fds = _fds()
    _cost[1] += time.perf_counter() - start
    yield
    start = time.perf_counter()
    _seen.update(_scan())
    _owned_loops.update(loop for loop in _loops if loop not in loops)
    _seen_threads.update(t for t in threading.enumerate() if t not in threads)
    _seen_fds.update(_fds() - fds)
    _cost[1] += time.perf_counter() - start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    start = time.perf_counter()
    marker = item.get_closest_marker(_LEAKS_OK)
    if marker is not None and not marker.kwargs.get("reason"):
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.leaks_ok needs reason=...")
    if not _started:  # the first test: freeze what the imports made
        _started.append(True)
        gc.collect()
        _scan()
        gc.freeze()
    item.stash[_before_key] = (set(threading.enumerate()), _fds())
    _cost[1] += time.perf_counter() - start
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.failed or (call.when == "call" and hasattr(report, "wasxfail")):
        item.stash[_failed_key] = True
    if call.when == "teardown" and _before_key in item.stash:
        # The test's teardown raised before the check ran: take note of its
        # leftovers anyway, so the next test is not blamed for them.
        _check(item)


def _check(item: pytest.Item) -> list[str]:
    before = item.stash.get(_before_key, None)
    if before is None:
        return []
    del item.stash[_before_key]
    start = time.perf_counter()
    # A test that leaks on purpose is not given time to clean up.
    grace = 0.0 if item.get_closest_marker(_LEAKS_OK) is not None else _GRACE
    leaks = _leaks(*before, grace)
    gc.freeze()
    _cost[0] += 1
    _cost[1] += time.perf_counter() - start
    return leaks


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _cost[0]:
        terminalreporter.write_line(
            f"leak check: {_cost[0]} tests checked in {_cost[1]:.1f} s "
            f"({1000 * _cost[1] / _cost[0]:.1f} ms per test)"
        )


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # trylast: runs after pytest's own teardown of the test's fixtures.
    leaks = _check(item)
    if not leaks or item.stash.get(_failed_key, False):
        return  # nothing, or the test already fails: its leftovers are now known
    if item.get_closest_marker(_LEAKS_OK) is not None:
        return
    pytest.fail(
        "the test left this behind (fix its cleanup, or mark it "
        "@pytest.mark.leaks_ok(reason=...)):\n  " + "\n  ".join(leaks),
        pytrace=False,
    )
