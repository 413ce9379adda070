"""Dropout masks: keep rate, scaling, sharing between x and y, caching across forward passes."""

from __future__ import annotations

import pytest
import torch
from elpips.dropout import DropoutMasks, dropped_positions
from scipy import stats


@pytest.mark.parametrize("gap_devices", [("cpu",), ()])  # (): the bernoulli_ path GPUs take
def test_keep_rate_and_scaling(gap_devices, monkeypatch):
    monkeypatch.setattr("elpips.dropout.GAP_METHOD_DEVICES", gap_devices)
    masks = DropoutMasks(seed=0)
    mask = masks.mask(0, torch.Size((4, 64, 32, 32)), torch.device("cpu"), torch.float32)
    kept = int((mask > 0).sum())
    total = mask.numel()
    assert stats.binomtest(kept, total, 0.99).pvalue > 1e-3
    assert torch.allclose(mask[mask > 0], torch.tensor(1 / 0.99))
    assert mask.unique().numel() == 2 and mask.min() == 0


def test_mask_shared_over_groups_and_cached():
    masks = DropoutMasks(seed=1)
    inputs = torch.ones(2 * 3, 5, 4, 4)  # G=2 groups of N=3
    out = masks(inputs, layer=0, groups=2).reshape(2, 3, 5, 4, 4)
    assert torch.equal(out[0], out[1])
    again = masks(torch.ones(3, 5, 4, 4), layer=0, groups=1)
    assert torch.equal(again, out[0])  # a later pass of the same sample sees the same mask
    other_layer = masks(torch.ones(3, 5, 4, 4), layer=1, groups=1)
    assert not torch.equal(other_layer, out[0])


def test_mask_shape_change_is_an_error():
    masks = DropoutMasks(seed=2)
    masks(torch.ones(2, 3, 4, 4), layer=0, groups=1)
    with pytest.raises(ValueError, match="same batch"):
        masks(torch.ones(3, 3, 4, 4), layer=0, groups=1)


def test_metric_dropout_shared_between_x_and_y(random_metric, images):
    """With masks shared, d(x, x) is exactly 0 for every sample; with independent masks it would not be."""
    metric = random_metric("elpips-vgg")
    x = images(3, 24, 24, seed=3)
    assert torch.equal(metric(x, x.clone(), n=4), torch.zeros(3))
    sample_a = metric.sample(3, 24, 24)
    sample_b = metric.sample(3, 24, 24)
    sample_b.transform = sample_a.transform
    independent = metric.distance_between(metric.features(x, sample_a), metric.features(x, sample_b))
    assert (independent > 0).all()


@pytest.mark.parametrize("first_draw", [None, 7])  # 7: many rounds, each continuing after the last drop
def test_dropped_positions_are_iid_bernoulli(first_draw):
    """Drops drawn as geometric gaps: the count is Binomial(n, p), every position equally likely, and
    neighbouring elements independent (pairs of drops at rate p^2)."""
    count, p = 200_000, 0.01
    generator = torch.Generator().manual_seed(3)
    dropped = dropped_positions(count, p, generator, first_draw=first_draw)
    assert bool((dropped[1:] > dropped[:-1]).all()) and int(dropped[0]) >= 0 and int(dropped[-1]) < count
    assert stats.binomtest(dropped.numel(), count, p).pvalue > 1e-3
    blocks = torch.bincount(dropped // (count // 20), minlength=20)  # uniform over 20 equal blocks
    assert stats.chisquare(blocks.numpy()).pvalue > 1e-3
    adjacent = int((dropped[1:] - dropped[:-1] == 1).sum())  # drops at i and i+1
    assert stats.binomtest(adjacent, count - 1, p * p).pvalue > 1e-3
