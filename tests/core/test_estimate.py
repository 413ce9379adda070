"""The sequential estimate's report: a short repr, plain progress lines on stderr for ``progress=True``."""

from __future__ import annotations

import elpips.estimate as estimate_module
import torch
from elpips.estimate import Estimate, sequential_estimate, summarize


def test_repr_is_short_and_leaves_the_draws_out():
    draws = torch.linspace(0.1, 0.2, 1090, dtype=torch.float64)[:, None].expand(1090, 8).contiguous()
    text = repr(summarize(draws))
    assert text.startswith("Estimate(mean=[0.15, 0.15, 0.15, 0.15, ...], half_width=[") and "samples=1090" in text
    assert len(text) < 160
    assert repr(Estimate(torch.tensor(0.25), torch.tensor(0.0), 1)) == "Estimate(mean=0.25, half_width=0, samples=1)"


def test_progress_true_prints_plain_lines_on_stderr(monkeypatch, capsys):
    monkeypatch.setattr(estimate_module, "PROGRESS_INTERVAL_S", 0.0)
    generator = torch.Generator().manual_seed(0)
    result = sequential_estimate(lambda k: torch.rand(k, 2, generator=generator), abs_tol=1e-9, max_samples=30,
                                 batch=10, progress=True)
    assert result.samples == 30
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 3
    assert lines[0].startswith("estimate: 10/30 samples, mean [") and lines[-1].startswith("estimate: 30/30 samples")


def test_progress_true_is_quiet_for_a_short_estimate(capsys):
    sequential_estimate(lambda k: torch.rand(k, 2), abs_tol=1e-9, max_samples=20, batch=10, progress=True)
    assert capsys.readouterr().err == ""
