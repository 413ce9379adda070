"""Device choice: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import warnings

import torch

SUPPORTED_DEVICE_TYPES = ("cpu", "cuda", "mps")


def _cuda_available() -> bool:
    """``torch.cuda.is_available()`` without the warning a CUDA build prints on a machine with no GPU driver."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.cuda.is_available()


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> the best available device; otherwise ``device``, checked to exist."""
    if device is None or device == "auto":
        if _cuda_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: {error}") from None
    if resolved.type not in SUPPORTED_DEVICE_TYPES:
        raise ValueError(f"device {device!r} is not supported; use one of: {', '.join(SUPPORTED_DEVICE_TYPES)}")
    if resolved.type == "cuda" and not _cuda_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available")
    return resolved
