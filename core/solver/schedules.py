"""Learning-rate schedules of the solvers (``docs/algorithm.md#schedules``) and the parsing of ``lr=``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Schedule = Callable[[int], float]
"""``schedule(step) -> learning rate`` for the 0-based global step."""

REFERENCE_BASE_RATE = 0.03
"""Base rate of the reference's barycenter schedule."""


def reference_learning_rate(step: int, base: float = REFERENCE_BASE_RATE) -> float:
    """``base / (1 + 0.02 * t'^0.75)`` with ``t' = sqrt(100^2 + t^2) - 100`` (the reference's barycenter schedule)."""
    t_prime = math.sqrt(100.0**2 + float(step) ** 2) - 100.0
    return base / (1.0 + 0.02 * t_prime**0.75)


def learning_rate_schedule(lr: float | Schedule | None, default: Schedule,
                           default_name: str = "reference") -> tuple[Schedule, Any]:
    """``(schedule, description)`` for a solver's ``lr=`` argument.

    ``None`` -> ``default`` (described by ``default_name``); a positive finite number -> that constant rate
    (described by the number); a callable ``step -> rate`` -> itself, every rate it gives checked (``"custom"``).
    """
    if lr is None:
        return default, default_name
    if callable(lr):
        return _checked_schedule(lr), "custom"
    wrong = f"lr must be None (the default schedule), a positive number or a callable step -> rate, got {lr!r}"
    if isinstance(lr, bool):
        raise ValueError(wrong)
    try:
        rate = float(lr)
    except (TypeError, ValueError):
        raise ValueError(wrong) from None
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"lr must be a finite learning rate > 0, got {lr!r}")
    return (lambda step: rate), rate


def _checked_schedule(schedule: Schedule) -> Schedule:
    """``schedule`` with a ``ValueError`` naming ``lr`` and the step for a rate that is not a finite number > 0
    (an infinite rate would turn the whole solution into NaN)."""
    def checked(step: int) -> float:
        rate = schedule(step)
        try:
            good = math.isfinite(float(rate)) and float(rate) > 0
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ValueError(f"lr gave the learning rate {rate!r} at step {step}; rates must be finite and > 0")
        return rate

    return checked
