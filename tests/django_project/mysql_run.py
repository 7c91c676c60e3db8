"""Run by tests/test_integrations_django.py in a subprocess: the project on MariaDB via PyMySQL.

A process of its own, because Django's settings and the ``MySQLdb`` module
are process-wide.  PyMySQL is imported under ``patch_blocking()`` and
installed as ``MySQLdb`` (Django's MySQL backend is written for mysqlclient,
whose C calls would block the loop), then ``get_asgi_application()`` serves
the project under uvicorn; ``n`` concurrent views each sleep ``t`` seconds in
MariaDB.  Prints one JSON line: the connection ids, the elapsed time and the
heartbeat's largest gap.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import greenbridge

with greenbridge.patch_blocking():
    import pymysql

pymysql.install_as_MySQLdb()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402

from . import settings as project_settings  # noqa: E402

config = {k: getattr(project_settings, k) for k in dir(project_settings) if k.isupper()}
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
                "max_gap": beat.max_gap,
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
