"""What the green modules share (``greenbridge.green._util``), seen through the modules."""

from __future__ import annotations

import importlib
import itertools
import os
import select
import socket
import subprocess
import time

import pytest

import greenbridge
from greenbridge._patcher import green_module_names, original
from greenbridge.green import _util

from .conftest import Backend

# green threading, queue and _thread fill their namespaces their own way (for now).
MODULES = [m for m in green_module_names() if m not in ("threading", "queue", "_thread")]


@pytest.mark.parametrize("module", MODULES)
def test_a_green_module_exports_what_its_stdlib_module_exports(module: str) -> None:
    """``__all__`` is the stdlib's ``from ... import *`` set, and every name in it exists."""
    green = importlib.import_module(f"greenbridge.green.{module}")
    std = original(module)
    star = getattr(std, "__all__", None)
    if star is None:
        star = [name for name in dir(std) if not name.startswith("_")]
    assert sorted(green.__all__) == sorted(star)
    assert all(hasattr(green, name) for name in green.__all__)
    if std.__doc__:  # else the green module keeps its own
        assert green.__doc__ == std.__doc__


def test_waits_counts_down_to_the_deadline_taken_at_the_call() -> None:
    assert list(itertools.islice(_util.waits(None), 3)) == [None, None, None]
    assert list(_util.waits(0)) == []
    time_left = _util.waits(0.05)
    time.sleep(0.03)  # the deadline runs from the call, not from the first step
    first = next(time_left)
    assert first is not None and 0 < first <= 0.02 + 1e-3
    time.sleep(0.03)
    assert next(time_left, 0.0) == 0.0


def test_wait_child_gives_up_after_its_timeout_with_no_loop() -> None:
    child = subprocess.Popen(["sleep", "5"])
    try:
        calls = []

        def check() -> tuple[int, int] | None:
            calls.append(1)
            pid, status = os.waitpid(child.pid, os.WNOHANG)
            return (pid, status) if pid else None

        t0 = time.monotonic()
        assert _util.wait_child(child.pid, 0, check, 0.1) is None
        assert 0.09 <= time.monotonic() - t0 < 2
        assert len(calls) >= 2  # checked again after the last wait
        child.kill()
        pid, status = _util.wait_child(child.pid, 0, check) or (0, 0)
        assert pid == child.pid and os.WIFSIGNALED(status)
    finally:
        if child.returncode is None:
            child.kill()
        child.wait()


def test_ready_selects_in_unbridged_code_raise_missing_bridge(backend: Backend) -> None:
    """A loop runs but the caller cannot suspend: even a ready select names the fix, as before."""
    from greenbridge.green import select as gselect

    a, b = socket.socketpair()
    b.send(b"x")

    async def main() -> list[str]:
        calls = [lambda: gselect.select([a], [], [], 0)]
        if hasattr(select, "poll"):
            poller = gselect.poll()
            poller.register(a, select.POLLIN)
            calls.append(lambda: poller.poll(0))
        if hasattr(select, "epoll"):
            ep = gselect.epoll()
            ep.register(a.fileno(), select.EPOLLIN)
            calls.append(lambda: ep.poll(0))
        raised = []
        for call in calls:
            with pytest.raises(greenbridge.MissingBridge) as info:
                call()
            raised.append("async_(" in str(info.value))
        return [str(ok) for ok in raised]

    with a, b:
        assert set(backend.run(main)) == {"True"}
        # With no loop running they are the stdlib's calls.
        assert gselect.select([a], [], [], 0)[0] == [a]
