"""Fixtures of the stress suite: the loop backends and services of tests/conftest.py.

Run from the repository root: ``python -m pytest stress -s`` (``-s`` shows the
figures every stress test prints).  ``GREENBRIDGE_STRESS_SCALE`` (default 1.0)
scales durations and counts (see ``_scale.py``).
"""

from tests.conftest import BACKENDS, IN_CI, aio, backend, require_service

__all__ = ["BACKENDS", "IN_CI", "aio", "backend", "require_service"]
