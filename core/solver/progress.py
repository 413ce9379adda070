"""What a solver reports after every step: :class:`StepInfo` for callbacks and :class:`ProgressReport` on stderr."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


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


PLAIN_INTERVAL_S = 10.0
"""Without a terminal, a progress line at least this often (seconds) while work advances, besides every 10%."""


class ProgressReport:
    """Progress on stderr: a tqdm bar (with ETA) on a terminal; otherwise plain lines, one every ~10% of the
    total and at least every :data:`PLAIN_INTERVAL_S` seconds, so that the logs of long runs (batch jobs'
    ``stderr.txt``) show progress too.

    A solver calls it with every :class:`StepInfo`; other loops use it like a tqdm bar (``update``,
    ``set_postfix``, ``n = ...``, ``with``).

    Args:
        label: name of the run (``"barycenter"``, a metric name ...).
        total_steps: steps (or other units) of the whole run.
        describe: ``info -> {name: value}``, the run's own figures (objective, energy, stage ...).
        unit: what is counted (``"step"``, ``"sample"``).
        interval_s: longest time between plain lines while work advances.
        enabled: ``False``: show nothing (other ranks of a distributed run).
    """

    def __init__(self, label: str, total_steps: int, describe: Callable[[Any], dict[str, Any]] | None = None,
                 unit: str = "step", interval_s: float = PLAIN_INTERVAL_S, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.label, self.total, self.unit, self.interval_s = label, total_steps, unit, interval_s
        self.plain = enabled and not sys.stderr.isatty()
        self.describe = describe or (lambda info: {"loss": f"{info.loss:.4g}"})
        self.bar = tqdm(total=total_steps, desc=label, unit=unit, file=sys.stderr, leave=False,
                        dynamic_ncols=True, disable=not (enabled and sys.stderr.isatty()))
        self.every = max(1, total_steps // 10)
        self.started = self.last_line = time.perf_counter()
        self.first_step: int | None = None
        self.done = 0
        self.figures: dict[str, Any] = {}

    def __call__(self, info: StepInfo) -> None:
        if self.first_step is None:  # a resumed run starts late: its ETA counts only the steps run now
            self.first_step = self.done = info.step - 1
            self.bar.n = self.bar.last_print_n = self.first_step
        self.figures = self.describe(info)
        self.advance_to(info.step)

    def advance_to(self, done: int) -> None:
        """``done`` units are complete: move the bar, or print a plain line when one is due."""
        previous, self.done = self.done, done
        self.bar.update(done - previous)  # a disabled tqdm bar counts nothing: the count is kept here
        self.bar.set_postfix(self.figures, refresh=False)
        now = time.perf_counter()
        if self.plain and (done >= self.total or done // self.every > previous // self.every
                                 or now - self.last_line >= self.interval_s):
            self.last_line = now
            print(self.plain_line(done, now), file=sys.stderr, flush=True)

    def plain_line(self, done: int, now: float) -> str:
        """``label: step 5/10, loss 0.1, ETA 3 s``."""
        first = self.first_step or 0
        eta = (now - self.started) / max(1, done - first) * max(0, self.total - done)
        details = "".join(f", {name} {value}" for name, value in self.figures.items())
        return f"{self.label}: {self.unit} {done}/{self.total}{details}, ETA {eta:.0f} s"

    @property
    def n(self) -> int:
        return self.done

    @n.setter
    def n(self, done: int) -> None:
        self.advance_to(done)

    def update(self, count: int = 1) -> None:
        """``count`` more units are complete (as ``tqdm.update``)."""
        self.advance_to(self.done + count)

    def set_postfix(self, **figures: Any) -> None:
        """The figures shown with the bar and in the plain lines (as ``tqdm.set_postfix``)."""
        self.figures = figures

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ProgressReport:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


PHASE_NOTICE_S = 2.0
"""A wait without steps is announced once it has lasted this long (quick ones stay silent)."""


@contextlib.contextmanager
def phase(label: str, enabled: bool = True, notice_s: float = PHASE_NOTICE_S,
          interval_s: float = PLAIN_INTERVAL_S) -> Iterator[None]:
    """A wait without steps (loading weights, a final evaluation): once it has lasted ``notice_s`` seconds,
    ``label ...`` on stderr, then ``label: still running (N s)`` every ``interval_s`` seconds and its duration
    when it ends (terminal or not)."""
    if not enabled:
        yield
        return
    started = time.perf_counter()
    done = threading.Event()
    announced = threading.Event()

    def announce() -> None:
        if done.wait(notice_s):
            return
        announced.set()
        print(f"{label} ...", file=sys.stderr, flush=True)
        while not done.wait(interval_s):
            print(f"{label}: still running ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    watcher = threading.Thread(target=announce, name="elpips-phase", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        if announced.is_set():
            print(f"{label}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


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
