"""What determines a result, as plain JSON, and the one comparison a resume makes.

A run's *record* is a JSON-ready dict of everything its numbers depend on: the metric's identity
(:func:`metric_identity`: name, weights' origin and content digest, ensemble settings, precision), the inputs'
digest, the solver's options and the seed. A resumed run recomputes its record and compares it with the saved one
through :func:`differences`; every command's ``run.json`` and both solvers' checkpoints use this comparison (see
docs/architecture.md#run-records).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import torch

PRECISION = "float32"
"""The default arithmetic of the network passes (``Metric(precision=...)``; recorded: another precision gives other
numbers)."""


def tensor_digest(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-256 (hex) of the tensors' float32 bytes, in order, with their shapes.

    Args:
        tensors: any shapes and devices; each is read as contiguous float32 on the CPU.
    """
    digest = hashlib.sha256()
    for tensor in tensors:
        array = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
        digest.update(repr(tuple(array.shape)).encode())
        digest.update(array.numpy().tobytes())
    return digest.hexdigest()


def metric_identity(metric: Any) -> dict[str, Any]:
    """The identity of ``metric``: an :class:`elpips.Metric` gives :meth:`~elpips.Metric.identity`; any other
    distance function (a callable) is known by its name only."""
    identity = getattr(metric, "identity", None)
    if callable(identity):
        return identity()
    return {"name": getattr(metric, "__name__", type(metric).__name__)}


def as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so that saved and fresh records compare."""
    return json.loads(json.dumps(value))


def differences(recorded: dict[str, Any], current: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """Every setting that differs between a saved record and a fresh one, as ``"key was X, now Y"`` lines;
    nested dicts and lists of dicts (the metrics' identities, their ensembles) are compared item by item
    (``metrics[0].ensemble.flip``).

    Args:
        recorded: the saved record.
        current: the record of the run that wants to continue it.
        ignore: top-level keys that may change (e.g. ``steps``: a run may be continued to more steps).
    """
    skipped = set(ignore)
    return _differences(as_json(recorded), as_json(current), "", skipped)


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str, skipped: set[str]) -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        if not prefix and key in skipped:
            continue
        found += _compare(old.get(key), new.get(key), f"{prefix}{key}", skipped)
    return found


def _compare(before: Any, after: Any, name: str, skipped: set[str]) -> list[str]:
    """Dicts key by key (``metrics[0].ensemble.flip``), lists of one length item by item, else as values."""
    if isinstance(before, dict) and isinstance(after, dict):
        return _differences(before, after, f"{name}.", skipped)
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after) and \
            any(isinstance(item, (dict, list)) for item in before):
        return [line for index, (old, new) in enumerate(zip(before, after, strict=False))
                for line in _compare(old, new, f"{name}[{index}]", skipped)]
    return [] if before == after else [f"{name} was {_short(before)}, now {_short(after)}"]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
