"""Settings of the test project, given to ``settings.configure()`` by the tests.

Every connection says ``application_name=greenbridge-django-tests``, so the
tests can count this project's server connections in ``pg_stat_activity``.
"""

from __future__ import annotations

import django

APPLICATION_NAME = "greenbridge-django-tests"

_DATABASE = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "test",
    "USER": "postgres",
    "HOST": "127.0.0.1",
    "PORT": "5432",
    "CONN_MAX_AGE": 0,
    "OPTIONS": {"application_name": APPLICATION_NAME},
}

DATABASES = {
    "default": _DATABASE,
    # Connections kept open between requests (CONN_MAX_AGE=None: forever).
    "persistent": {**_DATABASE, "CONN_MAX_AGE": None},
}
if django.VERSION >= (5, 1):
    # Django's psycopg 3 pool: 2 connections, for the pool-wait test.
    DATABASES["pooled"] = {
        **_DATABASE,
        "OPTIONS": {
            "application_name": APPLICATION_NAME,
            "pool": {"min_size": 2, "max_size": 2, "timeout": 30},
        },
    }

SECRET_KEY = "greenbridge tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.django_project.urls"
INSTALLED_APPS = ["tests.django_project.apps.DjangoProjectConfig"]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",  # an old-style (MiddlewareMixin) sync one
    "tests.django_project.middleware.where_middleware",  # a function-style sync one
    "tests.django_project.middleware.async_middleware",  # an async-only one
]
USE_TZ = True
# Leave the process's logging alone: django.request records reach the root logger.
LOGGING_CONFIG = None
