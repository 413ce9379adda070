"""Learning-rate schedules of the reference's solvers (spec section 6)."""

from __future__ import annotations

import math


def reference_learning_rate(step: int, base: float = 0.03) -> float:
    """``base / (1 + 0.02 * t'^0.75)`` with ``t' = sqrt(100^2 + t^2) - 100`` (the reference's barycenter schedule)."""
    t_prime = math.sqrt(100.0**2 + float(step) ** 2) - 100.0
    return base / (1.0 + 0.02 * t_prime**0.75)
