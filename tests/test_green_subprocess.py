"""Green subprocess: pipes, wait and communicate suspend only the calling green thread."""

from __future__ import annotations

import subprocess as std_subprocess
import sys
import time

import pytest

from greenbridge.green import subprocess as gsp
from greenbridge.green import threading as gt

from .helpers import Backend, run_green


def test_pipelines_run_concurrently_without_stalling_the_loop(aio: Backend) -> None:
    payload = b"".join(b"line %d\n" % i for i in range(50_000))  # ~600 kB through cat

    def pipeline(results: list[object]) -> None:
        cat = gsp.Popen(["cat"], stdin=gsp.PIPE, stdout=gsp.PIPE)
        out, _ = cat.communicate(payload)
        results.append((out == payload, cat.returncode))

    def sleeper(results: list[object]) -> None:
        results.append(gsp.run(["sleep", "0.3"]).returncode)

    def main() -> tuple[list[object], float]:
        results: list[object] = []
        threads = [gt.Thread(target=pipeline, args=(results,)) for _ in range(4)]
        threads += [gt.Thread(target=sleeper, args=(results,)) for _ in range(4)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results, time.monotonic() - start

    (results, elapsed), max_gap = run_green(aio, main, heartbeat=True)
    assert sorted(map(str, results)) == ["(True, 0)"] * 4 + ["0"] * 4
    assert elapsed < 0.9  # four 0.3 s sleeps overlapped (< 3x one)
    assert max_gap < 0.2  # a blocking wait would stall it for a whole 0.3 s sleep


def test_chained_pipes_cat_into_cat(aio: Backend) -> None:
    def main() -> bytes:
        first = gsp.Popen(["printf", "a\\nb\\n"], stdout=gsp.PIPE)
        second = gsp.Popen(["cat"], stdin=first.stdout, stdout=gsp.PIPE)
        assert first.stdout is not None
        first.stdout.close()
        out, _ = second.communicate(timeout=5)
        first.wait(timeout=5)
        return out

    assert run_green(aio, main) == b"a\nb\n"


def test_wait_and_communicate_timeouts(aio: Backend) -> None:
    def main() -> None:
        p = gsp.Popen(["sleep", "5"])
        start = time.monotonic()
        with pytest.raises(gsp.TimeoutExpired) as info:
            p.wait(timeout=0.1)
        assert 0.09 <= time.monotonic() - start < 2
        assert info.value.timeout == 0.1 and info.value.cmd == ["sleep", "5"]
        p.kill()
        assert p.wait() == -9

        script = "import sys,time; print('early', flush=True); time.sleep(0.3); print('late')"
        p = gsp.Popen([sys.executable, "-c", script], stdout=gsp.PIPE, text=True)
        with pytest.raises(gsp.TimeoutExpired) as info:
            p.communicate(timeout=0.15)
        assert info.value.output == b"early\n"  # partial output, as the stdlib reports it
        out, err = p.communicate()  # nothing was lost
        assert (out, err, p.returncode) == ("early\nlate\n", None, 0)

        with pytest.raises(gsp.TimeoutExpired):
            gsp.run(["sleep", "5"], timeout=0.1)

    _, max_gap = run_green(aio, lambda: main(), heartbeat=True)
    assert max_gap < 0.1


def test_run_call_check_helpers(aio: Backend) -> None:
    def main() -> None:
        done = gsp.run(["sh", "-c", "echo out; echo err >&2; exit 3"], capture_output=True)
        assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
        with pytest.raises(gsp.CalledProcessError) as info:
            gsp.check_output(["sh", "-c", "echo partial; exit 2"])
        assert (info.value.returncode, info.value.output) == (2, b"partial\n")
        assert gsp.check_output(["cat"], input="text in", text=True) == "text in"
        assert gsp.call(["true"]) == 0 and gsp.check_call(["true"]) == 0
        with pytest.raises(gsp.CalledProcessError):
            gsp.check_call(["false"])
        assert gsp.getstatusoutput("echo hi; exit 1") == (1, "hi")
        assert gsp.TimeoutExpired is std_subprocess.TimeoutExpired
        assert gsp.CalledProcessError is std_subprocess.CalledProcessError

    run_green(aio, main)


def test_line_by_line_dialogue_over_pipes(aio: Backend) -> None:
    def main() -> list[str]:
        p = gsp.Popen(
            [
                sys.executable,
                "-u",
                "-c",
                "import sys\nfor l in sys.stdin: print(l.upper(), end='')",
            ],
            stdin=gsp.PIPE,
            stdout=gsp.PIPE,
            text=True,
            bufsize=1,
        )
        assert p.stdin is not None and p.stdout is not None
        replies = []
        for word in ("one", "two"):
            p.stdin.write(word + "\n")
            replies.append(p.stdout.readline())
        p.stdin.close()
        p.wait(timeout=5)
        return replies

    assert run_green(aio, main) == ["ONE\n", "TWO\n"]


def test_outside_any_loop_behaves_like_the_stdlib() -> None:
    assert gsp.run(["echo", "x"], capture_output=True).stdout == b"x\n"
    with pytest.raises(gsp.TimeoutExpired):
        gsp.run(["sleep", "5"], timeout=0.05)
