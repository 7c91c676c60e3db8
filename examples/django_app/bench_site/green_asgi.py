"""greenbridge: ``uvicorn bench_site.green_asgi:application``.

Django's sync views and middleware run in greenlets on uvicorn's event loop
(``greenbridge.integrations.django``), the database driver waits on that loop,
and the view's module is imported under ``greenbridge.patch_blocking()`` so
that its ``threading`` (the semaphore capping requests on the database) is
greenbridge's green one.
"""

from __future__ import annotations

import os

import greenbridge
from greenbridge.integrations.django import get_asgi_application

from .probe import AsgiProbe

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_site.settings")

if os.environ.get("GB_EXAMPLE_DJANGO_DRIVER") == "psycopg2":
    greenbridge.patch_psycopg2()
else:
    greenbridge.patch_psycopg()

_django = get_asgi_application()
with greenbridge.patch_blocking():
    import catalog.views  # noqa: F401  (before the URLconf imports it)

application = AsgiProbe(_django)
