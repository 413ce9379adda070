"""What a solver reports after every step: :class:`StepInfo` for callbacks and :class:`ProgressReport` on stderr."""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator


@dataclass
class StepInfo:
    """What a ``callback`` sees after every step (each solver adds its own fields to these).

    Attributes:
        step: steps completed (1-based), out of ``total_steps``.
        learning_rate: the learning rate this step used.
        loss: this step's one-sample estimate of the objective, ``>= 0`` (barycenter: the weighted sum of powered
            distances to the chosen references; geodesic: the path energy at the stage's frame count).
        seconds: wall time of this step.
    """

    step: int
    total_steps: int
    learning_rate: float
    loss: float
    seconds: float

    @property
    def steps(self) -> int:
        """Deprecated name of :attr:`total_steps`."""
        warnings.warn("StepInfo.steps is deprecated: use total_steps", DeprecationWarning, stacklevel=2)
        return self.total_steps

    @property
    def lr(self) -> float:
        """Deprecated name of :attr:`learning_rate`."""
        warnings.warn("StepInfo.lr is deprecated: use learning_rate", DeprecationWarning, stacklevel=2)
        return self.learning_rate


Callback = Callable[[Any], None]


def chain(*callbacks: Callback | None) -> Callback | None:
    """One callback calling every given one in order (``None`` entries skipped; ``None`` if none is left)."""
    present = [callback for callback in callbacks if callback is not None]
    if len(present) < 2:
        return present[0] if present else None

    def call_all(info: Any) -> None:
        for callback in present:
            callback(info)

    return call_all


class ProgressReport:
    """A solver's progress on stderr: a tqdm bar (with ETA) on a terminal; otherwise a line every ~10% of the
    steps, so that the logs of long runs show progress too. Call it with every :class:`StepInfo`.

    Args:
        label: name of the run (``"barycenter"``, a metric name ...).
        total_steps: steps of the whole run.
        describe: ``info -> {name: value}``, the run's own figures (objective, energy, stage ...).
    """

    def __init__(self, label: str, total_steps: int,
                 describe: Callable[[Any], dict[str, Any]] | None = None) -> None:
        from tqdm import tqdm

        self.label = label
        self.describe = describe or (lambda info: {"loss": f"{info.loss:.4g}"})
        self.bar = tqdm(total=total_steps, desc=label, unit="step", file=sys.stderr, leave=False,
                        dynamic_ncols=True, disable=not sys.stderr.isatty())
        self.every = max(1, total_steps // 10)
        self.started = time.perf_counter()
        self.first_step: int | None = None

    def __call__(self, info: StepInfo) -> None:
        if self.first_step is None:  # a resumed run starts late: its ETA counts only the steps run now
            self.first_step = info.step - 1
            self.bar.n = self.bar.last_print_n = self.first_step
        self.bar.update(info.step - self.bar.n)
        figures = self.describe(info)
        self.bar.set_postfix(figures, refresh=False)
        if self.bar.disable and (info.step % self.every == 0 or info.step == info.total_steps):
            elapsed = time.perf_counter() - self.started
            eta = elapsed / (info.step - self.first_step) * (info.total_steps - info.step)
            details = "".join(f", {name} {value}" for name, value in figures.items())
            print(f"{self.label}: step {info.step}/{info.total_steps}{details}, ETA {eta:.0f} s", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def reporting(label: str, total_steps: int, describe: Callable[[Any], dict[str, Any]], enabled: bool,
              callback: Callback | None) -> Iterator[Callback | None]:
    """The callback a solver's loop calls after every step: a :class:`ProgressReport` (if ``enabled``), then
    ``callback``; the report is closed when the loop ends, however it ends."""
    report = ProgressReport(label, total_steps, describe) if enabled else None
    try:
        yield chain(report, callback)
    finally:
        if report is not None:
            report.close()
