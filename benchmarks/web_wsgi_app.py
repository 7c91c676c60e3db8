"""The Flask app of benchmarks/bench_web_wsgi.py, served by each contender.

``GB_BENCH_MODE`` says how its blocking calls wait:

- ``green``: greenbridge (psycopg2 patched, SQLAlchemy's ``GreenQueuePool``,
  requests imported under ``patch_blocking``); served by ``green_asgi``
  (``WSGIMiddleware``) or by the gunicorn ``Worker`` (``app``);
- ``thread``: plain blocking calls, for thread-pool servers (``a2wsgi_asgi``
  under uvicorn, gunicorn's gthread worker on ``app``);
- ``gevent``: for gunicorn's gevent worker (which monkey-patches the stdlib),
  with psycogreen for psycopg2.

Routes: ``/hello/<i>`` (no I/O: the servers' own cost), ``/upstream/<i>``
(one ``requests`` call to the upstream, which answers after its delay) and
``/db/<i>`` (``SELECT pg_sleep(0.05)`` through SQLAlchemy's pool of
``GB_BENCH_POOL`` connections, then a template).
``GB_BENCH_UPSTREAM`` and ``GB_BENCH_DB`` say where the services are;
``GB_BENCH_PROFILE`` profiles the server (see ``_http.profile_if_asked``).
"""

from __future__ import annotations

import os
from typing import Any

from _http import profile_if_asked

MODE = os.environ.get("GB_BENCH_MODE", "thread")
UPSTREAM = os.environ.get("GB_BENCH_UPSTREAM", "http://127.0.0.1:8765")
DB_URL = os.environ.get("GB_BENCH_DB", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
POOL = int(os.environ.get("GB_BENCH_POOL", "20"))

if MODE == "green":
    import greenbridge

    greenbridge.patch_psycopg2()
    with greenbridge.patch_blocking():
        import requests
        import requests.adapters
    from greenbridge.drivers.sqlalchemy import create_engine
else:
    if MODE == "gevent":
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    import requests
    import requests.adapters
    from sqlalchemy import create_engine

profile_if_asked()  # (GB_BENCH_PROFILE: in the process that serves, from here on)

# (After the drivers are patched, whatever the mode.)
import flask  # noqa: E402
import sqlalchemy as sa  # noqa: E402

http = requests.Session()
http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=512))
engine = create_engine(DB_URL, pool_size=POOL, max_overflow=0, pool_timeout=60)

app = flask.Flask(__name__)

PAGE = """<!doctype html>
<title>item {{ item }}</title>
<ul>{% for row in rows %}<li>{{ row }}</li>{% endfor %}</ul>
"""

# Compiled once, as render_template() does with its cache (render_template_string()
# would compile it on every request: a millisecond of CPU that is nobody's point).
TEMPLATE = app.jinja_env.from_string(PAGE)


@app.get("/hello/<int:item>")
def hello(item: int) -> Any:
    return {"item": item}


@app.get("/upstream/<int:item>")
def upstream(item: int) -> Any:
    answer = http.get(f"{UPSTREAM}/items?item={item}", timeout=30)
    return {"item": item, "upstream": answer.json()}


@app.get("/db/<int:item>")
def db(item: int) -> Any:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT pg_sleep(0.05), :item"), {"item": item}).all()
    return TEMPLATE.render(item=item, rows=[r[1] for r in rows])


if MODE == "green":
    from greenbridge.integrations.wsgi import WSGIMiddleware

    green_asgi = WSGIMiddleware(app)
    green_asgi_32 = WSGIMiddleware(app, concurrency=32)  # (as many as the thread pools)
elif MODE == "thread":
    try:
        from a2wsgi import WSGIMiddleware as A2WSGI
    except ImportError:  # (only the a2wsgi contender needs it)
        pass
    else:
        a2wsgi_asgi = A2WSGI(app, workers=32)
