"""Shared dropout masks for one ensemble sample (``docs/algorithm.md#dropout``).

Before every convolution the input is multiplied by ``m / keep``, ``m ~ Bernoulli(keep)``, elementwise (on the
CPU drawn as geometric gaps between the dropped elements, :func:`dropped_positions`; elsewhere by ``bernoulli_``). The
mask has the shape of one batch ``[N, C, H, W]`` and is shared by every group of images that takes part in the
same distance evaluation (x, y, candidates, path frames): image ``i`` of every group sees the same mask. The random
numbers fill it channel fastest (channels-last order) in every memory layout, so a seed gives the same masks
whether the network runs channels-last or not.

A :class:`DropoutMasks` object draws each layer's mask the first time that layer asks for it and keeps it, so
several forward passes (say, references without a graph and then x with one) see identical masks.
"""

from __future__ import annotations

import math

import torch

from .ensemble import DEFAULT_DROPOUT_KEEP

GAP_METHOD_DEVICES = ("cpu",)
"""Device types whose masks are drawn as geometric gaps (~1% of the random numbers). On a GPU ``bernoulli_`` is one
fast kernel, and the gap method's data-dependent length would make the host wait for the device at every layer."""


def dropped_positions(count: int, drop_probability: float, generator: torch.Generator,
                      first_draw: int | None = None) -> torch.Tensor:
    """Indices in ``0..count-1`` of the dropped elements of ``count`` i.i.d. Bernoulli(``drop_probability``)
    trials, drawn as geometric gaps between drops.

    In a sequence of independent trials the gaps between successes are independent ``Geometric(p)`` variables,
    so this is exactly the distribution of ``bernoulli_`` masks, but it draws about ``count * p`` random numbers
    instead of ``count`` (10x faster for the 1% drop rate of E-LPIPS). ``first_draw`` (tests) sets how many gaps
    the first round draws; further rounds continue after the last drop (the process is memoryless).

    Returns:
        ``[D]`` long tensor on the generator's device, increasing.
    """
    if not 0.0 < drop_probability < 1.0:
        raise ValueError(f"drop_probability must be in (0, 1), got {drop_probability}")
    device = generator.device
    parts: list[torch.Tensor] = []
    start = 0
    while True:
        expected = (count - start) * drop_probability
        draws = first_draw if first_draw is not None and not parts else int(expected + 6 * math.sqrt(expected) + 16)
        gaps = torch.empty(draws, dtype=torch.long, device=device).geometric_(drop_probability, generator=generator)
        positions = gaps.cumsum_(0).add_(start - 1)  # the drops' 1-based trial numbers, as 0-based indices
        inside = positions[positions < count]
        parts.append(inside)
        if inside.numel() < draws:  # the last gap ran past the end: every trial has been decided
            return torch.cat(parts) if len(parts) > 1 else inside
        start = int(positions[-1]) + 1


class DropoutMasks:
    """Lazily drawn, cached dropout masks for one ensemble sample.

    Args:
        seed: seeds the generator the masks are drawn from (one generator per device).
        keep_probability: probability of keeping an element; kept elements are scaled by ``1/keep``.
    """

    def __init__(self, seed: int, keep_probability: float = DEFAULT_DROPOUT_KEEP) -> None:
        if not 0.0 < keep_probability <= 1.0:
            raise ValueError(f"keep_probability must be in (0, 1], got {keep_probability}")
        self.seed = int(seed)
        self.keep_probability = float(keep_probability)
        self._masks: dict[int, torch.Tensor] = {}
        self._generator: torch.Generator | None = None

    def _generator_for(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def mask(self, layer: int, shape: torch.Size, device: torch.device, dtype: torch.dtype,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """The mask (already divided by ``keep``) for convolution number ``layer``, shape ``shape``
        ``[N, C, H, W]``, in ``memory_format`` (``torch.channels_last`` or the default).

        The random numbers fill the mask in channels-last order (channel fastest) whatever the layout asked
        for, so a sample's masks, and hence its distances, do not depend on the memory layout the network runs in.
        """
        cached = self._masks.get(layer)
        if cached is None:
            cached = self._draw(shape, device)
            self._masks[layer] = cached = cached.contiguous(memory_format=memory_format)
        elif cached.shape != shape:
            raise ValueError(
                f"dropout mask for layer {layer} was drawn for shape {tuple(cached.shape)}, now asked for "
                f"{tuple(shape)}: every forward pass of one sample must use the same batch and image size"
            )
        return cached.to(device=device, dtype=dtype).contiguous(memory_format=memory_format)

    def _draw(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """A fresh ``[N, C, H, W]`` mask whose storage is ``[N, H, W, C]`` (channels-last strides)."""
        batch, channels, height, width = shape
        storage_shape = (batch, height, width, channels)
        generator = self._generator_for(device)
        if device.type in GAP_METHOD_DEVICES:
            storage = torch.full(storage_shape, 1.0 / self.keep_probability, device=device)
            if self.keep_probability < 1.0:
                dropped = dropped_positions(storage.numel(), 1.0 - self.keep_probability, generator)
                storage.view(-1).index_fill_(0, dropped, 0.0)
        else:
            storage = torch.empty(storage_shape, device=device).bernoulli_(self.keep_probability,
                                                                            generator=generator)
            storage.mul_(1.0 / self.keep_probability)
        return storage.permute(0, 3, 1, 2)

    def __call__(self, inputs: torch.Tensor, layer: int, groups: int) -> torch.Tensor:
        """Multiply ``inputs`` ``[G*N, C, H, W]`` by layer ``layer``'s mask, shared over the ``G`` groups.

        The mask takes the memory layout of ``inputs`` (channels-last or the default), so the product is one
        vectorised pass and its gradient keeps that layout.
        """
        batch = inputs.shape[0] // groups
        shape = torch.Size((batch, *inputs.shape[1:]))
        layout = torch.channels_last if inputs.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        mask = self.mask(layer, shape, inputs.device, inputs.dtype, layout)
        if groups == 1:  # no reshape: a 5-D view with size-1 dims can give the gradient odd strides
            return inputs * mask
        grouped = inputs.reshape(groups, *shape) * mask
        return grouped.reshape(inputs.shape)
