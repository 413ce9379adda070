"""Helpers for tests of ``elpips batch``: input images, job files and job lines."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from elpips.io import save_image


def write_images(folder: Path, count: int = 3, size: int = 32) -> list[str]:
    """``count`` random ``size`` x ``size`` PNGs; their paths."""
    generator = torch.Generator().manual_seed(0)
    return [str(save_image(folder / f"img{index}.png", torch.rand(1, 3, size, size, generator=generator)))
            for index in range(count)]


def write_jobs(path: Path, entries: list) -> Path:
    path.write_text("".join((entry if isinstance(entry, str) else json.dumps(entry)) + "\n" for entry in entries))
    return path


def distance_job(job_id: str, a: str, b: str, **options) -> dict:
    return {"id": job_id, "command": "distance", "inputs": [a, b],
            "args": {"metric": "elpips-squeeze", "samples": 2, "seed": 0, "backbone-weights": "random", **options}}
