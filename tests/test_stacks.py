"""``greenbridge.dump_stacks()``: every suspended call and green thread, with what it waits on.

Real waits only: green threads that sleep, read a socket, take a lock, get
from a queue, join a thread, and a sync call awaiting a Future; the dump is
taken while they wait, from the loop's thread, from another OS thread and
from a signal handler (``python -m greenbridge --dump-on-signal``).
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import greenbridge
from greenbridge import SuspendedStack, dump_stacks, suspended_stacks
from greenbridge.green import queue as green_queue
from greenbridge.green import socket as green_socket
from greenbridge.green import threading as green_threading
from greenbridge.green import time as green_time

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def sleepy() -> None:
    green_time.sleep(30)  # line: sleepy


def reader(pair: list[Any]) -> None:
    pair[0].recv(1)  # line: reader


def locker(lock: Any) -> None:
    lock.acquire()  # line: locker


def getter(q: Any) -> None:
    q.get()  # line: getter


def joiner(other: Any) -> None:
    other.join()  # line: joiner


def awaiter(fut: asyncio.Future[None]) -> None:
    greenbridge.await_(fut)  # line: awaiter


def by_name(stacks: list[SuspendedStack]) -> dict[str | None, SuspendedStack]:
    return {s.name: s for s in stacks}


async def with_waiters(check: Callable[[], Any], on_loop: bool = True) -> Any:
    """Start one green thread per kind of wait, call ``check()`` while they all wait.

    ``check`` runs on the loop's thread (blocking the loop), or in another OS thread.
    """
    loop = asyncio.get_running_loop()
    lock = green_threading.Lock()
    lock.acquire()
    q: Any = green_queue.Queue()
    pair = list(green_socket.socketpair())
    fut: asyncio.Future[None] = loop.create_future()
    threads = [
        green_threading.Thread(target=sleepy, name="sleepy", daemon=True),
        green_threading.Thread(target=reader, args=(pair,), name="reader", daemon=True),
        green_threading.Thread(target=locker, args=(lock,), name="locker", daemon=True),
        green_threading.Thread(target=getter, args=(q,), name="getter", daemon=True),
    ]
    threads.append(
        green_threading.Thread(target=joiner, args=(threads[1],), name="joiner", daemon=True)
    )
    for thread in threads:
        thread.start()
    call = asyncio.ensure_future(greenbridge.async_(awaiter)(fut))
    await asyncio.sleep(0.2)
    try:
        return check() if on_loop else await loop.run_in_executor(None, check)
    finally:
        pair[1].send(b"x")
        lock.release()
        q.put(None)
        fut.set_result(None)
        await call
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.gather(
            *(t for t in asyncio.all_tasks() if t is not asyncio.current_task()),
            return_exceptions=True,
        )
        for sock in pair:
            sock.close()


def block_the_loop() -> None:
    time.sleep(0.3)  # on the loop's thread: the loop is blocked while the others wait


def check_waits(stacks: list[SuspendedStack]) -> None:
    named = by_name(stacks)
    assert {"sleepy", "reader", "locker", "getter", "joiner"} <= set(named)
    assert named["sleepy"].waiting_on == "sleep(30)"
    age = named["sleepy"].age
    assert age is not None and 0.1 < age < 5
    assert named["reader"].waiting_on.startswith("fd ")
    assert named["reader"].waiting_on.endswith(" readable")
    assert named["locker"].waiting_on == "green Lock.acquire"
    assert named["getter"].waiting_on.startswith("green Condition.wait")
    assert named["joiner"].waiting_on == "green Thread.join"
    for name in ("reader", "locker", "getter", "joiner"):
        # Untimed waits: their age is the time since the worker last suspended.
        age = named[name].age
        assert age is not None and 0.0 < age < 5, (name, age)
    for name, marker in [
        ("sleepy", "sleepy"),
        ("reader", "reader"),
        ("locker", "locker"),
        ("getter", "getter"),
        ("joiner", "joiner"),
    ]:
        stack = named[name]
        assert stack.task is None  # a green thread gets a task only when it awaits
        if name != "getter":  # (the stdlib queue's get is its innermost frame)
            assert stack.stack[-1].line is not None
            assert f"# line: {marker}" in stack.stack[-1].line
        assert all(not greenbridge._stacks.internal_file(f.filename) for f in stack.stack)
    # The sync call awaiting a Future, outside any green thread.
    plain = [s for s in stacks if s.name is None]
    assert any(
        s.waiting_on.startswith("<Future pending") and "# line: awaiter" in (s.stack[-1].line or "")
        for s in plain
    )


def test_suspended_stacks_on_the_loops_thread() -> None:
    stacks = asyncio.run(with_waiters(suspended_stacks))
    check_waits(stacks)


def test_suspended_stacks_from_another_os_thread() -> None:
    stacks = asyncio.run(with_waiters(suspended_stacks, on_loop=False))
    check_waits(stacks)


def test_nothing_suspended_and_pooled_workers_are_not_listed() -> None:
    async def main() -> list[SuspendedStack]:
        await greenbridge.async_(lambda: greenbridge.await_(asyncio.sleep(0)))()
        return suspended_stacks()

    assert asyncio.run(main()) == []
    out = io.StringIO()
    dump_stacks(out, all_threads=False)
    assert out.getvalue() == "No suspended greenbridge call.\n"


def test_dump_stacks_prints_like_faulthandler() -> None:
    out = io.StringIO()

    def check() -> None:
        dump_stacks(out)

    asyncio.run(with_waiters(check))
    text = out.getvalue()
    assert "Current thread 0x" in text  # the OS threads first, as faulthandler does
    assert "(most recent call first):" in text
    assert "Green thread 'sleepy', waiting on" in text
    assert "waiting on sleep(30) (for 0." in text
    assert "Green thread 'locker'" in text and "waiting on green Lock.acquire (for " in text
    assert f'File "{__file__}", line ' in text


def test_detector_report_lists_the_suspended_calls() -> None:
    reports: list[greenbridge.BlockingReport] = []

    async def main() -> None:
        with greenbridge.detect_blocking(0.1, reports.append, suspended=True):
            await with_waiters(block_the_loop)

    asyncio.run(main())
    assert reports
    report = reports[0]
    check_waits(list(report.suspended))
    assert "suspended greenbridge call(s) meanwhile:" in report.format()


def test_reports_are_cheap_by_default() -> None:
    reports: list[greenbridge.BlockingReport] = []

    async def main() -> None:
        with greenbridge.detect_blocking(0.1, reports.append):
            await with_waiters(block_the_loop)

    asyncio.run(main())
    assert reports and reports[0].suspended == ()


def test_a_loop_in_another_thread() -> None:
    started = threading.Event()
    done = threading.Event()

    def run_loop() -> None:
        async def main() -> None:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            call = asyncio.ensure_future(greenbridge.async_(awaiter)(fut))
            await asyncio.sleep(0.05)
            started.set()
            await asyncio.get_running_loop().run_in_executor(None, done.wait)
            fut.set_result(None)
            await call

        asyncio.run(main())

    thread = threading.Thread(target=run_loop)
    thread.start()
    try:
        assert started.wait(5)
        stacks = suspended_stacks()
    finally:
        done.set()
        thread.join()
    assert any("# line: awaiter" in (s.stack[-1].line or "") for s in stacks)


CLI_PROGRAM = """\
import os, signal, socket, threading, time

def worker():
    a, b = socket.socketpair()
    a.recv(1)  # the reader waits here

threading.Thread(target=worker, name="the-reader", daemon=True).start()
time.sleep(0.2)
os.kill(os.getpid(), signal.SIGUSR1)
time.sleep(0.2)
print("done")
"""


@pytest.mark.skipif(not hasattr(os, "kill") or sys.platform == "win32", reason="POSIX signals")
def test_cli_dump_on_signal(tmp_path: Any) -> None:
    script = tmp_path / "prog.py"
    script.write_text(CLI_PROGRAM)
    env = dict(os.environ, PYTHONPATH=SRC)
    result = subprocess.run(
        [sys.executable, "-m", "greenbridge", "--dump-on-signal=SIGUSR1", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert "Green thread 'the-reader', waiting on" in result.stderr
    assert "waiting on fd " in result.stderr and " readable (for " in result.stderr
    assert "a.recv(1)" not in result.stderr  # faulthandler style: file and line only
    assert f'File "{script}", line 5 in worker' in result.stderr


@pytest.mark.parametrize("value", ["SIGNOPE", "", "notasignal"])
def test_cli_dump_on_signal_rejects_a_bad_signal(value: str, tmp_path: Any) -> None:
    script = tmp_path / "prog.py"
    script.write_text("print('never')\n")
    env = dict(os.environ, PYTHONPATH=SRC)
    result = subprocess.run(
        [sys.executable, "-m", "greenbridge", f"--dump-on-signal={value}", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "expected a signal name such as SIGUSR1" in result.stderr
    assert result.stdout == ""


def test_cli_dump_on_signal_takes_short_names_and_numbers() -> None:
    import signal

    from greenbridge.__main__ import _take_dump_on_signal

    assert _take_dump_on_signal(["--dump-on-signal=usr1", "x.py"]) == (["x.py"], signal.SIGUSR1)
    assert _take_dump_on_signal([f"--dump-on-signal={int(signal.SIGUSR2)}", "x.py", "-a"]) == (
        ["x.py", "-a"],
        signal.SIGUSR2,
    )
    # After the program's name, it is the program's own argument.
    assert _take_dump_on_signal(["x.py", "--dump-on-signal=SIGUSR1"]) == (
        ["x.py", "--dump-on-signal=SIGUSR1"],
        None,
    )


def test_a_primitive_built_on_another_is_named_too() -> None:
    def waits(event: Any) -> None:
        event.wait()  # line: event

    async def main() -> list[SuspendedStack]:
        event = green_threading.Event()
        thread = green_threading.Thread(target=waits, args=(event,), name="waits")
        thread.start()
        await asyncio.sleep(0.1)
        try:
            return suspended_stacks()
        finally:
            event.set()
            await greenbridge.async_(thread.join)()

    (stack,) = asyncio.run(main())
    assert stack.name == "waits"
    assert stack.waiting_on == "green Condition.wait (in Event.wait)"
    assert "# line: event" in (stack.stack[-1].line or "")


def test_under_trio() -> None:
    trio = pytest.importorskip("trio")

    def waits_on_a_socket(pair: list[Any]) -> None:
        pair[0].recv(1)  # line: trio reader

    async def main() -> list[SuspendedStack]:
        pair = list(green_socket.socketpair())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(greenbridge.async_(sleepy))
                nursery.start_soon(greenbridge.async_(waits_on_a_socket), pair)
                await trio.sleep(0.1)
                stacks = suspended_stacks()
                nursery.cancel_scope.cancel()
        finally:
            for sock in pair:
                sock.close()
        return stacks

    stacks = sorted(trio.run(main), key=lambda s: s.waiting_on)
    assert [s.waiting_on for s in stacks][0].startswith("fd ")
    assert stacks[0].waiting_on.endswith(" readable")
    assert "# line: trio reader" in (stacks[0].stack[-1].line or "")
    assert stacks[1].waiting_on == "sleep(30)"
