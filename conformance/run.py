"""Run CPython's own test suites against greenbridge's green modules.

Each module listed as ``conformance/expected/<module>.txt`` (e.g. ``test_socket.txt``)
runs in its own subprocess: ``greenbridge.monkey_patch()`` first, then the
interpreter's own ``test.<module>`` is imported and run by unittest inside a
green main "thread" (bridged sync code on a fresh asyncio loop).  Each line of the
file is a test id expected to fail (or error), followed by ``  # why``; a reason
that starts with ``SKIP`` means "do not run it" (a test that hangs with the
stdlib too on this machine, or that is flaky under greenbridge: the reason says
which), and the test counts as skipped.

The run fails (exit status 1) when a test fails that is not listed, or a listed
test passes (then remove it from the list).  A report gives pass/fail/skip per
module and overall.

    python conformance/run.py                      # every module
    python conformance/run.py --modules test_socket test_select
    python conformance/run.py --write-expected     # (re)write the lists from this run
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected"
MARK = "@@GREENBRIDGE-CONFORMANCE@@"

CHILD = r"""
import sys, json, unittest, traceback, io
import greenbridge
greenbridge.monkey_patch()
import asyncio
module_name = sys.argv[1]
mark = sys.argv[2]
details_path = sys.argv[3] if len(sys.argv) > 3 else ""
not_run = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
details = {}

class Result(unittest.TextTestResult):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.outcomes = {}
    def _why(self, err, test=None):
        exc = err[1]
        if details_path and test is not None:
            details[test.id()] = "".join(traceback.format_exception(*err))
        return (type(exc).__name__ + ": " + str(exc)).splitlines()[0][:160] if exc else ""
    def addSuccess(self, test):
        super().addSuccess(test); self.outcomes.setdefault(test.id(), ["pass", ""])
    def addFailure(self, test, err):
        super().addFailure(test, err); self.outcomes[test.id()] = ["fail", self._why(err, test)]
    def addError(self, test, err):
        super().addError(test, err); self.outcomes[test.id()] = ["fail", self._why(err, test)]
    def addSkip(self, test, reason):
        super().addSkip(test, reason); self.outcomes[test.id()] = ["skip", reason]
    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err); self.outcomes[test.id()] = ["pass", ""]
    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.outcomes[test.id()] = ["fail", "unexpected success"]
    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.outcomes[test.id()] = ["fail", self._why(err, test)]

def main():
    from test import support
    try:
        support.requires = lambda *a, **k: None  # network resources on loopback are fine
    except Exception:
        pass
    suite = unittest.defaultTestLoader.loadTestsFromName("test." + module_name)

    def skip_listed(s):
        for test in s:
            if isinstance(test, unittest.TestSuite):
                skip_listed(test)
            elif test.id() in not_run:
                name = test._testMethodName
                setattr(test, name, unittest.skip(not_run[test.id()])(getattr(test, name)))

    skip_listed(suite)
    stream = io.StringIO()
    runner = unittest.TextTestRunner(stream=stream, resultclass=Result, verbosity=0)
    result = runner.run(suite)
    return result.outcomes

# As `python -m greenbridge` runs a program: a plain loop, so a SIGINT raises
# KeyboardInterrupt where it lands (asyncio.run() would install its own handler,
# which cancels the main task instead).
loop = asyncio.new_event_loop()
outcomes = loop.run_until_complete(greenbridge.async_(main)())
if details_path:
    with open(details_path, "w") as f:
        json.dump(details, f, indent=1)
sys.stdout.write("\n" + mark + json.dumps(outcomes) + "\n")
sys.stdout.flush()
import os
os._exit(0)
"""


def not_run(expected: dict[str, str]) -> dict[str, str]:
    """The listed tests not to run at all (their reason starts with SKIP)."""
    return {tid: why for tid, why in expected.items() if why.startswith("SKIP")}


def has_expected(module: str) -> bool:
    return (EXPECTED / f"{module}.txt").exists()


def read_expected(module: str) -> dict[str, str]:
    expected: dict[str, str] = {}
    for line in (EXPECTED / f"{module}.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        test_id, _, why = line.partition(" # ")
        expected[test_id.strip()] = why.strip()
    return expected


def run_module(
    module: str, timeout: float, details: Path | None = None
) -> tuple[dict[str, list[str]], float, str]:
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    # The test modules create files in the current directory: run them in a scratch one.
    try:
        with tempfile.TemporaryDirectory(prefix="gb-conformance-") as scratch:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    module,
                    MARK,
                    str(details / f"{module}.json") if details else "",
                    json.dumps(not_run(read_expected(module)) if has_expected(module) else {}),
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=scratch,
            )
    except subprocess.TimeoutExpired:
        return {}, time.monotonic() - t0, f"timed out after {timeout:.0f} s"
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :]), time.monotonic() - t0, ""
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {}, time.monotonic() - t0, f"crashed (exit {proc.returncode}):\n" + "\n".join(tail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    available = sorted(p.stem for p in EXPECTED.glob("*.txt"))
    parser.add_argument("--modules", nargs="+", default=available, metavar="MODULE")
    parser.add_argument("--timeout", type=float, default=400, help="seconds per module")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument(
        "--details",
        type=Path,
        metavar="DIR",
        help="write each module's failure tracebacks to DIR/<module>.json",
    )
    parser.add_argument(
        "--write-expected",
        action="store_true",
        help="rewrite the expected-failure lists from this run (keeps existing reasons)",
    )
    args = parser.parse_args()

    if args.details:
        args.details = args.details.resolve()
        args.details.mkdir(parents=True, exist_ok=True)
    status = 0
    totals = {"pass": 0, "fail": 0, "skip": 0}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {m: pool.submit(run_module, m, args.timeout, args.details) for m in args.modules}
        print(f"{'module':28} {'pass':>6} {'fail':>6} {'skip':>6} {'pass%':>7} {'time':>7}")
        for module, future in futures.items():
            outcomes, elapsed, crash = future.result()
            expected = read_expected(module) if (EXPECTED / f"{module}.txt").exists() else {}
            if crash:
                print(f"{module:28} {crash}")
                status = 1
                continue
            counts = {"pass": 0, "fail": 0, "skip": 0}
            for kind, _why in outcomes.values():
                counts[kind] += 1
                totals[kind] += 1
            ran = counts["pass"] + counts["fail"]
            pct = 100.0 * counts["pass"] / ran if ran else 100.0
            print(
                f"{module:28} {counts['pass']:6} {counts['fail']:6} {counts['skip']:6} "
                f"{pct:6.1f}% {elapsed:6.0f}s"
            )
            failed = {tid: why for tid, (kind, why) in outcomes.items() if kind == "fail"}
            unexpected = sorted(set(failed) - set(expected))
            fixed = sorted(tid for tid in expected if outcomes.get(tid, ["missing"])[0] == "pass")
            if args.write_expected:
                keep = dict(failed, **not_run(expected))
                lines = [f"{tid}  # {expected.get(tid) or keep[tid]}" for tid in sorted(keep)]
                (EXPECTED / f"{module}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
                continue
            for tid in unexpected:
                print(f"    UNEXPECTED FAILURE {tid}: {failed[tid]}")
            for tid in fixed:
                print(f"    EXPECTED FAILURE NOW PASSES (remove it from the list): {tid}")
            if unexpected or fixed:
                status = 1
    ran = totals["pass"] + totals["fail"]
    pct = 100.0 * totals["pass"] / ran if ran else 100.0
    print(
        f"{'TOTAL':28} {totals['pass']:6} {totals['fail']:6} {totals['skip']:6} {pct:6.1f}%"
        " (pass% = passed / (passed + failed); skips excluded)"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
