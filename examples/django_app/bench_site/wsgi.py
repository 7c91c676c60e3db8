"""Stock Django WSGI: ``gunicorn bench_site.wsgi`` with the gthread or the gevent worker.

Under gevent's worker (which monkey-patches the process first) with
``GB_EXAMPLE_DJANGO_DRIVER=psycopg2``, psycogreen makes psycopg2 wait through gevent;
psycopg 3 cooperates with gevent by itself.
"""

from __future__ import annotations

import os
import sys

from django.core.wsgi import get_wsgi_application

from .probe import WsgiProbe

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_site.settings")

_monkey = sys.modules.get("gevent.monkey")
if (
    _monkey is not None
    and _monkey.is_module_patched("socket")
    and os.environ.get("GB_EXAMPLE_DJANGO_DRIVER") == "psycopg2"
):
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()

application = WsgiProbe(get_wsgi_application())
