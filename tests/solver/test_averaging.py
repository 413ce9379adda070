"""Tail averaging of the iterates: the running mean against a float64 recomputation, its checks, and both solvers
returning (and checkpointing) exactly the mean of their last iterates."""

from __future__ import annotations

import math

import pytest
import torch
from elpips import barycenters, geodesics
from elpips.solver import load_checkpoint
from elpips.solver.averaging import IterateAverage, averaging_start, check_average_last


def _iterates(count: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, 5, 4, generator=generator) for _ in range(count)]


def test_running_mean_equals_the_float64_mean_of_the_iterates_after_start():
    iterates = _iterates(9)
    average = IterateAverage(start=4)
    for done, iterate in enumerate(iterates, start=1):
        average.update(iterate, done)
    expected = torch.stack([iterate.double() for iterate in iterates[4:]]).mean(dim=0)
    assert average.count == 5
    torch.testing.assert_close(average.value().double(), expected, rtol=0, atol=1e-6)
    assert IterateAverage(start=9).value() is None  # nothing after the start yet


def test_restored_average_continues_or_restarts_where_its_start_moved():
    iterates = _iterates(8, seed=1)
    whole, first = IterateAverage(start=2), IterateAverage(start=2)
    for done, iterate in enumerate(iterates, start=1):
        whole.update(iterate, done)
        if done <= 5:
            first.update(iterate, done)
    continued = IterateAverage.restore(first.state(), start=2, done=5, device="cpu")
    for done, iterate in enumerate(iterates[5:], start=6):
        continued.update(iterate, done)
    assert continued.count == whole.count == 6 and torch.equal(continued.value(), whole.value())
    moved = IterateAverage.restore(first.state(), start=4, done=5, device="cpu")  # more steps: a later start
    assert (moved.start, moved.count, moved.value()) == (5, 0, None)


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf, "half", True, None])
def test_average_last_outside_zero_to_one_is_a_value_error_naming_it(value):
    with pytest.raises(ValueError, match="average_last"):
        check_average_last(value)


def test_averaging_start_counts_the_last_fraction_of_the_steps():
    assert averaging_start(100, 0.5) == 50
    assert averaging_start(100, 0.0) == 100  # nothing averaged
    assert averaging_start(10, 0.01) == 9  # at least the last iterate
    assert averaging_start(100, 1.0) == 0
    assert averaging_start(100, 0.9, earliest=50) == 50  # not before the geodesic's last stage


def test_barycenter_returns_the_mean_of_its_last_iterates(random_metric, images):
    inputs = images(3, 32, 32, seed=3)
    seen: dict[int, torch.Tensor] = {}
    result = barycenters.solve(inputs, random_metric("elpips-vgg"), steps=8, generator=4, eval_samples=2,
                               average_last=0.5, callback=lambda info: seen.__setitem__(info.step, info.image.clone()))
    assert result.note is None and result.returned_step == 8
    assert (result.averaged_iterates, result.averaged_from) == (4, 4)
    expected = torch.stack([seen[step].double() for step in range(5, 9)]).mean(dim=0)
    torch.testing.assert_close(result.image.double(), expected, rtol=0, atol=1e-6)
    assert result.settings["average_last"] == 0.5
    final = barycenters.evaluate_objective(random_metric("elpips-vgg"), result.image, inputs,
                                           torch.full((3,), 1 / 3), 2.0, samples=2, seed=0)
    assert result.evaluations[-1].step == 8
    assert result.evaluations[-1].objective == pytest.approx(final.objective, rel=1e-5)  # the average's


def _barycenter(metric, inputs, path, steps=6, **kwargs):
    return barycenters.solve(inputs, metric, steps=steps, generator=21, checkpoint=path, checkpoint_every=2,
                             eval_samples=2, average_last=0.5, **kwargs)


class _Interrupted(Exception):
    pass


def _interrupt_at(step: int):
    def callback(info) -> None:
        if info.step == step:
            raise _Interrupted

    return callback


def test_barycenter_average_resumes_bit_exactly(random_metric, images, tmp_path):
    metric, inputs = random_metric("elpips-vgg"), images(3, 32, 32, seed=12)
    full = _barycenter(metric, inputs, tmp_path / "full.pt")
    with pytest.raises(_Interrupted):
        _barycenter(metric, inputs, tmp_path / "part.pt", callback=_interrupt_at(5))
    assert load_checkpoint(tmp_path / "part.pt")["average"]["count"] == 1  # step 4: inside the averaged steps
    resumed = _barycenter(metric, inputs, tmp_path / "part.pt", resume=True)
    assert resumed.resumed_from == 4 and resumed.averaged_iterates == full.averaged_iterates == 3
    assert torch.equal(resumed.image, full.image)
    longer = _barycenter(metric, inputs, tmp_path / "full.pt", steps=10, resume=True)
    assert (longer.averaged_from, longer.averaged_iterates) == (6, 4)  # the start moved past the saved step


def _geodesic(metric, keys, **kwargs):
    """A solve from a noisy path (which the steps clearly improve on), the last 3 of its 6 steps averaged."""
    start = geodesics.linear_path(keys, (3,))
    start[1:-1] += 0.1 * torch.randn(start[1:-1].shape, generator=torch.Generator().manual_seed(2))
    return geodesics.solve(keys, metric, frames=4, steps=6, lr=0.01, init=start.clamp(0, 1), generator=5,
                           eval_samples=2, coarse_to_fine=False, average_last=0.5, **kwargs)


def test_geodesic_returns_the_mean_of_its_last_paths(random_metric, images, tmp_path):
    metric, keys = random_metric("elpips-vgg"), images(2, 32, 32, seed=7)
    paths: dict[int, torch.Tensor] = {}

    def keep(info) -> None:  # the checkpoint of every step holds that step's path
        paths[info.step] = load_checkpoint(tmp_path / "run.pt")["path"]

    result = _geodesic(metric, keys, checkpoint=tmp_path / "run.pt", checkpoint_every=1, callback=keep)
    assert result.note is None and result.averaged_iterates == 3
    expected = torch.stack([paths[step].double() for step in (4, 5, 6)]).mean(dim=0)
    expected[[0, -1]] = keys.double()
    torch.testing.assert_close(result.frames.double(), expected, rtol=0, atol=1e-6)
    assert torch.equal(result.frames[[0, -1]], keys)


def test_geodesic_averages_its_last_stage_only_and_resumes_bit_exactly(random_metric, images, tmp_path):
    metric, keys = random_metric("elpips-vgg"), images(2, 32, 32, seed=8)
    staged = geodesics.solve(keys, metric, frames=5, steps=8, generator=5, eval_samples=2, average_last=1.0)
    assert len(staged.levels) > 1 and staged.averaged_iterates == staged.levels[-1].steps
    full = _geodesic(metric, keys, checkpoint=tmp_path / "full.pt", checkpoint_every=1)
    with pytest.raises(_Interrupted):
        _geodesic(metric, keys, checkpoint=tmp_path / "part.pt", checkpoint_every=1, callback=_interrupt_at(5))
    resumed = _geodesic(metric, keys, checkpoint=tmp_path / "part.pt", checkpoint_every=1, resume=True)
    assert resumed.resumed_from == 5 and torch.equal(resumed.frames, full.frames)
    with pytest.raises(ValueError, match="average_last"):
        geodesics.solve(keys, metric, frames=4, steps=6, checkpoint=tmp_path / "part.pt", resume=True,
                        coarse_to_fine=False, lr=0.01, average_last=0.25)
