"""Atomic checkpoints for long-running solvers (shared by the barycenter and geodesic solvers).

A checkpoint is a plain dict of tensors, numbers and strings saved with :func:`torch.save` to a temporary file
and renamed into place, so an interrupted write never leaves a corrupt checkpoint. RNG states of torch
generators are stored as tensors, so a resumed run continues bit-exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .io import atomic_path


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``path`` (parent folders are created)."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no pickled code)."""
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"no checkpoint at '{target}'")
    try:
        return torch.load(target, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"checkpoint '{target}' is unreadable: {error}") from error


def generator_state(generator: torch.Generator) -> torch.Tensor:
    """The generator's state as a tensor that a checkpoint can hold."""
    return generator.get_state().clone()


def restore_generator(generator: torch.Generator, state: torch.Tensor) -> torch.Generator:
    """Put ``state`` (from :func:`generator_state`) back into ``generator``."""
    generator.set_state(state.to(device="cpu", dtype=torch.uint8))
    return generator
