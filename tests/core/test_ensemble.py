"""The configurable ensemble: EnsembleConfig checks, each switch removing exactly its transformation, the
ablation ladder's names, crop mode and other offsets against the float64 recomputation (docs/algorithm.md#ensemble)."""

from __future__ import annotations

import math

import elpips
import numpy as np
import pytest
import reference_impl
import torch
from elpips import EnsembleConfig
from elpips.configs import LADDER
from elpips.transforms import FLIP_NONE, PERMUTATIONS, transformed_size

FULL = EnsembleConfig()

IDENTITY = {
    "scaling": lambda r: r.scale_level == 1 and r.scale_offset == (0, 0),
    "offset": lambda r: bool((r.offset == 0).all()) and r.ensemble.padding == 0,
    "flip": lambda r: bool((r.flip == FLIP_NONE).all()),
    "swap": lambda r: r.swap is False,
    "permutation": lambda r: bool((r.permutation == PERMUTATIONS[0]).all()),
    "color": lambda r: bool((r.color == 1).all()),
}
FIELDS = {"scaling": ("scale_level", "scale_offset"), "offset": ("offset",), "flip": ("flip",), "swap": ("swap",),
          "permutation": ("permutation",), "color": ("color",)}


# -- the configuration -------------------------------------------------------------------------------------------
def test_defaults_are_the_reference_ensemble():
    assert FULL.as_dict() == {"offset": True, "max_offset": 7, "flip": True, "swap": True, "permutation": True,
                              "color": True, "color_mode": "color", "scaling": True, "scale_levels": None,
                              "dropout": True, "dropout_keep": 0.99, "crop": False,
                              "tileable": False}
    assert EnsembleConfig(color_mode="color", max_offset=7, dropout_keep=0.99) == FULL
    assert EnsembleConfig.none().is_stochastic is False and FULL.is_stochastic
    assert EnsembleConfig.from_dict(FULL.as_dict()) == FULL


@pytest.mark.parametrize("options, phrase", [
    ({"color": False, "color_mode": "brightness"}, "color_mode='brightness' needs color on"),
    ({"scaling": False, "scale_levels": 2}, "scale_levels=2 needs scaling on"),
    ({"scale_levels": 0}, "scale_levels must be an integer >= 1"),
    ({"dropout_keep": 0.0}, "dropout_keep must lie in (0, 1]"),
    ({"dropout_keep": 1.5}, "dropout_keep must lie in (0, 1]"),
    ({"dropout_keep": float("nan")}, "dropout_keep must lie in (0, 1]"),
    ({"dropout": False, "dropout_keep": 0.9}, "dropout_keep=0.9 needs dropout on"),
    ({"offset": False, "max_offset": 3}, "max_offset=3 needs offset on"),
    ({"max_offset": 0}, "max_offset must be an integer >= 1"),
    ({"color_mode": "sepia"}, "color_mode must be one of color, brightness"),
    ({"offset": False, "scaling": False, "crop": True}, "crop needs offset or scaling on"),
    ({"flip": 1}, "flip must be True or False"),
])
def test_invalid_combinations_are_one_clear_error(options, phrase):
    with pytest.raises(ValueError) as error:
        EnsembleConfig(**options)
    assert phrase in str(error.value)


def test_updated_drops_parameters_of_pieces_switched_off():
    assert FULL.updated(color=False).color_mode is None
    assert FULL.updated(dropout=False).dropout_keep is None
    with pytest.raises(ValueError, match="contradict"):
        FULL.updated(color=False, color_mode="brightness")
    none = EnsembleConfig.none()
    with pytest.raises(ValueError, match="needs offset on"):
        none.updated(max_offset=3)
    assert none.updated(strict=False, max_offset=3) == none  # applied to several metrics: ignored where absent
    assert FULL.updated(max_offset=3, flip=False).differences(FULL) == ["no flip", "max offset 3"]


# -- each switch removes exactly its transformation ----------------------------------------------------------------
@pytest.mark.parametrize("switch", list(IDENTITY))
@pytest.mark.parametrize("batch", [1, 5])
def test_switching_off_removes_exactly_that_transformation(switch, batch):
    """Same generator state: the switched-off field is the identity, every other field equals the full
    ensemble's, and the same number of random numbers is consumed. Over several draws the full ensemble's field
    is not the identity (so the comparison is not vacuous)."""
    off = FULL.updated(**{switch: False})
    saw_non_identity = False
    for seed in range(6):
        full_generator, off_generator = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        full = elpips.sample_transform(batch, 256, 256, generator=full_generator)
        reduced = elpips.sample_transform(batch, 256, 256, generator=off_generator, ensemble=off)
        assert IDENTITY[switch](reduced)
        saw_non_identity |= not IDENTITY[switch](full)
        for other, names in FIELDS.items():
            if other == switch:
                continue
            for name in names:
                a, b = getattr(full, name), getattr(reduced, name)
                assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, (switch, name)
        assert torch.equal(full_generator.get_state(), off_generator.get_state())
        assert reduced.ensemble == off
    assert saw_non_identity


def test_switching_dropout_off_removes_only_the_masks(random_metric):
    full = random_metric("elpips-vgg", seed=3)
    no_dropout = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=3,
                               ensemble=FULL.updated(dropout=False))
    a, b = full.sample(4, 64, 64), no_dropout.sample(4, 64, 64)
    assert a.dropout is not None and b.dropout is None
    assert a.transform.as_dict()["flip"] == b.transform.as_dict()["flip"]
    assert torch.equal(a.transform.color, b.transform.color) and a.transform.scale_level == b.transform.scale_level


def test_stratification_kept_for_what_remains():
    only_flips = EnsembleConfig.none().updated(flip=True)
    record = elpips.sample_transform(8, 64, 64, generator=torch.Generator().manual_seed(0), ensemble=only_flips)
    assert np.bincount(record.flip.numpy(), minlength=4).tolist() == [2, 2, 2, 2]
    only_color = EnsembleConfig.none().updated(color=True)
    record = elpips.sample_transform(6, 64, 64, generator=torch.Generator().manual_seed(1), ensemble=only_color)
    strata = torch.floor((record.color.double() - 0.2) / 0.8 * 6).long()
    for channel in range(3):
        assert sorted(strata[:, channel].tolist()) == list(range(6))


# -- the ladder -------------------------------------------------------------------------------------------------
def test_ladder_names_and_pieces():
    assert LADDER == ("lpips-vgg", "elpips-vgg+all-layers", "elpips-vgg+geom", "elpips-vgg+color",
                      "elpips-vgg+scaling", "elpips-vgg+dropout")
    ensembles = [elpips.get_config(name).ensemble for name in LADDER]
    added = [ensembles[k].differences(ensembles[k - 1]) for k in range(1, len(LADDER))]
    assert added == [[], ["offset", "flip", "swap", "max offset 7"], ["permutation", "color", "color mode color"],
                     ["scaling"], ["dropout", "dropout keep 0.99"]]
    assert elpips.get_config("lpips-vgg").network == "lpips"
    assert all(elpips.get_config(name).network == "elpips" for name in LADDER[1:])


def test_dropout_rung_equals_elpips_vgg_sample_for_sample(images):
    x, y = images(2, 32, 32, seed=1), images(2, 32, 32, seed=2)
    rung = elpips.Metric("elpips-vgg+dropout", backbone_weights="random", device="cpu", seed=5)
    full = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=5)
    first, second = rung.sample_distances(x, y, 6), full.sample_distances(x, y, 6)
    assert torch.equal(first, second)
    assert first.std(dim=0).min() > 0  # random samples, not a constant


def test_all_layers_rung_is_deterministic_and_matches_float64(images):
    """+all-layers: the E-LPIPS network on the untransformed images (no padding), against the float64
    recomputation, and the same value whatever the seed."""
    x, y = images(2, 40, 36, seed=3), images(2, 40, 36, seed=4)
    metric = elpips.Metric("elpips-vgg+all-layers", backbone_weights="random", device="cpu", seed=0)
    assert not metric.is_stochastic
    other_seed = elpips.Metric("elpips-vgg+all-layers", backbone_weights="random", device="cpu", seed=9)
    ours = metric(x, y)
    assert torch.equal(ours, other_seed(x, y)) and torch.equal(ours, metric(x, y))
    torch.testing.assert_close(metric(x, y, n=3), ours, rtol=1e-6, atol=0)  # n identical samples
    identity = elpips.sample_transform(2, 40, 36, ensemble=EnsembleConfig.none())
    expected = reference_impl.elpips_sample(x, y, identity, metric.backbone.state_dict(),
                                            [w.numpy() for w in metric.linear_weights])
    np.testing.assert_allclose(ours.double().numpy(), expected, rtol=1e-4)
    padded = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu")
    with_padding = padded(x, y, transform=elpips.sample_transform(2, 40, 36, ensemble=FULL.updated(scaling=False)),
                          dropout=False)
    assert not torch.allclose(ours, with_padding, rtol=1e-3)  # the padding (and the offset) do change it


# -- crop mode and other offsets against the float64 recomputation ---------------------------------------------------
@pytest.mark.parametrize("crop, max_offset, scale_level", [(True, 7, 1), (True, 7, 2), (True, 3, 3),
                                                           (False, 3, 2)])
def test_fixed_sample_matches_float64(random_metric, images, crop, max_offset, scale_level):
    ensemble = FULL.updated(crop=crop, max_offset=max_offset)
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", ensemble=ensemble)
    x, y = images(4, 66, 61, seed=5), images(4, 66, 61, seed=6)
    record = elpips.sample_transform(4, 66, 61, scale_levels=1, generator=torch.Generator().manual_seed(7),
                                     ensemble=ensemble)
    record.scale_level, record.scale_offset = scale_level, (scale_level - 1, scale_level // 2)
    record.flip = torch.tensor([0, 1, 2, 3])
    assert record.ensemble.crop is crop
    ours = metric(x, y, transform=record, dropout=False).double().numpy()
    expected = reference_impl.elpips_sample(x, y, record, metric.backbone.state_dict(),
                                            [w.numpy() for w in metric.linear_weights])
    np.testing.assert_allclose(ours, expected, rtol=1e-4)
    transformed = elpips.apply_transform(x, record)
    assert tuple(transformed.shape[-2:]) == transformed_size(66, 61, record)
    assert tuple(transformed.shape[-2:]) == reference_impl.transform_batch(x, record).shape[-2:]


def test_crop_keeps_a_window_of_the_image(images):
    """Crop mode, scale 1, no flip: the output is exactly x[dy : dy + H - M, dx : dx + W - M]."""
    x = images(3, 20, 24, seed=8)
    ensemble = EnsembleConfig.none().updated(offset=True, crop=True, max_offset=5)
    record = elpips.sample_transform(3, 20, 24, generator=torch.Generator().manual_seed(2), ensemble=ensemble)
    out = elpips.apply_transform(x, record)
    for i, (dy, dx) in enumerate(record.offset.tolist()):
        assert 0 <= dy <= 5 and 0 <= dx <= 5
        assert torch.equal(out[i], x[i, :, dy:dy + 15, dx:dx + 19])


def test_crop_mode_size_check(images):
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", scale_levels=2,
                           ensemble=FULL.updated(crop=True))
    x = images(1, 40, 40)
    with pytest.raises(ValueError, match="cropping 7 px shrinks 40x40 images to 12 px"):
        metric(x, x)


def test_record_round_trip():
    record = elpips.sample_transform(3, 64, 64, generator=torch.Generator().manual_seed(4),
                                     ensemble=FULL.updated(color_mode="brightness", crop=True))
    again = elpips.TransformRecord.from_dict(record.as_dict())
    assert again.as_dict() == record.as_dict() and again.ensemble.crop


def test_metric_options(images):
    lpips = elpips.Metric("lpips-vgg", backbone_weights="random", device="cpu", scale_levels=2, dropout_keep=0.5)
    assert lpips.ensemble == EnsembleConfig.none()  # shortcuts apply only where the piece is on
    with pytest.raises(ValueError, match="scale_levels=2 needs scaling on"):
        elpips.Metric("lpips-vgg", backbone_weights="random", device="cpu", ensemble=EnsembleConfig(
            scaling=False, scale_levels=2))
    with pytest.raises(ValueError, match="dropout_keep must lie in"):
        elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", dropout_keep=1.5)
    with pytest.raises(ValueError, match="l2 has no network"):
        elpips.Metric("l2", device="cpu", ensemble=FULL)
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", dropout_keep=0.9, scale_levels=1)
    assert metric.ensemble == FULL.updated(dropout_keep=0.9, scale_levels=1) and metric.custom_ensemble
    assert "dropout(0.9)" in repr(metric)
    assert math.isclose(metric.dropout_keep, 0.9) and metric.scale_levels == 1


@pytest.mark.parametrize("ensemble", [EnsembleConfig.none().updated(dropout=True), FULL.updated(crop=True),
                                      FULL.updated(dropout=False, max_offset=2)],
                         ids=["dropout-only", "crop", "max-offset-2"])
def test_ensembles_evaluated_in_passes(images, ensemble):
    """Under a memory budget of 2 pairs per pass every ensemble is evaluated in several passes: without dropout
    the distances equal the one-pass ones; with dropout (fresh masks in later passes) every sample is valid."""
    from elpips.memory import BYTES_PER_PIXEL_FLOAT32

    x, y = images(1, 40, 40, seed=1), images(1, 40, 40, seed=2)
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", ensemble=ensemble)
    one_pass = metric.sample_distances(x, y, 6, torch.Generator().manual_seed(3), dropout=False)
    metric.memory_budget = BYTES_PER_PIXEL_FLOAT32["vgg16"] * 47 * 47 * 4 + 1
    assert metric.images_per_pass(40, 40) in (4, 5)
    passes = metric.sample_distances(x, y, 6, torch.Generator().manual_seed(3), dropout=False)
    torch.testing.assert_close(passes, one_pass, rtol=1e-5, atol=1e-7)
    with_dropout = metric.sample_distances(x, y, 6, torch.Generator().manual_seed(3))
    compared = metric.compare_samples(x, torch.stack([y, x.flip(-1)]), 6, torch.Generator().manual_seed(3))
    assert bool((with_dropout > 0).all()) and compared.shape == (6, 2, 1) and bool((compared[:, 0] > 0).all())
    if ensemble.transforms:
        assert one_pass.std() > 0  # the transformations do vary between samples
