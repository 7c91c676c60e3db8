"""Settings of the example: a plain Django project (startproject's defaults, DEBUG off).

What changes between benchmark runs comes from the environment:

- ``GB_EXAMPLE_DJANGO_DB``: ``conn`` (Django's default, a new connection per request,
  ``CONN_MAX_AGE = 0``) or ``pool`` (Django's own psycopg 3 pool,
  ``OPTIONS = {"pool": ...}``, Django 5.1+);
- ``GB_EXAMPLE_DJANGO_POOL``: the pool's size (20);
- ``GB_EXAMPLE_DJANGO_SLOTS``: at most this many requests on the database at once (the
  view's semaphore; 0 = no limit; by default 20 with ``conn``, none with ``pool``);
- ``GB_EXAMPLE_DJANGO_DRIVER``: ``psycopg`` (3, Django's choice when installed) or
  ``psycopg2`` (for gevent with psycogreen; not with ``pool``);
- ``GB_EXAMPLE_DJANGO_PG``: where PostgreSQL is, as a URL
  (``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

DB_MODE = os.environ.get("GB_EXAMPLE_DJANGO_DB", "conn")
if DB_MODE not in ("conn", "pool"):
    raise ValueError(f"GB_EXAMPLE_DJANGO_DB must be 'conn' or 'pool', not {DB_MODE!r}")
POOL_SIZE = int(os.environ.get("GB_EXAMPLE_DJANGO_POOL", "20"))
DB_SLOTS = int(os.environ.get("GB_EXAMPLE_DJANGO_SLOTS", "20" if DB_MODE == "conn" else "0"))
DRIVER = os.environ.get("GB_EXAMPLE_DJANGO_DRIVER", "psycopg")
if DRIVER == "psycopg2":
    if DB_MODE == "pool":
        raise ValueError(
            "Django's pool needs psycopg 3: with GB_EXAMPLE_DJANGO_DRIVER=psycopg2,"
            " set GB_EXAMPLE_DJANGO_DB=conn"
        )
    # Django's PostgreSQL backend takes psycopg 3 whenever it can import it.
    sys.modules["psycopg"] = None  # type: ignore[assignment]
elif DRIVER != "psycopg":
    raise ValueError(f"GB_EXAMPLE_DJANGO_DRIVER must be 'psycopg' or 'psycopg2', not {DRIVER!r}")

SECRET_KEY = "greenbridge-example-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "catalog",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "bench_site.urls"
WSGI_APPLICATION = "bench_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_pg = urlsplit(os.environ.get("GB_EXAMPLE_DJANGO_PG", "postgresql://postgres@127.0.0.1:5432/test"))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": _pg.hostname or "127.0.0.1",
        "PORT": str(_pg.port or 5432),
        "USER": _pg.username or "postgres",
        "PASSWORD": _pg.password or "",
        "NAME": _pg.path.lstrip("/") or "test",
        "CONN_MAX_AGE": 0,
        "OPTIONS": {},
    }
}
if DB_MODE == "pool":
    # Every connection opened up front and kept: the pool of the anchors.
    DATABASES["default"]["OPTIONS"] = {
        "pool": {"min_size": POOL_SIZE, "max_size": POOL_SIZE, "timeout": 60}
    }

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
