"""The blocking-call detector names the sync frame that stalled the loop.

Each test blocks the loop for real (the stdlib ``time.sleep``, a CPU loop, a
blocking ``socket.recv``) from sync code run by ``greenbridge.async_``, and
checks the report: the innermost frame, the duration, the logging record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

import greenbridge
from greenbridge import BlockingReport, _detector, detect_blocking

from .helpers import Backend

BLOCK = 0.3
THRESHOLD = 0.1
PACKAGE_DIR = os.path.dirname(os.path.abspath(greenbridge.__file__)) + os.sep


def sleeper() -> None:
    time.sleep(BLOCK)  # the line the detector must name


def spinner() -> int:
    n = 0
    end = time.perf_counter() + BLOCK
    while time.perf_counter() < end:  # a CPU loop
        n += 1
    return n


def receiver() -> bytes:
    a, b = socket.socketpair()
    with a, b:
        timer = threading.Timer(BLOCK, b.send, (b"x",))
        timer.start()
        try:
            return a.recv(1)  # a real blocking socket that escaped patching
        finally:
            timer.join()


def watched(
    backend: Backend, fn: Callable[[], Any], threshold: float = THRESHOLD
) -> list[BlockingReport]:
    """Run ``fn`` under async_ with a detector on; return the reports."""
    reports: list[BlockingReport] = []

    async def main() -> None:
        with detect_blocking(threshold, reports.append):
            await backend.sleep(0.05)  # let the heartbeat start
            await greenbridge.async_(fn)()
            await backend.sleep(0.05)  # let the late heartbeat report

    backend.run(main)
    return reports


def line_of(fn: Callable[..., Any], marker: str) -> int:
    import inspect

    lines, start = inspect.getsourcelines(fn)
    for offset, text in enumerate(lines):
        if marker in text:
            return start + offset
    raise AssertionError(marker)


@pytest.mark.parametrize(
    ("fn", "marker"),
    [(sleeper, "time.sleep(BLOCK)"), (spinner, "n += 1"), (receiver, "a.recv(1)")],
    ids=["time.sleep", "cpu-loop", "socket.recv"],
)
def test_names_the_blocking_frame(backend: Backend, fn: Callable[[], Any], marker: str) -> None:
    all_reports = watched(backend, fn)
    # Only fn blocked; a stall elsewhere (a loaded CI machine) would be reported too.
    reports = [r for r in all_reports if any(f.name == fn.__name__ for f in r.stack)]
    assert len(reports) == 1, [r.format() for r in all_reports]
    report = reports[0]
    top = report.frame
    assert top is not None
    assert top.name == fn.__name__
    assert top.filename == __file__
    if fn is spinner:
        # A CPU loop is caught somewhere inside its loop.
        assert line_of(fn, "end = ") < top.lineno <= line_of(fn, marker)
    else:
        assert top.lineno == line_of(fn, marker)
        assert top.line == marker.strip() or marker in (top.line or "")
    # The duration is a lower bound, accurate to within the heartbeat interval.
    assert BLOCK - 0.1 <= report.duration <= BLOCK + 1.0
    assert report.threshold == THRESHOLD
    # No loop machinery or greenbridge internals in the stack.
    assert all("asyncio" not in f.filename and "_bridge.py" not in f.filename for f in report.stack)
    assert not any(f.filename.startswith(PACKAGE_DIR) for f in report.stack)
    if backend.is_asyncio:
        assert report.task is not None and "Task" in report.task


def test_coroutine_blocking_directly(aio: Backend) -> None:
    reports: list[BlockingReport] = []

    async def bad_coroutine() -> None:
        time.sleep(BLOCK)  # blocks in a coroutine, no greenlet involved

    async def main() -> None:
        with detect_blocking(THRESHOLD, reports.append):
            await aio.sleep(0.05)
            await bad_coroutine()
            await aio.sleep(0.05)

    aio.run(main)
    assert [r.frame.name for r in reports if r.frame] == ["bad_coroutine"]
    assert [f.name for f in reports[0].stack][-2:] == ["main", "bad_coroutine"]


def test_once_per_distinct_stack_and_logging(
    aio: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    reports: list[BlockingReport] = []

    def first_caller() -> None:
        sleeper()

    def second_caller() -> None:
        sleeper()

    async def main() -> None:
        with detect_blocking(THRESHOLD, reports.append) as detector:
            for fn in (first_caller, first_caller, second_caller, first_caller):
                await aio.sleep(0.05)
                await greenbridge.async_(fn)()
            await aio.sleep(0.05)
        assert detector.reports == reports
        assert not detector.active

    with caplog.at_level(logging.WARNING, logger="greenbridge.detector"):
        aio.run(main)
    assert [[f.name for f in r.stack] for r in reports] == [
        ["first_caller", "sleeper"],
        ["second_caller", "sleeper"],
    ]
    records = [r for r in caplog.records if r.name == "greenbridge.detector"]
    assert len(records) == 2
    assert "event loop blocked for" in records[0].getMessage()
    assert "time.sleep(BLOCK)" in records[0].getMessage()


def test_quiet_when_nothing_blocks(backend: Backend) -> None:
    reports: list[BlockingReport] = []

    def cooperative() -> None:
        for _ in range(50):
            greenbridge.await_(backend.sleep(0.01))
            time.sleep(0.002)  # short steps are fine

    async def main() -> None:
        with detect_blocking(THRESHOLD, reports.append):
            await greenbridge.async_(cooperative)()

    backend.run(main)
    assert reports == []


def test_stop_ends_reporting(aio: Backend) -> None:
    reports: list[BlockingReport] = []

    async def main() -> None:
        detector = detect_blocking(THRESHOLD, reports.append)
        await aio.sleep(0.05)
        detector.stop()
        detector.stop()  # idempotent
        await greenbridge.async_(sleeper)()
        await aio.sleep(0.05)

    aio.run(main)
    assert reports == []


def test_callback_errors_are_logged_not_fatal(
    aio: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_callback(report: BlockingReport) -> None:
        raise ValueError("boom")

    async def main() -> int:
        with detect_blocking(THRESHOLD, bad_callback) as detector:
            await aio.sleep(0.05)
            await greenbridge.async_(sleeper)()
            await aio.sleep(0.05)
            await greenbridge.async_(spinner)()
            await aio.sleep(0.05)
            return len(detector.reports)

    with caplog.at_level(logging.WARNING, logger="greenbridge.detector"):
        assert aio.run(main) == 2
    assert any("callback failed" in r.getMessage() for r in caplog.records)


def test_watches_a_loop_in_another_thread() -> None:
    import asyncio

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        reports: list[BlockingReport] = []
        with detect_blocking(THRESHOLD, reports.append, loop=loop):
            time.sleep(0.1)
            asyncio.run_coroutine_threadsafe(greenbridge.async_(sleeper)(), loop).result()
            time.sleep(0.1)
        assert [r.frame.name for r in reports if r.frame] == ["sleeper"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_a_stopped_loop_is_not_a_blocked_one() -> None:
    import asyncio

    reports: list[BlockingReport] = []

    async def busy_but_fine() -> None:
        for _ in range(5):  # first steps of each run do some work
            end = time.perf_counter() + 0.01
            while time.perf_counter() < end:
                pass
            await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    try:
        # 10 ms steps against a 100 ms threshold: room for a busy machine's
        # scheduling delays, while each stop lasts three thresholds.
        with detect_blocking(0.1, reports.append, loop=loop):
            for _ in range(4):
                loop.run_until_complete(busy_but_fine())
                time.sleep(0.3)  # the loop is stopped, not blocked
    finally:
        loop.close()
    assert reports == []


# Files of greenbridge now and after splits: the detector must not care which.
PACKAGE_FILES = [
    "_bridge.py",
    "_portal.py",
    "_hub.py",
    "_trampoline.py",
    "_park.py",
    "_private_loop.py",
    "_hub/_asyncio.py",
    "_hub/_trio.py",
    "green/_util.py",
    "green/_locks.py",
    "drivers/psycopg.py",
    "__main__.py",
]


@pytest.mark.parametrize("name", PACKAGE_FILES)
def test_greenbridge_frames_are_known_by_directory(name: str) -> None:
    """Any file under the package is machinery, left out of a report, whatever its name."""
    filename = os.path.join(PACKAGE_DIR, *name.split("/"))
    assert _detector.internal_file(filename)
    namespace: dict[str, Any] = {}
    code = "def machinery(callback):\n    return callback()\n"
    exec(compile(code, filename, "exec"), namespace)

    def user_code() -> Any:
        return sys._getframe()

    stack = _detector._extract(namespace["machinery"](user_code))
    names = [f.name for f in stack]
    assert "machinery" not in names
    assert names[-2:] == ["test_greenbridge_frames_are_known_by_directory", "user_code"]


def test_other_files_are_not_greenbridge_frames() -> None:
    assert _detector.internal_file(asyncio.events.__file__)
    assert not _detector.internal_file(__file__)
    assert not _detector.internal_file(threading.__file__)
    # A neighbour whose name starts like the package's is not the package.
    assert not _detector.internal_file(PACKAGE_DIR.rstrip(os.sep) + "_extras" + os.sep + "x.py")


def test_misuse() -> None:
    with pytest.raises(RuntimeError, match="needs an event loop.*pass loop="):
        detect_blocking()
    with pytest.raises(ValueError, match="threshold must be > 0"):
        detect_blocking(0)


def run_script(path: Any, code: str, env_value: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GREENBRIDGE_DETECT_BLOCKING=env_value)
    path.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


ENV_SCRIPT = """
    import asyncio, logging, sys, time
    import greenbridge

    logging.basicConfig()

    def legacy_call():
        time.sleep(0.3)

    async def main():
        await asyncio.sleep(0.05)
        await greenbridge.async_(legacy_call)()
        await asyncio.sleep(0.05)

    if sys.argv[1:] == ["uvloop"]:
        import uvloop
        uvloop.new_event_loop().run_until_complete(main())
    else:
        asyncio.run(main())
"""


def test_environment_variable(aio: Backend, tmp_path: Any) -> None:
    code = ENV_SCRIPT
    if aio.name == "uvloop":
        pytest.importorskip("uvloop")
        code = code.replace('if sys.argv[1:] == ["uvloop"]:', "if True:")
    result = run_script(tmp_path / "script.py", code, "0.1")
    assert result.returncode == 0, result.stderr
    assert "WARNING:greenbridge.detector:event loop blocked for" in result.stderr
    assert "in legacy_call\n    time.sleep(0.3)" in result.stderr
    # Off: nothing is reported, and nothing is patched.
    off = (
        textwrap.dedent(code)
        + "\nassert not hasattr(asyncio.BaseEventLoop.run_forever, '__wrapped__')\n"
    )
    quiet = run_script(tmp_path / "quiet.py", off, "0")
    assert quiet.returncode == 0, quiet.stderr
    assert "greenbridge.detector" not in quiet.stderr


def test_environment_variable_invalid(tmp_path: Any) -> None:
    # A typo in the environment must not stop the program: a warning, detector off.
    code = (
        "import asyncio, greenbridge\n"
        "assert not hasattr(asyncio.BaseEventLoop.run_forever, '__wrapped__')\n"
    )
    result = run_script(tmp_path / "bad.py", code, "fast")
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning: GREENBRIDGE_DETECT_BLOCKING='fast' ignored" in result.stderr


@pytest.mark.parametrize("value", ["fast", "-1", "nan", " 0.1s "])
def test_environment_variable_warning(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_detector.ENV_VAR, value)
    message = (
        f"GREENBRIDGE_DETECT_BLOCKING={value.strip()!r} ignored: expected a number of "
        "seconds > 0 such as 0.1 (empty or 0: off); the blocking-call detector stays off"
    )
    with pytest.warns(RuntimeWarning) as caught:
        assert _detector.watch_from_environment() is None
    assert [str(w.message) for w in caught] == [message]
    assert not hasattr(asyncio.BaseEventLoop.run_forever, "__wrapped__")


@pytest.mark.parametrize("value", ["", "  ", "0", "0.0"])
def test_environment_variable_off(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_detector.ENV_VAR, value)
    assert _detector.watch_from_environment() is None  # no warning (warnings are errors here)
    assert not hasattr(asyncio.BaseEventLoop.run_forever, "__wrapped__")


CLI_SCRIPT = """
    import time

    def crunch():
        end = time.perf_counter() + 0.3
        # One line: the detector's snapshot may land on either half of a loop.
        while time.perf_counter() < end: pass

    time.sleep(0.05)
    crunch()
    time.sleep(0.05)
"""


def test_environment_variable_with_the_cli(tmp_path: Any) -> None:
    import importlib.util

    if importlib.util.find_spec("greenbridge.__main__") is None:
        pytest.skip("the greenbridge CLI is not in this tree")
    script = tmp_path / "cpu.py"
    script.write_text(textwrap.dedent(CLI_SCRIPT))
    env = dict(os.environ, GREENBRIDGE_DETECT_BLOCKING="0.1")
    result = subprocess.run(
        [sys.executable, "-m", "greenbridge", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "event loop blocked for" in result.stderr
    assert "in crunch\n    while time.perf_counter() < end: pass" in result.stderr


def test_cli_flag(tmp_path: Any) -> None:
    import importlib.util

    if importlib.util.find_spec("greenbridge.__main__") is None:
        pytest.skip("the greenbridge CLI is not in this tree")
    script = tmp_path / "cpu.py"
    script.write_text(textwrap.dedent(CLI_SCRIPT))
    env = {k: v for k, v in os.environ.items() if k != "GREENBRIDGE_DETECT_BLOCKING"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "greenbridge", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = cli("--detect-blocking=0.1", str(script))
    assert result.returncode == 0, result.stderr
    assert "in crunch\n    while time.perf_counter() < end: pass" in result.stderr
    assert "in crunch" not in cli(str(script)).stderr  # off without the flag
    bad = cli("--detect-blocking=soon", str(script))
    assert bad.returncode == 2
    assert "--detect-blocking=soon: expected a number of seconds" in bad.stderr


# ---------------------------------------------------------------------------
# raise_after: BlockingDetected raised in the blocked code


def long_sleeper() -> None:
    time.sleep(3)  # interrupted by the detector


def long_spinner() -> None:
    end = time.perf_counter() + 3
    while time.perf_counter() < end:  # interrupted by the detector
        pass


async def raise_into(fn: Callable[[], Any]) -> tuple[float, BaseException | None, int]:
    """Run ``fn`` under a detector with raise_after; then check the loop still works."""
    reports: list[BlockingReport] = []
    with detect_blocking(0.05, reports.append, raise_after=0.2):
        start = time.monotonic()
        error: BaseException | None = None
        try:
            await greenbridge.async_(fn)()
        except greenbridge.BlockingDetected as exc:
            error = exc
        elapsed = time.monotonic() - start
        # The loop and the bridge go on as before.
        await asyncio.sleep(0.01)
        assert await greenbridge.async_(lambda: greenbridge.await_(asyncio.sleep(0, 7)))() == 7
    return elapsed, error, len(reports)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("fn", [long_sleeper, long_spinner])
def test_raise_after_in_the_main_thread(fn: Callable[[], None]) -> None:
    import signal

    before = signal.getsignal(signal.SIGURG)
    elapsed, error, reports = asyncio.run(raise_into(fn))
    assert isinstance(error, greenbridge.BlockingDetected)
    assert isinstance(error, RuntimeError)
    assert "raise_after=0.2" in str(error)
    assert 0.15 < elapsed < 1.5  # a blocking system call is interrupted too
    assert reports == 1  # and the stall is reported as well
    # Raised in the blocked code (under the detector's signal handler, if any).
    frames = [f for f, _ in traceback.walk_tb(error.__traceback__)]
    ours = [f for f in frames if not _detector.internal_file(f.f_code.co_filename)]
    assert ours[-1].f_code is fn.__code__
    assert signal.getsignal(signal.SIGURG) == before  # the handler is put back


def test_raise_after_in_another_thread() -> None:
    results: list[tuple[float, BaseException | None, int]] = []

    def run(fn: Callable[[], None]) -> None:
        results.append(asyncio.run(raise_into(fn)))

    for fn in (long_spinner, sleeper):
        thread = threading.Thread(target=run, args=(fn,))
        thread.start()
        thread.join()
    (spin_elapsed, spin_error, _), (sleep_elapsed, sleep_error, _) = results
    # A CPU loop is interrupted at its next bytecode...
    assert isinstance(spin_error, greenbridge.BlockingDetected)
    assert 0.15 < spin_elapsed < 1.5
    # ...a blocking C call only when it returns (no signal outside the main thread).
    assert isinstance(sleep_error, greenbridge.BlockingDetected)
    assert sleep_elapsed >= BLOCK


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_raise_after_passes_other_sigurgs_on() -> None:
    import signal

    got: list[int] = []

    def mine(signum: int, frame: Any) -> None:
        got.append(signum)

    previous = signal.signal(signal.SIGURG, mine)
    try:

        async def main() -> None:
            with detect_blocking(0.05, raise_after=0.5):
                os.kill(os.getpid(), signal.SIGURG)
                await asyncio.sleep(0.05)

        asyncio.run(main())
        assert got == [signal.SIGURG]
        assert signal.getsignal(signal.SIGURG) is mine
    finally:
        signal.signal(signal.SIGURG, previous)


@pytest.mark.skipif(
    sys.version_info[:3] == (3, 13, 0),
    reason="CPython 3.13.0 may let an exception raised by a signal handler in a loop "
    "escape the try around it (python/cpython#108214; docs/detector.md)",
)
def test_a_step_that_goes_on_blocking_gets_it_again() -> None:
    caught: list[float] = []

    def stubborn() -> None:
        start = time.monotonic()
        for _ in range(2):
            try:
                while time.monotonic() - start < 3:
                    pass
            except greenbridge.BlockingDetected:
                caught.append(time.monotonic() - start)

    async def main() -> None:
        with detect_blocking(0.05, raise_after=0.2):
            await greenbridge.async_(stubborn)()

    asyncio.run(main())
    assert len(caught) == 2
    assert caught[1] - caught[0] >= 0.15  # raise_after apart, not a storm


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_raise_after_must_be_positive(value: float) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="raise_after must be > 0"):
            detect_blocking(0.1, raise_after=value)

    asyncio.run(main())


# ---------------------------------------------------------------------------
# assert_no_blocking


async def blocks_in_a_coroutine() -> None:
    time.sleep(BLOCK)  # blocks the loop: the line the assertion names


async def does_not_block() -> None:
    await asyncio.sleep(BLOCK)
    await greenbridge.async_(lambda: greenbridge.await_(asyncio.sleep(0.01)))()


def test_assert_no_blocking_around_asyncio_run() -> None:
    with pytest.raises(AssertionError) as info, greenbridge.assert_no_blocking(THRESHOLD):
        asyncio.run(blocks_in_a_coroutine())
    message = str(info.value)
    assert "blocked longer than 0.100 s inside assert_no_blocking() (1 stall(s))" in message
    assert "time.sleep(BLOCK)  # blocks the loop" in message
    with greenbridge.assert_no_blocking(THRESHOLD) as check:
        asyncio.run(does_not_block())
    assert check.reports == []


def test_assert_no_blocking_around_run_until_complete() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(AssertionError), greenbridge.assert_no_blocking(THRESHOLD):
            loop.run_until_complete(greenbridge.async_(sleeper)())
        with greenbridge.assert_no_blocking(THRESHOLD):
            loop.run_until_complete(does_not_block())
        # Outside the block, nothing watches the loop any more.
        loop.run_until_complete(blocks_in_a_coroutine())
    finally:
        loop.close()


def test_assert_no_blocking_in_a_coroutine(backend: Backend) -> None:
    async def main() -> str:
        async with greenbridge.assert_no_blocking(THRESHOLD):
            await backend.sleep(0.01)
        try:
            async with greenbridge.assert_no_blocking(THRESHOLD):
                await greenbridge.async_(sleeper)()
        except AssertionError as exc:
            return str(exc)
        return "no AssertionError"

    assert "time.sleep(BLOCK)" in backend.run(main)


def test_assert_no_blocking_in_sync_code_on_the_loop() -> None:
    def sync() -> None:
        with greenbridge.assert_no_blocking(THRESHOLD):
            greenbridge.await_(asyncio.sleep(0.01))
        with pytest.raises(AssertionError), greenbridge.assert_no_blocking(THRESHOLD):
            sleeper()

    asyncio.run(greenbridge.async_(sync)())


def test_assert_no_blocking_leaves_the_blocks_own_error_alone() -> None:
    async def fails() -> None:
        time.sleep(BLOCK)
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"), greenbridge.assert_no_blocking(THRESHOLD):
        asyncio.run(fails())


def test_assert_no_blocking_checks_its_threshold() -> None:
    with pytest.raises(ValueError, match="threshold must be > 0"):
        greenbridge.assert_no_blocking(0)
