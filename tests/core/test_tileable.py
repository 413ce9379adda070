"""The tileable (periodic) mode of the ensemble (docs/algorithm.md#tileable) and elpips.textures."""

from __future__ import annotations

import functools
import math

import elpips
import pytest
import torch
from elpips import EnsembleConfig
from elpips.spatial import map_to_input_frame
from elpips.textures import procedural_texture, seam_statistic, tiled
from elpips.transforms import PERMUTATIONS, TransformRecord, transformed_size

TILEABLE = EnsembleConfig(tileable=True)


@functools.cache
def _metric(name: str, dropout: bool) -> elpips.Metric:
    ensemble = EnsembleConfig(tileable=True, dropout=dropout)
    return elpips.Metric(name, backbone_weights="random", device="cpu", seed=0, ensemble=ensemble)


def textures(seed: int = 0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    return procedural_texture(size, size, seed=seed), procedural_texture(size, size, seed=seed + 100)


def test_config_rules():
    assert TILEABLE.max_offset is None and TILEABLE.padding == 0
    assert EnsembleConfig().updated(tileable=True) == TILEABLE
    assert TILEABLE.updated(tileable=False) == EnsembleConfig()
    assert EnsembleConfig.from_dict(TILEABLE.as_dict()) == TILEABLE
    assert "tileable" in TILEABLE.summary() and TILEABLE.differences(EnsembleConfig()) == ["tileable"]
    with pytest.raises(ValueError, match="tileable and crop"):
        EnsembleConfig(tileable=True, crop=True)
    with pytest.raises(ValueError, match="max_offset=3 needs tileable off"):
        EnsembleConfig(tileable=True, max_offset=3)
    assert EnsembleConfig().as_dict()["tileable"] is False


def test_offsets_cover_the_whole_period():
    generator = torch.Generator().manual_seed(0)
    offsets = torch.cat([elpips.sample_transform(8, 40, 24, generator=generator, ensemble=TILEABLE).offset
                         for _ in range(50)])
    assert offsets[:, 0].min() == 0 and offsets[:, 0].max() == 39
    assert offsets[:, 1].min() == 0 and offsets[:, 1].max() == 23
    record = elpips.sample_transform(2, 40, 24, scale_levels=3, generator=generator, ensemble=TILEABLE)
    assert transformed_size(40, 24, record) in ((math.ceil(40 / record.scale_level),
                                                 math.ceil(24 / record.scale_level)),
                                                (math.ceil(24 / record.scale_level),
                                                 math.ceil(40 / record.scale_level)))


def _record(scale_level: int, scale_offset: tuple[int, int], offset, flip, swap: bool) -> TransformRecord:
    batch = len(flip)
    return TransformRecord(scale_level, scale_offset, torch.tensor(offset), torch.tensor(flip), swap,
                           PERMUTATIONS[torch.arange(batch) % 6], torch.linspace(0.2, 0.9, 3 * batch).view(batch, 3),
                           TILEABLE)


@pytest.mark.parametrize("scale_level,scale_offset", [(1, (0, 0)), (2, (1, 0)), (4, (3, 2))])
def test_shifting_the_images_is_shifting_the_offset(scale_level, scale_offset):
    # A circular shift by (a s, b s) of the input is the record's circular shift moved by (a, b): the transformed
    # images are identical, so no fixed record sees a seam where the images have none.
    images = torch.rand(2, 3, 32, 24, generator=torch.Generator().manual_seed(1))
    record = _record(scale_level, scale_offset, [[3, 1], [0, 5]], [0, 2], True)
    a, b = 3, 2
    shifted = images.roll((a * scale_level, b * scale_level), dims=(-2, -1))
    moved = _record(scale_level, scale_offset, [[3 - a, 1 - b], [-a, 5 - b]], [0, 2], True)
    period = torch.tensor([32 // scale_level, 24 // scale_level])
    moved.offset = moved.offset % period
    torch.testing.assert_close(elpips.apply_transform(shifted, record), elpips.apply_transform(images, moved),
                               rtol=0, atol=0)


def test_distance_is_invariant_to_a_shift_of_both_images():
    metric = _metric("elpips-vgg", dropout=False)
    x, other = textures(0)
    y = 0.8 * x + 0.2 * other  # close to x, so that shifting only one of them is a large change
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):
        record = elpips.sample_transform(1, 64, 64, generator=generator, ensemble=metric.ensemble)
        base = metric(x, y, transform=record)
        # VGG's pooling stride is 16: circular padding makes a shift by a multiple of it exactly invariant.
        both = metric(x.roll((16, 48), (-2, -1)), y.roll((16, 48), (-2, -1)), transform=record)
        one = metric(x.roll((16, 48), (-2, -1)), y, transform=record)
        torch.testing.assert_close(both, base, rtol=1e-5, atol=1e-7)
        assert one.item() > 2 * base.item()


def test_the_network_pads_circularly_only_in_the_tileable_mode():
    metric = _metric("elpips-vgg", dropout=False)
    x, y = textures(1)
    metric(x, y, transform=elpips.sample_transform(1, 64, 64, ensemble=metric.ensemble))
    convs = [layer for layer in metric.backbone.modules() if isinstance(layer, torch.nn.Conv2d)]
    assert {layer.padding_mode for layer in convs} == {"circular"}
    # and the identity of the seam matters: at the reference's zero padding the shifted pair differs
    reference = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=0,
                              ensemble=EnsembleConfig(offset=False, flip=False, swap=False, permutation=False,
                                                      color=False, scaling=False, dropout=False))
    plain = reference(x, y)
    shifted = reference(x.roll((16, 48), (-2, -1)), y.roll((16, 48), (-2, -1)))
    assert (plain - shifted).abs().item() > 1e-4
    assert {layer.padding_mode for layer in reference.backbone.modules()
            if isinstance(layer, torch.nn.Conv2d)} == {"zeros"}


@pytest.mark.parametrize("scale_level,scale_offset", [(1, (0, 0)), (3, (2, 1))])
def test_map_inverse_is_the_scaled_adjoint(scale_level, scale_offset):
    # The adjoint of the transform's pixel operator, by autograd: <T x, M> has gradient T^t M.
    height, width = 23, 20
    record = _record(scale_level, scale_offset, [[5, 0], [1, 6]], [1, 3], True)
    record.permutation, record.color = PERMUTATIONS[0].repeat(2, 1), torch.ones(2, 3)
    frame = transformed_size(height, width, record)
    frame_maps = torch.rand(2, 1, *frame, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    images = torch.zeros(2, 3, height, width, dtype=torch.float64, requires_grad=True)
    (elpips.apply_transform(images, record)[:, :1] * frame_maps).sum().backward()
    expected = images.grad[:, :1] * (height * width / (frame[0] * frame[1]))
    ours = map_to_input_frame(frame_maps, record, height, width)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.mean(dim=(-2, -1)), frame_maps.mean(dim=(-2, -1)))


def test_distance_map_wraps_around():
    metric = _metric("elpips-vgg", dropout=True)
    x, _ = textures(2, size=32)
    y = x.clone()
    y[..., :, :2] += 0.3  # a change along the left edge: its mass reaches the right edge only on the torus
    maps = elpips.spatial.distance_map(metric, x.clamp(0, 1), y.clamp(0, 1), n=4).map
    assert maps[..., -3:].mean() > 2 * maps[..., 8:24].mean()


def test_seam_statistic_closed_form():
    n = 8
    ramp = (torch.arange(n, dtype=torch.float64)[:, None] / n).expand(n, n)[None, None]
    # interior row steps 1/n, wrap step (n-1)/n; columns constant: ((n-1) n + n (n-1)) / (2n) = n - 1
    assert seam_statistic(ramp).item() == pytest.approx(n - 1)
    # a cyclic ramp (no seam across the wrap: every step equal) is exactly 1
    triangle = torch.tensor([0, 1, 2, 3, 2, 1], dtype=torch.float64)
    image = (triangle[:, None] + triangle[None, :])[None, None].expand(2, 3, 6, 6)
    assert seam_statistic(image).tolist() == [1.0, 1.0]
    assert seam_statistic(torch.ones(1, 3, 4, 4)).tolist() == [1.0]
    texture = procedural_texture(48, 40, seed=5)
    assert seam_statistic(texture).item() < 1.3
    assert seam_statistic(texture.roll(7, -1)).item() < 1.3
    assert seam_statistic(texture[..., :29, :31]).item() > 2.0  # cut out of its period: a seam
    assert tiled(texture).shape == (1, 3, 96, 80)
    torch.testing.assert_close(tiled(texture)[..., 48:, 40:], texture)
    with pytest.raises(ValueError, match="H, W >= 2"):
        seam_statistic(torch.zeros(1, 3, 1, 5))
