"""Spatial distance maps (``elpips.spatial``, ``Metric.spatial``): LPIPS parity with the ``lpips`` package, the
inverse transform against an independent recomputation, the mean identity, locality, flip equivariance,
gradients and chunking."""

from __future__ import annotations

import elpips
import numpy as np
import pytest
import reference_impl
import torch
import torch.nn.functional as F
from elpips.spatial import compare_maps, distance_map, map_to_input_frame, upsample_mass_preserving, upsampling_mass
from elpips.transforms import PERMUTATIONS, TransformRecord, transformed_size
from helpers import lpips_peer


def record_with(batch: int, scale_level: int, scale_offset: tuple[int, int], swap: bool, seed: int,
                height: int = 64, width: int = 64) -> TransformRecord:
    """A random record with the given scale and swap and every flip code present."""
    record = elpips.sample_transform(batch, height, width, scale_levels=1,
                                     generator=torch.Generator().manual_seed(seed))
    record.scale_level, record.scale_offset, record.swap = scale_level, scale_offset, swap
    record.flip = torch.arange(batch) % 4
    return record


# -- LPIPS: the lpips package's spatial=True ------------------------------------------------------------------------
@pytest.mark.parametrize("net,name", [("vgg", "lpips-vgg"), ("squeeze", "lpips-squeeze")])
@pytest.mark.parametrize("size", [(33, 47), (64, 50)])
def test_lpips_map_matches_lpips_package(random_metric, images, net, name, size):
    metric = random_metric(name)
    peer = lpips_peer(net, metric)
    peer.spatial = True
    x, y = images(3, *size, seed=1), images(3, *size, seed=2)
    with torch.no_grad():
        expected = peer(x, y, normalize=True)
        ours = metric.spatial(x, y)
    assert ours.shape == expected.shape == (3, 1, *size)
    relative = ((ours - expected).abs() / expected.abs()).max().item()
    assert relative <= 1e-5, relative
    assert expected.min() > 1e-4


def test_lpips_map_mean_bound_and_identity(random_metric, images):
    """Bilinear upsampling keeps the mean when tap sizes divide the image (64 px VGG: exact); otherwise the
    mean lies within the per-tap mass factors' range times the distance."""
    metric = random_metric("lpips-vgg")
    x, y = images(2, 64, 64, seed=3), images(2, 64, 64, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(metric.spatial(x, y).mean(dim=(-3, -2, -1)), metric(x, y), rtol=1e-5, atol=0)
        x, y = x[..., :45, :61], y[..., :45, :61]
        mean, distance = metric.spatial(x, y).mean(dim=(-3, -2, -1)), metric(x, y)
        taps = metric.features(x)
    factors = torch.cat([upsampling_mass(tuple(tap.shape[-2:]), (45, 61)).flatten() for tap in taps])
    assert (factors - 1).abs().max() > 1e-4  # a case where the identity does not hold exactly
    assert bool((mean >= factors.min() * distance).all()) and bool((mean <= factors.max() * distance).all())


# -- E-LPIPS: the inverse of a record for maps ---------------------------------------------------------------------
def pixel_operator(record: TransformRecord, height: int, width: int) -> np.ndarray:
    """``[Ht*Wt, H*W]`` float64: column ``p`` is input pixel ``p`` (a unit impulse) pushed through the forward
    transform, image by image with the NumPy reference transform (no package code)."""
    neutral = TransformRecord(record.scale_level, record.scale_offset, record.offset, record.flip, record.swap,
                              PERMUTATIONS[0].repeat(record.batch_size, 1), torch.ones(record.batch_size, 3))
    columns = []
    for pixel in range(height * width):
        impulse = np.zeros((3, height, width))
        impulse.reshape(3, -1)[:, pixel] = 1.0
        columns.append([reference_impl.transform_one(impulse, i, neutral)[0].ravel()
                        for i in range(record.batch_size)])
    return np.stack(columns, axis=-1)  # [N, Ht*Wt, H*W]


@pytest.mark.parametrize("scale_level,scale_offset,swap", [(1, (0, 0), True), (2, (1, 0), False), (3, (2, 1), True)])
def test_inverse_is_the_scaled_adjoint_of_the_pushed_pixels(scale_level, scale_offset, swap):
    height, width = 23, 20
    record = record_with(4, scale_level, scale_offset, swap, seed=scale_level)
    operator = pixel_operator(record, height, width)
    frame = transformed_size(height, width, record)
    generator = torch.Generator().manual_seed(0)
    frame_maps = torch.rand(2, 4, 1, *frame, generator=generator, dtype=torch.float64)
    ours = map_to_input_frame(frame_maps, record, height, width)
    factor = height * width / (frame[0] * frame[1])
    expected = np.einsum("nqp,gnq->gnp", operator, frame_maps.reshape(2, 4, -1).numpy()) * factor
    np.testing.assert_allclose(ours.reshape(2, 4, -1).numpy(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.mean(dim=(-2, -1)), frame_maps.mean(dim=(-2, -1)))


def interpolation_matrix(source: int, target: int) -> np.ndarray:
    """``[target, source]`` weights of 1-D linear interpolation, ``align_corners=False`` (written out)."""
    matrix = np.zeros((target, source))
    for i in range(target):
        position = min(max((i + 0.5) * source / target - 0.5, 0.0), source - 1)
        low = int(np.floor(position))
        high = min(low + 1, source - 1)
        matrix[i, low] += 1 - (position - low)
        matrix[i, high] += position - low
    return matrix


@pytest.mark.parametrize("name,scale_level,scale_offset", [("elpips-vgg", 2, (1, 1)), ("elpips-squeeze", 1, (0, 0))])
def test_fixed_sample_map_equals_independent_float64_recomputation(random_metric, images, name, scale_level,
                                                                   scale_offset):
    """The whole map of one sample from the NumPy transform, float64 networks, explicit interpolation matrices
    (columns rescaled to keep the mean) and the pushed-pixel operator."""
    metric = random_metric(name)
    height, width = 34, 31
    x, y = images(4, height, width, seed=5), images(4, height, width, seed=6)
    record = record_with(4, scale_level, scale_offset, True, seed=7)
    ours = metric.spatial(x, y, transform=record, dropout=False).double()
    state = metric.backbone.state_dict()
    network = reference_impl.vgg_taps if name == "elpips-vgg" else reference_impl.squeeze_taps
    with torch.no_grad():
        taps_x = network(reference_impl.network_input(reference_impl.transform_batch(x, record)), state)
        taps_y = network(reference_impl.network_input(reference_impl.transform_batch(y, record)), state)
    frame = transformed_size(height, width, record)
    frame_map = np.zeros((4, *frame))
    for a, b, weight in zip(taps_x, taps_y, metric.linear_weights, strict=False):
        a, b = a.numpy(), b.numpy()
        a = a / (np.sqrt((a**2).sum(axis=1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b**2).sum(axis=1, keepdims=True)) + 1e-10)
        tap_map = np.einsum("nchw,c->nhw", (a - b) ** 2, weight.double().numpy())
        rows, cols = (interpolation_matrix(s, t) for s, t in zip(tap_map.shape[1:], frame, strict=False))
        rows = rows / rows.sum(axis=0) * frame[0] / tap_map.shape[1]
        cols = cols / cols.sum(axis=0) * frame[1] / tap_map.shape[2]
        frame_map += np.einsum("ih,nhw,jw->nij", rows, tap_map, cols)
    operator = pixel_operator(record, height, width)
    expected = np.einsum("nqp,nq->np", operator, frame_map.reshape(4, -1)) * height * width / np.prod(frame)
    np.testing.assert_allclose(ours.reshape(4, -1).numpy(), expected, rtol=2e-4, atol=1e-7)
    distances = metric(x, y, transform=record, dropout=False).double()
    torch.testing.assert_close(ours.mean(dim=(-3, -2, -1)), distances, rtol=1e-5, atol=0)


def test_mass_preserving_upsampling_keeps_the_mean():
    maps = torch.rand(3, 1, 7, 5, dtype=torch.float64)
    up = upsample_mass_preserving(maps, (23, 19))
    torch.testing.assert_close(up.mean(dim=(-2, -1)), maps.mean(dim=(-2, -1)))
    plain = F.interpolate(maps, size=(23, 19), mode="bilinear", align_corners=False)
    assert not torch.allclose(plain.mean(dim=(-2, -1)), maps.mean(dim=(-2, -1)))


# -- E-LPIPS over samples ------------------------------------------------------------------------------------------
def test_map_mean_equals_the_sample_distances(random_metric, images):
    metric = random_metric("elpips-vgg", seed=3)
    x, y = images(2, 48, 40, seed=8), images(2, 48, 40, seed=9)
    result = distance_map(metric, x, y, n=6, chunk_size=4)
    assert result.distances.shape == (6, 2) and result.map.shape == (2, 1, 48, 40)
    torch.testing.assert_close(result.map.mean(dim=(-3, -2, -1)), result.distances.mean(dim=0), rtol=1e-5, atol=0)
    assert bool((result.map >= 0).all()) and bool((result.half_width > 0).all())


def test_chunked_equals_unchunked(random_metric, images):
    x, y = images(2, 32, 36, seed=10), images(2, 32, 36, seed=11)
    metric = random_metric("elpips-squeeze")
    results = [distance_map(metric, x, y, n=5, chunk_size=chunk, generator=torch.Generator().manual_seed(4))
               for chunk in (1, 2, 5)]
    for other in results[1:]:
        torch.testing.assert_close(other.map, results[0].map, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(other.half_width, results[0].half_width, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(other.distances, results[0].distances, rtol=1e-5, atol=1e-7)


def test_compare_shares_samples_with_distance_map(random_metric, images):
    metric = random_metric("elpips-vgg")
    reference, a, b = images(1, 32, 32, seed=12), images(1, 32, 32, seed=13), images(1, 32, 32, seed=14)
    both = metric.compare_spatial(reference, [a, b], n=3, generator=torch.Generator().manual_seed(2))
    alone = metric.spatial(b, reference, n=3, generator=torch.Generator().manual_seed(2))
    assert both.shape == (2, 1, 1, 32, 32)
    torch.testing.assert_close(both[1], alone, rtol=1e-4, atol=1e-7)


def patched(image: torch.Tensor, top: int, left: int, size: int, seed: int) -> torch.Tensor:
    """``image`` with a ``size x size`` patch at ``(top, left)`` replaced by uniform noise."""
    out = image.clone()
    generator = torch.Generator().manual_seed(seed)
    out[..., top:top + size, left:left + size] = torch.rand(*out.shape[:-2], size, size, generator=generator)
    return out


def box_fraction(maps: torch.Tensor, top: int, left: int, size: int, margin: int) -> float:
    """Share of the map's mass inside the box dilated by ``margin`` pixels."""
    inside = maps[..., max(0, top - margin):top + size + margin, max(0, left - margin):left + size + margin]
    return float(inside.sum() / maps.sum())


@pytest.mark.parametrize("name,threshold", [("elpips-vgg", 0.8), ("lpips-vgg", 0.55)])
def test_local_change_puts_the_mass_near_the_patch(random_metric, name, threshold):
    """A 12 x 12 patch of a 64 x 64 smooth image replaced by noise; mass within 8 px of the patch (28 x 28 of
    64 x 64 = 19% of the area). Measured on the seeded random backbone: E-LPIPS (8 samples) 0.89 (0.89 with
    32), LPIPS 0.64 (its deep taps, bilinearly upsampled from 4 x 4, spread further); the same box placed
    elsewhere holds 0.01 and 0.04."""
    metric = random_metric(name)
    base = F.interpolate(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)), size=(64, 64),
                         mode="bilinear", align_corners=False)
    changed = patched(base, 14, 38, 12, seed=1)
    with torch.no_grad():
        maps = metric.spatial(base, changed, n=8)
    assert box_fraction(maps, 14, 38, 12, margin=8) >= threshold
    assert box_fraction(maps, 40, 6, 12, margin=8) < 0.08


def symmetrised_lpips(random_metric) -> elpips.Metric:
    """LPIPS-VGG whose kernels are symmetric under both flips: the network is then exactly flip-equivariant at
    sizes its pooling divides (64 px)."""
    metric = elpips.Metric("lpips-vgg", backbone_weights="random", device="cpu")
    for buffer in metric.backbone.buffers():
        if buffer.dim() == 4:
            buffer.copy_((buffer + buffer.flip(-1) + buffer.flip(-2) + buffer.flip(-1, -2)) / 4)
    return metric


def test_flipping_both_inputs_flips_the_lpips_map_exactly(random_metric, images):
    metric = symmetrised_lpips(random_metric)
    x, y = images(2, 64, 64, seed=15), images(2, 64, 64, seed=16)
    with torch.no_grad():
        maps = metric.spatial(x, y)
        for dims in ((-1,), (-2,), (-2, -1)):
            torch.testing.assert_close(metric.spatial(x.flip(dims), y.flip(dims)).flip(dims), maps,
                                       rtol=1e-5, atol=1e-7)


def flip_discrepancy(metric: elpips.Metric, x: torch.Tensor, y: torch.Tensor, samples: int,
                     flip_back: bool) -> float:
    """Share of pixels whose maps for ``(x, y)`` and the left-right flipped pair differ by more than 3 standard
    errors (the flipped pair's map flipped back, or not when ``flip_back`` is false)."""
    a = distance_map(metric, x, y, n=samples, generator=torch.Generator().manual_seed(1))
    b = distance_map(metric, x.flip(-1), y.flip(-1), n=samples, generator=torch.Generator().manual_seed(2))
    b_map, b_half = (b.map.flip(-1), b.half_width.flip(-1)) if flip_back else (b.map, b.half_width)
    z = (a.map - b_map) / ((a.half_width.square() + b_half.square()).sqrt() / 1.96)
    return float((z.abs() > 3).double().mean())


def test_flipping_both_inputs_flips_the_elpips_map_within_its_uncertainty(random_metric):
    """E-LPIPS samples flips uniformly, so its mean map is flip-equivariant in distribution (one scale level:
    the scale step's padding is not symmetric). Measured with 16 samples: no pixel beyond 3 standard errors
    (the per-pixel intervals are conservative); without flipping back, 40% of the pixels. A generic random
    LPIPS network is not flip-equivariant: its maps differ by 19% of their mean."""
    metric = random_metric("elpips-vgg")
    base = F.interpolate(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3)), size=(32, 32),
                         mode="bilinear", align_corners=False)
    changed = patched(base, 4, 3, 8, seed=4)
    with torch.no_grad():
        assert flip_discrepancy(metric, base, changed, 16, flip_back=True) < 0.02
        assert flip_discrepancy(metric, base, changed, 16, flip_back=False) > 0.15


def test_map_is_differentiable_float64_finite_difference(images):
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu").double()
    record = record_with(1, 1, (0, 0), True, seed=5)
    record.flip = torch.tensor([2])
    x = (0.2 + 0.6 * images(1, 20, 18, seed=17)).double().requires_grad_(True)
    y = (0.2 + 0.6 * images(1, 20, 18, seed=18)).double()
    weights = torch.rand(1, 1, 20, 18, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def objective(images: torch.Tensor) -> torch.Tensor:
        # without dropout: its dropped units put ReLU kinks within a finite-difference step here (the scalar
        # distance then misses by 0.4% at step 1e-6 as well)
        maps = metric.spatial(images, y, transform=record, dropout=False)
        return (maps * weights).sum()

    (gradient,) = torch.autograd.grad(objective(x), x)
    step = 1e-6
    with torch.no_grad():
        numeric = (objective(x + step * direction) - objective(x - step * direction)) / (2 * step)
    analytic = (gradient * direction).sum()
    assert abs(float(analytic - numeric)) <= 1e-6 * abs(float(numeric)), (float(analytic), float(numeric))


def test_bad_arguments(random_metric, images):
    x, y = images(1, 32, 32), images(1, 32, 32, seed=1)
    with pytest.raises(ValueError, match="no network taps"):
        random_metric("l2").spatial(x, y)
    with pytest.raises(ValueError, match="n must be"):
        random_metric("elpips-vgg").spatial(x, y, n=0)
    with pytest.raises(ValueError, match="one sample"):
        random_metric("elpips-vgg").spatial(x, y, n=2, transform=record_with(1, 1, (0, 0), False, seed=0))
    with pytest.raises(ValueError, match="same shape"):
        random_metric("lpips-vgg").spatial(x, images(1, 32, 30))
    with pytest.raises(ValueError, match="at least one candidate"):
        compare_maps(random_metric("lpips-vgg"), x, [])


def _message(call) -> str:
    with pytest.raises(ValueError) as error:
        call()
    return str(error.value)


@pytest.mark.parametrize("n", [2.5, 0, True], ids=["float", "zero", "bool"])
@pytest.mark.parametrize("name", ["elpips-vgg", "lpips-vgg"])
def test_sample_count_checked_as_by_the_metric(random_metric, images, name, n):
    """``spatial`` and ``compare_spatial`` refuse a non-integer or non-positive ``n`` with the message of
    ``metric(x, y, n)`` and ``compare``, naming ``n``, before any sampling."""
    metric = random_metric(name)
    x, y = images(1, 32, 32), images(1, 32, 32, seed=1)
    expected = _message(lambda: metric(x, y, n=n))
    assert expected.startswith("n must be a positive integer")
    assert _message(lambda: metric.spatial(x, y, n=n)) == expected
    assert _message(lambda: metric.compare_spatial(y, [x], n=n)) == _message(lambda: metric.compare(y, [x], n=n))
    assert _message(lambda: metric.compare_spatial(y, [x], n=n)) == expected


@pytest.mark.parametrize("name", ["elpips-vgg", "lpips-vgg"])
def test_candidates_checked_as_by_compare(random_metric, images, name):
    """No candidates, and a candidate of another shape, are refused with ``compare``'s messages."""
    metric = random_metric(name)
    reference = images(1, 32, 32)
    expected = _message(lambda: metric.compare(reference, []))
    assert expected == "compare needs at least one candidate"
    assert _message(lambda: metric.compare_spatial(reference, [])) == expected
    assert _message(lambda: metric.compare_spatial(reference, torch.empty(0, 1, 3, 32, 32))) == expected
    other = images(1, 32, 30, seed=1)
    assert (_message(lambda: metric.compare_spatial(reference, [reference, other]))
            == _message(lambda: metric.compare(reference, [reference, other])))


def test_fixed_transform_checked_as_by_the_metric(random_metric, images):
    """A fixed transform with ``n`` > 1, or one that shrinks the images below the network's minimum, is refused
    with the message of ``metric(x, y, transform=...)``."""
    metric = random_metric("elpips-vgg")
    x, y = images(1, 32, 32), images(1, 32, 32, seed=1)
    shrinking = record_with(1, 4, (0, 0), False, seed=0, height=32, width=32)
    fitting = record_with(1, 1, (0, 0), False, seed=0, height=32, width=32)
    for record, n in ((shrinking, 1), (fitting, 2)):
        expected = _message(lambda n=n, record=record: metric(x, y, n=n, transform=record))
        assert _message(lambda n=n, record=record: metric.spatial(x, y, n=n, transform=record)) == expected


def test_dropout_on_an_ensemble_without_dropout_checked_as_by_the_metric(images):
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu",
                           ensemble=elpips.EnsembleConfig(dropout=False))
    x, y = images(1, 32, 32), images(1, 32, 32, seed=1)
    expected = _message(lambda: metric(x, y, dropout=True))
    assert "dropout off" in expected
    assert _message(lambda: metric.spatial(x, y, dropout=True)) == expected


def test_inputs_in_another_precision_are_computed_in_the_metrics(random_metric, images):
    metric = random_metric("lpips-vgg")
    x, y = images(1, 32, 32, seed=19), images(1, 32, 32, seed=20)
    with torch.no_grad():
        maps = metric.spatial(x.double(), y.double())
        assert maps.dtype == torch.float32
        torch.testing.assert_close(maps, metric.spatial(x, y))


@pytest.mark.parametrize("ensemble", [elpips.EnsembleConfig(max_offset=3), elpips.EnsembleConfig.none().updated(
    dropout=True)], ids=["max-offset-3", "dropout-only"])
def test_map_mean_equals_the_sample_distances_under_other_ensembles(images, ensemble):
    """The adjoint of the offset step uses the record's own padding (3 here; none without the offset)."""
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=3, ensemble=ensemble)
    x, y = images(1, 40, 36, seed=8), images(1, 40, 36, seed=9)
    result = distance_map(metric, x, y, n=3)
    torch.testing.assert_close(result.map.mean(dim=(-3, -2, -1)), result.distances.mean(dim=0), rtol=1e-5, atol=0)
    crop = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", ensemble=elpips.EnsembleConfig(
        crop=True))
    with pytest.raises(ValueError, match="crop-instead-of-pad"):
        distance_map(crop, x, y)
