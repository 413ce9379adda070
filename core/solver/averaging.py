"""Tail averaging of a solver's iterates (Polyak–Ruppert; ``docs/algorithm.md#iterate-averaging``).

A solver's objective is a stochastic estimate (one ensemble sample per step), so its last iterate keeps a noise
floor set by the learning rate. The mean of the iterates over the last ``average_last`` fraction of the steps
cancels much of that noise at no extra cost per step; the solvers return it as their result.
"""

from __future__ import annotations

from typing import Any

import torch

DEFAULT_AVERAGE_LAST = 0.5
"""The fraction of the steps both solvers average by default with a stochastic metric: the barycenter's last half,
the geodesic's last stage (the last half of the steps with coarse-to-fine; ``docs/performance.md#time-to-quality``)."""


def check_average_last(average_last: Any) -> float:
    """``average_last``: a number in ``[0, 1]`` (0: no averaging, the last iterate)."""
    message = f"average_last must be a number in [0, 1] (a fraction of the steps), got {average_last!r}"
    if isinstance(average_last, bool):
        raise ValueError(message)
    try:
        value = float(average_last)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN and infinities
        raise ValueError(message)
    return value


def resolve_average_last(average_last: Any, metric: Any) -> float:
    """``average_last`` checked, ``None`` resolved: :data:`DEFAULT_AVERAGE_LAST` for a stochastic metric (an
    E-LPIPS ensemble, or a plain distance function, whose noise is unknown), 0 for a deterministic one (LPIPS,
    ``l2``: no noise to average away, and averaging would only lag behind the converging iterates)."""
    if average_last is None:
        return DEFAULT_AVERAGE_LAST if getattr(metric, "is_stochastic", True) else 0.0
    return check_average_last(average_last)


def averaging_start(steps: int, average_last: float, earliest: int = 0) -> int:
    """The completed-step count after which iterates enter the average: the last ``round(average_last * steps)``
    steps' iterates are averaged, none before ``earliest`` (say, the geodesic's last stage). ``steps`` with no
    averaging (``average_last == 0``)."""
    if average_last <= 0.0:
        return steps
    return max(earliest, steps - max(1, round(average_last * steps)))


class IterateAverage:
    """The running mean of the iterates after step ``start`` (float32, on the iterates' device).

    Args:
        start: the iterates of completed steps ``start + 1, start + 2, ...`` are averaged.
    """

    def __init__(self, start: int) -> None:
        self.start = int(start)
        self.count = 0
        self.mean: torch.Tensor | None = None

    def update(self, iterate: torch.Tensor, done: int) -> None:
        """Add ``iterate`` (any shape; not kept) when ``done`` (completed steps) is past :attr:`start`."""
        if done <= self.start:
            return
        self.count += 1
        values = iterate.detach().float()
        if self.mean is None:
            self.mean = values.clone()
        else:
            self.mean.lerp_(values, 1.0 / self.count)

    def value(self) -> torch.Tensor | None:
        """The mean so far (a copy), ``None`` before the first averaged step."""
        return None if self.mean is None else self.mean.clone()

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds (the mean on the CPU)."""
        return {"start": self.start, "count": self.count, "mean": None if self.mean is None else self.mean.cpu()}

    @classmethod
    def restore(cls, state: dict[str, Any] | None, start: int, done: int,
                device: torch.device | str) -> IterateAverage:
        """The average a checkpoint saved at ``done`` steps, continued with averaging start ``start``.

        Where the saved average began at another step (a resumed run with more steps moves the start), it is
        restarted at ``max(start, done)``: the iterates before the resumed step are gone, and those before the new
        start must not count.
        """
        if state is None or int(state["start"]) != start:
            return cls(max(start, done))
        average = cls(start)
        average.count = int(state["count"])
        average.mean = None if state["mean"] is None else state["mean"].to(device)
        return average
