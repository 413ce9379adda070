"""Shared fixtures: metrics on the seeded random backbone (cached for the whole test run), small random images."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import elpips
import pytest
import torch


@functools.cache
def _cached_metric(name: str, seed: int) -> elpips.Metric:
    return elpips.Metric(name, backbone_weights="random", device="cpu", seed=seed)


@pytest.fixture
def random_metric():
    """``random_metric(name, seed=0)``: a CPU metric with the seeded random backbone.

    Cached for the whole test run: do not mutate it; its sampling generator is re-seeded on every request.
    """

    def make(name: str = "elpips-vgg", seed: int = 0) -> elpips.Metric:
        metric = _cached_metric(name, 0)
        metric.generator.manual_seed(seed)
        return metric

    return make


@pytest.fixture
def images():
    """``images(n, h, w, seed=0)``: ``[n, 3, h, w]`` uniform random float32 images in [0, 1]."""

    def make(n: int = 2, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(n, 3, height, width, generator=generator)

    return make


REPOSITORY = Path(__file__).resolve().parent.parent


def _untracked_files() -> set[str]:
    listing = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored"], cwd=REPOSITORY,
                             capture_output=True, text=True, check=False).stdout
    return {line[3:] for line in listing.splitlines()
            if line[:2] in ("??", "!!") and not any(part in line for part in ("__pycache__", ".venv", ".pytest"))}


@pytest.fixture(scope="session", autouse=True)
def repository_stays_clean():
    """The suite writes into temporary folders only: a file the tests leave in the repository fails the run."""
    before = _untracked_files()
    yield
    left = sorted(_untracked_files() - before)
    assert not left, f"the tests left files in the repository: {left[:5]}"
