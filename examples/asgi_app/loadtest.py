"""Load test: the example app's greenbridge routes against its thread-pool routes, in one run.

Starts the 50 ms upstream (``upstream.py``) and the app (``app.py`` under
uvicorn) as subprocesses, then drives each family of routes from this
process with ``--clients`` concurrent keep-alive connections (a small raw
asyncio HTTP/1.1 client, so the client's cost stays low and off the server's
loop) for ``--seconds`` seconds, and prints requests/s, p50 and p99 latency
and the ratios.  Needs PostgreSQL (``GB_EXAMPLE_DB``, see ``app.py``) and the
``examples`` extra: ``pip install -e '.[examples]'``.

Run: ``python examples/asgi_app/loadtest.py [--clients 200] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until something accepts connections on ``port`` (or ``proc`` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def servers(delay: float = 0.05, pool: int = 20) -> Iterator[int]:
    """Run the upstream and the app (uvicorn) in subprocesses; yield the app's port."""
    up_port, app_port = free_port(), free_port()
    env = dict(os.environ)
    env["GB_EXAMPLE_UPSTREAM"] = f"http://127.0.0.1:{up_port}"
    env["GB_EXAMPLE_POOL"] = str(pool)
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "upstream.py"), "--port", str(up_port), "--delay", str(delay)],
        stdout=subprocess.DEVNULL,
    )
    app = None
    try:
        wait_for_port(up_port, upstream)
        app = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "app:app"]
            + ["--port", str(app_port), "--log-level", "warning", "--backlog", "2048"],
            env=env,
        )
        wait_for_port(app_port, app)
        yield app_port
    finally:
        for proc in (app, upstream):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, bytes]:
    """One HTTP/1.1 keep-alive GET on an open connection: (status, body)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: app\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def drive(port: int, prefix: str, clients: int, seconds: float) -> list[float]:
    """``clients`` connections GET ``prefix/<i>`` in a loop for ``seconds``: the latencies."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            i = n
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                status, _ = await get(reader, writer, f"{prefix}/{i % 100}")
                if status != 200:
                    raise RuntimeError(f"{prefix}: HTTP {status}")
                latencies.append(time.perf_counter() - start)
                i += clients
        finally:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values (nearest rank)."""
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def run(port: int, clients: int, seconds: float) -> None:
    """Warm both families up, then measure each; print the table."""
    families = {"greenbridge (async_)": "/green/items", "run_in_threadpool": "/thread/items"}
    for prefix in families.values():
        await drive(port, prefix, clients, 1.0)
    results: dict[str, tuple[float, float, float]] = {}
    for name, prefix in families.items():
        lat = sorted(await drive(port, prefix, clients, seconds))
        results[name] = (len(lat) / seconds, percentile(lat, 50), percentile(lat, 99))
    print(f"\n{clients} concurrent clients, {seconds:g} s each, upstream 50 ms")
    print(f"  {'':22s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for name, (rps, p50, p99) in results.items():
        print(f"  {name:22s} {rps:8.0f} {p50 * 1000:8.1f} {p99 * 1000:8.1f}")
    (g_rps, _, g_p99), (t_rps, _, t_p99) = results.values()
    print(
        f"  greenbridge / thread pool: x{g_rps / t_rps:.2f} requests/s, "
        f"x{g_p99 / t_p99:.2f} p99 latency"
    )


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pool", type=int, default=20, help="database connections")
    args = parser.parse_args()
    with servers(pool=args.pool) as port:
        asyncio.run(run(port, args.clients, args.seconds))


if __name__ == "__main__":
    main()
