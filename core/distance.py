"""Pure functions for the distance of one ensemble sample (``docs/algorithm.md#networks``,
``#distance``)."""

from __future__ import annotations

import torch

INPUT_SHIFT = (-0.030, -0.088, -0.188)
INPUT_SCALE = (0.458, 0.448, 0.450)
NORMALIZE_EPS = 1e-10

FIRST_ORDER_MESSAGE = (
    "E-LPIPS's fast backward passes are first order: to differentiate a gradient again (create_graph=True), "
    "create the metric with Metric(..., higher_order_gradients=True)"
)


def _first_order_only() -> None:
    """Raise in a hand-written backward that is asked to build a graph (``create_graph=True``): its result
    would be a constant, and second derivatives through it silently zero."""
    if torch.is_grad_enabled():
        raise RuntimeError(FIRST_ORDER_MESSAGE)


def scale_input(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> the network's input: ``((2x - 1) - shift) / scale`` per channel."""
    shift = torch.tensor(INPUT_SHIFT, device=images.device, dtype=images.dtype)[:, None, None]
    scale = torch.tensor(INPUT_SCALE, device=images.device, dtype=images.dtype)[:, None, None]
    return (images * 2 - 1 - shift) / scale


def normalize_channels(features: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """Unit-normalise every pixel's feature vector: ``f / (||f||_2 + 1e-10)`` over dim -3 (channels).

    ``features``: ``[..., C, h, w]``, any memory layout (the result keeps it); the gradient is finite (not NaN)
    at a pixel whose features are all 0. ``fused=True``: a hand-written first-order backward
    (:class:`_NormalizeChannels`); ``False``: plain autograd operations (slower; differentiable any number of
    times, and usable under ``torch.func`` transforms).
    """
    if fused:
        return _NormalizeChannels.apply(features)
    norm = _safe_sqrt(features.square().sum(dim=-3, keepdim=True))
    return features * (1.0 / (norm + NORMALIZE_EPS))


class _NormalizeChannels(torch.autograd.Function):
    """``u = f * r`` with ``r = 1 / (n + eps)``, ``n = ||f||`` over channels, and the hand-written backward

    ``df = g * r - f * (r^2 / n) * sum_c(g_c f_c)``

    (the chain rule through ``n``; the last term is 0 where ``n = 0``). Autograd's own backward of the
    same expression makes about eight full-size passes over the tap (square, sum, reciprocal and product
    rules); this one makes four (a product, a channel sum, a product and an in-place fused multiply-add), and
    keeps the memory layout of ``f`` (channels-last stays channels-last).
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor) -> torch.Tensor:
        if features.is_contiguous(memory_format=torch.channels_last):  # channels adjacent: one fused pass
            norm = torch.linalg.vector_norm(features, dim=-3, keepdim=True)
        else:  # strided channels: vector_norm is 6x slower here than a square and a sum (CPU, 128 px)
            norm = features.square().sum(dim=-3, keepdim=True).sqrt_()
        reciprocal = (norm + NORMALIZE_EPS).reciprocal_()
        ctx.save_for_backward(features, norm, reciprocal)
        return features * reciprocal

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        _first_order_only()
        features, norm, reciprocal = ctx.saved_tensors
        projection = (grad * features).sum(dim=-3, keepdim=True)
        scale = torch.where(norm > 0, projection * reciprocal.square() / norm, 0.0)
        return (grad * reciprocal).addcmul_(features, scale, value=-1.0)


def _safe_sqrt(values: torch.Tensor) -> torch.Tensor:
    """``sqrt`` with gradient 0 instead of NaN at exactly 0 (a pixel whose ReLU features are all zero).

    The forward value is identical to ``torch.sqrt``.
    """
    positive = values > 0
    safe = torch.where(positive, values, torch.ones_like(values))
    return torch.where(positive, torch.sqrt(safe), torch.zeros_like(values))


def tap_distance(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """``mean_pixels( sum_c w_c (a - b)^2 )`` for normalised taps ``[..., C, h, w]``; returns ``[...]``.

    Leading dims broadcast (``[G, N, C, h, w]`` against ``[N, C, h, w]``); ``weight``: ``[C]``. Computed with
    autocast off (the taps are float32 or float64). ``fused=True``: a hand-written first-order backward
    (:class:`_TapDistance`); ``False``: plain autograd operations (see :func:`normalize_channels`).
    """
    with torch.autocast(device_type=a.device.type, enabled=False):
        if fused:
            return _TapDistance.apply(a, b, weight.to(a.dtype))
        # mean_pixels(sum_c w_c s_c) == sum_c w_c mean_pixels(s_c): one reduction pass, then a tiny dot product.
        return (a - b).square().mean(dim=(-2, -1)) @ weight.to(a.dtype)


def _weighted_square_mean(diff: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``mean_pixels(sum_c w_c diff_c^2)`` over ``[..., C, h, w]``: ``[...]``."""
    # mean_pixels(sum_c w_c s_c) == sum_c w_c mean_pixels(s_c): one reduction pass, then a tiny dot product.
    return (diff.square().sum(dim=(-2, -1)) * weight).sum(dim=-1) / (diff.shape[-1] * diff.shape[-2])


def _weighted_square_mean_backward(diff: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The gradient of :func:`_weighted_square_mean` with respect to ``diff``: ``2 w_c diff grad / (h w)``, one
    pass, in ``diff``'s memory layout."""
    coefficient = grad.unsqueeze(-1) * weight * (2.0 / (diff.shape[-1] * diff.shape[-2]))
    return diff * coefficient[..., None, None]


class _TapDistance(torch.autograd.Function):
    """The tap distance with a one-pass backward ``d/da = 2 w_c (a - b) g / (h w)`` (``d/db`` its negative,
    summed over broadcast dims). Autograd's backward of ``((a - b)^2).mean(...) @ w`` makes three full-size
    passes and, through the mean's broadcast, returns the gradient in the default (NCHW) layout even for
    channels-last taps, which then costs layout conversions further down the backward pass."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        diff = a - b
        ctx.save_for_backward(diff, weight)
        ctx.input_shapes = (a.shape, b.shape)
        return _weighted_square_mean(diff, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        _first_order_only()
        diff, weight = ctx.saved_tensors
        a_shape, b_shape = ctx.input_shapes
        grad_diff = _weighted_square_mean_backward(diff, weight, grad)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = grad_diff if grad_diff.shape == a_shape else grad_diff.sum_to_size(a_shape)
        if ctx.needs_input_grad[1]:
            grad_b = -(grad_diff if grad_diff.shape == b_shape else grad_diff.sum_to_size(b_shape))
        return grad_a, grad_b, None


def weighted_distance(features_a: list[torch.Tensor], features_b: list[torch.Tensor], weights: list[torch.Tensor],
                      fused: bool = True) -> torch.Tensor:
    """Sum over taps of :func:`tap_distance`; leading dims broadcast (``[G, N]`` vs ``[N]`` etc.)."""
    total = tap_distance(features_a[0], features_b[0], weights[0], fused)
    for a, b, w in zip(features_a[1:], features_b[1:], weights[1:], strict=False):
        total = total + tap_distance(a, b, w, fused)
    return total


def adjacent_tap_distances(sequence: torch.Tensor, left: torch.Tensor | None, right: torch.Tensor | None,
                           weight: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """:func:`tap_distance` of every adjacent pair in ``left, sequence[0], ..., sequence[G-1], right``.

    Args:
        sequence: ``[G, N, C, h, w]`` normalised taps of ``G`` consecutive groups (a path's frames).
        left, right: ``[1, N, C, h, w]`` neighbours before and after the sequence, or ``None``.
        weight: ``[C]``.

    Returns:
        ``[P, N]`` with ``P = G - 1 + (left given) + (right given)`` (``G >= 1``), pairs in sequence order.
        Differentiable in all three tensors (first order only with ``fused=True``); ``left`` and ``right`` must
        have the sequence's ``N`` (no broadcasting). Equal to slicing the concatenated sequence and calling
        :func:`tap_distance`, but the gradient of ``sequence`` is assembled in one tensor of its own memory
        layout: autograd's slicing backward would allocate a zero tensor in the default layout per slice (two
        per tap here).
        ``fused=False`` computes exactly that slicing with plain autograd operations (see
        :func:`normalize_channels`).
    """
    if not fused:
        frames = torch.cat([part for part in (left, sequence, right) if part is not None])
        return tap_distance(frames[1:], frames[:-1], weight, fused=False)
    with torch.autocast(device_type=sequence.device.type, enabled=False):
        return _AdjacentTapDistances.apply(sequence, left, right, weight.to(sequence.dtype))


class _AdjacentTapDistances(torch.autograd.Function):
    """Pair differences ``x_{k+1} - x_k`` as up to three pieces (left pair, interior pairs, right pair); the
    backward adds ``2 w_c diff g / (h w)`` to the later member of every pair and subtracts it from the earlier."""

    @staticmethod
    def forward(ctx, sequence, left, right, weight):
        pieces = {}
        if left is not None:
            pieces["left"] = sequence[:1] - left
        if sequence.shape[0] > 1:
            pieces["inner"] = sequence[1:] - sequence[:-1]
        if right is not None:
            pieces["right"] = right - sequence[-1:]
        ctx.save_for_backward(weight, *pieces.values())
        ctx.kinds = list(pieces)
        ctx.sequence_template = torch.empty_like(sequence, device="meta")  # shape and layout, no memory
        if not pieces:
            return sequence.new_zeros(0, sequence.shape[1])
        return torch.cat([_weighted_square_mean(piece, weight) for piece in pieces.values()])

    @staticmethod
    def backward(ctx, grad):
        _first_order_only()
        weight, *pieces = ctx.saved_tensors
        grad_sequence = grad_left = grad_right = None
        if ctx.needs_input_grad[0]:
            grad_sequence = torch.zeros_like(ctx.sequence_template, device=grad.device)
        sizes = [piece.shape[0] for piece in pieces]
        for kind, piece, piece_grad in zip(ctx.kinds, pieces, grad.split(sizes), strict=False):
            grad_diff = _weighted_square_mean_backward(piece, weight, piece_grad)
            if kind == "left":
                grad_left = -grad_diff if ctx.needs_input_grad[1] else None
                if grad_sequence is not None:
                    grad_sequence[:1] += grad_diff
            elif kind == "inner":
                if grad_sequence is not None:
                    grad_sequence[1:] += grad_diff
                    grad_sequence[:-1] -= grad_diff
            else:
                grad_right = grad_diff if ctx.needs_input_grad[2] else None
                if grad_sequence is not None:
                    grad_sequence[-1:] -= grad_diff
        return grad_sequence, grad_left, grad_right, None


def weighted_adjacent_distances(sequence: list[torch.Tensor], left: list[torch.Tensor] | None,
                                right: list[torch.Tensor] | None, weights: list[torch.Tensor],
                                fused: bool = True) -> torch.Tensor:
    """Sum over taps of :func:`adjacent_tap_distances`: ``[P, N]``."""
    total = None
    for index, (tap, weight) in enumerate(zip(sequence, weights, strict=False)):
        distances = adjacent_tap_distances(tap, None if left is None else left[index],
                                           None if right is None else right[index], weight, fused)
        total = distances if total is None else total + distances
    if total is None:
        raise ValueError("weighted_adjacent_distances needs at least one tap")
    return total


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square difference over ``[..., C, H, W]``; gradient 0 (not NaN) where ``a == b``."""
    return _safe_sqrt((a - b).square().mean(dim=(-3, -2, -1)))
