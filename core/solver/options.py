"""Option checks shared by the solvers (every problem is one ``ValueError`` with a clear message)."""

from __future__ import annotations

import torch

CLIP_LOW = 1e-5
CLIP_HIGH = 1.0 - 1e-5
"""Every solver keeps its iterates in ``[1e-5, 1 - 1e-5]``, clipped after every step
(``docs/algorithm.md#barycenters``)."""


def clip_(images: torch.Tensor) -> torch.Tensor:
    """Clip ``images`` in place to ``[CLIP_LOW, CLIP_HIGH]`` (outside autograd); returns them."""
    with torch.no_grad():
        return images.clamp_(CLIP_LOW, CLIP_HIGH)


def make_generator(generator: torch.Generator | int | None,
                   default: torch.Generator | None = None) -> torch.Generator:
    """A CPU generator from a generator, an int seed, or ``None`` (``default`` if given, else freshly seeded)."""
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError("generator must be a CPU torch.Generator (samples are drawn on the CPU)")
        return generator
    if generator is None and default is not None:
        return default
    made = torch.Generator()
    if generator is None:
        made.seed()
    elif isinstance(generator, int) and not isinstance(generator, bool):
        made.manual_seed(generator)
    else:
        raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {generator!r}")
    return made
