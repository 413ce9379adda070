"""``Metric(precision=...)``: the choice and its record, accuracy of bfloat16 against float32 at fixed ensemble
samples (distances, gradients, maps), dropout masks independent of the precision, and the float16 gradient scale
cancelling out (its logic, run on the CPU in bfloat16)."""

from __future__ import annotations

import pytest
import torch
from elpips import Metric
from elpips import precision as precision_module
from elpips.precision import resolve_precision

SIZE = 32


def _metric(name: str = "elpips-vgg", **options) -> Metric:
    return Metric(name, backbone_weights="random", seed=0, device="cpu", scale_levels=1, **options)


def _pair(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, SIZE, SIZE, generator=generator)
    y = (x + 0.15 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    return x, y


def _distance_and_gradient(metric: Metric, x: torch.Tensor, y: torch.Tensor, sample) -> tuple[torch.Tensor, ...]:
    variable = x.clone().requires_grad_(True)
    distance = metric.distance_between(metric.features(variable, sample), metric.features(y, sample))
    distance.sum().backward()
    return distance.detach(), variable.grad.flatten()


def test_unknown_precision_and_float16_off_cuda_are_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        _metric(precision="half")
    with pytest.raises(ValueError, match="precision='float16' needs a CUDA device"):
        _metric(precision="float16")


def test_auto_resolves_per_hardware_and_the_record_holds_the_choice():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, bfloat16_available=True) == "bfloat16"
    assert resolve_precision("auto", cpu, bfloat16_available=False) == "float32"
    metric = _metric(precision="auto")
    expected = "bfloat16" if precision_module.native_bfloat16(cpu) else "float32"
    assert metric.precision == expected and metric.identity()["precision"] == expected
    assert _metric().identity()["precision"] == "float32"
    assert _metric(precision="bfloat16").identity()["precision"] == "bfloat16"
    assert Metric("l2", device="cpu", precision="bfloat16").precision == "float32"


@pytest.mark.parametrize(("name", "median", "largest", "min_cosine"), [
    ("elpips-vgg", 5e-3, 2e-2, 0.99), ("lpips-vgg", 5e-3, 2e-2, 0.95), ("elpips-squeeze", 1e-2, 5e-2, 0.9)])
def test_bfloat16_distances_and_gradients_match_float32_at_fixed_samples(name, median, largest, min_cosine):
    """VGG: median relative error < 0.5%, max < 2%. E-LPIPS gradients: cosine >= 0.99; LPIPS-VGG's reach the input
    only through the network (no input tap; max pooling routes them through single elements) and measured
    0.97-0.99. SqueezeNet at 32 px (2x2 feature maps at the end): median 0.6%, max 3%, cosine 0.93-0.97.
    docs/performance.md#precision."""
    full, low = _metric(name), _metric(name, precision="bfloat16")
    x, y = _pair()
    errors, cosines = [], []
    for _ in range(4):
        sample = full.sample(x.shape[0], SIZE, SIZE)
        reference, reference_grad = _distance_and_gradient(full, x, y, sample)
        value, grad = _distance_and_gradient(low, x, y, sample)
        assert value.dtype == torch.float32
        errors.append((value - reference).abs() / reference)
        cosines.append(torch.nn.functional.cosine_similarity(grad, reference_grad, dim=0))
    errors = torch.cat(errors)
    assert errors.median() < median and errors.max() < largest, errors
    assert min(cosines) >= min_cosine, cosines


def test_bfloat16_maps_match_float32():
    full, low = _metric(), _metric(precision="bfloat16")
    x, y = _pair(batch=1)
    transform = full.sample(1, SIZE, SIZE).transform
    reference = full.spatial(x, y, transform=transform, dropout=False)
    value = low.spatial(x, y, transform=transform, dropout=False)
    assert value.dtype == torch.float32
    assert ((value - reference).norm() / reference.norm()) < 2e-2


def test_dropout_masks_are_the_same_in_every_precision():
    full, low = _metric(), _metric(precision="bfloat16")
    x, _ = _pair()
    sample = full.sample(x.shape[0], SIZE, SIZE)
    full.features(x, sample)
    masks = {layer: mask.clone() for layer, mask in sample.dropout._masks.items()}
    fresh = full.sample_for(sample.transform)
    fresh.dropout = type(sample.dropout)(sample.dropout.seed, sample.dropout.keep_probability)
    low.features(x, fresh)
    assert masks.keys() == fresh.dropout._masks.keys()
    assert all(torch.equal(masks[layer], fresh.dropout._masks[layer]) for layer in masks)


def test_gradients_keep_the_callers_dtype_and_checkpointing_agrees():
    low = _metric(precision="bfloat16")
    checkpointed = _metric(precision="bfloat16", checkpoint_activations=True)
    x, y = _pair()
    transform = low.sample(x.shape[0], SIZE, SIZE).transform
    x64 = x.double().requires_grad_(True)
    low(x64, y, transform=transform, dropout=False).sum().backward()
    assert x64.grad.dtype == torch.float64
    again = x.clone().requires_grad_(True)
    checkpointed(again, y, transform=transform, dropout=False).sum().backward()
    assert torch.allclose(again.grad.double(), x64.grad, rtol=0, atol=1e-3 * x64.grad.abs().max().item())


def test_the_float16_gradient_scale_cancels_out(monkeypatch):
    """float16 scales the gradient inside the network and divides it out at its input: the same plumbing run in
    bfloat16 with the scale forced on gives the unscaled gradient."""
    metric = _metric(precision="bfloat16")
    x, y = _pair()
    sample = metric.sample(x.shape[0], SIZE, SIZE, dropout=False)
    _, unscaled = _distance_and_gradient(metric, x, y, sample)
    for module in ("elpips._features", "elpips._passes"):
        monkeypatch.setattr(f"{module}.gradient_scale", lambda precision: 2.0 ** 12)
    _, scaled = _distance_and_gradient(metric, x, y, sample)
    assert torch.allclose(scaled, unscaled, rtol=0, atol=1e-6 * unscaled.abs().max().item())


def test_weights_cast_once_give_autocasts_results_bit_for_bit(monkeypatch):
    from elpips.backbones import common

    cat = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    dog = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))

    def distance_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
        metric = Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=0, precision="bfloat16")
        x = cat.clone().requires_grad_(True)
        distance = metric(x, dog, n=2)
        distance.sum().backward()
        return distance.detach(), x.grad

    cached = distance_and_gradient()
    with monkeypatch.context() as patch:
        patch.setattr(common, "autocast_weights", lambda conv, device_type: None)  # autocast casts every pass
        per_pass = distance_and_gradient()
    assert torch.equal(cached[0], per_pass[0]) and torch.equal(cached[1], per_pass[1])


def test_cast_weights_are_kept_until_the_weights_change():
    from elpips.backbones.common import autocast_weights

    conv = torch.nn.Conv2d(3, 4, 3)
    for name in list(conv._parameters):  # frozen buffers, as in the backbones
        conv.register_buffer(name, conv._parameters.pop(name).detach())
    assert autocast_weights(conv, "cpu") is None  # no autocast: nothing to cast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = autocast_weights(conv, "cpu")
        assert first is not None and first[0].dtype == torch.bfloat16 and first[1] is not None
        assert autocast_weights(conv, "cpu")[0] is first[0]  # cast once
        with torch.no_grad():
            conv.weight.mul_(2)
        second = autocast_weights(conv, "cpu")
        assert second[0] is not first[0] and torch.equal(second[0], conv.weight.to(torch.bfloat16))
    assert "_autocast_weights" not in conv.state_dict() and len(conv.state_dict()) == 2
