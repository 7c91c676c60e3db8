"""The version check of the integrations that replace functions inside a framework.

`greenbridge.integrations.starlette` and `greenbridge.integrations.django`
swap functions inside their frameworks, whose layout changes between
releases, so each refuses a release outside the range it was tested with.
"""

from __future__ import annotations

import re

__all__ = ["check_release", "release"]

Range = tuple[tuple[int, int], tuple[int, int]]


def release(text: str, error: type[Exception]) -> tuple[int, int]:
    """``(major, minor)`` of a version string; ``error`` if it has none."""
    match = re.match(r"(\d+)\.(\d+)", text)
    if match is None:
        raise error(f"cannot read the version {text!r}")
    return int(match.group(1)), int(match.group(2))


def check_release(
    integration: str, name: str, version: str, tested: dict[str, Range], error: type[Exception]
) -> None:
    """Raise ``error`` unless ``version`` of package ``name`` is in ``tested[name]``."""
    oldest, newest = tested[name]
    if not oldest <= release(version, error) <= newest:
        span = f"{oldest[0]}.{oldest[1]} to {newest[0]}.{newest[1]}"
        raise error(
            f"greenbridge.integrations.{integration} was tested with {name} {span}, not "
            f"{name} {version}: it replaces functions inside {name}, whose layout changes "
            f"between releases; install a tested {name} version (or a greenbridge release "
            "that supports this one)"
        )
