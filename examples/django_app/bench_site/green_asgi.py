"""greenbridge: ``uvicorn bench_site.green_asgi:application``.

Django's sync views and middleware run in greenlets on uvicorn's event loop
(``greenbridge.integrations.django``; its ``get_asgi_application()`` also
makes the PostgreSQL driver, and Django's psycopg 3 pool, wait on that loop),
and the view's module is imported under ``greenbridge.patch_blocking()`` so
that its ``threading`` (the semaphore capping requests on the database) is
greenbridge's green one.  ``GB_EXAMPLE_DJANGO_CONCURRENCY`` (if set) is
``get_asgi_application()``'s ``concurrency``: at most that many requests in
Django at once.
"""

from __future__ import annotations

import os

import greenbridge
from greenbridge.integrations.django import get_asgi_application

from .probe import AsgiProbe

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_site.settings")

#: The handler without the probe (benchmarks/bench_web_callgrind.py counts it alone).
_concurrency = os.environ.get("GB_EXAMPLE_DJANGO_CONCURRENCY")
django_application = get_asgi_application(concurrency=int(_concurrency) if _concurrency else None)
with greenbridge.patch_blocking():
    import catalog.views  # noqa: F401  (before the URLconf imports it)

application = AsgiProbe(django_application)
