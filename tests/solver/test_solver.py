"""The shared solver layer: option checks, schedules, checkpoints, progress, and one convention for both solvers."""

from __future__ import annotations

import math

import pytest
import torch
from elpips import barycenters, geodesics
from elpips.solver import (
    CHECKPOINT_NAME,
    CLIP_HIGH,
    CLIP_LOW,
    ProgressReport,
    StepInfo,
    chain,
    check_format,
    checkpoint_format,
    clip_,
    learning_rate_schedule,
    load_checkpoint,
    make_generator,
    reference_learning_rate,
    save_checkpoint,
)


def test_reference_schedule_closed_form():
    assert reference_learning_rate(0) == pytest.approx(0.03)
    t_prime = math.sqrt(100**2 + 500**2) - 100
    assert reference_learning_rate(500, 0.005) == pytest.approx(0.005 / (1 + 0.02 * t_prime**0.75), rel=1e-12)


def test_learning_rate_schedule_parsing():
    default = lambda step: 1.0  # noqa: E731
    assert learning_rate_schedule(None, default) == (default, "reference")
    constant, description = learning_rate_schedule(0.25, default)
    assert description == 0.25 and constant(0) == constant(999) == 0.25
    custom = lambda step: 0.1 / (step + 1)  # noqa: E731
    schedule, description = learning_rate_schedule(custom, default)
    assert description == "custom" and [schedule(step) for step in range(5)] == [custom(step) for step in range(5)]
    for bad in (0, -1.0, float("inf"), float("nan"), "fast", True):
        with pytest.raises(ValueError, match="lr must be"):
            learning_rate_schedule(bad, default)
    with pytest.raises(ValueError, match=r"^lr must be a finite learning rate > 0, got inf$"):
        learning_rate_schedule(float("inf"), default)


@pytest.mark.parametrize("rate", [float("inf"), float("nan"), 0.0, -0.5, None])
def test_custom_schedule_rates_are_checked(rate):
    """A callable lr giving an infinite (or no) rate stops with one line instead of a NaN solution."""
    schedule, _ = learning_rate_schedule(lambda step: 0.1 if step < 3 else rate, lambda step: 1.0)
    assert schedule(2) == 0.1
    with pytest.raises(ValueError, match=rf"^lr gave the learning rate {rate!r} at step 3; rates must be finite"):
        schedule(3)


def test_solver_refuses_an_infinite_rate(random_metric, images):
    with pytest.raises(ValueError, match="lr gave the learning rate inf at step 0"):
        barycenters.solve(images(2, 16, 16), random_metric("l2"), weights=[0.5, 0.5], steps=2,
                          lr=lambda step: float("inf"), generator=0)


def test_clip_range_is_the_reference_one():
    images = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0])
    assert clip_(images) is images
    assert images.tolist() == pytest.approx([1e-5, 1e-5, 0.5, 1 - 1e-5, 1 - 1e-5])
    assert (CLIP_LOW, CLIP_HIGH) == (1e-5, 1 - 1e-5)


def test_make_generator():
    assert make_generator(3).initial_seed() == 3
    given = torch.Generator()
    assert make_generator(given) is given and make_generator(None, default=given) is given
    with pytest.raises(ValueError, match="generator"):
        make_generator("seed")


def test_checkpoint_round_trip_and_format_tags(tmp_path):
    path = tmp_path / "run" / CHECKPOINT_NAME
    generator = torch.Generator().manual_seed(5)
    state = {"format": checkpoint_format("barycenter"), "x": torch.arange(4.0), "step": 3}
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["x"], state["x"]) and loaded["step"] == 3
    assert [entry.name for entry in path.parent.iterdir()] == [CHECKPOINT_NAME]  # no temporary left behind
    assert checkpoint_format("barycenter") == "elpips-barycenter/1"
    assert checkpoint_format("geodesic") == "elpips-geodesic/1"
    check_format(loaded, "barycenter", path)
    with pytest.raises(ValueError, match="not a geodesic checkpoint"):
        check_format(loaded, "geodesic", path)
    assert generator.initial_seed() == 5


def test_step_info_names_are_shared():
    for info_type in (barycenters.StepInfo, geodesics.StepInfo):
        assert issubclass(info_type, StepInfo)
        names = list(info_type.__dataclass_fields__)
        assert names[:5] == ["step", "total_steps", "learning_rate", "loss", "seconds"]


def test_chain_calls_in_order():
    seen = []
    assert chain(None, None) is None
    only = seen.append
    assert chain(None, only) is only
    chain(lambda info: seen.append(("a", info)), lambda info: seen.append(("b", info)))(1)
    assert seen == [("a", 1), ("b", 1)]


def test_progress_report_prints_lines_when_stderr_is_not_a_terminal(capsys):
    report = ProgressReport("run", 20, lambda info: {"loss": f"{info.loss:.2f}"})
    for step in range(1, 21):
        report(StepInfo(step, 20, 0.01, 1.0 / step, 0.0))
    report.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("run: step")]
    assert len(lines) == 10 and lines[-1].startswith("run: step 20/20, loss 0.05, ETA")


def test_both_solvers_take_lr(random_metric):
    metric = random_metric("l2")
    keys = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    geodesics.solve(keys, frames=4, metric=metric, steps=3, lr=0.01, coarse_to_fine=False, generator=1,
                    eval_samples=1)
    result = barycenters.solve(keys, metric=metric, steps=2, lr=0.01, generator=0, eval_samples=1)
    assert result.settings["lr"] == 0.01
