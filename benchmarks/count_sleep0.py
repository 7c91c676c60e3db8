"""Machine instructions per ``sleep(0)`` turn: greenbridge and the floors of its designs.

Run: ``python benchmarks/count_sleep0.py`` (add ``--uvloop``; needs valgrind).
Each variant runs in a fresh process under ``valgrind --tool=callgrind`` twice,
with ``N`` and ``2N`` turns; the difference of the two instruction counts over
``N`` is the cost of one turn, free of start-up and of wall-clock noise (the
figures repeat to a few instructions, where wall-clock ratios on a shared
machine move by 20 %).  ``python benchmarks/count_sleep0.py --run VARIANT N``
runs one variant once (what valgrind is given).

The variants, each a loop of ``sleep(0)`` in one task:

* ``native``: ``await asyncio.sleep(0)`` (the baseline);
* ``bridge``: ``await_(asyncio.sleep(0))`` in ``async_``;
* ``hub-resumed``: the same, after a green ``time.sleep(0)``: sync code resumed
  by a loop callback takes each turn without its task (``greenbridge._park``);
* ``floor-driver``: the current design with nothing but its two greenlet
  switches: a bare generator yields the trap to the task and switches back;
* ``floor-c-driver``: as ``floor-driver`` with no Python frame on the task's
  side: the awaited iterator *is* the greenlet (``send = greenlet.switch``);
* ``floor-turn``: no task step per turn: the greenlet schedules its own resume
  (``loop.call_soon(greenlet.switch)``) and switches to the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from greenlet import getcurrent, greenlet

from greenbridge import async_, await_

N = 2000
VARIANTS = ("native", "bridge", "hub-resumed", "floor-driver", "floor-c-driver", "floor-turn")


def _turns(k: int) -> None:
    for _ in range(k):
        await_(asyncio.sleep(0))


def _hub_first(k: int) -> None:
    from greenbridge.green import time as green_time

    green_time.sleep(0)  # resumed by a loop callback from here on
    _turns(k)


def _bare_turns(k: int, switch: Callable[[Any], Any]) -> None:
    """What the worker does in the floors: step sleep(0), switch out its trap."""
    for _ in range(k):
        steps = asyncio.sleep(0).__await__()
        switch(steps.send(None))
        for _ in steps:  # ends it without raising StopIteration here
            pass


@types.coroutine
def _bare_driver(k: int) -> Generator[Any, Any, None]:
    def body() -> None:
        _bare_turns(k, getcurrent().parent.switch)  # type: ignore[union-attr]

    worker = greenlet(body)
    trap = worker.switch()
    while not worker.dead:
        sent = yield trap
        trap = worker.switch(sent)


class _GreenletIterator(greenlet):
    """A greenlet awaited directly: the task's send/throw switch straight into it."""

    __next__ = greenlet.switch
    send = greenlet.switch
    throw = greenlet.throw

    def __await__(self) -> Any:
        return self


_Variant = Callable[[int], Coroutine[Any, Any, None]]


def _variants(loop: asyncio.AbstractEventLoop) -> dict[str, _Variant]:
    async def native(k: int) -> None:
        for _ in range(k):
            await asyncio.sleep(0)

    async def bridge(k: int) -> None:
        await async_(_turns)(k)

    async def hub_resumed(k: int) -> None:
        await async_(_hub_first)(k)

    async def floor_driver(k: int) -> None:
        await _bare_driver(k)

    async def floor_c_driver(k: int) -> None:
        def body() -> None:
            _bare_turns(k, getcurrent().parent.switch)  # type: ignore[union-attr]
            raise StopIteration  # ends the await (a greenlet's error goes to its parent)

        await _GreenletIterator(body)

    async def floor_turn(k: int) -> None:
        done = loop.create_future()
        main = getcurrent()

        def body() -> None:
            call_soon = loop.call_soon
            resume = worker.switch
            out = main.switch
            for _ in range(k):
                steps = asyncio.sleep(0).__await__()
                steps.send(None)
                call_soon(resume)
                out()
                for _ in steps:
                    pass
            done.set_result(None)

        worker = greenlet(body)
        loop.call_soon(worker.switch)
        await done

    return dict(
        zip(VARIANTS, (native, bridge, hub_resumed, floor_driver, floor_c_driver, floor_turn))
    )


def _new_loop(uvloop: bool) -> asyncio.AbstractEventLoop:
    if uvloop:
        import uvloop as uv

        return uv.new_event_loop()
    return asyncio.new_event_loop()


def run_once(variant: str, n: int, uvloop: bool) -> None:
    loop = _new_loop(uvloop)
    fn = _variants(loop)[variant]
    loop.run_until_complete(fn(10))  # imports and first-call costs stay out of the difference
    loop.run_until_complete(fn(n))
    loop.close()


def _instructions(variant: str, n: int, uvloop: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={os.path.join(tmp, 'out')}",
            sys.executable,
            __file__,
            "--run",
            variant,
            str(n),
        ]
        if uvloop:
            cmd.append("--uvloop")
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    found = re.search(r"refs:\s*([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr}")
    return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uvloop", action="store_true", help="measure on uvloop")
    parser.add_argument("--run", nargs=2, metavar=("VARIANT", "N"), help="run one variant once")
    args = parser.parse_args()
    if args.run:
        run_once(args.run[0], int(args.run[1]), args.uvloop)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not on PATH", file=sys.stderr)
        return 2
    per_turn = {}
    for name in VARIANTS:
        per_turn[name] = (
            _instructions(name, 2 * N, args.uvloop) - _instructions(name, N, args.uvloop)
        ) // N
    loop_name = "uvloop" if args.uvloop else "asyncio"
    print(f"Python {sys.version.split()[0]}, {loop_name}: instructions per sleep(0) turn")
    for name in VARIANTS:
        ratio = per_turn[name] / per_turn["native"]
        print(f"{name:16} {per_turn[name]:8d}  {ratio:5.2f}x native")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
