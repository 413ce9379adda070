"""Ensemble options on the command line: recorded in the JSON outputs, one-line errors with exit code 2, and
the ablation experiment end to end on 32 px images with the random backbone (its run folder: refusal, record,
lock, resume hint)."""

from __future__ import annotations

import json
import os
import shlex
import socket
from pathlib import Path

import elpips.scripts.attack_ablation as ablation_command
import imageio.v3 as iio
import numpy as np
import pytest
from elpips.configs import LADDER
from elpips.scripts.cli import main
from elpips.scripts.run_folder import LOCK_NAME, SETTINGS_NAME

SIZE = 32
RANDOM = ["--backbone-weights", "random", "--seed", "0"]


def _write(path: Path, seed: int, noise_of: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.kron(rng.random((8, 8, 3)), np.ones((SIZE // 8, SIZE // 8, 1))) if noise_of is None else \
        noise_of + 0.05 * rng.standard_normal(noise_of.shape)
    iio.imwrite(path, np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    return image


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    source = _write(tmp_path / "source.png", 1)
    _write(tmp_path / "target.png", 2)
    _write(tmp_path / "anchor.png", 3, noise_of=source)
    return {name: str(tmp_path / f"{name}.png") for name in ("source", "target", "anchor")} | \
        {"out": str(tmp_path / "out")}


def test_distance_records_the_ensemble(files, capsys):
    assert main(["distance", files["source"], files["target"], "--samples", "2", "--json", "--no-flip",
                 "--max-offset", "3", "--color-mode", "brightness", *RANDOM]) == 0
    result = json.loads(capsys.readouterr().out)
    ensemble = result["ensemble"]
    assert ensemble["flip"] is False and ensemble["max_offset"] == 3 and ensemble["color_mode"] == "brightness"
    assert ensemble["swap"] is True and ensemble["dropout_keep"] == 0.99 and result["custom_ensemble"] is True
    assert main(["distance", files["source"], files["target"], "--samples", "1", "--json", *RANDOM]) == 0
    default = json.loads(capsys.readouterr().out)
    assert default["custom_ensemble"] is False and default["ensemble"]["flip"] is True


def test_no_switch_on_a_metric_without_it_changes_nothing(files, capsys):
    assert main(["distance", files["source"], files["target"], "--metric", "lpips-vgg", "--no-flip", "--json",
                 *RANDOM]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ensemble"]["flip"] is False and result["custom_ensemble"] is False


@pytest.mark.parametrize("options, fragment", [
    (["--no-color", "--color-mode", "brightness"], "color_mode='brightness' with color off"),
    (["--metric", "lpips-vgg", "--max-offset", "3"], "--max-offset: lpips-vgg has no offset"),
    (["--metric", "elpips-vgg+all-layers", "--dropout-keep", "0.5"], "--dropout-keep: elpips-vgg+all-layers has no"),
    (["--no-offset", "--no-scaling", "--crop-instead-of-pad"], "--crop-instead-of-pad: elpips-vgg has no offset or"),
])
def test_invalid_combinations_exit_2_with_one_line(files, capsys, options, fragment):
    assert main(["distance", files["source"], files["target"], *options, *RANDOM]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("elpips distance: error: ") and fragment in err[0], err


@pytest.mark.parametrize("option, value", [("--dropout-keep", "1.5"), ("--dropout-keep", "0"),
                                           ("--scale-levels", "0"), ("--max-offset", "-1")])
def test_out_of_range_values_are_usage_errors(files, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["distance", files["source"], files["target"], option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and option in err[0], err


def test_attack_with_several_metrics_applies_parameters_where_they_fit(files):
    assert main(["attack", "a1", files["source"], files["target"], files["anchor"], "--metrics",
                 "lpips-squeeze,elpips-squeeze", "--max-offset", "2", "--steps", "1", "--samples-per-step", "1",
                 "--check-samples", "2", "--eval-max-samples", "10", "--out", files["out"], *RANDOM]) == 0
    entries = json.loads((Path(files["out"]) / "results.json").read_text())["results"]
    assert entries[0]["ensemble"]["offset"] is False and entries[0]["ensemble"]["max_offset"] is None
    assert entries[1]["ensemble"]["max_offset"] == 2 and "max offset 2" in entries[1]["label"]


def test_ablation_end_to_end(files, capsys):
    argv = ["attack", "a1", files["source"], files["target"], files["anchor"], "--ablation", "--steps", "2",
            "--samples-per-step", "1", "--check-samples", "2", "--eval-max-samples", "10", "--out", files["out"],
            *RANDOM]
    assert main(argv) == 0
    out = Path(files["out"])
    results = json.loads((out / "results.json").read_text())
    assert [entry["metric"] for entry in results["rungs"]] == list(LADDER)
    assert [entry["rung"] for entry in results["rungs"]] == ["LPIPS-VGG", "+all layers", "+geom.", "+color",
                                                             "+scaling", "+dropout"]
    assert results["calibrated"] is False and results["full_metric"]["metric"] == "elpips-vgg"
    for entry in results["rungs"]:
        assert (out / entry["attacked_image"]).is_file() and 0 <= entry["relative_pull"] <= 1
        for report in (entry["own"], entry["full"]):
            assert report["half_width"] >= 0 and report["samples"] >= 1
    deterministic = results["rungs"][:2]
    assert all(entry["own"]["samples"] == 1 and entry["own"]["margin"] <= 0 for entry in deterministic)
    assert results["rungs"][-1]["full"]["samples"] == 10  # fresh samples under the full metric
    figure = iio.imread(out / "figure.png")
    assert figure.shape[1] > 8 * SIZE  # source, target and six rungs in one row
    table = (out / "table.md").read_text()
    assert table.count("\n| ") == 7 and "Random backbone" in table
    assert "+scaling" in capsys.readouterr().out
    # resume: every rung is finished, nothing is attacked again, the same results come out
    (out / "results.json").unlink()
    assert main([*argv, "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["rungs"] == results["rungs"]
    capsys.readouterr()
    assert main(argv) == 2  # a finished run is not overwritten without --resume
    error = capsys.readouterr().err
    assert "already holds a run" in error and "--resume" in error
    assert json.loads((out / "results.json").read_text())["rungs"] == results["rungs"]


def test_ablation_run_folder_refusals_lock_and_resume_hint(files, monkeypatch, capsys):
    """Ctrl-C during the third rung: the resume hint, the first two rungs kept; a run without --resume, a resume
    with other settings and a resume into a locked folder are refused; the resume (without --seed: the recorded
    one) attacks only the rungs left."""
    out = Path(files["out"])
    common = ["attack", "a1", files["source"], files["target"], files["anchor"], "--ablation", "--steps", "2",
              "--samples-per-step", "1", "--check-samples", "2", "--eval-max-samples", "10",
              "--backbone-weights", "random"]
    argv = [*common, "--seed", "7", "--out", str(out)]
    attacked, interrupt_at = [], [3]
    original = ablation_command.attack_rung

    def interrupted_at_the_third(metric, *args, **kwargs):
        attacked.append(metric.name)
        if len(attacked) in interrupt_at:
            raise KeyboardInterrupt
        return original(metric, *args, **kwargs)

    monkeypatch.setattr(ablation_command, "attack_rung", interrupted_at_the_third)
    assert main(argv) == 130
    hint = shlex.join(["elpips", *common, "--seed", "7", "--resume", "--out", str(out)])
    assert f"interrupted: continue with: {hint}" in capsys.readouterr().err
    assert not (out / LOCK_NAME).exists()
    assert sorted(path.name for path in out.glob("rung-*.json")) == sorted(f"rung-{name}.json" for name in LADDER[:2])
    recorded = json.loads((out / SETTINGS_NAME).read_text())
    assert recorded["command"] == "attack" and recorded["kind"] == "a1-ablation"
    assert recorded["settings"]["seed"] == 7 and recorded["settings"]["attack"]["steps"] == 2
    assert recorded["settings"]["ladder"] == list(LADDER)
    assert recorded["settings"]["metrics"][0]["name"] == "elpips-vgg"

    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*common, "--steps", "3", "--resume", "--out", str(out)]) == 2
    assert "attack.steps was 2, now 3" in capsys.readouterr().err
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    assert main([*common, "--resume", "--out", str(out)]) == 2
    assert "in use by another run" in capsys.readouterr().err
    (out / LOCK_NAME).unlink()

    attacked.clear()
    interrupt_at.clear()
    orphan = out / ".attacked-elpips-vgg+geom.png.x1.tmp.png"  # a write that was killed
    orphan.write_bytes(b"half an image")
    assert main([*common, "--resume", "--out", str(out)]) == 0
    assert attacked == list(LADDER[2:]) and not orphan.exists()
    results = json.loads((out / "results.json").read_text())
    assert [entry["metric"] for entry in results["rungs"]] == list(LADDER) and results["settings"]["seed"] == 7


@pytest.mark.parametrize("options, fragment", [
    (["--metric", "lpips-vgg"], "leave out --metric/--metrics"),
    (["--no-flip"], "leave out --no-flip"),
    (["--resume"], "--resume needs --out"),
])
def test_ablation_option_errors(files, capsys, options, fragment):
    argv = ["attack", "a1", files["source"], files["target"], files["anchor"], "--ablation", *options]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
