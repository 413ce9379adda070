"""The ensemble sampler at the batch sizes users run (1 above all), and the metric's constants against
independent values (not against the code's own helpers). See docs/algorithm.md#stratification."""

from __future__ import annotations

import itertools
import math

import elpips
import numpy as np
import pytest
import torch
from elpips.dropout import dropped_positions
from elpips.estimate import summarize
from elpips.transforms import PERMUTATIONS, scale_level_probabilities
from scipy import stats

SMALL_BATCHES = [1, 2, 3, 5, 7, 8]
DRAWS = 3000
"""Records drawn per batch size: enough that a 0.40-vs-0.25 or 0.25-vs-1/6 bias is rejected at p < 1e-6."""

PERMUTATION_INDEX = {tuple(p): i for i, p in enumerate(itertools.permutations(range(3)))}


def _records(batch: int, seed: int, draws: int = DRAWS, **kwargs) -> list[elpips.TransformRecord]:
    generator = torch.Generator().manual_seed(seed)
    return [elpips.sample_transform(batch, 64, 64, scale_levels=1, generator=generator, **kwargs)
            for _ in range(draws)]


def _permutation_codes(record: elpips.TransformRecord) -> list[int]:
    return [PERMUTATION_INDEX[tuple(row)] for row in record.permutation.tolist()]


@pytest.mark.parametrize("batch", SMALL_BATCHES)
def test_every_element_flip_and_permutation_uniform(batch):
    """Each position's flip code is uniform on 4 values and its permutation uniform on 6, at every batch size
    (the first and last positions tested on their own, so a position-dependent bias cannot hide in a pool)."""
    records = _records(batch, seed=100 + batch)
    for position in sorted({0, batch - 1}):
        flips = np.bincount([int(r.flip[position]) for r in records], minlength=4)
        perms = np.bincount([_permutation_codes(r)[position] for r in records], minlength=6)
        assert len(flips) == 4 and len(perms) == 6
        assert stats.chisquare(flips).pvalue > 1e-4, (batch, position, flips)
        assert stats.chisquare(perms).pvalue > 1e-4, (batch, position, perms)


@pytest.mark.parametrize("batch", SMALL_BATCHES + [12, 13, 24])
def test_batch_is_stratified(batch):
    """No flip code occurs more than ceil(N/4) times in a batch, no permutation more than ceil(N/6) times."""
    for record in _records(batch, seed=200 + batch, draws=300):
        assert np.bincount(record.flip.numpy(), minlength=4).max() <= math.ceil(batch / 4)
        assert np.bincount(_permutation_codes(record), minlength=6).max() <= math.ceil(batch / 6)


def test_single_draw_sees_all_eight_geometric_variants_and_six_colour_orders():
    """At batch 1 the (flip, swap) pair takes all 8 values and the permutation all 6, each uniformly."""
    records = _records(1, seed=7, draws=4000)
    variants = np.bincount([int(r.flip[0]) * 2 + int(r.swap) for r in records], minlength=8)
    assert (variants > 0).all()
    assert stats.chisquare(variants).pvalue > 1e-4
    assert {tuple(r.permutation[0].tolist()) for r in records} == {tuple(p) for p in PERMUTATIONS.tolist()}


@pytest.mark.parametrize("color_mode", ["color", "brightness"])
@pytest.mark.parametrize("batch", [1, 2, 3, 5])
def test_colour_factors_uniform_and_stratified_at_small_batches(batch, color_mode):
    """Every element's factor is uniform on [0.2, 1) (Kolmogorov-Smirnov against the closed-form CDF), and each
    channel puts exactly one element in each of the N strata [i/N, (i+1)/N)."""
    records = _records(batch, seed=300 + batch, draws=2000, color_mode=color_mode)
    u = torch.stack([(r.color.double() - 0.2) / 0.8 for r in records])  # [draws, N, 3]
    assert u.min() >= 0 and u.max() < 1
    for position in sorted({0, batch - 1}):
        assert stats.kstest(u[:, position, 0].numpy(), "uniform").pvalue > 1e-4
    strata = torch.floor(u * batch).long().sort(dim=1).values
    assert torch.equal(strata, torch.arange(batch)[None, :, None].expand_as(strata))
    if color_mode == "brightness":
        assert torch.equal(u[..., 0], u[..., 1]) and torch.equal(u[..., 0], u[..., 2])


def test_old_unpadded_cycle_would_fail_the_uniformity_test():
    """The uniformity test has the power to see the bias of a cycle of length N (at N = 5 flip 0 has 0.40)."""
    biased = np.bincount([0] * 1200 + [1] * 600 + [2] * 600 + [3] * 600, minlength=4)
    assert stats.chisquare(biased).pvalue < 1e-6


def test_scale_level_probabilities_are_inverse_square():
    """Explicit values: three levels have weights 1, 1/4, 1/9, i.e. [36, 9, 4] / 49."""
    torch.testing.assert_close(scale_level_probabilities(3), torch.tensor([36.0, 9.0, 4.0], dtype=torch.float64) / 49)
    torch.testing.assert_close(scale_level_probabilities(1), torch.tensor([1.0], dtype=torch.float64))


def test_drawn_scale_levels_follow_explicit_inverse_square():
    generator = torch.Generator().manual_seed(11)
    draws = 4000
    levels = [elpips.sample_transform(1, 256, 256, scale_levels=3, generator=generator).scale_level
              for _ in range(draws)]
    observed = np.bincount(levels, minlength=4)[1:]
    expected = np.array([36.0, 9.0, 4.0]) / 49 * draws
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_half_width_of_fixed_draws_by_hand():
    """draws 1, 2, 3, 4: sample std sqrt(5/3), half-width 1.96 * sqrt(5/3) / sqrt(4) = 1.2651746..."""
    estimate = summarize(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    assert float(estimate.mean) == 2.5
    assert float(estimate.half_width) == pytest.approx(1.96 * math.sqrt(5 / 3) / 2, rel=1e-12)
    assert float(estimate.half_width) == pytest.approx(1.2651746, rel=1e-6)


def test_path_evaluation_half_width_by_hand(monkeypatch):
    """The geodesic evaluation reports 1.96 sigma / sqrt(n) too: a stand-in metric step returns the known draws
    1, 2, 3, 4 for the path's one pair."""
    from elpips.geodesics import evaluate as evaluation

    class KnownDraws:
        is_stochastic = True

        def sample(self, count, height, width, generator):
            return count

    values = iter([torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])])

    def fake_step(metric, path, fixed, variable, sample, count, chunk_size, backward):
        return next(values)

    monkeypatch.setattr(evaluation, "path_step", fake_step)
    result = evaluation.evaluate_path(KnownDraws(), torch.zeros(2, 3, 8, 8), samples=4, batch=2)
    assert float(result.distances[0]) == pytest.approx(2.5)
    assert float(result.half_widths[0]) == pytest.approx(1.2651746, rel=1e-6)


def test_every_dropout_position_is_dropped_at_rate_p():
    """Per-position drop rates over many seeds: position 0, a middle one and the last are each dropped with
    probability p (a gap process shifted by one position can never drop position 0)."""
    count, p, seeds = 16, 0.2, 4000
    hits = np.zeros(count)
    for seed in range(seeds):
        dropped = dropped_positions(count, p, torch.Generator().manual_seed(seed))
        hits[dropped.numpy()] += 1
    for position in (0, 1, count // 2, count - 1):
        assert stats.binomtest(int(hits[position]), seeds, p).pvalue > 1e-4, (position, hits[position])
    assert stats.chisquare(hits).pvalue > 1e-4
