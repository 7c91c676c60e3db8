"""How big the stress runs are.

GREENBRIDGE_STRESS_SCALE (default 1.0) scales durations and counts.
"""

import os

SCALE = float(os.environ.get("GREENBRIDGE_STRESS_SCALE", "1.0"))


def scaled(n: float, minimum: float) -> float:
    return max(minimum, n * SCALE)
