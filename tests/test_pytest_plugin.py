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
