"""The Metric API: identities, symmetry, gradients, batching, compare, estimate, validation."""

from __future__ import annotations

import elpips
import pytest
import torch

ALL = list(elpips.METRIC_NAMES)


@pytest.mark.parametrize("name", ALL)
def test_distance_to_itself_is_zero(random_metric, images, name):
    x = images(2, 40, 36)
    assert torch.equal(random_metric(name)(x, x.clone(), n=3), torch.zeros(2))


@pytest.mark.parametrize("name", ALL)
def test_distance_positive_and_shape(random_metric, images, name):
    d = random_metric(name)(images(3, 40, 36, seed=1), images(3, 40, 36, seed=2), n=2)
    assert d.shape == (3,) and d.dtype == torch.float32 and (d > 0).all()


@pytest.mark.parametrize("name", ["elpips-vgg", "elpips-squeeze"])
def test_symmetric_for_fixed_sample(random_metric, images, name):
    metric = random_metric(name)
    x, y = images(2, 40, 40, seed=3), images(2, 40, 40, seed=4)
    record = elpips.sample_transform(2, 40, 40, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(metric(x, y, transform=record, dropout=False),
                               metric(y, x, transform=record, dropout=False), rtol=1e-6, atol=0)
    # with dropout: same generator state -> same masks -> symmetric too
    dxy = metric(x, y, transform=record, generator=torch.Generator().manual_seed(9))
    dyx = metric(y, x, transform=record, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(dxy, dyx, rtol=1e-6, atol=0)


def test_fixed_sample_is_deterministic_and_batch_independent(random_metric, images):
    metric = random_metric("elpips-vgg")
    x, y = images(3, 32, 32, seed=6), images(3, 32, 32, seed=7)
    record = elpips.sample_transform(3, 32, 32, generator=torch.Generator().manual_seed(8))
    batch = metric(x, y, transform=record, dropout=False)
    torch.testing.assert_close(batch, metric(x, y, transform=record, dropout=False), rtol=0, atol=0)
    for i in range(3):
        single = elpips.TransformRecord(record.scale_level, record.scale_offset, record.offset[i:i + 1],
                                        record.flip[i:i + 1], record.swap, record.permutation[i:i + 1],
                                        record.color[i:i + 1])
        alone = metric(x[i:i + 1], y[i:i + 1], transform=single, dropout=False)
        torch.testing.assert_close(alone, batch[i:i + 1], rtol=1e-5, atol=0)


def test_seeded_metric_reproducible(images):
    x, y = images(1, 32, 32, seed=1), images(1, 32, 32, seed=2)
    a = elpips.Metric("elpips-vgg", backbone_weights="random", seed=3, device="cpu")(x, y, n=2)
    b = elpips.Metric("elpips-vgg", backbone_weights="random", seed=3, device="cpu")(x, y, n=2)
    c = elpips.Metric("elpips-vgg", backbone_weights="random", seed=4, device="cpu")(x, y, n=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", ["elpips-vgg", "lpips-squeeze", "l2"])
def test_gradcheck_float64(name, images):
    metric = elpips.Metric(name, backbone_weights="random", device="cpu").double()
    x = (0.1 + 0.8 * images(1, 18, 17, seed=10)).double().requires_grad_()
    y = (0.1 + 0.8 * images(1, 18, 17, seed=11)).double().requires_grad_()
    if metric.is_stochastic:
        record = elpips.sample_transform(1, 18, 17, generator=torch.Generator().manual_seed(12))
        sample = metric.sample_for(record, dropout=True, generator=torch.Generator().manual_seed(13))

        def function(a, b):
            return metric.distance_between(metric.features(a, sample), metric.features(b, sample))
    else:
        def function(a, b):
            return metric(a, b)
    assert function(x, y).dtype == torch.float64
    assert torch.autograd.gradcheck(function, (x, y), eps=1e-6, atol=1e-4, rtol=1e-3, fast_mode=True)


def test_gradient_flows_to_both_and_not_to_weights(random_metric, images):
    metric = random_metric("elpips-vgg")
    x = images(2, 32, 32, seed=1).requires_grad_()
    y = images(2, 32, 32, seed=2).requires_grad_()
    metric(x, y).sum().backward()
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in metric.parameters())


def test_compare_shares_samples(random_metric, images):
    metric = random_metric("elpips-vgg")
    reference, a = images(1, 32, 32, seed=1), images(1, 32, 32, seed=2)
    distances = metric.compare(reference, [a, a, reference], n=2)
    assert distances.shape == (3, 1)
    assert torch.equal(distances[0], distances[1])  # same samples for every candidate
    assert distances[2].item() == 0.0
    separate = [metric(reference, a).item() for _ in range(2)]
    assert separate[0] != separate[1]  # independent calls draw different samples


def test_compare_equals_features_under_one_sample(random_metric, images):
    metric = random_metric("elpips-vgg", seed=21)
    reference, a, b = images(2, 32, 32, seed=1), images(2, 32, 32, seed=2), images(2, 32, 32, seed=3)
    compared = metric.compare(reference, torch.stack([a, b]))
    metric.generator.manual_seed(21)
    sample = metric.sample(2, 32, 32)
    ref_features = metric.features(reference, sample)
    expected = torch.stack([metric.distance_between(metric.features(c, sample), ref_features) for c in (a, b)])
    torch.testing.assert_close(compared, expected, rtol=1e-6, atol=0)


def test_estimate_stops_on_its_bounds(random_metric, images):
    metric = random_metric("elpips-vgg")
    x, y = images(1, 24, 24, seed=1), images(1, 24, 24, seed=2)
    estimate = metric.estimate(x, y, abs_tol=0.01, rel_tol=0.1, max_samples=2000, batch=10)
    converged = estimate.half_width <= min(0.01, 0.1 * float(estimate.mean))
    assert bool(converged.all()) or estimate.samples == 2000
    assert estimate.samples % 10 == 0 and estimate.draws.shape == (estimate.samples, 1)
    torch.testing.assert_close(estimate.mean, estimate.draws.mean(0))
    capped = metric.estimate(x, y, abs_tol=1e-9, rel_tol=1e-9, max_samples=15, batch=10)
    assert capped.samples == 15
    mean, half_width, samples = capped
    assert samples == 15 and torch.equal(mean, capped.mean) and torch.equal(half_width, capped.half_width)
    deterministic = random_metric("lpips-vgg").estimate(x, y)
    assert deterministic.samples == 1 and deterministic.half_width.item() == 0


def test_autocast_bfloat16_close_to_float32(random_metric, images):
    metric = random_metric("elpips-vgg")
    x, y = images(2, 32, 32, seed=1), images(2, 32, 32, seed=2)
    record = elpips.sample_transform(2, 32, 32, generator=torch.Generator().manual_seed(3))
    reference = metric(x, y, transform=record, dropout=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = metric(x, y, transform=record, dropout=False)
    assert low.dtype == torch.float32
    assert ((low - reference).abs() / reference).max() < 5e-2


@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.rand(1, 1, 32, 32), r"\[N, 3, H, W\]"),
        (torch.rand(1, 4, 32, 32), r"\[N, 3, H, W\]"),
        (torch.rand(3, 32, 32), r"\[N, 3, H, W\]"),
        (torch.full((1, 3, 32, 32), float("nan")), "NaN or Inf"),
        (torch.full((1, 3, 32, 32), float("inf")), "NaN or Inf"),
        (torch.full((1, 3, 32, 32), 1.5), r"values in \[0, 1\]"),
        (torch.full((1, 3, 32, 32), -0.1), r"values in \[0, 1\]"),
        ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "floating-point"),
        (torch.rand(1, 3, 8, 32), "at least 16x16"),
    ],
)
def test_bad_inputs_raise_value_error(random_metric, bad, message):
    with pytest.raises(ValueError, match=message):
        random_metric("elpips-vgg")(bad, torch.rand(1, 3, 32, 32))


def test_shape_mismatch_and_bad_n(random_metric):
    metric = random_metric("elpips-vgg")
    with pytest.raises(ValueError, match="same shape"):
        metric(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 40))
    with pytest.raises(ValueError, match="n must be"):
        metric(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), n=0)
    with pytest.raises(ValueError, match="unknown metric"):
        elpips.Metric("elpips-alex", backbone_weights="random")
    with pytest.raises(ValueError, match="scale level"):
        elpips.Metric("elpips-vgg", backbone_weights="random", scale_levels=8, device="cpu")(
            torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))


def test_l2_is_rms(random_metric, images):
    x, y = images(2, 20, 20, seed=1), images(2, 20, 20, seed=2)
    expected = ((x.double() - y.double()) ** 2).mean(dim=(1, 2, 3)).sqrt().float()
    torch.testing.assert_close(random_metric("l2")(x, y), expected)


def test_reports_uncalibrated_random_backbone(random_metric):
    metric = random_metric("elpips-vgg")
    assert metric.calibrated is False
    assert "UNCALIBRATED" in metric.weights_info.description and "UNCALIBRATED" in repr(metric)
