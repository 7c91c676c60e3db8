"""Instructions per request of examples/django_app's view, driven in-process, counted by callgrind.

No HTTP server and no client: the handler is called directly, one request
at a time, so what is counted is Django's request path plus the handler's
own (an ASGI handler's scope/receive/send, the bridge, the loop's turns).
The view is the benchmark's (an ORM query through ``Item.objects.raw``, a
template), with the query's ``pg_sleep(0.05)`` taken out: only CPU counts.

Targets:
  wsgi         Django's ``WSGIHandler``, called with an environ (the floor)
  green        ``greenbridge.integrations.django.get_asgi_application()``
               (the greenbridge found on PYTHONPATH, or ``--src``'s)
  stock-asgi   Django's own ``get_asgi_application()`` (asgiref's threads)

Set-ups (``--db``, as bench_django.py's): ``pool``, Django's psycopg 3 pool
of 20 (connections reused); ``conn``, a new connection per request
(``CONN_MAX_AGE = 0``).

How: this script starts itself (``--child``) under ``valgrind
--tool=callgrind --instr-atstart=no``; the child sets Django up, serves
``--warmup`` requests, then waits on its stdin; counting is switched on
with ``callgrind_control -i on``, the child serves ``--requests``
requests, counting is switched off and the counts dumped.  Callgrind's
counts vary by about 1 % from run to run.

Run (PostgreSQL at 127.0.0.1:5432, user postgres, database test):

  python benchmarks/callgrind_django.py wsgi green stock-asgi --db pool
  python benchmarks/callgrind_django.py green --db conn --src /path/to/other/src
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
SITE = HERE.parent / "examples" / "django_app"
TARGETS = ("wsgi", "green", "stock-asgi")
PATH = "/item/{}"
QUERY_WITHOUT_SLEEP = "SELECT %s AS id, 'item ' || %s AS name"


# ---------------------------------------------------------------- the child


def wsgi_driver() -> Callable[[int], None]:
    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()
    import catalog.views

    catalog.views.QUERY = QUERY_WITHOUT_SLEEP
    errors = io.StringIO()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if not status.startswith("200"):
            raise RuntimeError(f"the view answered {status}")
        return None

    def serve(n: int) -> None:
        for i in range(n):
            environ = {
                "REQUEST_METHOD": "GET",
                "SCRIPT_NAME": "",
                "PATH_INFO": PATH.format(i % 100),
                "QUERY_STRING": "",
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "8000",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "REMOTE_ADDR": "127.0.0.1",
                "REMOTE_PORT": "40000",
                "HTTP_HOST": "bench",
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(b""),
                "wsgi.errors": errors,
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
            result = app(environ, start_response)
            try:
                for _ in result:
                    pass
            finally:
                result.close()

    return serve


def asgi_driver(target: str, loop_name: str) -> Callable[[int], None]:
    if target == "green":
        import greenbridge
        from greenbridge.integrations.django import get_asgi_application

        app = get_asgi_application()
        # (as bench_site/green_asgi.py: the view's semaphore is green)
        with greenbridge.patch_blocking():
            import catalog.views
    else:
        from django.core.asgi import get_asgi_application

        app = get_asgi_application()
        import catalog.views
    catalog.views.QUERY = QUERY_WITHOUT_SLEEP

    if loop_name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def one(i: int) -> None:
        path = PATH.format(i % 100)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        received = False
        never = loop.create_future()  # (the client never leaves)
        status = []

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await never
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        never.cancel()
        if status != [200]:
            raise RuntimeError(f"the view answered {status}")

    async def many(n: int) -> None:
        for i in range(n):
            await one(i)

    def serve(n: int) -> None:
        loop.run_until_complete(many(n))

    return serve


def child(target: str, warmup: int, requests: int, loop_name: str) -> None:
    sys.path.insert(0, str(SITE))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_site.settings")
    serve = wsgi_driver() if target == "wsgi" else asgi_driver(target, loop_name)
    serve(warmup)
    print("ready", flush=True)
    sys.stdin.readline()  # (counting is switched on meanwhile)
    serve(requests)
    print("done", flush=True)
    sys.stdin.readline()


# ---------------------------------------------------------------- the parent


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def count(target: str, args: argparse.Namespace) -> float:
    """Instructions per request of ``target``."""
    env = dict(os.environ, GB_EXAMPLE_DJANGO_DB=args.db)
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join([args.src, env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as out:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.%p",
            sys.executable,
            __file__,
            "--child",
            target,
            "--warmup",
            str(args.warmup),
            "--requests",
            str(args.requests),
            "--loop",
            args.loop,
        ]
        proc = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{target}: the child failed:\n{proc.communicate()[1]}")
            callgrind_control("-i", "on", str(proc.pid))
            proc.stdin.write("go\n")
            proc.stdin.flush()
            if proc.stdout.readline().strip() != "done":
                raise RuntimeError(f"{target}: the child failed:\n{proc.communicate()[1]}")
            callgrind_control("-i", "off", str(proc.pid))
            callgrind_control("-d", str(proc.pid))
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            proc.wait(300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        total = 0
        for name in glob.glob(f"{out}/callgrind.*"):
            with open(name) as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("totals:"))
    return total / args.requests


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="+", choices=TARGETS)
    parser.add_argument("--db", choices=["pool", "conn"], default="pool")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--src", help="a greenbridge source tree to put first on PYTHONPATH")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.targets[0], args.warmup, args.requests, args.loop)
        return
    for target in args.targets:
        per_request = count(target, args)
        print(f"{args.db:5s} {target:12s} {per_request / 1e6:7.2f} M instructions per request")


if __name__ == "__main__":
    main()
