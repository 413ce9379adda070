"""``elpips check-device``: its checks pass on the CPU (float32 vs float64), fail when the numbers are wrong,
and the command writes its JSON and exits non-zero on bad options."""

from __future__ import annotations

import json

import torch
from elpips.scripts import check_device as device_check
from elpips.scripts.cli import main


def test_checks_pass_on_the_cpu():
    record = device_check.run_checks("cpu", metrics=("elpips-vgg", "lpips-squeeze"))
    assert record["passed"], record
    for result in record["metrics"]:
        assert set(result["runs"]) == {"default_layout", "channels_last"}  # no TF32 rows off CUDA
        for run in result["runs"].values():
            assert 0 < run["distance_error"] < device_check.DISTANCE_TOLERANCE
    assert abs(record["dropout_layouts"]["mask_keep_rate"] - 0.99) < 0.003


def test_checks_fail_when_the_numbers_are_off(monkeypatch):
    """A 0.1% error in the float32 taps (the CPU's float64 reference is untouched) fails the metric checks."""
    import elpips._features

    original = elpips._features.normalized_tap

    def skewed(tap: torch.Tensor, fused: bool = True) -> torch.Tensor:
        normalized = original(tap, fused)
        return normalized * 1.001 if normalized.dtype == torch.float32 else normalized

    monkeypatch.setattr(elpips._features, "normalized_tap", skewed)
    record = device_check.run_checks("cpu", metrics=("elpips-vgg",))
    assert not record["passed"] and not record["metrics"][0]["passed"] and not record["solvers"]["passed"]


def test_command_writes_json_and_exits(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(device_check, "METRICS", ("lpips-squeeze",))
    assert main(["check-device", "--device", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "all checks passed on cpu" in out
    (written,) = tmp_path.glob("device_check-*.json")
    assert json.loads(written.read_text())["passed"] is True
    if not torch.cuda.is_available():
        assert main(["check-device", "--device", "cuda", "--out", str(tmp_path)]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert main(["check-device", "--device", "cpu", "--out", str(blocked / "sub")]) == 2
