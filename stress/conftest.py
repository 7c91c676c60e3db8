"""Fixtures of the stress suite: the loop fixtures of tests/conftest.py.

Run from the repository root: ``python -m pytest stress -s`` (``-s`` shows the
figures every stress test prints).  ``GREENBRIDGE_STRESS_SCALE`` (default 1.0)
scales durations and counts (see ``_scale.py``).  Backends, services and the
other shared helpers come from ``tests/helpers.py``, imported the same way as
in the tests: ``from tests.helpers import ...``.
"""

from tests.conftest import aio, backend

__all__ = ["aio", "backend"]
