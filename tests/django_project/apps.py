"""The test project as a Django app (its model and migration)."""

from __future__ import annotations

from django.apps import AppConfig


class DjangoProjectConfig(AppConfig):
    name = "tests.django_project"
    label = "django_project"
    default_auto_field = "django.db.models.AutoField"
