"""The view every server mode runs, unchanged: an ORM query that waits 50 ms, then a template.

``settings.DB_SLOTS`` (when non-zero) caps the requests that hold a database
connection at once: with a connection per request (``CONN_MAX_AGE = 0``) and
200 clients, a server that runs every request at once would otherwise open 200
connections (PostgreSQL allows 100 by default).  ``threading`` here is the
module of whatever runs the request: real threads under gunicorn's gthread
worker and stock Django ASGI, gevent's under the gevent worker (which
monkey-patches it), greenbridge's green ``threading`` in greenbridge mode
(``bench_site/asgi.py`` imports this module under ``greenbridge.patch_blocking()``).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .models import Item

# The whole database part of a request: one round trip that takes 50 ms.
QUERY = "SELECT %s AS id, 'item ' || %s AS name, pg_sleep(0.05)"

SLOTS: Any = (
    threading.BoundedSemaphore(settings.DB_SLOTS) if settings.DB_SLOTS else contextlib.nullcontext()
)


def item(request: HttpRequest, pk: int) -> HttpResponse:
    with SLOTS:
        try:
            found = list(Item.objects.raw(QUERY, [pk, pk]))
        finally:
            # What Django does when the request ends (close, or give back to the
            # pool, as CONN_MAX_AGE says), done before the slot is given up.
            close_old_connections()
    context = {"item": found[0], "tags": ["red", "green", "blue"], "total": 100}
    return render(request, "catalog/item.html", context)
