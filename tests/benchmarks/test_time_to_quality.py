"""``benchmarks/time_to_quality.py`` at its smallest: every variant's row, finite objectives, the step count that
fills a budget, the JSON and Markdown it writes, and the summary it renders from several runs."""

from __future__ import annotations

import json
import math

import pytest
from elpips.benchmarks import time_to_quality


def test_smallest_run_writes_every_variant_and_its_summary(tmp_path, capsys):
    arguments = ["--budget", "0.01", "--path-budget", "0.01", "--fractions", "0.5,1", "--floor", "0.01",
                 "--size", "16", "--count", "2", "--path-size", "16", "--frames", "3", "--eval-samples", "1",
                 "--calibration-steps", "1", "--out", str(tmp_path)]
    assert time_to_quality.main(arguments) == 0
    (written,) = tmp_path.glob("time_to_quality-*.json")
    record = json.loads(written.read_text())
    assert record["schema"] == "elpips-time-to-quality/2"
    variants = [(row["solver"], row["variant"]) for row in record["rows"]]
    assert set(variants) == {("barycenter", "l2_mean"), ("barycenter", "reference"),
                             ("barycenter", "last_iterate"), ("barycenter", "averaged"),
                             ("barycenter", "bfloat16_averaged"), ("barycenter", "averaged_floor"),
                             ("geodesic", "linear_start"), ("geodesic", "last_iterate"), ("geodesic", "averaged"),
                             ("geodesic", "averaged_last_quarter"), ("geodesic", "bfloat16_averaged")}
    assert variants.count(("barycenter", "averaged")) == 2  # one per fraction of the budget
    for row in record["rows"]:
        assert math.isfinite(row["objective"]) and row["objective"] >= 0
        assert row["steps"] >= (0 if row["variant"] in ("l2_mean", "linear_start") else 1)
    for row in record["rows"]:
        if row["variant"] in ("last_iterate", "reference"):
            assert row["averaged_iterates"] == 0
        elif row["solver"] == "barycenter" and row["variant"].startswith(("averaged", "bfloat16")):
            assert row["averaged_iterates"] >= 1
    assert record["plan"]["threads"] == 1 and record["load_average_start"] is not None
    assert "| barycenter | reference | 0 |" in written.with_suffix(".md").read_text()
    assert "wrote" in capsys.readouterr().out

    assert time_to_quality.main(["--summarize", str(written), str(written)]) == 0
    summary = capsys.readouterr().out
    assert "| barycenter | l2_mean | — | 2 |" in summary and "+0.0%" in summary


def test_the_step_count_fills_the_budget_from_the_calibration_runs(monkeypatch):
    costs = iter([1.0 + 3 * 0.5, 1.0 + 6 * 0.5])  # fixed 1 s, 0.5 s a step: 3 steps, then 6

    class Timed:
        def __init__(self, cpu_s: float) -> None:
            self.cpu_s = cpu_s

    monkeypatch.setattr(time_to_quality, "timed_call", lambda call: Timed(next(costs)))
    steps, per_step = time_to_quality._steps_for(11.0, lambda steps: None, 3)
    assert per_step == pytest.approx(0.5) and steps == 20


def test_a_noisy_calibration_never_asks_for_unbounded_steps(monkeypatch):
    costs = iter([2.0, 2.0])  # the longer run measured no slower

    class Timed:
        def __init__(self, cpu_s: float) -> None:
            self.cpu_s = cpu_s

    monkeypatch.setattr(time_to_quality, "timed_call", lambda call: Timed(next(costs)))
    steps, per_step = time_to_quality._steps_for(10.0, lambda steps: None, 1)
    assert per_step == pytest.approx(2.0 / 8) and steps <= 40
