"""A solve never changes the metric it is given: not its device, not its buffers, not its generator; a device other
than the metric's is an error, never a move; ``generator=None`` is a fresh seed recorded in the result."""

from __future__ import annotations

import elpips
import pytest
import torch
from elpips import barycenters, geodesics


def _snapshot(metric: elpips.Metric) -> dict:
    return {
        "device": metric.device,
        "pointers": {name: buffer.data_ptr() for name, buffer in metric.named_buffers()},
        "values": {name: buffer.clone() for name, buffer in metric.named_buffers()},
        "generator": metric.generator.get_state().clone(),
        "seed": metric.generator.initial_seed(),
    }


def _assert_unchanged(metric: elpips.Metric, before: dict) -> None:
    after = _snapshot(metric)
    assert after["device"] == before["device"]
    assert after["pointers"] == before["pointers"]
    assert all(torch.equal(after["values"][name], value) for name, value in before["values"].items())
    assert torch.equal(after["generator"], before["generator"]) and after["seed"] == before["seed"]


@pytest.fixture(scope="module")
def metric() -> elpips.Metric:
    """A metric of this module's own (the shared cached ones are re-seeded on every request)."""
    return elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=3)


def _keys(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("generator", [None, 5])
def test_barycenter_solve_leaves_the_metric_alone(metric, generator, tmp_path):
    before = _snapshot(metric)
    result = barycenters.solve(_keys(), metric, steps=2, generator=generator, eval_samples=2, device="cpu",
                               checkpoint=tmp_path / "checkpoint.pt")
    _assert_unchanged(metric, before)
    barycenters.solve(_keys(), metric, steps=3, eval_samples=2, checkpoint=tmp_path / "checkpoint.pt", resume=True)
    _assert_unchanged(metric, before)
    if generator is not None:
        assert result.settings["seed"] == generator


@pytest.mark.parametrize("generator", [None, 5])
def test_geodesic_solve_leaves_the_metric_alone(metric, generator, tmp_path):
    before = _snapshot(metric)
    result = geodesics.solve(_keys(), metric, frames=4, steps=2, generator=generator, eval_samples=2,
                             device="cpu", coarse_to_fine=False, checkpoint=tmp_path / "checkpoint.pt")
    _assert_unchanged(metric, before)
    resumed = geodesics.solve(_keys(), metric, frames=4, steps=2, eval_samples=2, coarse_to_fine=False,
                              checkpoint=tmp_path / "checkpoint.pt", resume=True)
    _assert_unchanged(metric, before)
    assert isinstance(result.seed, int) and resumed.seed == result.seed  # the run's seed, also on resume
    if generator is not None:
        assert result.seed == generator


def test_solve_window_leaves_the_metric_alone(metric):
    before = _snapshot(metric)
    window = geodesics.plan_windows(2)[0]
    geodesics.solve_window(_keys(), metric, window=window, factor=2, seed=0,
                           settings=geodesics.SolveSettings(steps=1, eval_samples=1))
    _assert_unchanged(metric, before)


def test_generator_none_is_a_fresh_seed_in_both_solvers(metric):
    """Not the metric's generator: two solves under the same metric get different seeds, both recorded."""
    seeds = [barycenters.solve(_keys(), metric, steps=0, eval_samples=1).settings["seed"] for _ in range(2)]
    assert seeds[0] != seeds[1] and metric.generator.initial_seed() not in seeds
    seeds = [geodesics.solve(_keys(), metric, frames=3, steps=0, eval_samples=1).seed for _ in range(2)]
    assert seeds[0] != seeds[1] and metric.generator.initial_seed() not in seeds


class _ElsewhereMetric:
    """A distance function that says it lives on another device; moving it is a test failure."""

    device = torch.device("meta")
    min_size = 1

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).square().mean(dim=(1, 2, 3))

    def to(self, *args, **kwargs):
        raise AssertionError("a solve moved the caller's metric")


@pytest.mark.parametrize("solve", [barycenters.solve, geodesics.solve])
def test_a_device_other_than_the_metrics_is_an_error_not_a_move(solve):
    with pytest.raises(ValueError, match=r"^device 'cpu' requested but the metric is on meta"):
        solve(_keys(), _ElsewhereMetric(), steps=1, device="cpu")


def test_positional_options_are_refused():
    """Only the inputs and the metric are positional."""
    with pytest.raises(TypeError):
        barycenters.solve(_keys(), "l2", [0.5, 0.5])
    with pytest.raises(TypeError):
        geodesics.solve(_keys(), "l2", 4)
