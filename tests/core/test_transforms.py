"""Transform sampling statistics (docs/algorithm.md#transforms, #stratification) and application details
(docs/algorithm.md#record)."""

from __future__ import annotations

import itertools

import elpips
import numpy as np
import pytest
import reference_impl
import torch
from elpips.transforms import FLIP_NONE, PERMUTATIONS, identity_transform, scale_level_probabilities, transformed_size
from scipy import stats


def test_scale_levels_follow_inverse_square():
    generator = torch.Generator().manual_seed(0)
    draws = 4000
    levels = [elpips.sample_transform(1, 512, 512, scale_levels=8, generator=generator).scale_level
              for _ in range(draws)]
    observed = np.bincount(levels, minlength=9)[1:]
    expected = scale_level_probabilities(8).numpy() * draws
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # and the test can fail: a uniform distribution is rejected
    assert stats.chisquare(observed, np.full(8, draws / 8)).pvalue < 1e-6


def test_scale_offset_within_level():
    generator = torch.Generator().manual_seed(1)
    for _ in range(300):
        record = elpips.sample_transform(1, 512, 512, scale_levels=8, generator=generator)
        assert all(0 <= v < record.scale_level for v in record.scale_offset)


def test_default_scale_levels():
    assert elpips.default_scale_levels(63, 500) == 1
    assert elpips.default_scale_levels(128, 300) == 2
    assert elpips.default_scale_levels(300, 480) == 4
    assert elpips.default_scale_levels(4000, 4000) == 8


def test_flips_and_permutations_exactly_balanced_in_batch_of_24():
    record = elpips.sample_transform(24, 64, 64, generator=torch.Generator().manual_seed(2))
    assert np.bincount(record.flip.numpy(), minlength=4).tolist() == [6, 6, 6, 6]
    rows = [tuple(p) for p in record.permutation.tolist()]
    assert sorted(rows) == sorted(list(itertools.permutations(range(3))) * 4)
    # shuffled, not in cycle order
    assert record.flip.tolist() != [i % 4 for i in range(24)]


def test_colour_factors_in_range_and_stratified():
    batch = 24
    record = elpips.sample_transform(batch, 64, 64, generator=torch.Generator().manual_seed(3))
    color = record.color.double()
    assert color.min() >= 0.2 and color.max() < 1.0
    u = (color - 0.2) / 0.8
    for channel in range(3):
        strata = torch.floor(u[:, channel] * batch).long().sort().values
        assert strata.tolist() == list(range(batch))  # exactly one value per stratum
    assert not torch.equal(u[:, 0].argsort(), u[:, 1].argsort())  # channels shuffled independently


def test_offsets_uniform_and_swap_fair():
    generator = torch.Generator().manual_seed(4)
    offsets, swaps = [], []
    for _ in range(400):
        record = elpips.sample_transform(8, 64, 64, generator=generator)
        offsets.append(record.offset)
        swaps.append(record.swap)
    counts = np.bincount(torch.cat(offsets).flatten().numpy(), minlength=8)
    assert len(counts) == 8
    assert stats.chisquare(counts).pvalue > 1e-3
    assert stats.binomtest(sum(swaps), len(swaps)).pvalue > 1e-3


@pytest.mark.parametrize("seed", range(4))
def test_apply_transform_matches_numpy(images, seed):
    x = images(6, 29, 41, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    record = elpips.sample_transform(6, 29, 41, scale_levels=1, generator=generator)
    record.scale_level = 1 + seed % 3
    record.scale_offset = (seed % record.scale_level, (seed + 1) % record.scale_level)
    ours = elpips.apply_transform(x.double(), record)
    expected = reference_impl.transform_batch(x, record)
    assert ours.shape == expected.shape
    assert tuple(ours.shape[-2:]) == transformed_size(29, 41, record)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


def test_apply_transform_grouped_equals_separate(images):
    x = images(3, 20, 24, seed=5)
    y = images(3, 20, 24, seed=6)
    record = elpips.sample_transform(3, 20, 24, generator=torch.Generator().manual_seed(7))
    grouped = elpips.apply_transform(torch.stack([x, y]), record)
    torch.testing.assert_close(grouped[0], elpips.apply_transform(x, record), rtol=0, atol=0)
    torch.testing.assert_close(grouped[1], elpips.apply_transform(y, record), rtol=0, atol=0)


def test_identity_record_only_pads(images):
    x = images(2, 16, 16)
    out = elpips.apply_transform(x, identity_transform(2))
    assert out.shape == (2, 3, 23, 23)
    torch.testing.assert_close(out[:, :, :16, :16], x, rtol=0, atol=0)
    assert identity_transform(2).flip.tolist() == [FLIP_NONE, FLIP_NONE]
    assert torch.equal(identity_transform(1).permutation[0], PERMUTATIONS[0])


def test_record_batch_mismatch_is_value_error(images):
    record = elpips.sample_transform(2, 16, 16)
    with pytest.raises(ValueError, match="for 2 images"):
        elpips.apply_transform(images(3, 16, 16), record)
