"""Atomic checkpoints for long-running solvers (shared by the barycenter and geodesic solvers).

A checkpoint is a plain dict of tensors, numbers and strings saved with :func:`torch.save` to a temporary file
and renamed into place, so an interrupted write never leaves a corrupt checkpoint. RNG states of torch
generators are stored as tensors, so a resumed run continues bit-exactly.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from elpips.io import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"
"""The checkpoint's file name inside a run folder (every command that resumes uses it)."""

FORMAT_VERSION = 1


def checkpoint_format(solver: str, version: int = FORMAT_VERSION) -> str:
    """The format tag of a solver's checkpoints: ``"elpips-<solver>/<version>"``."""
    return f"elpips-{solver}/{version}"


def check_format(state: dict[str, Any], solver: str, path: str | os.PathLike) -> None:
    """Raise ``ValueError`` unless ``state`` (read from ``path``) is a checkpoint of ``solver``."""
    found = state.get("format") if isinstance(state, dict) else None
    if found != checkpoint_format(solver):
        raise ValueError(f"'{path}' is not a {solver} checkpoint (format {found!r})")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``path`` (parent folders are created). The state is serialised in memory
    and written with one plain file write, so a failing write (a full disk) is an ``OSError`` with its cause,
    not a serialiser's position error."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getbuffer())
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
