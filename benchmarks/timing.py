"""Wall-clock timing for every benchmark: round-robin repeats, medians and per-round ratios.

On a shared machine absolute times drift with the load, so every comparison runs its sides interleaved in the
same loop (A, B, B, A, A, B, ...: the order alternates so neither side always runs first) and the result is the
median of the per-round ratios, which cancels load changes slower than one round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

Side = Callable[[], object]
"""One side of a comparison: a callable doing the work once (its result is discarded)."""


def sync(device: torch.device | str) -> None:
    """Wait for queued accelerator work (a no-op on CPU) so that wall-clock times are complete."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass(frozen=True)
class Timed:
    """One timed call: what it returned, its wall-clock seconds and the CPU seconds of this process."""

    value: object
    wall_s: float
    cpu_s: float


def timed_call(fn: Callable[[], object], device: torch.device | str = "cpu") -> Timed:
    """Call ``fn`` once, synchronised before and after; its result with wall-clock and process CPU seconds."""
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    value = fn()
    sync(device)
    return Timed(value, time.perf_counter() - start, time.process_time() - start_cpu)


def time_once(fn: Side, device: torch.device | str) -> float:
    """Seconds one call of ``fn`` takes, synchronised before and after."""
    return timed_call(fn, device).wall_s


class Stopwatch:
    """Wall-clock seconds since it was made (:meth:`total`) and since the previous :meth:`lap`."""

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()

    def lap(self) -> float:
        """Seconds since the previous lap (since the start for the first one)."""
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        return seconds

    def total(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.started


def paired_timings(sides: dict[str, Side], repeats: int, warmup: int, device: torch.device | str,
                   tick: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Time every side ``repeats`` times, round-robin, after ``warmup`` untimed rounds.

    Round ``r`` runs the sides in their given order when ``r`` is even and reversed when odd.

    Args:
        sides: name -> callable doing the work once.
        repeats: timed rounds (>= 1).
        warmup: untimed rounds first (>= 0): allocator, kernel selection and caches settle.
        device: synchronised around every call.
        tick: called after every round (progress bars).

    Returns:
        name -> ``repeats`` seconds, in round order (index ``r`` of every side comes from the same round).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(time_once(sides[name], device))
        if tick is not None:
            tick()
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of ``numerator[r] / denominator[r]`` (same-round pairs)."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("paired_ratio needs two equally long, non-empty lists of timings")
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=False))


def summarize(times: list[float]) -> dict[str, float | list[float]]:
    """``median``, ``min``, ``max`` (seconds) and the raw list, for the JSON record."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": [round(t, 6) for t in times]}
