"""A pytest plugin: fail tests that block the event loop or leave suspended sync calls behind.

Load it with ``pytest -p greenbridge.pytest_plugin`` (or
``pytest_plugins = ["greenbridge.pytest_plugin"]`` in a ``conftest.py``).

* A test marked ``@pytest.mark.greenbridge_no_blocking(threshold=0.1)``, or
  every test under ``--greenbridge-no-blocking[=SECONDS]``, runs inside
  :func:`greenbridge.assert_no_blocking`: it fails when its code blocks an
  event loop it runs (``asyncio.run``, ``loop.run_until_complete``, an async
  test run by pytest-asyncio or anyio) for longer than the threshold.
* Every test fails (at teardown) when it leaves a greenbridge call suspended
  behind it: sync code run by ``async_``/``spawn`` (or a green thread) that
  still waits once the test and its fixtures are over.  The message lists
  them as :func:`greenbridge.dump_stacks` does.  Mark a test
  ``@pytest.mark.greenbridge_allow_suspended`` to leave it out.
"""

from __future__ import annotations

import gc
from collections.abc import Generator
from typing import Any

import pytest

from ._detector import assert_no_blocking
from ._stacks import suspended_stacks, suspended_workers

__all__ = [
    "pytest_addoption",
    "pytest_configure",
    "pytest_runtest_call",
    "pytest_runtest_setup",
    "pytest_runtest_teardown",
]

_BEFORE = pytest.StashKey[set[int]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--greenbridge-no-blocking[=SECONDS]`` option."""
    parser.getgroup("greenbridge").addoption(
        "--greenbridge-no-blocking",
        nargs="?",
        const=0.1,
        default=None,
        type=float,
        metavar="SECONDS",
        help="fail every test whose code blocks an event loop longer than SECONDS (0.1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers."""
    config.addinivalue_line(
        "markers",
        "greenbridge_no_blocking(threshold=0.1): fail the test if its code blocks "
        "an event loop longer than threshold seconds",
    )
    config.addinivalue_line(
        "markers",
        "greenbridge_allow_suspended: do not fail the test for greenbridge calls "
        "left suspended behind it",
    )


def _threshold(item: pytest.Item) -> float | None:
    marker = item.get_closest_marker("greenbridge_no_blocking")
    if marker is not None:
        return float(marker.kwargs.get("threshold", marker.args[0] if marker.args else 0.1))
    value: float | None = item.config.getoption("--greenbridge-no-blocking")
    return value


def _suspended_ids() -> set[int]:
    return {id(worker) for worker in suspended_workers()}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Note the calls suspended before the test (a wider fixture's are not its own)."""
    item.stash[_BEFORE] = _suspended_ids()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Run the test inside assert_no_blocking() when it asks for it."""
    threshold = _threshold(item)
    if threshold is None:
        return (yield)
    with assert_no_blocking(threshold):
        return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, Any]:
    """After the fixtures' teardown: fail for the calls the test left suspended."""
    result = yield
    if item.get_closest_marker("greenbridge_allow_suspended") is not None:
        return result
    before = item.stash.get(_BEFORE, set())
    if _suspended_ids() - before:
        gc.collect()  # calls suspended on a closed loop are unwound by the collector
        left = _suspended_ids() - before
        if left:
            stacks = [s for s in suspended_stacks() if s.worker_id in left]
            lines = [f"the test left {len(left)} greenbridge call(s) suspended:"]
            lines.extend(stack.format() for stack in stacks)
            pytest.fail("\n".join(lines), pytrace=False)
    return result
