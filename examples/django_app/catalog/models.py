from __future__ import annotations

from django.db import models


class Item(models.Model):
    """One catalog item (the view reads it through a raw query: the table need not exist)."""

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name
