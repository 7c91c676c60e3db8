"""Green os: pipe read/write and child waits suspend only the calling green thread."""

from __future__ import annotations

import os
import subprocess
import time

from greenbridge.green import os as gos
from greenbridge.green import threading as gt

from .helpers import Backend, run_green


def test_read_waits_on_a_blocking_pipe_without_stalling(aio: Backend) -> None:
    def main() -> tuple[bytes, float]:
        r, w = gos.pipe()
        try:
            assert gos.get_blocking(r)  # a plain blocking pipe
            gt.Timer(0.1, gos.write, args=(w, b"hello")).start()
            start = time.monotonic()
            data = gos.read(r, 100)
            return data, time.monotonic() - start
        finally:
            gos.close(r)
            gos.close(w)

    (data, waited), max_gap = run_green(aio, main, heartbeat=True)
    assert data == b"hello" and waited >= 0.09
    assert max_gap < 0.1


def test_write_to_a_full_pipe_waits_for_the_reader(aio: Backend) -> None:
    def main() -> int:
        r, w = gos.pipe()
        try:
            gos.set_blocking(w, False)
            received = [0]

            def reader() -> None:
                while received[0] < 1_000_000:
                    received[0] += len(gos.read(r, 65536))

            t = gt.Thread(target=reader)
            t.start()
            view = memoryview(b"x" * 1_000_000)
            sent = 0
            while sent < len(view):
                sent += gos.write(w, view[sent:])
            t.join()
            return received[0]
        finally:
            gos.close(r)
            gos.close(w)

    total, max_gap = run_green(aio, main, heartbeat=True)
    assert total == 1_000_000
    assert max_gap < 0.1


def test_waitpid_does_not_block_the_loop(aio: Backend) -> None:
    def main() -> tuple[int, int, float]:
        child = subprocess.Popen(["sleep", "0.2"])  # the stdlib Popen: only its pid is used
        start = time.monotonic()
        pid, status = gos.waitpid(child.pid, 0)
        child.returncode = 0  # reaped by us
        return pid - child.pid, gos.waitstatus_to_exitcode(status), time.monotonic() - start

    (delta, code, waited), max_gap = run_green(aio, main, heartbeat=True)
    assert delta == 0 and code == 0 and waited >= 0.15
    assert max_gap < 0.1


def test_re_exports_and_outside_loop() -> None:
    assert gos.getpid() == os.getpid() and gos.path is os.path and gos.sep == os.sep
    r, w = gos.pipe()
    try:
        assert gos.write(w, b"abc") == 3
        assert gos.read(r, 10) == b"abc"
    finally:
        gos.close(r)
        gos.close(w)
