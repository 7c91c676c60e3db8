"""Stock Django ASGI: ``uvicorn bench_site.asgi:application`` (asgiref's threads)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from .probe import AsgiProbe

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_site.settings")

#: The handler without the probe (benchmarks/bench_web_callgrind.py counts it alone).
django_application = get_asgi_application()
application = AsgiProbe(django_application)
