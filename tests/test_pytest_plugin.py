"""``pytest -p greenbridge.pytest_plugin``: blocking tests and suspended calls left behind fail.

Each test runs a small test file in pytester's subprocess-free runner and
checks the outcome pytest reports.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

HEADER = """\
import asyncio, time
import pytest
import greenbridge
"""


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_it=HEADER + body)
    return pytester.runpytest_subprocess("-p", "greenbridge.pytest_plugin", *args)


def test_a_marked_test_that_blocks_fails(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
async def blocks():
    time.sleep(0.3)  # the blocking line

@pytest.mark.greenbridge_no_blocking(threshold=0.1)
def test_blocks():
    asyncio.run(blocks())

@pytest.mark.greenbridge_no_blocking(threshold=0.1)
def test_does_not_block():
    asyncio.run(asyncio.sleep(0.2))

def test_unmarked_blocks():
    asyncio.run(blocks())
""",
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*test_blocks*", "*blocked longer than 0.100 s inside assert_no_blocking()*"]
    )
    result.stdout.fnmatch_lines(["*time.sleep(0.3)  # the blocking line*"])


def test_the_option_covers_every_test(pytester: pytest.Pytester) -> None:
    body = """
def test_blocks():
    async def main():
        await greenbridge.async_(time.sleep)(0.3)
    asyncio.run(main())
"""
    run(pytester, body).assert_outcomes(passed=1)
    run(pytester, body, "--greenbridge-no-blocking").assert_outcomes(failed=1)
    run(pytester, body, "--greenbridge-no-blocking=0.5").assert_outcomes(passed=1)


def test_a_suspended_call_left_behind_fails(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
loop = asyncio.new_event_loop()
stuck = []

def waits(fut):
    greenbridge.await_(fut)  # left waiting here

def test_leaves_one():
    fut = loop.create_future()
    stuck.append(fut)
    task = loop.create_task(greenbridge.async_(waits)(fut))
    stuck.append(task)
    loop.run_until_complete(asyncio.sleep(0.01))

@pytest.mark.greenbridge_allow_suspended
def test_allowed():
    fut = loop.create_future()
    stuck.append(fut)
    stuck.append(loop.create_task(greenbridge.async_(waits)(fut)))
    loop.run_until_complete(asyncio.sleep(0.01))

def test_clean():
    loop.run_until_complete(greenbridge.async_(lambda: greenbridge.await_(asyncio.sleep(0)))())

def test_zz_cleanup():
    for item in stuck:
        if isinstance(item, asyncio.Future) and not isinstance(item, asyncio.Task):
            item.set_result(None)
    loop.run_until_complete(asyncio.gather(*[t for t in stuck if isinstance(t, asyncio.Task)]))
    loop.close()
""",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_one*",
            "*the test left 1 greenbridge call(s) suspended:*",
            "*Suspended call (task 'Task-*'), waiting on <Future pending*",
            "*line * in waits*",
        ]
    )


def test_a_marked_sync_test_runs_under_a_bridge(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
@pytest.fixture
def value():
    yield 21

@pytest.mark.greenbridge
def test_bridged(value, request):
    loop = asyncio.get_running_loop()
    assert greenbridge.await_(asyncio.sleep(0.01, result=value)) == 21
    assert asyncio.get_running_loop() is loop
    assert request.node.name == "test_bridged"

@pytest.mark.greenbridge
def test_returns():
    return greenbridge.await_(asyncio.sleep(0, result=1))

@pytest.mark.greenbridge
def test_bridged_fails():
    assert greenbridge.await_(asyncio.sleep(0, result=1)) == 2

def test_not_bridged():
    asyncio.get_running_loop()
""",
    )
    result.assert_outcomes(passed=2, failed=2, warnings=1)
    result.stdout.fnmatch_lines(["*test_bridged_fails*", "*assert 1 == 2*"])
    result.stdout.fnmatch_lines(["*test_returns*returned <class 'int'>*"])
    result.stdout.fnmatch_lines(["*test_not_bridged*", "*RuntimeError: no running event loop*"])


def test_each_bridged_test_gets_a_fresh_loop(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
seen = []

@pytest.mark.greenbridge
@pytest.mark.parametrize("n", [1, 2])
def test_loop(n):
    seen.append(asyncio.get_running_loop())
    assert len(set(map(id, seen))) == n
    greenbridge.await_(asyncio.sleep(0))

def test_closed():
    assert all(loop.is_closed() for loop in seen)
""",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(passed=3)


def test_the_sync_tests_option_bridges_every_sync_test(pytester: pytest.Pytester) -> None:
    body = """
def test_awaits():
    asyncio.get_running_loop()
    assert greenbridge.await_(asyncio.sleep(0, result=3)) == 3
"""
    run(pytester, body).assert_outcomes(failed=1)
    run(pytester, body, "--greenbridge-sync-tests").assert_outcomes(passed=1)


def test_a_bridged_test_can_run_on_uvloop(pytester: pytest.Pytester) -> None:
    pytest.importorskip("uvloop")
    result = run(
        pytester,
        """
import uvloop

@pytest.mark.greenbridge(loop="uvloop")
def test_on_uvloop():
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    greenbridge.await_(asyncio.sleep(0.01))

@pytest.mark.greenbridge(loop="trio")
def test_unknown_loop():
    pass
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*loop must be one of 'asyncio', 'uvloop'*"])


def test_a_bridged_test_that_blocks_its_loop_fails(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
@pytest.mark.greenbridge
@pytest.mark.greenbridge_no_blocking(threshold=0.1)
def test_blocks():
    time.sleep(0.3)  # the blocking line

@pytest.mark.greenbridge
@pytest.mark.greenbridge_no_blocking(threshold=0.1)
def test_waits():
    greenbridge.await_(asyncio.sleep(0.3))
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*time.sleep(0.3)  # the blocking line*"])


def test_a_bridged_test_that_leaves_a_task_fails(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
@pytest.mark.greenbridge
def test_leaves_a_task():
    asyncio.get_running_loop().create_task(asyncio.sleep(10), name="left-behind")

@pytest.mark.greenbridge
@pytest.mark.greenbridge_allow_pending
def test_allowed():
    asyncio.get_running_loop().create_task(asyncio.sleep(10))

@pytest.mark.greenbridge
def test_clean():
    task = asyncio.get_running_loop().create_task(asyncio.sleep(0.01))
    greenbridge.await_(task)
""",
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*the test returned with 1 task(s)/registration(s) pending on its loop:*",
            "*pending task <Task pending name='left-behind'*",
        ]
    )


def test_tasks_and_registrations_left_on_an_open_loop_fail(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
from greenbridge.green import socket as gsocket

loop = asyncio.new_event_loop()
a, b = gsocket.socketpair()
kept = []

@pytest.fixture(scope="module")
def module_task():
    # a wider fixture's task is not the test's own
    task = loop.create_task(asyncio.sleep(10))
    yield  # test_zz_cleanup cancels it

@pytest.fixture(scope="module")
def another_module_task():
    task = loop.create_task(asyncio.sleep(10))
    yield

def test_uses_the_hub(module_task):
    task = loop.create_task(greenbridge.async_(a.recv)(1))
    loop.run_until_complete(asyncio.sleep(0.01))  # waits: the hub registers a reader
    b.send(b"x")
    assert loop.run_until_complete(task) == b"x"

@pytest.mark.greenbridge_allow_suspended
def test_leaves_a_reader():
    kept.append(loop.create_task(greenbridge.async_(a.recv)(1)))
    loop.run_until_complete(asyncio.sleep(0.01))

def test_leaves_a_task(another_module_task):
    kept.append(loop.create_task(asyncio.sleep(10), name="left-behind"))
    loop.run_until_complete(asyncio.sleep(0))

@pytest.mark.greenbridge_allow_pending
@pytest.mark.greenbridge_allow_suspended
def test_allowed():
    kept.append(loop.create_task(asyncio.sleep(10)))
    loop.run_until_complete(asyncio.sleep(0))

@pytest.mark.greenbridge_allow_pending
@pytest.mark.greenbridge_allow_suspended
def test_zz_cleanup():
    b.send(b"y")
    tasks = [task for task in asyncio.all_tasks(loop) if task is not kept[0]]
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*kept, *tasks, return_exceptions=True))
    loop.run_until_complete(asyncio.sleep(0))
    a.close()
    b.close()
    loop.close()
""",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(passed=5, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_a_reader*",
            "*the test left 2 task(s)/registration(s) pending on open loops:*",
            "*reader registered by greenbridge on fd * of <*EventLoop*",
            "*pending task <Task pending*recv*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_a_task*",
            "*the test left 1 task(s)/registration(s) pending on open loops:*",
            "*pending task <Task pending name='left-behind'*",
        ]
    )


def test_async_tests_are_left_to_their_plugin(pytester: pytest.Pytester) -> None:
    pytest.importorskip("anyio")
    result = run(
        pytester,
        """
@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.mark.anyio
async def test_async():
    await asyncio.sleep(0)
    assert greenbridge.await_ is not None

@pytest.mark.anyio
@pytest.mark.greenbridge
async def test_async_marked():
    await greenbridge.async_(lambda: greenbridge.await_(asyncio.sleep(0)))()

def test_sync():
    greenbridge.await_(asyncio.sleep(0))
    asyncio.get_running_loop()
""",
        "--greenbridge-sync-tests",
    )
    result.assert_outcomes(passed=3)
