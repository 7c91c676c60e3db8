"""``requests`` on green sockets: 200 GETs at 50 concurrent, greenbridge against its peers.

Run::

    python benchmarks/bench_requests.py [--gets 200] [--concurrency 50] [--https]
        [--gevent-python PY] [--eventlet-python PY] [--greenletio-python PY] [--uvloop]

One HTTP/1.1 server with keep-alive runs in a separate process (a small
``asyncio.Protocol`` server on uvloop when the interpreter has it, nothing of
greenbridge's; with ``--https`` a trustme certificate) and every contender
runs in a subprocess of its own interpreter against it, so that each peer
lives in its own venv:

* ``greenbridge``: ``with greenbridge.patch_blocking(): import requests``, one
  green thread (``greenbridge.spawn``) per concurrent client, on asyncio's
  default loop (``--uvloop``: on uvloop);
* ``gevent``: ``gevent.monkey.patch_all()``, one greenlet per client;
* ``eventlet``: ``eventlet.monkey_patch()``, one green thread per client;
* ``greenletio``: ``with greenletio.patch_blocking([...]): import requests``
  (its green ``socket``, ``select``, ``selectors``, ``ssl``, ``time``: its
  green ``threading`` fails in urllib3's pool finalizers; and without its
  ``select.poll``, which fails urllib3's probe for poll), one
  ``greenletio.async_`` coroutine per client, on asyncio's default loop;
* ``threads``: plain ``requests`` on one OS thread per client, the reference.

A batch is ``--gets`` GETs spread over ``--concurrency`` clients; each client
opens a ``requests.Session`` (one keep-alive connection: resolution of the
literal address, connect, and its share of the GETs), and closes it.  Each
subprocess runs one batch to warm up and then ``--batches`` timed ones; the
subprocesses of the contenders take turns, ``--rounds`` times, and each
figure is a contender's best batch, in GETs per second.  The ratios compare
greenbridge with each peer measured in this same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

BODY = b"Hello, world! " * 16  # 224 bytes


# -- the server (its own process) ------------------------------------------------


def serve(port: int, certfile: str | None) -> None:
    """An HTTP/1.1 keep-alive server answering every request with `BODY`."""
    import asyncio

    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
        + str(len(BODY)).encode()
        + b"\r\n\r\n"
        + BODY
    )

    class Http(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            count = self.buffer.count(b"\r\n\r\n")  # GETs have no body
            if count:
                self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4 :]
                self.transport.write(response * count)

    async def main() -> None:
        ssl_context = None
        if certfile:
            import ssl

            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(certfile)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Http, "127.0.0.1", port, backlog=1024, ssl=ssl_context)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(main())


# -- the contenders (each in a subprocess of its own interpreter) -------------------


def client(requests: Any, url: str, gets: int, verify: Any) -> None:
    """One concurrent client: a session, ``gets`` GETs, closed."""
    with requests.Session() as session:
        for _ in range(gets):
            response = session.get(url, verify=verify)
            if response.status_code != 200 or len(response.content) != len(BODY):
                raise RuntimeError(f"bad response: {response!r}")


def run_peer(name: str, url: str, gets: int, conc: int, batches: int, verify: Any) -> list[float]:
    """Run ``batches`` + 1 batches as contender ``name``; the seconds each timed one took."""
    per_client = [gets // conc + (1 if i < gets % conc else 0) for i in range(conc)]
    if name == "gevent":
        from gevent import monkey

        monkey.patch_all()
        import gevent
        import requests

        def batch() -> None:
            gevent.joinall(
                [gevent.spawn(client, requests, url, n, verify) for n in per_client],
                raise_error=True,
            )

    elif name == "eventlet":
        import eventlet

        eventlet.monkey_patch()
        import requests

        def batch() -> None:
            pool = eventlet.GreenPool(conc)
            threads = [pool.spawn(client, requests, url, n, verify) for n in per_client]
            for thread in threads:
                thread.wait()

    elif name == "greenletio":
        import asyncio

        import greenletio

        # Not its green threading: its locks fail in urllib3's pool finalizers
        # ("await_ cannot be called from the asyncio task"), and requests' I/O
        # needs none of it.
        # Nor its select.poll, which raises NotImplementedError where urllib3
        # expects AttributeError or OSError when it probes for poll: without
        # it urllib3 uses select(), as on a platform with no poll.
        import greenletio.green.select

        del greenletio.green.select.poll
        with greenletio.patch_blocking(["socket", "select", "selectors", "ssl", "time"]):
            import requests

        async def gather() -> None:
            run = greenletio.async_(client)
            await asyncio.gather(*[run(requests, url, n, verify) for n in per_client])

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        def batch() -> None:
            loop.run_until_complete(gather())

    elif name.startswith("greenbridge"):
        import asyncio

        import greenbridge

        with greenbridge.patch_blocking():
            import requests

        loop_factory: Any = asyncio.new_event_loop
        if name.endswith("uvloop"):
            import uvloop

            loop_factory = uvloop.new_event_loop

        async def spawn_all() -> None:
            await asyncio.gather(
                *[greenbridge.spawn(client, requests, url, n, verify) for n in per_client]
            )

        loop = loop_factory()  # one loop for every batch, as a server would have

        def batch() -> None:
            loop.run_until_complete(spawn_all())

    elif name == "threads":
        import threading

        import requests

        def batch() -> None:
            threads = [
                threading.Thread(target=client, args=(requests, url, n, verify)) for n in per_client
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    else:
        raise SystemExit(f"unknown contender {name!r}")
    batch()  # warm up: imports, the first connections
    times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        batch()
        times.append(time.perf_counter() - t0)
    return times


# -- the driver ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=200, help="GETs per batch")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients")
    parser.add_argument("--batches", type=int, default=5, help="timed batches per subprocess")
    parser.add_argument("--rounds", type=int, default=3, help="subprocesses per contender")
    parser.add_argument("--https", action="store_true", help="TLS (a trustme certificate)")
    parser.add_argument("--uvloop", action="store_true", help="also greenbridge on uvloop")
    parser.add_argument("--no-threads", action="store_true", help="leave out the OS threads")
    for peer in ("gevent", "eventlet", "greenletio"):
        parser.add_argument(
            f"--{peer}-python",
            default=os.environ.get(f"GB_BENCH_{peer.upper()}_PYTHON"),
            help=f"an interpreter with {peer} and requests installed",
        )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--certfile", help=argparse.SUPPRESS)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cafile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.certfile)
        return
    if args.peer:
        times = run_peer(
            args.peer, args.url, args.gets, args.concurrency, args.batches, args.cafile or True
        )
        print(" ".join(f"{t:.6f}" for t in times))
        return
    drive(args)


def drive(args: argparse.Namespace) -> None:
    """Start the server, run every contender in turn, print GETs per second and ratios."""
    import subprocess
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import greenbridge
    from _http import free_port, wait_for_port

    here = os.path.abspath(__file__)
    contenders: list[tuple[str, str]] = [("greenbridge", sys.executable)]
    if args.uvloop:
        contenders.append(("greenbridge-uvloop", sys.executable))
    for peer in ("gevent", "eventlet", "greenletio"):
        python = getattr(args, f"{peer}_python")
        if python:
            contenders.append((peer, python))
    if not args.no_threads:
        contenders.append(("threads", sys.executable))
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server_cmd = [sys.executable, here, "--serve", str(port)]
        cafile = None
        scheme = "http"
        if args.https:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            certfile = os.path.join(tmp, "server.pem")
            cafile = os.path.join(tmp, "ca.pem")
            cert.private_key_and_cert_chain_pem.write_to_path(certfile)
            ca.cert_pem.write_to_path(cafile)
            server_cmd += ["--certfile", certfile]
            scheme = "https"
        server = subprocess.Popen(server_cmd)
        try:
            wait_for_port(port, server)
            url = f"{scheme}://127.0.0.1:{port}/"
            best: dict[str, float] = {}
            for _ in range(args.rounds):
                for name, python in contenders:
                    cmd = [python, here, "--peer", name, "--url", url]
                    cmd += ["--gets", str(args.gets), "--concurrency", str(args.concurrency)]
                    cmd += ["--batches", str(args.batches)]
                    if cafile:
                        cmd += ["--cafile", cafile]
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    fastest = min(float(t) for t in out.split())
                    best[name] = min(best.get(name, fastest), fastest)
        finally:
            server.terminate()
            server.wait()
    print(
        f"requests: {args.gets} GETs at {args.concurrency} concurrent over {scheme}, best batch "
        f"of {args.rounds} x {args.batches}; Python {sys.version.split()[0]}; "
        f"greenbridge {greenbridge.__version__}"
    )
    print(f"{'contender':>20} {'GETs/s':>10} {'greenbridge is':>16}")
    gb = args.gets / best["greenbridge"]
    for name, _python in contenders:
        rate = args.gets / best[name]
        print(f"{name:>20} {rate:10.0f} {gb / rate:15.2f}x")
    peers = [
        args.gets / best[n] for n, _ in contenders if n in ("gevent", "eventlet", "greenletio")
    ]
    if peers:
        print(f"greenbridge / best green peer: {gb / max(peers):.2f}x (target >= 1.2x)")


if __name__ == "__main__":
    main()
