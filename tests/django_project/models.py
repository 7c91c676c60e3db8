"""The test project's one model."""

from __future__ import annotations

from django.db import models


class Item(models.Model):
    """A named row; the transaction tests write and count these."""

    name = models.CharField(max_length=100)

    class Meta:
        app_label = "django_project"
        db_table = "greenbridge_django_item"
