"""Tiled evaluation of pairs over the memory budget: the same distances as one whole-image pass, dropout masks
that agree wherever tiles overlap, and a halo that covers every tap's receptive field."""

from __future__ import annotations

import elpips
import elpips._passes
import elpips.memory
import pytest
import torch
from elpips.tiling import ALIGN, HALO, BlockDropoutMasks, core_size, network_strides, tiled_distance
from scipy import stats

SMALL_BUDGET = 64 * 1024**2
"""The smallest budget: at 150 px one image is over it, so pairs go tile by tile (64-px cores)."""


@pytest.mark.parametrize("name", ["elpips-vgg", "elpips-squeeze", "lpips-vgg", "lpips-squeeze"])
def test_tiled_sample_distances_equal_one_pass(name, images, monkeypatch):
    """Without dropout (a fixed transform stream), the tiled distances equal the whole-image ones."""
    monkeypatch.setitem(elpips.memory.BYTES_PER_PIXEL_FLOAT32, "squeezenet1_1", 2048)  # over budget at 150 px too
    x = images(1, 150, 140, seed=1)
    y = (x + 0.2 * images(1, 150, 140, seed=2)).clamp(0, 1)
    whole_metric = elpips.Metric(name, backbone_weights="random", device="cpu", scale_levels=2)
    tiled_metric = elpips.Metric(name, backbone_weights="random", device="cpu", scale_levels=2,
                                 memory_budget=SMALL_BUDGET)
    assert tiled_metric.images_per_pass(150, 140) == 1
    with torch.no_grad():
        whole = whole_metric.sample_distances(x, y, 3, torch.Generator().manual_seed(5), dropout=False)
        tiled = tiled_metric.sample_distances(x, y, 3, torch.Generator().manual_seed(5), dropout=False)
    torch.testing.assert_close(tiled, whole, rtol=2e-5, atol=1e-8)


def test_block_masks_agree_across_tilings(images, random_metric):
    """With dropout, many small tiles and one tile covering the image give the same distance: every tile sees
    the same mask values at shared positions."""
    metric = random_metric("elpips-vgg")
    pair = images(2, 140, 150, seed=3) * 2 - 1
    masks = BlockDropoutMasks(seed=11, keep_probability=0.9)
    normalize = lambda tap: tap / (tap.norm(dim=1, keepdim=True) + 1e-10)  # noqa: E731
    with torch.no_grad():
        small = tiled_distance(metric.backbone, pair, metric.linear_weights, normalize, masks, core=64)
        whole = tiled_distance(metric.backbone, pair, metric.linear_weights, normalize, masks, core=1024)
        other = tiled_distance(metric.backbone, pair, metric.linear_weights, normalize,
                               BlockDropoutMasks(seed=12, keep_probability=0.9), core=1024)
    assert float(small) == pytest.approx(float(whole), rel=1e-5)
    assert abs(float(other) / float(whole) - 1) > 1e-4  # the masks do matter (seeds 11 vs 12: 4e-4 apart)


def test_block_mask_windows_are_consistent_and_bernoulli():
    masks = BlockDropoutMasks(seed=4, keep_probability=0.8)
    big = masks.window(layer=2, channels=5, top=10, left=20, height=90, width=70)
    part = masks.window(layer=2, channels=5, top=40, left=33, height=25, width=40)
    assert torch.equal(part, big[:, 30:55, 13:53])
    assert set(big.unique().tolist()) == {0.0, 1.25}
    kept = int((big > 0).sum())
    assert stats.binomtest(kept, big.numel(), 0.8).pvalue > 1e-4
    assert not torch.equal(masks.window(3, 5, 10, 20, 90, 70), big)  # layers draw their own masks


@pytest.mark.parametrize("name", ["elpips-vgg", "elpips-squeeze", "lpips-squeeze"])
def test_halo_covers_every_receptive_field(name, random_metric):
    """Change one input pixel: no tap changes farther than HALO input pixels away from it."""
    metric = random_metric(name)
    size = 2 * HALO + 48
    base = torch.zeros(1, 3, size, size)
    changed = base.clone()
    centre = size // 2
    changed[:, :, centre, centre] = 1.0
    _, tap_strides = network_strides(metric.backbone)
    with torch.no_grad():
        before = metric.backbone(base)
        after = metric.backbone(changed)
    for tap_before, tap_after, stride in zip(before, after, tap_strides, strict=False):
        moved = (tap_before - tap_after).abs().amax(dim=(0, 1)) > 0
        rows, columns = moved.nonzero(as_tuple=True)
        assert len(rows) > 0
        # a tap value at grid index i summarises input pixels i*stride .. (i+1)*stride - 1
        reach = max(int((rows.max() + 1) * stride - 1 - centre), int(centre - rows.min() * stride),
                    int((columns.max() + 1) * stride - 1 - centre), int(centre - columns.min() * stride))
        assert reach <= HALO, (name, stride, reach)


def test_strides_are_powers_of_two_up_to_align(random_metric):
    layers, taps = network_strides(random_metric("elpips-vgg").backbone)
    assert taps == [1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16]
    assert max(layers.values()) <= ALIGN


def test_tiled_compare_equals_one_pass(images):
    reference = images(1, 140, 150, seed=6)
    candidates = torch.stack([(reference + 0.1 * images(1, 140, 150, seed=s)).clamp(0, 1) for s in (7, 8)])
    whole_metric = elpips.Metric("lpips-vgg", backbone_weights="random", device="cpu")
    tiled_metric = elpips.Metric("lpips-vgg", backbone_weights="random", device="cpu", memory_budget=SMALL_BUDGET)
    with torch.no_grad():
        torch.testing.assert_close(tiled_metric.compare(reference, candidates, n=2),
                                   whole_metric.compare(reference, candidates, n=2), rtol=2e-5, atol=1e-8)


def _documented_core(budget: int, bytes_per_pixel: int) -> int:
    """docs/algorithm.md#memory: the largest core side, a multiple of 16, such that the tile (the core plus a
    128-px halo on every side) of both images of a pair fits the budget at ``bytes_per_pixel``; at least 64 px."""
    fitting = [side for side in range(16, 4096, 16) if 2 * bytes_per_pixel * (side + 2 * 128) ** 2 <= budget]
    return max([64, *fitting])


@pytest.mark.parametrize("budget", [64 * 1024**2, 256 * 1024**2, 300 * 1024**2, 1024**3, 2 * 1024**3, 5 * 1024**3])
@pytest.mark.parametrize("backbone, element_size, bytes_per_pixel",
                         [("vgg16", 4, 2048), ("squeezenet1_1", 4, 512), ("vgg16", 8, 4096)],
                         ids=["vgg16", "squeezenet", "vgg16-float64"])
def test_core_size_is_the_documented_bound(budget, backbone, element_size, bytes_per_pixel):
    assert core_size(budget, backbone, element_size) == _documented_core(budget, bytes_per_pixel)


def test_tiles_of_a_metric_have_the_documented_core(images, monkeypatch):
    """Pairs over a 300 MiB budget are tiled with 64-px cores for VGG16 (the floor: even a 16-px core, a 272-px
    tile of two images, takes 2 * 2048 * 272**2 bytes, 289 MiB, and a 32-px one 324 MiB) and 288-px cores for
    SqueezeNet 1.1 (a 544-px tile: 289 MiB; 304 px would take 306 MiB)."""
    cores = []

    def recording(backbone, network_input, linear_weights, normalize, masks, core):
        cores.append(core)
        return torch.zeros((), dtype=torch.float64)

    monkeypatch.setattr(elpips._passes, "tiled_distance", recording)
    budget = 300 * 1024**2
    x, y = images(1, 560, 560, seed=1), images(1, 560, 560, seed=2)
    for name, expected in (("lpips-vgg", 64), ("lpips-squeeze", 288)):
        metric = elpips.Metric(name, backbone_weights="random", device="cpu", memory_budget=budget)
        assert metric.images_per_pass(560, 560) == 1
        with torch.no_grad():
            metric(x, y)
        bytes_per_pixel = elpips.memory.BYTES_PER_PIXEL_FLOAT32[metric.config.backbone]
        assert cores[-1] == expected == _documented_core(budget, bytes_per_pixel)
