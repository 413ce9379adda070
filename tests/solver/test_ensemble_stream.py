"""The stratified ensemble stream: each step's record has exactly the single-draw distribution, and consecutive
steps are stratified over the window (closed-form probabilities, not the code's own helpers)."""

from __future__ import annotations

import itertools
import math

import elpips
import numpy as np
import pytest
import torch
from elpips.solver.ensemble_stream import StratifiedStream, draw_window, stratified_levels
from elpips.transforms import sample_transform
from scipy import stats

PERMUTATION_INDEX = {tuple(p): i for i, p in enumerate(itertools.permutations(range(3)))}
LEVEL_PROBABILITIES = np.array([36.0, 9.0, 4.0]) / 49.0
"""``1/s^2`` for s = 1, 2, 3, normalised: written out, not computed by the package."""

WINDOWS = [5, 7, 8, 24]
"""Multiples of the periods 8 and 6 (24), of the 8 variants only (8), and of neither (5, 7)."""


def _windows(window: int, count: int, seed: int, scale_levels: int = 3) -> list[list[elpips.TransformRecord]]:
    generator = torch.Generator().manual_seed(seed)
    return [draw_window(window, scale_levels, generator)[0] for _ in range(count)]


def _variant(record: elpips.TransformRecord) -> int:
    return int(record.flip[0]) * 2 + int(record.swap)


def _permutation(record: elpips.TransformRecord) -> int:
    return PERMUTATION_INDEX[tuple(record.permutation[0].tolist())]


@pytest.mark.parametrize("window", WINDOWS)
def test_every_step_has_the_single_draw_distribution(window):
    """At the first and last step of a window: the 8 geometric variants and 6 permutations uniform (chi-square),
    scale levels [36, 9, 4] / 49, scale offsets uniform below the level, offsets uniform on 0..7, colour factors
    uniform on [0.2, 1) (KS) and uncorrelated between channels, over 2000 windows."""
    windows = _windows(window, 2000, seed=window)
    for position in sorted({0, window - 1}):
        records = [w[position] for w in windows]
        variants = np.bincount([_variant(r) for r in records], minlength=8)
        permutations = np.bincount([_permutation(r) for r in records], minlength=6)
        levels = np.bincount([r.scale_level - 1 for r in records], minlength=3)
        offsets = np.bincount([int(v) for r in records for v in r.offset[0]], minlength=8)
        assert len(variants) == 8 and len(permutations) == 6 and len(levels) == 3 and len(offsets) == 8
        assert stats.chisquare(variants).pvalue > 1e-4, (window, position, variants)
        assert stats.chisquare(permutations).pvalue > 1e-4, (window, position, permutations)
        assert stats.chisquare(levels, LEVEL_PROBABILITIES * len(records)).pvalue > 1e-4, (window, levels)
        assert stats.chisquare(offsets).pvalue > 1e-4, (window, offsets)
        level_three = [r.scale_offset[0] for r in records if r.scale_level == 3]
        assert stats.chisquare(np.bincount(level_three, minlength=3)).pvalue > 1e-4
        u = np.array([((r.color[0].double() - 0.2) / 0.8).tolist() for r in records])
        assert u.min() >= 0 and u.max() < 1
        for channel in range(3):
            assert stats.kstest(u[:, channel], "uniform").pvalue > 1e-4, (window, position, channel)
        for first, second in ((0, 1), (0, 2), (1, 2)):  # a single draw's channels are independent
            assert abs(stats.pearsonr(u[:, first], u[:, second])[0]) < 0.1, (window, position, first, second)


def test_fields_of_a_step_are_independent():
    """Within a step, variant and permutation are independent (chi-square on the 8 x 6 contingency table), as in
    a single draw, where they come from separate draws."""
    records = [r for w in _windows(7, 1500, seed=11) for r in w]
    table = np.zeros((8, 6))
    for record in records:
        table[_variant(record), _permutation(record)] += 1
    assert stats.chi2_contingency(table).pvalue > 1e-4


@pytest.mark.parametrize("window", WINDOWS)
def test_windows_are_stratified(window):
    """Per window: swap values at most ceil(W/2) times; per swap value the flip codes at most ceil(n/4) times;
    permutations at most ceil(W/6) times; each colour channel one factor per stratum; each level's count within
    one of W p_s rounded out."""
    for records in _windows(window, 300, seed=100 + window):
        swaps = np.array([int(r.swap) for r in records])
        assert np.bincount(swaps, minlength=2).max() <= math.ceil(window / 2)
        for value in (0, 1):
            flips = [int(r.flip[0]) for r in records if int(r.swap) == value]
            if flips:
                assert np.bincount(flips, minlength=4).max() <= math.ceil(len(flips) / 4)
        assert np.bincount([_permutation(r) for r in records], minlength=6).max() <= math.ceil(window / 6)
        u = torch.stack([(r.color[0].double() - 0.2) / 0.8 for r in records])  # [W, 3]
        strata = torch.floor(u * window).long().sort(dim=0).values
        assert torch.equal(strata, torch.arange(window)[:, None].expand_as(strata))
        counts = np.bincount([r.scale_level - 1 for r in records], minlength=3)
        expected = window * LEVEL_PROBABILITIES
        assert (counts >= np.floor(expected) - 1).all() and (counts <= np.ceil(expected) + 1).all(), counts


def test_window_of_eight_holds_every_geometric_variant_once():
    for records in _windows(8, 200, seed=3):
        assert sorted(_variant(r) for r in records) == list(range(8))


def test_level_counts_vary_less_than_independent_draws():
    """The stratified level counts over a window of 24 spread far less than 24 independent draws would
    (binomial standard deviation sqrt(24 * 36/49 * 13/49) = 2.16 for level 1)."""
    generator = torch.Generator().manual_seed(5)
    counts = [int((stratified_levels(24, 3, generator) == 1).sum()) for _ in range(500)]
    assert abs(np.mean(counts) - 24 * 36 / 49) < 0.2
    assert np.std(counts) < 0.7


def test_stream_is_a_function_of_seed_and_step():
    """Two streams with one seed agree at any step, visited in any order (what a resumed run relies on); another
    seed differs; every step of a window has its own dropout seed."""
    first, second, other = StratifiedStream(4), StratifiedStream(4), StratifiedStream(5)
    steps = [0, 1, 23, 24, 50, 3]
    a = [first.record(step, 2) for step in steps]
    b = [second.record(step, 2) for step in reversed(steps)][::-1]
    for left, right in zip(a, b, strict=False):
        assert left.scale_level == right.scale_level and left.swap == right.swap
        assert torch.equal(left.flip, right.flip) and torch.equal(left.color, right.color)
        assert torch.equal(left.offset, right.offset) and torch.equal(left.permutation, right.permutation)
    assert [first.dropout_seed(s, 2) for s in steps] == [second.dropout_seed(s, 2) for s in steps]
    assert len({first.dropout_seed(s, 2) for s in range(24)}) == 24
    colours = torch.stack([first.record(s, 2).color for s in range(24)])
    assert not torch.equal(colours, torch.stack([other.record(s, 2).color for s in range(24)]))


def test_stream_sample_matches_metric_layout():
    """A stream sample is a one-image record with dropout masks for E-LPIPS, and the metric's empty sample for
    LPIPS; the metric evaluates it deterministically."""
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=0)
    stream = StratifiedStream(1)
    x, y = torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sample = stream.sample(metric, 5, 32, 32)
    assert sample.transform.batch_size == 1 and sample.dropout is not None
    assert sample.dropout.seed == stream.dropout_seed(5, 1)
    again = stream.sample(metric, 5, 32, 32)
    d1 = metric.distance_between(metric.features(x, sample), metric.features(y, sample))
    d2 = metric.distance_between(metric.features(x, again), metric.features(y, again))
    assert torch.equal(d1, d2)
    lpips = elpips.Metric("lpips-vgg", backbone_weights="random", device="cpu")
    assert stream.sample(lpips, 0, 32, 32).transform is None


def test_single_draw_reference_agrees_on_levels():
    """The single-draw sampler and the stream give the same level distribution (two-sample chi-square)."""
    generator = torch.Generator().manual_seed(9)
    single = np.bincount([sample_transform(1, 64, 64, 3, generator).scale_level - 1 for _ in range(3000)],
                         minlength=3)
    stream = np.bincount([r.scale_level - 1 for w in _windows(5, 600, seed=9) for r in w], minlength=3)
    assert stats.chi2_contingency(np.stack([single, stream])).pvalue > 1e-4


@pytest.mark.parametrize("bad", [{"window": 0}, {"window": 2.5}, {"color_mode": "grey"}])
def test_bad_stream_arguments(bad):
    with pytest.raises(ValueError):
        StratifiedStream(0, **bad)


# -- in the solvers ---------------------------------------------------------------------------------------------
class Stop(Exception):
    pass


def _stop_after(step):
    def callback(info):
        if info.step == step:
            raise Stop
    return callback


def test_geodesic_stratified_stream_resumes_bit_exactly(random_metric, images, tmp_path):
    from elpips.geodesics import solve

    metric = random_metric("elpips-vgg")
    keys = images(2, 32, 32, seed=6)
    settings = dict(frames=4, metric=metric, steps=5, eval_samples=2, checkpoint_every=1,
                    ensemble_stream="stratified")
    full = solve(keys, generator=torch.Generator().manual_seed(2), **settings)
    independent = solve(keys, generator=torch.Generator().manual_seed(2), **{**settings,
                                                                             "ensemble_stream": "independent"})
    assert full.energy_history != independent.energy_history
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Stop):
        solve(keys, generator=torch.Generator().manual_seed(2), checkpoint=checkpoint, callback=_stop_after(3),
              **settings)
    resumed = solve(keys, generator=torch.Generator().manual_seed(99), checkpoint=checkpoint, resume=True,
                    **settings)
    assert resumed.resumed_from == 3
    assert torch.equal(resumed.frames, full.frames) and resumed.energy_history == full.energy_history
    with pytest.raises(ValueError, match="ensemble_stream"):
        solve(keys, checkpoint=checkpoint, resume=True, **{**settings, "ensemble_stream": "independent"})


def test_barycenter_stratified_stream_resumes_bit_exactly(random_metric, images, tmp_path):
    from elpips.barycenters import solve

    metric = random_metric("elpips-vgg")
    inputs = images(3, 32, 32, seed=12)
    settings = dict(metric=metric, steps=5, generator=21, checkpoint_every=1, eval_samples=2, log_every=1,
                    ensemble_stream="stratified")
    full = solve(inputs, checkpoint=tmp_path / "full.pt", **settings)
    with pytest.raises(Stop):
        solve(inputs, checkpoint=tmp_path / "part.pt", callback=_stop_after(3), **settings)
    resumed = solve(inputs, checkpoint=tmp_path / "part.pt", resume=True, **settings)
    assert resumed.resumed_from == 3
    assert torch.equal(resumed.image, full.image) and resumed.history == full.history
    assert full.settings["ensemble_stream"] == "stratified"


@pytest.mark.parametrize("kwargs,message", [
    ({"ensemble_stream": "latin"}, "ensemble_stream must be one of"),
    ({"ensemble_stream": "stratified", "samples_per_step": 2}, "samples_per_step must be 1"),
])
def test_solvers_reject_bad_stream_options(random_metric, images, kwargs, message):
    from elpips.barycenters import solve as barycenter
    from elpips.geodesics import solve as geodesic

    metric = random_metric("elpips-vgg")
    with pytest.raises(ValueError, match=message):
        geodesic(images(2, 32, 32), frames=3, metric=metric, steps=1, **kwargs)
    with pytest.raises(ValueError, match=message):
        barycenter(images(2, 32, 32), metric=metric, steps=1, **kwargs)


def test_barycenter_stratified_stream_needs_a_metric(images):
    from elpips.barycenters import solve

    def plain(x, y):
        return (x - y).square().mean(dim=(1, 2, 3))

    with pytest.raises(ValueError, match="needs an elpips.Metric"):
        solve(images(2, 8, 8), metric=plain, steps=1, ensemble_stream="stratified")


def test_stream_refuses_a_partial_ensemble():
    """The stream hands out full-ensemble transforms: a metric with a piece switched off must not receive them."""
    import elpips
    import pytest
    from elpips.solver.ensemble_stream import StratifiedStream

    metric = elpips.Metric("elpips-vgg+geom", backbone_weights="random", device="cpu")
    with pytest.raises(ValueError, match="ensemble_stream='independent'"):
        StratifiedStream(seed=0).sample(metric, 0, 32, 32)
    full = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", scale_levels=1)
    sample = StratifiedStream(seed=0).sample(full, 0, 32, 32)
    assert sample.transform.batch_size == 1 and sample.dropout is not None
