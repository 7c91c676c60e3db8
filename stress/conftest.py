"""Fixtures of the stress suite: the unit tests' own (run pytest from the repo root)."""

from tests.conftest import BACKENDS, IN_CI, aio, backend, require_service

__all__ = ["BACKENDS", "IN_CI", "aio", "backend", "require_service"]
