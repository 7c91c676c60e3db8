"""Stock Django ASGI: ``uvicorn bench_site.asgi:application`` (asgiref's threads)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from .probe import AsgiProbe

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_site.settings")

application = AsgiProbe(get_asgi_application())
