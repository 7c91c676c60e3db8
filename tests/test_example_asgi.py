"""examples/asgi_app: the app really serves both families of routes (so the example cannot rot).

Starts the 50 ms upstream and the app under uvicorn in subprocesses (as the
load test does) and checks the answers of the greenbridge and thread-pool
routes, including concurrent requests.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from .helpers import require_postgres

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg2")
pytest.importorskip("requests")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "asgi_app"


def _loadtest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gb_example_loadtest", EXAMPLE / "loadtest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_both_kinds_of_handlers_answer() -> None:
    require_postgres()
    lt = _loadtest()

    async def fetch(port: int, paths: list[str]) -> list[tuple[int, dict[str, object]]]:
        async def one(path: str) -> tuple[int, dict[str, object]]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                status, body = await lt.get(reader, writer, path)
                return status, json.loads(body)
            finally:
                writer.close()

        return list(await asyncio.gather(*(one(p) for p in paths)))

    with lt.servers(pool=5) as port:
        for prefix in ("/green/items", "/thread/items"):
            assert asyncio.run(fetch(port, [f"{prefix}/7"])) == [
                (200, {"id": 7, "name": "item 7", "upstream": {"item": "7"}})
            ]
            # Missing row: the ORM gives None, the upstream still answers.
            assert asyncio.run(fetch(port, [f"{prefix}/1000"])) == [
                (200, {"id": 1000, "name": None, "upstream": {"item": "1000"}})
            ]
        # 40 concurrent green requests over a pool of 5 connections, each
        # with a 50 ms upstream call: concurrent, not one after the other (2 s).
        start = time.perf_counter()
        answers = asyncio.run(fetch(port, [f"/green/items/{i}" for i in range(40)]))
        elapsed = time.perf_counter() - start
        assert answers == [
            (200, {"id": i, "name": f"item {i}", "upstream": {"item": str(i)}}) for i in range(40)
        ]
        assert elapsed < 1.5, elapsed
