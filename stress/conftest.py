"""The stress suite's fixtures: those of tests/ (run pytest from the repo root)."""

from tests.conftest import BACKENDS, IN_CI, aio, backend, require_service

__all__ = ["BACKENDS", "IN_CI", "aio", "backend", "require_service"]
