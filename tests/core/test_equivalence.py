"""Numerical equivalence: LPIPS vs the ``lpips`` package, E-LPIPS vs an independent float64 recomputation."""

from __future__ import annotations

import elpips
import numpy as np
import pytest
import reference_impl
import torch
from elpips.transforms import TransformRecord
from helpers import lpips_peer


@pytest.mark.parametrize("net,name,size", [
    *[(net, name, size) for net, name in (("vgg", "lpips-vgg"), ("squeeze", "lpips-squeeze"))
      for size in ((33, 47), (21, 19), (64, 50))],
    ("alex", "lpips-alex", (33, 47)), ("alex", "lpips-alex", (64, 50)), ("alex", "lpips-alex", (31, 40)),
])
def test_lpips_matches_lpips_package(random_metric, images, net, name, size):
    metric = random_metric(name)
    peer = lpips_peer(net, metric)
    x = images(3, *size, seed=1)
    y = images(3, *size, seed=2)
    with torch.no_grad():
        expected = peer(x, y, normalize=True).flatten()
        ours = metric(x, y)
    relative = ((ours - expected).abs() / expected.abs()).max().item()
    assert relative <= 1e-5, relative
    assert expected.min() > 0.01  # a real comparison, not of zeros


def test_lpips_alex_is_lpips_only_and_names_its_minimum_size(random_metric, images):
    metric = random_metric("lpips-alex")
    assert not metric.is_stochastic and metric.min_size == 31
    with pytest.raises(ValueError, match="31"):
        metric(images(1, 30, 40), images(1, 30, 40))
    with pytest.raises(ValueError, match="VGG and SqueezeNet only"):
        elpips.Metric("lpips-alex", backbone_weights="random", linear_weights="kettunen", device="cpu")


def test_kettunen_linear_weights_change_lpips(random_metric, images):
    x, y = images(2, 32, 32, seed=3), images(2, 32, 32, seed=4)
    standard = random_metric("lpips-vgg")(x, y)
    kettunen = elpips.Metric("lpips-vgg", backbone_weights="random", linear_weights="kettunen", device="cpu")
    assert kettunen.linear_weights[0].shape == (64,)
    assert not torch.allclose(standard, kettunen(x, y))


def random_record(batch: int, scale_level: int, seed: int) -> TransformRecord:
    """A record with every feature switched on (flips, swap, permutations, colours, scale)."""
    generator = torch.Generator().manual_seed(seed)
    record = elpips.sample_transform(batch, 64, 64, scale_levels=1, generator=generator)
    record.scale_level = scale_level
    record.scale_offset = (scale_level - 1, scale_level // 2) if scale_level > 1 else (0, 0)
    return record


@pytest.mark.parametrize("name,backbone", [("elpips-vgg", "vgg16"), ("elpips-squeeze", "squeezenet1_1")])
@pytest.mark.parametrize("scale_level,swap", [(1, True), (3, False), (2, True)])
def test_fixed_sample_matches_float64_recomputation(random_metric, images, name, backbone, scale_level, swap):
    metric = random_metric(name)
    batch, height, width = 4, 77, 74
    x, y = images(batch, height, width, seed=5), images(batch, height, width, seed=6)
    record = random_record(batch, scale_level, seed=7)
    record.swap = swap
    record.flip = torch.tensor([0, 1, 2, 3])
    ours = metric(x, y, transform=record, dropout=False).double().numpy()
    state = metric.backbone.state_dict()
    weights = [w.numpy() for w in metric.linear_weights]
    expected = reference_impl.elpips_sample(x, y, record, state, weights, backbone)
    np.testing.assert_allclose(ours, expected, rtol=1e-4)
    assert expected.min() > 1e-3


def test_shipped_linear_weights_are_the_authors():
    """Spot values of the authors' published files (vgg_full_avg.npy, squeeze_full_maxpool.npy)."""
    vgg = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu").linear_weights
    squeeze = elpips.Metric("elpips-squeeze", backbone_weights="random", device="cpu").linear_weights
    assert [len(w) for w in vgg] == [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert [len(w) for w in squeeze] == [3, 64, 128, 128, 256, 256, 384, 384, 512, 512]
    assert vgg[0].max().item() == pytest.approx(0.008082733, rel=1e-6)
    assert vgg[1].max().item() == pytest.approx(0.20975736, rel=1e-6)
    assert vgg[13].max().item() == pytest.approx(0.11840542, rel=1e-6)
    assert squeeze[6].max().item() == pytest.approx(0.41406292, rel=1e-6)
    assert squeeze[0].min().item() == 0.0
