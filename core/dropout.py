"""Shared dropout masks for one ensemble sample (spec section 3, "Dropout").

Before every convolution the input is multiplied by ``m / keep``, ``m ~ Bernoulli(keep)``, elementwise. The
mask has the shape of one batch ``[N, C, H, W]`` and is shared by every group of images that takes part in the
same distance evaluation (x, y, candidates, path frames): image ``i`` of every group sees the same mask.

A :class:`DropoutMasks` object draws each layer's mask the first time that layer asks for it and keeps it, so
several forward passes (say, references without a graph and then x with one) see identical masks.
"""

from __future__ import annotations

import torch

DEFAULT_KEEP_PROBABILITY = 0.99


class DropoutMasks:
    """Lazily drawn, cached dropout masks for one ensemble sample.

    Args:
        seed: seeds the generator the masks are drawn from (one generator per device).
        keep_probability: probability of keeping an element; kept elements are scaled by ``1/keep``.
    """

    def __init__(self, seed: int, keep_probability: float = DEFAULT_KEEP_PROBABILITY) -> None:
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

    def mask(self, layer: int, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The mask (already divided by ``keep``) for convolution number ``layer``, shape ``shape``."""
        cached = self._masks.get(layer)
        if cached is None:
            generator = self._generator_for(device)
            cached = torch.empty(shape, device=device).bernoulli_(self.keep_probability, generator=generator)
            cached.mul_(1.0 / self.keep_probability)
            self._masks[layer] = cached
        elif cached.shape != shape:
            raise ValueError(
                f"dropout mask for layer {layer} was drawn for shape {tuple(cached.shape)}, now asked for "
                f"{tuple(shape)}: every forward pass of one sample must use the same batch and image size"
            )
        return cached.to(device=device, dtype=dtype)

    def __call__(self, inputs: torch.Tensor, layer: int, groups: int) -> torch.Tensor:
        """Multiply ``inputs`` ``[G*N, C, H, W]`` by layer ``layer``'s mask, shared over the ``G`` groups."""
        batch = inputs.shape[0] // groups
        shape = torch.Size((batch, *inputs.shape[1:]))
        mask = self.mask(layer, shape, inputs.device, inputs.dtype)
        grouped = inputs.reshape(groups, *shape) * mask
        return grouped.reshape(inputs.shape)
