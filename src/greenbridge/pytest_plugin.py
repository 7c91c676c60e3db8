"""A pytest plugin: run sync tests on a loop, fail tests that block it or leave work behind.

Load it with ``pytest -p greenbridge.pytest_plugin`` (or
``pytest_plugins = ["greenbridge.pytest_plugin"]`` in a ``conftest.py``).  It
is deliberately not registered as a ``pytest11`` entry point: that would load
it into the test run of every project that installs greenbridge, and change
what their tests do, whether they asked for it or not.

* A plain ``def`` test marked ``@pytest.mark.greenbridge`` (or
  ``@pytest.mark.greenbridge(loop="uvloop")``), or every plain ``def`` test
  under ``--greenbridge-sync-tests``, runs inside :func:`greenbridge.async_`
  on a fresh event loop (one per test, closed after it), so its body can call
  :func:`greenbridge.await_`, green I/O and so on.  Fixtures are resolved by
  pytest as usual (sync fixtures run before the loop exists).  ``async def``
  tests are left to their own plugins (pytest-asyncio, anyio).  Such a test
  also fails when it returns with asyncio tasks still pending on its loop.
* A test marked ``@pytest.mark.greenbridge_no_blocking(threshold=0.1)``, or
  every test under ``--greenbridge-no-blocking[=SECONDS]``, runs inside
  :func:`greenbridge.assert_no_blocking`: it fails when its code blocks an
  event loop it runs (``asyncio.run``, ``loop.run_until_complete``, the loop
  of a ``greenbridge``-marked test, an async test run by pytest-asyncio or
  anyio) for longer than the threshold.
* Every test fails (at teardown) when it leaves a greenbridge call suspended
  behind it: sync code run by ``async_``/``spawn`` (or a green thread) that
  still waits once the test and its fixtures are over.  The message lists
  them as :func:`greenbridge.dump_stacks` does.  Mark a test
  ``@pytest.mark.greenbridge_allow_suspended`` to leave it out.
* Every test fails (at teardown) when it leaves readers/writers registered
  by greenbridge's hub on an open asyncio loop, or asyncio tasks pending on
  an open loop on which the hub had waited before the test.  Mark a test
  ``@pytest.mark.greenbridge_allow_pending`` to leave it out.

Only what was not there once the test's fixtures were set up counts: a
fixture of a wider scope may keep its own calls, tasks and registrations (so
a function-scoped fixture that leaves work behind in its *setup* is not
caught either; one that does so in its teardown is).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import warnings
import weakref
from collections.abc import Callable, Container, Coroutine, Generator
from typing import Any

import pytest

from ._bridge import async_
from ._detector import assert_no_blocking
from ._hub._asyncio import registries
from ._stacks import suspended_stacks, suspended_workers

__all__ = [
    "pytest_addoption",
    "pytest_configure",
    "pytest_pyfunc_call",
    "pytest_runtest_call",
    "pytest_runtest_setup",
    "pytest_runtest_teardown",
]

_BEFORE = pytest.StashKey[set[int]]()
_PENDING_BEFORE = pytest.StashKey[set[tuple[Any, ...]]]()
_LOOPS_BEFORE = pytest.StashKey["weakref.WeakSet[asyncio.AbstractEventLoop]"]()
_LOOPS = ("asyncio", "uvloop")


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--greenbridge-no-blocking[=SECONDS]`` and ``--greenbridge-sync-tests`` options."""
    group = parser.getgroup("greenbridge")
    group.addoption(
        "--greenbridge-no-blocking",
        nargs="?",
        const=0.1,
        default=None,
        type=float,
        metavar="SECONDS",
        help="fail every test whose code blocks an event loop longer than SECONDS (0.1)",
    )
    group.addoption(
        "--greenbridge-sync-tests",
        action="store_true",
        default=False,
        help="run every plain `def` test function inside greenbridge.async_ on a fresh "
        "asyncio loop (as if marked @pytest.mark.greenbridge)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers."""
    config.addinivalue_line(
        "markers",
        "greenbridge(loop='asyncio'): run this plain `def` test inside greenbridge.async_ "
        "on a fresh event loop ('asyncio' or 'uvloop')",
    )
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
    config.addinivalue_line(
        "markers",
        "greenbridge_allow_pending: do not fail the test for asyncio tasks or hub "
        "registrations left behind it",
    )


def _threshold(item: pytest.Item) -> float | None:
    marker = item.get_closest_marker("greenbridge_no_blocking")
    if marker is not None:
        return float(marker.kwargs.get("threshold", marker.args[0] if marker.args else 0.1))
    value: float | None = item.config.getoption("--greenbridge-no-blocking")
    return value


def _bridged_loop(item: pytest.Function) -> str | None:
    """The loop to run ``item`` on, or None when it is not ours to run."""
    function = item.obj
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        return None  # an async test: its own plugin runs it
    marker = item.get_closest_marker("greenbridge")
    if marker is None:
        return "asyncio" if item.config.getoption("--greenbridge-sync-tests") else None
    loop = str(marker.kwargs.get("loop", marker.args[0] if marker.args else "asyncio"))
    if loop not in _LOOPS:
        pytest.fail(
            f"@pytest.mark.greenbridge(loop={loop!r}) on {item.nodeid}: "
            f"loop must be one of {', '.join(map(repr, _LOOPS))}",
            pytrace=False,
        )
    return loop


def _suspended_ids() -> set[int]:
    return {id(worker) for worker in suspended_workers()}


def _pending(loop: asyncio.AbstractEventLoop) -> set[tuple[Any, ...]]:
    """Our registrations and the pending tasks on ``loop``, as comparable keys.

    The keys hold weak references (equal while their objects live): the
    snapshot taken at setup must not keep a loop or a task, and the calls
    suspended in it, alive for the collector of the suspended-calls check.
    """
    found: set[tuple[Any, ...]] = set()
    loop_ref = weakref.ref(loop)
    reg = registries.get(loop)
    if reg is not None:
        found.update(("reader", loop_ref, fd) for fd in list(reg.readers))
        found.update(("writer", loop_ref, fd) for fd in list(reg.writers))
    try:
        tasks = list(asyncio.all_tasks(loop))
    except RuntimeError:  # changed size (another thread)
        tasks = []
    found.update(("task", loop_ref, weakref.ref(task)) for task in tasks if not task.done())
    return found


def _all_pending(tasks_on: Container[object] | None = None) -> set[tuple[Any, ...]]:
    """What is pending on the open asyncio loops the hub waited on.

    With ``tasks_on``, only the tasks of those loops: on a loop the hub first
    waits on during the test, a task may be a wider fixture's, set up before.
    """
    found: set[tuple[Any, ...]] = set()
    for loop in list(registries):
        if not loop.is_closed():
            found.update(
                key
                for key in _pending(loop)
                if tasks_on is None or key[0] != "task" or loop in tasks_on
            )
    return found


def _describe(pending: set[tuple[Any, ...]]) -> list[str]:
    lines = []
    for kind, loop_ref, what in sorted(pending, key=lambda key: (key[0], str(key[2]))):
        if kind == "task":
            lines.append(f"  pending task {what()!r}")
        else:
            lines.append(f"  {kind} registered by greenbridge on fd {what} of {loop_ref()!r}")
    return lines


def _run_bridged(
    item: pytest.Function, loop: str, function: Callable[..., Any], kwargs: dict[str, Any]
) -> None:
    """Run ``function(**kwargs)`` inside ``async_`` on a fresh loop; fail for what it leaves."""
    left: list[str] = []
    returned: list[Any] = []

    async def main() -> None:
        returned.append(await async_(function)(**kwargs))
        this = asyncio.current_task()
        # Described now: asyncio.run cancels them next.
        left.extend(
            _describe({key for key in _pending(asyncio.get_running_loop()) if key[2]() is not this})
        )

    if loop == "uvloop":
        try:
            import uvloop  # noqa: PLC0415 - optional
        except ImportError:
            pytest.skip("@pytest.mark.greenbridge(loop='uvloop'): uvloop is not installed")
        run: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    else:
        run = asyncio.run
    run(main())  # which cancels the tasks left, then closes the loop
    if returned and returned[0] is not None:
        # As pytest does for the tests it calls itself.
        warnings.warn(
            pytest.PytestReturnNotNoneWarning(
                f"Test functions should return None, but {item.nodeid} returned "
                f"{type(returned[0])!r}.\nDid you mean to use `assert` instead of `return`?"
            ),
            stacklevel=1,
        )
    if left and item.get_closest_marker("greenbridge_allow_pending") is None:
        lines = [f"the test returned with {len(left)} task(s)/registration(s) pending on its loop:"]
        lines.extend(left)
        pytest.fail("\n".join(lines), pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a ``greenbridge``-marked sync test inside ``async_`` on a fresh loop."""
    loop = _bridged_loop(pyfuncitem)
    if loop is None:
        return None
    # As pytest's own pytest_pyfunc_call does: the test's arguments only.
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    _run_bridged(pyfuncitem, loop, pyfuncitem.obj, kwargs)
    return True


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    """Once the fixtures are set up: note what is suspended and pending already.

    A fixture of a wider scope (set up now or by an earlier test) keeps its
    calls and tasks past this test: they are not the test's own.
    """
    try:
        return (yield)
    finally:
        item.stash[_BEFORE] = _suspended_ids()
        item.stash[_PENDING_BEFORE] = _all_pending()
        item.stash[_LOOPS_BEFORE] = weakref.WeakSet(
            loop for loop in list(registries) if not loop.is_closed()
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Run the test inside assert_no_blocking() when it asks for it."""
    threshold = _threshold(item)
    if threshold is None:
        return (yield)
    with assert_no_blocking(threshold):
        return (yield)


def _left_suspended(item: pytest.Item) -> list[str]:
    if item.get_closest_marker("greenbridge_allow_suspended") is not None:
        return []
    before = item.stash.get(_BEFORE, set())
    if not _suspended_ids() - before:
        return []
    gc.collect()  # calls suspended on a closed loop are unwound by the collector
    left = _suspended_ids() - before
    if not left:
        return []
    stacks = [s for s in suspended_stacks() if s.worker_id in left]
    lines = [f"the test left {len(left)} greenbridge call(s) suspended:"]
    lines.extend(stack.format() for stack in stacks)
    return lines


def _left_pending(item: pytest.Item) -> list[str]:
    if item.get_closest_marker("greenbridge_allow_pending") is not None:
        return []
    before: set[tuple[Any, ...]] = item.stash.get(_PENDING_BEFORE, set())
    loops = item.stash.get(_LOOPS_BEFORE, None)
    left = _all_pending(() if loops is None else loops) - before
    if not left:
        return []
    lines = [f"the test left {len(left)} task(s)/registration(s) pending on open loops:"]
    lines.extend(_describe(left))
    return lines


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, Any]:
    """After the fixtures' teardown: fail for the calls, tasks and registrations left behind."""
    result = yield
    lines = _left_suspended(item) + _left_pending(item)
    if lines:
        pytest.fail("\n".join(lines), pytrace=False)
    return result
