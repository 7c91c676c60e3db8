"""Run by tests/test_integrations_django.py in a subprocess: the project on another driver.

A process of its own, because Django's settings and driver modules are
process-wide.  ``python -m tests.django_project.run_backend BACKEND N T``:

* ``mysql``: MariaDB through PyMySQL, imported under ``patch_blocking()`` and
  installed as ``MySQLdb`` (Django's MySQL backend is written for
  mysqlclient, whose C calls would block the loop);
* ``psycopg2``: PostgreSQL through psycopg2 (psycopg 3 is hidden, so Django
  falls back to psycopg2, which ``get_asgi_application()`` patches).

Then ``get_asgi_application()`` serves the project under uvicorn; ``N``
concurrent views each sleep ``T`` seconds in the database.  Prints one JSON
line: the connection ids, the threads, the elapsed time and the heartbeat's
largest gap.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import greenbridge

BACKEND = sys.argv[1]
if BACKEND == "mysql":
    with greenbridge.patch_blocking():
        import pymysql

    pymysql.install_as_MySQLdb()
elif BACKEND == "psycopg2":
    sys.modules["psycopg"] = None  # type: ignore[assignment]  # Django then uses psycopg2
else:
    raise SystemExit(f"unknown backend {BACKEND!r}")

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402

from . import settings as project_settings  # noqa: E402

config = {k: getattr(project_settings, k) for k in dir(project_settings) if k.isupper()}
if BACKEND == "psycopg2":
    config["DATABASES"] = {"default": config["DATABASES"]["default"]}
else:
    config["DATABASES"] = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": "test",
            "USER": "root",
            "HOST": "127.0.0.1",
            "PORT": "3306",
            # PyMySQL 2 otherwise builds an SSL context (loading the system's CA
            # certificates, ~40 ms of CPU) for every connection, to try TLS on loopback.
            "OPTIONS": {"ssl_disabled": True},
        }
    }
settings.configure(**config)

from greenbridge.integrations.django import get_asgi_application  # noqa: E402

from ..web_servers import Uvicorn  # noqa: E402


def driver() -> str:
    """The DB-API module Django's backend uses."""
    from django.db import connections

    return str(connections["default"].Database.__name__)


def main(n: int, seconds: float) -> None:
    with Uvicorn(get_asgi_application()) as server:

        async def requests() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                calls = [client.get(server.url + "/sleep", params={"t": seconds}) for _ in range(n)]
                return list(await asyncio.gather(*calls))

        httpx.get(server.url + "/sleep", timeout=30)  # first use: imports, version query
        with server.heartbeat() as beat:
            started = time.monotonic()
            responses = asyncio.run(requests())
            elapsed = time.monotonic() - started
    print(
        json.dumps(
            {
                "status": [r.status_code for r in responses],
                "ids": [r.json()["pid"] for r in responses],
                "threads": sorted({r.json()["thread"] for r in responses}),
                "server_thread": server.thread.name,
                "elapsed": elapsed,
                "driver": driver(),
                "max_gap": beat.max_gap,
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[2]), float(sys.argv[3]))
