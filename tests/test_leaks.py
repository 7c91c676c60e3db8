"""The leak check of tests/conftest.py, and leaks it found in greenbridge.

The check runs after every test of this suite; here a separate pytest run
(with the same conftest and helpers) is given tests that each leave one thing behind, to
prove that the check reports every kind, says what leaked, blames no later
test, and lets ``@pytest.mark.leaks_ok(reason=...)`` through.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_LEAKY = """
import asyncio
import os
import threading

import pytest

import greenbridge

stop = threading.Event()
kept = []


def test_clean():
    assert asyncio.run(asyncio.sleep(0, "ok")) == "ok"


def test_pending_task():
    loop = asyncio.new_event_loop()

    async def forever_pending():
        await asyncio.Event().wait()

    task = loop.create_task(forever_pending())
    loop.run_until_complete(asyncio.sleep(0))
    kept.append((loop, task))


def test_loop_left_with_a_reader():
    loop = asyncio.new_event_loop()
    r, w = os.pipe()
    loop.add_reader(r, print)
    kept.append((loop, r, w))


def test_reader_left_on_the_private_loop():
    loop = greenbridge.await_(_running())
    r, w = os.pipe()
    loop.add_reader(r, print)
    kept.append((loop, r, w))


def test_thread_left_running():
    threading.Thread(target=stop.wait, name="left-running", daemon=True).start()


def test_fd_left_open():
    kept.append(open(os.devnull, "rb"))


def test_worker_left_suspended():
    def stuck():
        greenbridge.await_(asyncio.get_running_loop().create_future())

    async def main():
        task = asyncio.ensure_future(greenbridge.async_(stuck)())
        await asyncio.sleep(0)
        kept.append(task)

    # The loop stays open: a task pending on a closed loop is unwound by the
    # next full collection (greenbridge._trampoline._unwind_dead_loops).
    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    kept.append(loop)


def test_clean_after_the_leaks():
    assert asyncio.run(asyncio.sleep(0, "ok")) == "ok"


@pytest.mark.leaks_ok(reason="this test keeps its descriptor on purpose")
def test_allowed_leak():
    kept.append(open(os.devnull, "rb"))


async def _running():
    return asyncio.get_running_loop()
"""


def _suite(pytester: pytest.Pytester) -> Path:
    """A ``tests`` package holding this suite's conftest and the helpers it imports."""
    here = Path(__file__).parent
    package = pytester.mkpydir("tests")
    for name in ("conftest.py", "helpers.py"):
        (package / name).write_text((here / name).read_text())
    return package


def _run_leaky(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.RunResult:
    package = _suite(pytester)
    pytester.makeini(
        "[pytest]\n"
        "markers =\n"
        "    leaks_ok(reason): deliberately leaves something alive\n"
        "addopts = --strict-markers\n"
        "filterwarnings = error\n"
    )
    (package / "test_leaky.py").write_text(_LEAKY)
    monkeypatch.setenv("GREENBRIDGE_LEAK_GRACE", "0.2")  # nothing here ends late
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rE")


def test_the_check_reports_every_kind_of_leak(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run_leaky(pytester, monkeypatch)
    out = result.stdout.str()
    # One teardown error per leaking test, and none for the clean ones.
    result.assert_outcomes(passed=9, errors=6)
    errors = {ln.split("::")[1].split()[0] for ln in out.splitlines() if ln.startswith("ERROR ")}
    assert errors == {
        "test_pending_task",
        "test_loop_left_with_a_reader",
        "test_reader_left_on_the_private_loop",
        "test_thread_left_running",
        "test_fd_left_open",
        "test_worker_left_suspended",
    }
    # Each report names what leaked.
    assert "pending task <Task pending" in out
    assert "forever_pending" in out
    assert "open event loop <_UnixSelectorEventLoop" in out
    assert "reader left on the private loop" in out
    assert "thread still running: <Thread(left-running" in out
    assert "left open: /dev/null" in out
    assert "worker greenlet outside the pool" in out
    assert "in stuck" in out


def test_leaks_ok_needs_a_reason(pytester: pytest.Pytester) -> None:
    package = _suite(pytester)
    pytester.makeini("[pytest]\nmarkers =\n    leaks_ok(reason): deliberately leaves\n")
    (package / "test_bare.py").write_text(
        "import pytest\n\n@pytest.mark.leaks_ok\ndef test_x():\n    pass\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert "leaks_ok needs reason=" in result.stdout.str() + result.stderr.str()
    assert result.ret != 0
