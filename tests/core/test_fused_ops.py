"""The hand-written backward passes (normalisation, tap distance) and the channels-last layout.

Each is checked against an independent computation: autograd through the plain formulas in float64, and the
same metric run in the default memory layout.
"""

from __future__ import annotations

import elpips
import pytest
import torch
from elpips.distance import NORMALIZE_EPS, normalize_channels, tap_distance
from elpips.dropout import DropoutMasks

CHANNELS_LAST = torch.channels_last


def plain_normalize(features: torch.Tensor) -> torch.Tensor:
    """The spec's formula, differentiated by autograd (``sqrt`` made safe at 0 the same way)."""
    squares = features.square().sum(dim=-3, keepdim=True)
    norm = torch.where(squares > 0, squares.clamp_min(1e-300).sqrt(), torch.zeros_like(squares))
    return features / (norm + NORMALIZE_EPS)


def plain_tap_distance(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return ((a - b).square() * weight[:, None, None]).sum(dim=-3).mean(dim=(-2, -1))


@pytest.mark.parametrize("layout", [torch.contiguous_format, CHANNELS_LAST])
def test_normalize_matches_autograd_of_the_formula(layout):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 7, 5, 6, generator=generator, dtype=torch.float64).relu()
    features[0, :, 1, 2] = 0  # a pixel whose ReLU features are all zero
    features = features.contiguous(memory_format=layout).requires_grad_(True)
    upstream = torch.randn(2, 7, 5, 6, generator=generator, dtype=torch.float64).contiguous(memory_format=layout)
    ours = normalize_channels(features)
    (ours_grad,) = torch.autograd.grad((ours * upstream).sum(), features)
    reference = features.detach().clone().requires_grad_(True)
    expected = plain_normalize(reference)
    (expected_grad,) = torch.autograd.grad((expected * upstream).sum(), reference)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours_grad, expected_grad, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(ours_grad).all()
    assert ours.is_contiguous(memory_format=layout) and ours_grad.is_contiguous(memory_format=layout)


def test_normalize_gradcheck():
    features = (torch.rand(2, 4, 3, 3, dtype=torch.float64) + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(normalize_channels, (features,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("a_shape,b_shape", [((3, 2, 5, 4, 4), (2, 5, 4, 4)),  # groups vs one reference
                                             ((2, 5, 4, 4), (2, 5, 4, 4)),
                                             ((2, 5, 4, 4), (3, 2, 5, 4, 4))])
def test_tap_distance_matches_autograd_with_broadcasting(a_shape, b_shape):
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(a_shape, generator=generator, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(b_shape, generator=generator, dtype=torch.float64).requires_grad_(True)
    weight = torch.rand(5, generator=generator, dtype=torch.float64)
    ours = tap_distance(a, b, weight)
    expected = plain_tap_distance(a, b, weight)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=0)
    upstream = torch.randn(ours.shape, generator=generator, dtype=torch.float64)
    ours_grads = torch.autograd.grad((ours * upstream).sum(), (a, b))
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (a, b))
    for got, want in zip(ours_grads, expected_grads, strict=False):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lambda p, q: tap_distance(p, q, weight), (a, b), eps=1e-6, atol=1e-6)


def test_tap_distance_gradient_only_where_asked():
    a = torch.rand(2, 3, 4, 4, requires_grad=True)
    b = torch.rand(2, 3, 4, 4)
    tap_distance(a, b, torch.ones(3)).sum().backward()
    assert a.grad is not None and b.grad is None


def test_double_backward_is_a_clear_error():
    features = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    value = tap_distance(normalize_channels(features), torch.zeros(1, 3, 4, 4, dtype=torch.float64),
                         torch.ones(3, dtype=torch.float64)).sum()
    with pytest.raises(RuntimeError, match="higher_order_gradients=True"):
        torch.autograd.grad(value, features, create_graph=True)


def test_higher_order_gradients_option(images):
    """``higher_order_gradients=True``: second derivatives (checked against finite differences of the
    gradient), ``torch.func.grad``, and the same first-order gradient as the fast path."""
    metric = elpips.Metric("lpips-squeeze", backbone_weights="random", device="cpu",
                           higher_order_gradients=True).double()
    fast = elpips.Metric("lpips-squeeze", backbone_weights="random", device="cpu").double()
    assert "higher_order_gradients=True" in repr(metric)
    x = (0.1 + 0.8 * images(1, 18, 17, seed=10)).double().requires_grad_()
    y = (0.1 + 0.8 * images(1, 18, 17, seed=11)).double()
    assert torch.autograd.gradgradcheck(lambda a: metric(a, y), (x,), eps=1e-6, atol=1e-4, rtol=1e-3,
                                        fast_mode=True)
    (slow_grad,) = torch.autograd.grad(metric(x, y).sum(), x)
    (fast_grad,) = torch.autograd.grad(fast(x, y).sum(), x)
    torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-9, atol=1e-14)
    functional = torch.func.grad(lambda a: metric(a, y).sum())(x.detach())
    torch.testing.assert_close(functional, slow_grad, rtol=1e-9, atol=1e-14)


def test_input_gradient_keeps_the_callers_layout_and_inference_mode_first_call(images):
    """A channels-last network hands a default-layout caller default-layout gradients, and a first call under
    ``torch.inference_mode()`` (which lays out the weights) does not spoil later differentiable calls."""
    metric = elpips.Metric("lpips-vgg", backbone_weights="random", device="cpu", channels_last=False)
    x, y = images(1, 32, 32, seed=1), images(1, 32, 32, seed=2)
    metric.channels_last = True
    with torch.inference_mode():
        metric(x, y)
    assert metric.backbone.features[0].weight.is_contiguous(memory_format=CHANNELS_LAST)
    for name_metric in (metric, elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu")):
        variable = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(name_metric(variable * 1.0, y).sum(), variable)
        assert grad.is_contiguous() and grad.abs().sum() > 0


@pytest.mark.parametrize("gap_devices", [("cpu",), ()])  # (): the bernoulli_ path GPUs take
def test_dropout_mask_values_do_not_depend_on_layout(gap_devices, monkeypatch):
    monkeypatch.setattr("elpips.dropout.GAP_METHOD_DEVICES", gap_devices)
    shape = torch.Size((2, 16, 9, 7))
    default = DropoutMasks(seed=5).mask(0, shape, torch.device("cpu"), torch.float32)
    channels_last = DropoutMasks(seed=5).mask(0, shape, torch.device("cpu"), torch.float32, CHANNELS_LAST)
    assert default.is_contiguous() and channels_last.is_contiguous(memory_format=CHANNELS_LAST)
    assert torch.equal(default, channels_last) and (default == 0).any()
    inputs = torch.rand(shape).contiguous(memory_format=CHANNELS_LAST)
    assert DropoutMasks(seed=5)(inputs, 0, groups=1).is_contiguous(memory_format=CHANNELS_LAST)


def test_default_layout_is_channels_last_on_the_cpu(images):
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu")
    assert metric.memory_format(torch.device("cpu")) == CHANNELS_LAST
    metric(images(1, 32, 32), images(1, 32, 32, seed=1))
    assert metric.backbone.features[0].weight.is_contiguous(memory_format=CHANNELS_LAST)
    plain = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", channels_last=False)
    assert plain.memory_format(torch.device("cpu")) == torch.contiguous_format
    assert "channels_last=False" in repr(plain)


@pytest.mark.parametrize("name", ["elpips-vgg", "elpips-squeeze", "lpips-vgg"])
def test_channels_last_equals_default_layout(images, name):
    """Same seed, same masks: distances agree to float rounding in both layouts, for a plain call (one group)
    and for compare (several groups sharing the masks); so do the gradients."""
    metrics = [elpips.Metric(name, backbone_weights="random", device="cpu", seed=3, channels_last=layout)
               for layout in (True, False)]
    x, y = images(2, 40, 36, seed=1), images(2, 40, 36, seed=2)
    results = []
    for metric in metrics:
        variable = x.clone().requires_grad_(True)
        distances = metric(variable, y, n=2)
        distances.sum().backward()
        compared = metric.compare(y, [x, x.flip(-1)], n=2)
        results.append((distances.detach(), variable.grad, compared))
    (d_cl, g_cl, c_cl), (d_plain, g_plain, c_plain) = results
    assert (d_plain > 0).all()
    torch.testing.assert_close(d_cl, d_plain, rtol=1e-5, atol=0)
    torch.testing.assert_close(c_cl, c_plain, rtol=1e-5, atol=0)
    # Gradients: in float32 a ReLU input within rounding of 0 can switch a unit's gradient on or off (the
    # function is not smooth there), so they agree as a whole, not element by element. LPIPS's max pooling
    # makes this worse: a near-tie in a window routes the gradient to the other pixel in one layout (measured:
    # 0.8% in L2 here, and the float64 gradient sides with either layout depending on the input), so only its
    # distances are compared.
    if name.startswith("elpips"):
        assert ((g_cl - g_plain).norm() / g_plain.norm()).item() < 1e-3


@pytest.mark.parametrize("groups,with_left,with_right", [(4, True, True), (3, False, True), (3, True, False),
                                                        (2, False, False), (1, True, True), (1, True, False)])
@pytest.mark.parametrize("layout", ["default", "channels_last"])
def test_adjacent_tap_distances_match_slices_of_the_sequence(groups, with_left, with_right, layout):
    generator = torch.Generator().manual_seed(4)

    def tap(count: int) -> torch.Tensor:
        values = torch.randn(count * 2, 5, 4, 3, generator=generator, dtype=torch.float64)
        if layout == "channels_last":
            values = values.contiguous(memory_format=CHANNELS_LAST)
        return values.reshape(count, 2, 5, 4, 3).requires_grad_(True)  # [G, N, C, h, w]

    sequence = tap(groups)
    left = tap(1) if with_left else None
    right = tap(1) if with_right else None
    weight = torch.rand(5, generator=generator, dtype=torch.float64)
    ours = elpips.distance.adjacent_tap_distances(sequence, left, right, weight)
    frames = torch.cat([part for part in (left, sequence, right) if part is not None])
    expected = tap_distance(frames[:-1], frames[1:], weight)
    assert ours.shape == expected.shape == (groups - 1 + with_left + with_right, 2)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=0)
    inputs = [t for t in (sequence, left, right) if t is not None]
    upstream = torch.randn(ours.shape, generator=generator, dtype=torch.float64)
    ours_grads = torch.autograd.grad((ours * upstream).sum(), inputs)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), inputs)
    for got, want in zip(ours_grads, expected_grads, strict=False):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
    assert ours_grads[0].stride() == sequence.stride()  # the gradient keeps the taps' layout


@pytest.mark.parametrize("name", ["elpips-vgg", "l2"])
def test_metric_adjacent_distances_equal_distance_between(random_metric, images, name):
    metric = random_metric(name)
    frames = images(5, 32, 32, seed=8)
    sample = metric.sample(1, 32, 32)
    features = metric.features(frames.unsqueeze(1), sample)  # [5, 1, ...] per tap
    sequence = [tap[1:4] for tap in features]
    left, right = [tap[:1] for tap in features], [tap[4:] for tap in features]
    ours = metric.adjacent_distances(sequence, left, right)
    expected = metric.distance_between([tap[:-1] for tap in features], [tap[1:] for tap in features])
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)
    assert metric.adjacent_distances([tap[:1] for tap in features]).shape == (0, 1)
