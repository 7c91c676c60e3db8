"""greenbridge.integrations.gunicorn: real gunicorn subprocesses serving Flask and ASGI apps.

Each test writes an app module into a temporary directory and runs
``gunicorn -k greenbridge.integrations.gunicorn.Worker`` on a free loopback
port.  The Flask app runs a heartbeat task on its worker's loop (started by
the first request, with `greenbridge.spawn`); ``/gap`` reports its largest
gap, the proof that requests never stalled the worker's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gunicorn")
pytest.importorskip("uvicorn")
pytest.importorskip("flask")
httpx = pytest.importorskip("httpx")

from greenbridge.integrations.gunicorn import is_asgi  # noqa: E402

from .web_servers import Gunicorn  # noqa: E402

WORKER = "greenbridge.integrations.gunicorn.Worker"

APP = textwrap.dedent(
    """
    import asyncio
    import os
    import time

    import flask

    import greenbridge
    from greenbridge.green import time as green_time

    VERSION = "one"
    app = flask.Flask(__name__)
    beat = {"task": None, "gap": 0.0}


    async def heartbeat():
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            beat["gap"] = max(beat["gap"], now - last)
            last = now


    @app.before_request
    def start_heartbeat():
        if beat["task"] is None:
            try:
                beat["task"] = greenbridge.spawn(lambda: greenbridge.await_(heartbeat()))
            except RuntimeError:  # no event loop: gunicorn's own sync worker
                beat["task"] = False


    @app.get("/")
    def index():
        return {"version": VERSION, "pid": os.getpid()}


    @app.get("/sleep/<float:seconds>")
    def sleep(seconds):
        green_time.sleep(seconds)
        return {"slept": seconds, "pid": os.getpid()}


    inside = [0, 0]  # requests in the app now, most at once


    @app.get("/count/<float:seconds>")
    def count(seconds):
        inside[0] += 1
        inside[1] = max(inside)
        try:
            green_time.sleep(seconds)
        finally:
            inside[0] -= 1
        return {"most": inside[1]}


    @app.get("/block/<float:seconds>")
    def block(seconds):
        time.sleep(seconds)  # NOT green: the whole worker stalls
        return {"blocked": seconds}


    @app.post("/echo")
    def echo():
        return flask.request.get_data()


    @app.get("/gap")
    def gap():
        return {"gap": beat["gap"]}


    async def asgi_app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"asgi " + scope["path"].encode()})


    class Odd:  # ASGI, but its __call__ is a plain method returning a coroutine
        def __call__(self, scope, receive, send):
            return asgi_app(scope, receive, send)


    odd_asgi = Odd()
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "gbapp.py").write_text(APP)
    return tmp_path


def _gunicorn(app_dir: Path, *args: str, app: str = "gbapp:app") -> Gunicorn:
    return Gunicorn("-k", WORKER, "--workers", "1", *args, app, cwd=app_dir)


async def _get_all(url: str, paths: list[str]) -> tuple[list[Any], float]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        start = time.perf_counter()
        responses = await asyncio.gather(*(client.get(p) for p in paths))
        return [r.json() for r in responses], time.perf_counter() - start


def test_flask_answers_concurrently_on_one_worker(app_dir: Path) -> None:
    """50 requests each sleeping 0.2 s (green) on ONE worker: together, not in 10 s."""
    with _gunicorn(app_dir) as g:
        first = httpx.get(g.url + "/").json()
        assert first["version"] == "one"
        assert httpx.post(g.url + "/echo", content=b"x" * 300_000).content == b"x" * 300_000
        answers, elapsed = asyncio.run(_get_all(g.url, ["/sleep/0.2"] * 50))
        assert [a["slept"] for a in answers] == [0.2] * 50
        assert {a["pid"] for a in answers} == {first["pid"]}  # one worker did it all
        assert elapsed < 3.0, elapsed
        assert httpx.get(g.url + "/gap").json()["gap"] < 0.25
        code, output = g.stop()
    assert code == 0, output


def test_same_answers_as_gunicorns_sync_worker(app_dir: Path) -> None:
    """The native twin: the same Flask app under gunicorn's own sync worker."""
    requests_ = [("GET", "/"), ("GET", "/missing"), ("POST", "/echo"), ("GET", "/sleep/0.1")]

    def answers(url: str) -> list[tuple[int, str, Any]]:
        found = []
        with httpx.Client(base_url=url) as client:
            for method, path in requests_:
                r = client.request(method, path, content=b"body" if method == "POST" else None)
                body = r.json() if r.headers["content-type"] == "application/json" else r.text
                if isinstance(body, dict):
                    body.pop("pid", None)
                found.append((r.status_code, r.headers["content-type"], body))
        return found

    with _gunicorn(app_dir) as ours, Gunicorn("--workers", "1", "gbapp:app", cwd=app_dir) as sync:
        assert answers(ours.url) == answers(sync.url)


@pytest.mark.parametrize(
    ("worker", "app"), [(WORKER, "gbapp:asgi_app"), (WORKER[:-6] + "ASGIWorker", "gbapp:odd_asgi")]
)
def test_asgi_app_is_served_as_asgi(app_dir: Path, worker: str, app: str) -> None:
    with Gunicorn("-k", worker, "--workers", "1", app, cwd=app_dir) as g:
        response = httpx.get(g.url + "/some/path")
        assert (response.status_code, response.text) == (200, "asgi /some/path")
        code, output = g.stop()
    assert code == 0, output


def test_max_requests_restarts_the_worker(app_dir: Path) -> None:
    pids = []
    with _gunicorn(app_dir, "--max-requests", "4") as g:
        deadline = time.monotonic() + 20
        while len(set(pids)) < 3 and time.monotonic() < deadline:
            try:
                pids.append(httpx.get(g.url + "/", timeout=5).json()["pid"])
            except httpx.TransportError:  # (a worker just closing)
                time.sleep(0.05)
        code, output = g.stop()
    assert len(set(pids)) >= 3, (pids, output)
    # (uvicorn checks the count every 0.1 s: a few more may slip in.)
    assert len(pids) < 30, pids
    assert code == 0, output


def test_sigterm_lets_the_request_in_flight_finish(app_dir: Path) -> None:
    result: list[Any] = []
    with _gunicorn(app_dir, "--graceful-timeout", "10") as g:
        httpx.get(g.url + "/")  # (the worker is up)

        def slow() -> None:
            try:
                result.append(httpx.get(g.url + "/sleep/1.0", timeout=10).json())
            except Exception as exc:  # reported by the assert below
                result.append(exc)

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.3)
        start = time.perf_counter()
        code, output = g.stop()
        thread.join(10)
    assert result and isinstance(result[0], dict) and result[0]["slept"] == 1.0, (result, output)
    assert code == 0, output
    assert time.perf_counter() - start < 8


def test_hup_reloads_the_app(app_dir: Path) -> None:
    with _gunicorn(app_dir) as g:
        before = httpx.get(g.url + "/").json()
        assert before["version"] == "one"
        (app_dir / "gbapp.py").write_text(APP.replace('VERSION = "one"', 'VERSION = "second"'))
        g.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        now = before
        while now["version"] == "one" and time.monotonic() < deadline:
            time.sleep(0.1)
            with contextlib.suppress(httpx.TransportError):  # (workers changing)
                now = httpx.get(g.url + "/", timeout=5).json()
        assert now["version"] == "second"
        assert now["pid"] != before["pid"]
        code, output = g.stop()
    assert code == 0, output


def test_the_loop_notifies_the_arbiter(app_dir: Path) -> None:
    """--timeout 1: a worker whose loop does not notify for 1 s is killed.

    A request sleeping (green) longer than the timeout completes on the same
    worker, which also survives a SIGUSR1 (log reopening); a request that
    blocks the loop (a plain time.sleep) longer than the timeout gets the
    worker killed and replaced, as with gunicorn's other workers.
    """
    with _gunicorn(app_dir, "--timeout", "1") as g:
        pid = httpx.get(g.url + "/").json()["pid"]
        assert httpx.get(g.url + "/sleep/2.5", timeout=10).json() == {"slept": 2.5, "pid": pid}
        g.signal(signal.SIGUSR1)
        time.sleep(0.3)
        assert httpx.get(g.url + "/").json()["pid"] == pid
        with pytest.raises(httpx.TransportError):
            httpx.get(g.url + "/block/3.0", timeout=10)
        deadline = time.monotonic() + 10
        new_pid = pid
        while new_pid == pid and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                new_pid = httpx.get(g.url + "/", timeout=5).json()["pid"]
        assert new_pid != pid
        code, output = g.stop()
    assert code == 0, output
    assert output.count("WORKER TIMEOUT") == 1, output


def test_worker_connections_bounds_the_requests_in_flight(app_dir: Path) -> None:
    with _gunicorn(app_dir, "--worker-connections", "4") as g:

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=g.url, timeout=10) as client:
                responses = await asyncio.gather(*(client.get("/sleep/0.5") for _ in range(12)))
                return [r.status_code for r in responses]

        statuses = asyncio.run(burst())
        assert httpx.get(g.url + "/").status_code == 200  # (and then serves again)
        code, output = g.stop()
    # uvicorn answers 503 beyond the limit (counting the connections open, and
    # the requests in flight; how many of 12 at once get in depends on timing).
    assert statuses.count(200) <= 4 and statuses.count(503) >= 8, statuses
    assert code == 0, output


def test_threads_caps_the_requests_in_the_app(app_dir: Path) -> None:
    """--threads 3: all 12 answered, never more than 3 in the app at once (as gthread's 3)."""
    with _gunicorn(app_dir, "--threads", "3") as g:
        answers, _ = asyncio.run(_get_all(g.url, ["/count/0.1"] * 12))
        code, output = g.stop()
    assert max(a["most"] for a in answers) == 3, answers
    assert code == 0, output


def test_is_asgi() -> None:
    async def asgi(scope: Any, receive: Any, send: Any) -> None: ...

    class AsgiApp:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...

    def wsgi(environ: Any, start_response: Any) -> list[bytes]:
        return []

    class WsgiApp:
        def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
            return []

    assert is_asgi(asgi) and is_asgi(AsgiApp())
    assert not is_asgi(wsgi) and not is_asgi(WsgiApp())
