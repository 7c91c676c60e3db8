"""Django benchmark: one Django project (examples/django_app) under four servers, one run.

The view (the same code in every mode): an ORM query that runs
``SELECT pg_sleep(0.05)``, then a small template, behind startproject's
default middleware.  Modes, each one server process, started in turn:

  asgi         stock Django ASGI (``django.core.asgi``) under uvicorn: asgiref's threads
  gthread      gunicorn's gthread worker, 32 threads (WSGI), 1 worker
  gevent       gunicorn's gevent worker (+ psycogreen for psycopg2), 1 worker; needs
               ``--gevent-python``: a virtualenv of its own (gevent patches everything)
  greenbridge  ``greenbridge.integrations.django.get_asgi_application()`` under uvicorn
  greenbridge-limited
               the same with ``concurrency=--concurrency`` (32, gthread's thread count):
               at most that many requests in Django at once, the others wait their
               turn before Django sees them

Database set-ups, each run with every mode:

  conn   Django's default: a new connection per request (``CONN_MAX_AGE = 0``), at
         most ``--slots`` (20) requests on the database at once (the view's semaphore)
  pool   Django's own psycopg 3 pool of ``--pool`` (20) connections, opened up front;
         the ideal is pool size / query time (20 / 53 ms = 377 req/s)

The load: ``--clients`` keep-alive connections (a raw asyncio client in this
process) request ``/item/<i>`` without pause; after ``--warmup`` seconds the
measured window of ``--duration`` seconds opens (the load does not stop in
between).  For each mode: requests/s and p50/p99 latency of the responses
that arrived in the window, the server's CPU time per request (all its
processes), its memory per concurrent request (the growth of its resident set
from before the load to the highest seen under load, divided by the number of
clients), the heartbeat's worst gap (the largest lateness of a 5 ms sleep
in a loop in the server's event loop, or its gevent hub, during the window:
how long the loop was held at once), and the server's CPU wait (the time its
threads were runnable but waited for a CPU, per second of the window, from
/proc/<pid>/task/*/schedstat: near 0 on a quiet machine; where it is high,
other processes set the pace, and a one-thread server, whose every wake-up
waits, suffers more than one with many threads).  Ratios are against the
anchors of the same run.

Run:  python benchmarks/bench_django.py [--setups conn,pool]
          [--modes asgi,gthread,gevent,greenbridge] [--duration 10] [--warmup 3]
          [--clients 200] [--quick] [--gevent-python /path/to/venv/bin/python]
          [--driver psycopg|psycopg2] [--gevent-driver psycopg2|psycopg]
          [--loop auto|asyncio|uvloop] [--profile DIR] [--json FILE]

The drivers: psycopg 3 everywhere, except gevent with a connection per request,
which uses psycopg2 with psycogreen (the usual gevent set-up) unless
``--gevent-driver psycopg`` (psycopg 3 cooperates with gevent by itself);
``--driver psycopg2`` puts the other modes on psycopg2 in that set-up too
(greenbridge then patches it with ``patch_psycopg2()``).  Django's pool needs
psycopg 3.

``--profile DIR`` runs cProfile in the ASGI servers' event-loop thread over the
measured window and prints where their CPU per request goes (the files stay
in DIR, one per set-up and mode, for ``python -m pstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _http import free_port, get, server_process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP = ROOT / "examples" / "django_app"
MODES = ("asgi", "gthread", "gevent", "greenbridge", "greenbridge-limited")
GREEN_MODES = ("greenbridge", "greenbridge-limited")
SETUPS = ("conn", "pool")
QUERY_SECONDS = 0.053  # pg_sleep(0.05) plus a round trip, as the issue measured it
LABELS = {
    "asgi": "stock Django ASGI (uvicorn)",
    "gthread": "gunicorn gthread (32)",
    "gevent": "gunicorn gevent",
    "greenbridge": "greenbridge (uvicorn)",
    "greenbridge-limited": "greenbridge, 32 at once",
}


#: uvicorn's ``--loop`` for the ASGI modes (``--loop``: auto picks uvloop when installed).
UVICORN_LOOP = "auto"


def server_argv(mode: str, python: str, port: int) -> list[str]:
    """The command that serves the example in ``mode`` on ``port``."""
    uvicorn = [python, "-m", "uvicorn", "--port", str(port), "--log-level", "warning"]
    uvicorn += ["--backlog", "2048", "--no-access-log", "--loop", UVICORN_LOOP]
    gunicorn = [python, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    gunicorn += ["--log-level", "warning", "--backlog", "2048", "--keep-alive", "30"]
    if mode == "asgi":
        return [*uvicorn, "bench_site.asgi:application"]
    if mode in GREEN_MODES:
        return [*uvicorn, "bench_site.green_asgi:application"]
    if mode == "gthread":
        return [*gunicorn, "-k", "gthread", "--threads", "32", "bench_site.wsgi:application"]
    if mode == "gevent":
        gevent = ["-k", "gevent", "--worker-connections", "1000"]
        return [*gunicorn, *gevent, "bench_site.wsgi:application"]
    raise ValueError(mode)


# ---------------------------------------------------------------- the server's processes


def tree(root: int) -> list[int]:
    """``root`` and its descendants (Linux /proc; else ``[root]``)."""
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [root]
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rpartition(")")[2].split()[1])
            except OSError:
                continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system, all threads) of ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_delays(pids: list[int]) -> dict[int, int]:
    """Nanoseconds each thread of ``pids`` spent runnable but waiting for a CPU, by thread id.

    (``/proc/<pid>/task/<tid>/schedstat``, second field; empty where the
    kernel does not keep it.)
    """
    found: dict[int, int] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    found[int(tid)] = int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return found


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of ``pids``, summed."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


@contextmanager
def serve(argv: list[str], port: int, env: dict[str, str]) -> Iterator[int]:
    """Run a server until the block ends; yield its pid once it accepts connections."""
    # A session of its own: where the kernel groups CPU time by session
    # (autogroup), the server does not share this process's slice, so a
    # one-thread server and one with 32 threads each get a whole slice.
    with server_process(
        argv, port, env, APP, new_session=True, start_timeout=60, stop_timeout=20
    ) as pid:
        yield pid


# ---------------------------------------------------------------- the load


@dataclass
class Result:
    setup: str
    mode: str
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0
    cpu_ms_per_request: float = 0.0
    rss_base_mib: float = 0.0
    rss_growth_mib: float = 0.0
    kib_per_concurrent_request: float = 0.0
    loop_gap_ms: float | None = None
    cpu_wait: float = 0.0  # seconds its threads waited for a CPU, per second of the window
    profile: str | None = None
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    index = min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))
    return values[index]


async def fetch_json(port: int, path: str) -> object:
    """One GET on a connection of its own: the decoded JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.partition(b":")[2])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return json.loads(await reader.readexactly(length))
    finally:
        writer.close()


async def load(
    port: int, pids: list[int], result: Result, clients: int, warmup: float, duration: float
) -> tuple[list[float], float, float, int]:
    """Drive the server; return (latencies in the window, its length, CPU seconds, peak RSS)."""
    records: list[tuple[float, float, int]] = []  # (sent, answered, status)
    stop = asyncio.Event()
    peak = [rss_bytes(pids)]

    async def client(n: int) -> None:
        i = n
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            result.errors += 1
            return
        try:
            while not stop.is_set():
                start = time.perf_counter()
                status = await get(reader, writer, f"/item/{i % 100}")
                records.append((start, time.perf_counter(), status))
                i += clients
        except (OSError, asyncio.IncompleteReadError):
            result.errors += 1
        finally:
            writer.close()

    async def sample_rss() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes(pids))
            await asyncio.sleep(0.1)

    tasks = [asyncio.ensure_future(client(n)) for n in range(clients)]
    sampler = asyncio.ensure_future(sample_rss())
    await asyncio.sleep(warmup)
    await fetch_json(port, "/__bench/heartbeat?reset=1")
    if result.profile:
        await fetch_json(port, "/__bench/profile/start")
    cpu = cpu_seconds(pids)
    delays = run_delays(pids)
    opened = time.perf_counter()
    await asyncio.sleep(duration)
    closed = time.perf_counter()
    cpu = cpu_seconds(pids) - cpu
    # Threads that ended inside the window (asgiref's, one per request) are missed.
    waited = sum(ns - delays.get(tid, 0) for tid, ns in run_delays(pids).items())
    result.cpu_wait = waited / 1e9 / (closed - opened)
    beat = await fetch_json(port, "/__bench/heartbeat")
    if result.profile:
        await fetch_json(port, "/__bench/profile/stop")
    stop.set()
    await asyncio.gather(*tasks, sampler)
    assert isinstance(beat, dict)
    result.loop_gap_ms = beat["worst_ms"]
    # The requests answered inside the window (whenever they were sent): the
    # load is the same all through, so these are the steady state's.
    inside = [(end - start, status) for start, end, status in records if opened <= end < closed]
    result.errors += sum(status != 200 for _, status in inside)
    latencies = [latency for latency, _ in inside]
    return latencies, closed - opened, cpu, peak[0]


def run_one(
    setup: str, mode: str, python: str, env: dict[str, str], args: argparse.Namespace
) -> Result:
    result = Result(setup, mode)
    port = free_port()
    env = dict(env, GB_EXAMPLE_DJANGO_DB=setup)
    driver = args.gevent_driver if mode == "gevent" else args.driver
    if setup == "conn" and driver == "psycopg2":
        env["GB_EXAMPLE_DJANGO_DRIVER"] = "psycopg2"
        result.notes.append("psycopg2 + psycogreen" if mode == "gevent" else "psycopg2")
    if mode == "greenbridge-limited":
        env["GB_EXAMPLE_DJANGO_CONCURRENCY"] = str(args.concurrency)
    if args.profile and mode in ("asgi", *GREEN_MODES):
        result.profile = str(Path(args.profile).resolve() / f"{setup}-{mode}.pstats")
        env["GB_EXAMPLE_DJANGO_PROFILE"] = result.profile
    with serve(server_argv(mode, python, port), port, env) as pid:

        async def prime() -> None:
            # A few requests one after the other: imports, templates, URLconf.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for i in range(5):
                    status = await get(reader, writer, f"/item/{i}")
                    if status != 200:
                        raise RuntimeError(f"{mode}/{setup}: GET /item/{i} answered {status}")
            finally:
                writer.close()

        asyncio.run(prime())
        pids = tree(pid)
        base = rss_bytes(pids)
        lat, seconds, cpu, peak = asyncio.run(
            load(port, pids, result, args.clients, args.warmup, args.duration)
        )
    lat.sort()
    result.requests = len(lat)
    if lat:
        result.rps = len(lat) / seconds
        result.p50_ms = percentile(lat, 50) * 1000
        result.p99_ms = percentile(lat, 99) * 1000
        result.max_ms = lat[-1] * 1000
        result.cpu_ms_per_request = cpu / len(lat) * 1000
    result.rss_base_mib = base / 2**20
    result.rss_growth_mib = (peak - base) / 2**20
    result.kib_per_concurrent_request = (peak - base) / 1024 / args.clients
    return result


# ---------------------------------------------------------------- the report


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(setup: str, rows: list[Result], args: argparse.Namespace) -> None:
    what = {
        "conn": f"a new connection per request (CONN_MAX_AGE=0), at most {args.slots} on the"
        " database at once",
        "pool": f"Django's psycopg 3 pool of {args.pool} (ideal {args.pool / QUERY_SECONDS:.0f}"
        " req/s)",
    }[setup]
    print(f"\n{setup}: {what}; {args.clients} clients, {args.duration:g} s window")
    print(
        f"  {'':28s} {'req/s':>7s} {'p50 ms':>7s} {'p99 ms':>7s} {'errors':>6s}"
        f" {'CPU ms/req':>10s} {'CPU wait':>8s} {'RSS MiB':>7s} {'KiB/conc':>8s}"
        f" {'gap ms':>7s} {'xASGI':>6s} {'xbest':>6s}"
    )
    by_mode = {r.mode: r for r in rows}
    stock = by_mode.get("asgi")
    anchors = [r for r in rows if r.mode not in GREEN_MODES and r.rps]
    best = max((r.rps for r in anchors), default=0.0)
    for r in rows:
        print(
            f"  {LABELS[r.mode]:28s} {r.rps:7.0f} {r.p50_ms:7.0f} {r.p99_ms:7.0f} {r.errors:6d}"
            f" {r.cpu_ms_per_request:10.2f} {r.cpu_wait:8.2f} {r.rss_base_mib:7.0f}"
            f" {r.kib_per_concurrent_request:8.0f} {fmt(r.loop_gap_ms, '7.1f')}"
            f" {fmt(r.rps / stock.rps if stock and stock.rps else None, '6.2f')}"
            f" {fmt(r.rps / best if best else None, '6.2f')}"
            + (f"  ({', '.join(r.notes)})" if r.notes else "")
        )
    starved = [r for r in rows if r.cpu_wait > 0.1]
    if starved:
        print(
            "  (CPU wait: seconds the server's threads were runnable but waited for a CPU,"
            " per second; above 0.1 the machine's other load, not the server, set the pace"
            f" of {', '.join(LABELS[r.mode] for r in starved)}: compare CPU ms/req instead)"
        )
    for mode in GREEN_MODES:
        green = by_mode.get(mode)
        if green is not None and anchors:
            check_targets(setup, green, by_mode, anchors, args)


def check_targets(
    setup: str,
    green: Result,
    by_mode: dict[str, Result],
    anchors: list[Result],
    args: argparse.Namespace,
) -> None:
    """Print the issue's targets for one greenbridge row: met or MISSED."""
    stock = by_mode.get("asgi")
    checks: list[tuple[str, bool]] = []
    if setup == "conn":
        if stock and stock.rps:
            checks.append(
                (
                    f">= 1.3x stock ASGI req/s ({green.rps / stock.rps:.2f}x)",
                    green.rps >= 1.3 * stock.rps,
                )
            )
        for name in ("gthread", "gevent"):
            if name in by_mode:
                other = by_mode[name]
                checks.append(
                    (
                        f"ahead of {name} in req/s and p99",
                        green.rps > other.rps and green.p99_ms < other.p99_ms,
                    )
                )
    else:
        checks.append(
            (
                "ahead of every anchor in req/s and p99",
                all(green.rps > a.rps and green.p99_ms < a.p99_ms for a in anchors),
            )
        )
        ideal = args.pool / QUERY_SECONDS
        checks.append(
            (f"within 10% of the ideal ({green.rps / ideal:.0%})", green.rps >= 0.9 * ideal)
        )
    for text, ok in checks:
        print(f"  target ({LABELS[green.mode]}): {text}: {'met' if ok else 'MISSED'}")


def print_profile(r: Result, top: int) -> None:
    if not r.profile or not Path(r.profile).exists() or not r.requests:
        return
    print(f"\nprofile: {r.setup}/{r.mode}, {r.requests} requests ({r.profile}):")
    print(f"  {'own µs/req':>10s} {'cum µs/req':>10s} {'calls/req':>9s}  function")
    stats = pstats.Stats(r.profile)
    entries = []
    for (filename, line, name), (_cc, calls, own, cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        entries.append((own, cum, calls, f"{name} ({Path(filename).name}:{line})"))
    entries.sort(reverse=True)
    n = r.requests
    for own, cum, calls, where in entries[:top]:
        print(f"  {own / n * 1e6:10.1f} {cum / n * 1e6:10.1f} {calls / n:9.2f}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--setups", default=",".join(SETUPS), help="conn,pool")
    parser.add_argument("--modes", default=",".join(MODES), help=",".join(MODES))
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=10.0, help="measured window (s)")
    parser.add_argument("--warmup", type=float, default=3.0, help="load before the window (s)")
    parser.add_argument("--quick", action="store_true", help="--duration 3 --warmup 1.5")
    parser.add_argument("--pool", type=int, default=20, help="pool size (pool set-up)")
    parser.add_argument("--slots", type=int, default=20, help="requests on the database (conn)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="greenbridge-limited: get_asgi_application(concurrency=N) (gthread's 32 threads)",
    )
    parser.add_argument("--gevent-python", default=os.environ.get("GB_BENCH_GEVENT_PYTHON"))
    parser.add_argument(
        "--gevent-driver",
        choices=["psycopg2", "psycopg"],
        default="psycopg2",
        help="gevent's driver in the conn set-up (the pool needs psycopg 3)",
    )
    parser.add_argument(
        "--driver",
        choices=["psycopg", "psycopg2"],
        default="psycopg",
        help="the other modes' driver in the conn set-up",
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="uvicorn's event loop for the ASGI modes (auto: uvloop when installed)",
    )
    parser.add_argument("--profile", metavar="DIR", help="cProfile the ASGI servers' loop")
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument("--json", metavar="FILE", help="write every result there too")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 3.0, 1.5
    LABELS["greenbridge-limited"] = f"greenbridge, {args.concurrency} at once"
    global UVICORN_LOOP
    UVICORN_LOOP = args.loop
    setups = [s for s in args.setups.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    for name in setups:
        if name not in SETUPS:
            parser.error(f"unknown set-up {name!r}: choose from {', '.join(SETUPS)}")
    for name in modes:
        if name not in MODES:
            parser.error(f"unknown mode {name!r}: choose from {', '.join(MODES)}")
    if "gevent" in modes and not args.gevent_python:
        print(
            "(gevent skipped: give --gevent-python, a virtualenv with gevent, gunicorn,"
            " django, psycopg[binary], psycopg_pool, psycopg2-binary and psycogreen)"
        )
        modes.remove("gevent")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(ROOT / "src"), str(APP), env.get("PYTHONPATH", "")] if p
    )
    env["DJANGO_SETTINGS_MODULE"] = "bench_site.settings"
    env["GB_EXAMPLE_DJANGO_POOL"] = str(args.pool)
    env["GB_EXAMPLE_DJANGO_SLOTS"] = str(args.slots)
    env.pop("GB_EXAMPLE_DJANGO_DRIVER", None)
    results: list[Result] = []
    for setup in setups:
        rows = []
        for mode in modes:
            python = args.gevent_python if mode == "gevent" else sys.executable
            # The slots cap the conn set-up; the pool caps the other by itself.
            run_env = dict(
                env,
                GB_EXAMPLE_DJANGO_SLOTS=env["GB_EXAMPLE_DJANGO_SLOTS"] if setup == "conn" else "0",
            )
            rows.append(run_one(setup, mode, python, run_env, args))
        report(setup, rows, args)
        results.extend(rows)
    for r in results:
        print_profile(r, args.profile_top)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
