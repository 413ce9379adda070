"""``elpips check-device``: its checks pass on the CPU (float32 vs float64), fail when the numbers are wrong,
and the command writes its JSON and exits non-zero on bad options."""

from __future__ import annotations

import json

import pytest
import torch
from elpips.scripts import check_device as device_check
from elpips.scripts.cli import main


def test_checks_pass_on_the_cpu():
    record = device_check.run_checks("cpu", metrics=("elpips-vgg", "lpips-squeeze"), speed_size=32)
    assert record["passed"], record
    precisions = record["precisions"]
    assert set(precisions["skipped"]) == {"float16"}  # CUDA only
    runs = {(run["metric"], run["precision"]): run for run in precisions["runs"]}
    assert set(runs) == {("elpips-vgg", "bfloat16"), ("lpips-squeeze", "bfloat16")}
    assert runs["elpips-vgg", "bfloat16"]["passed"] is True and runs["lpips-squeeze", "bfloat16"]["passed"] is None
    assert 0 < runs["elpips-vgg", "bfloat16"]["distance_median"] < 0.005
    assert set(record["speed"]["speedup_vs_float32"]) == {"bfloat16"} and "float16" in record["speed"]["skipped"]
    for result in record["metrics"]:
        assert set(result["runs"]) == {"default_layout", "channels_last"}  # no TF32 rows off CUDA
        for run in result["runs"].values():
            assert 0 < run["distance_error"] < device_check.DISTANCE_TOLERANCE
    assert abs(record["dropout_layouts"]["mask_keep_rate"] - 0.99) < 0.003


def test_checks_fail_when_the_numbers_are_off(monkeypatch):
    """A 0.1% error in the float32 taps (the CPU's float64 reference is untouched) fails the metric checks."""
    import elpips._features

    original = elpips._features.normalized_tap

    def skewed(tap: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        normalized = original(tap, *args, **kwargs)
        return normalized * 1.001 if normalized.dtype == torch.float32 else normalized

    monkeypatch.setattr(elpips._features, "normalized_tap", skewed)
    record = device_check.run_checks("cpu", metrics=("elpips-vgg",), precisions=(), speed_size=None)
    assert not record["passed"] and not record["metrics"][0]["passed"] and not record["solvers"]["passed"]


def test_command_writes_json_and_exits(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(device_check, "METRICS", ("lpips-squeeze",))
    assert main(["check-device", "--device", "cpu", "--speed-size", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "all checks passed on cpu" in out
    assert "lpips-squeeze   bfloat16" in out and "recorded" in out and "float16: skipped" in out
    try:
        code = main(["check-device", "--precisions", "int8", "--out", str(tmp_path)])
    except SystemExit as exit_:  # how the command line reports a bad option varies: either way, status 2
        code = exit_.code
    assert code == 2
    assert "unknown precisions" in capsys.readouterr().err
    (written,) = tmp_path.glob("device_check-*.json")
    assert json.loads(written.read_text())["passed"] is True
    if not torch.cuda.is_available():
        assert main(["check-device", "--device", "cuda", "--out", str(tmp_path)]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert main(["check-device", "--device", "cpu", "--out", str(blocked / "sub")]) == 2


@pytest.mark.parametrize("errors, broken", [
    ({"distance_median": 0.004, "distance_max": 0.019, "gradient_cosine": 0.991}, []),
    ({"distance_median": 0.006, "distance_max": 0.019, "gradient_cosine": 0.991}, ["distance_median"]),
    ({"distance_median": 0.004, "distance_max": 0.03, "gradient_cosine": 0.991}, ["distance_max"]),
    ({"distance_median": 0.004, "distance_max": 0.019, "gradient_cosine": 0.98}, ["gradient_cosine"]),
    ({"distance_median": float("nan"), "distance_max": 0.019}, ["distance_median", "gradient_cosine"]),
])
def test_precision_judgement_against_the_tolerances(errors, broken):
    found = device_check.judge_precision(errors)
    assert [line.split()[0] for line in found] == broken


def test_precision_checks_judge_only_the_judged_metrics(monkeypatch):
    """Injected errors: a judged metric over the bounds fails the run; another metric's are only recorded."""
    bad = {"distance_median": 0.01, "distance_max": 0.05, "gradient_cosine": 0.9}
    monkeypatch.setattr(device_check, "precision_errors", lambda name, device, precision, size=48: dict(bad))
    record = device_check.check_precisions(torch.device("cpu"), ("elpips-vgg", "lpips-vgg"))
    verdicts = {run["metric"]: run["passed"] for run in record["runs"]}
    assert verdicts == {"elpips-vgg": False, "lpips-vgg": None} and not record["passed"]
    assert len(record["runs"][0]["broken"]) == 3 and set(record["skipped"]) == {"float16"}
    record = device_check.check_precisions(torch.device("cpu"), ("lpips-vgg",))
    assert record["passed"] and record["runs"][0]["passed"] is None
    assert device_check.device_precisions(torch.device("cpu")) == {
        "bfloat16": None, "float16": device_check.device_precisions(torch.device("cpu"))["float16"]}
