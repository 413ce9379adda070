"""``elpips barycenter``: every listed output, the demonstrations' inputs, resume, and clean failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from elpips.barycenters import shift_image
from elpips.io import load_image, load_images, save_image
from elpips.scripts.cli import main


@pytest.fixture
def inputs(tmp_path):
    """Three random 32x32 PNGs, a 40x32 one and a mid-grey 32x32 one; returns their paths by name."""
    generator = torch.Generator().manual_seed(0)
    paths = {}
    for name, shape in [("a", (32, 32)), ("b", (32, 32)), ("c", (32, 32)), ("tall", (40, 32)), ("tiny", (8, 8))]:
        paths[name] = str(save_image(tmp_path / f"{name}.png", torch.rand(1, 3, *shape, generator=generator)))
    paths["grey"] = str(save_image(tmp_path / "grey.png", torch.full((1, 3, 32, 32), 0.5)))
    return paths


def test_cli_writes_every_listed_output(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["barycenter", inputs["a"], inputs["b"], inputs["c"], "--weights", "1,2,1",
                 "--backbone-weights", "random", "--steps", "5", "--seed", "0", "--checkpoint-every", "3",
                 "--eval-samples", "2", "--out", str(out)])
    assert code == 0
    for name in ["inputs/input_01.png", "inputs/input_02.png", "inputs/input_03.png", "l2_mean.png",
                 "barycenter.png", "snapshots/step_000001.png", "snapshots/step_000002.png",
                 "snapshots/step_000005.png", "contact_sheet.png", "log.json", "checkpoint.pt"]:
        assert (out / name).is_file(), name
    assert not list(out.rglob(".*.tmp*"))
    originals = load_images([inputs["a"], inputs["b"], inputs["c"]])
    expected_mean = (originals[0] + 2 * originals[1] + originals[2]) / 4
    assert (load_image(out / "l2_mean.png")[0] - expected_mean).abs().max() <= 0.5 / 255 + 1e-6
    sheet = load_image(out / "contact_sheet.png")
    assert sheet.shape[-1] >= 3 * 32 and sheet.shape[-2] >= 2 * 32
    log = json.loads((out / "log.json").read_text())
    assert log["calibrated"] is False and log["backbone_weights"] == "random:0"
    assert log["settings"]["weights"] == pytest.approx([0.25, 0.5, 0.25])
    assert [entry["step"] for entry in log["evaluations"]] == [0, 3, 5]
    assert log["objective"]["end"] == log["evaluations"][-1]["objective"]
    assert log["history"][-1]["step"] == 5 and log["timings"]["solver_seconds"] > 0
    assert "UNCALIBRATED" in capsys.readouterr().out
    assert "tiled.png" in log["outputs"]  # the barycenter repeated 2x2: whether it tiles without a seam
    barycenter, preview = load_image(out / "barycenter.png")[0], load_image(out / "tiled.png")[0]
    assert preview.shape == (3, 64, 64)
    for top in (0, 32):
        for left in (0, 32):
            assert torch.equal(preview[:, top:top + 32, left:left + 32], barycenter)


def test_cli_shift_demonstration_inputs_are_shifted_copies(inputs, tmp_path):
    out = tmp_path / "shift"
    assert main(["barycenter", inputs["a"], "--perturb", "shift", "--count", "4", "--metric", "l2", "--steps", "3",
                 "--seed", "1", "--out", str(out)]) == 0
    log = json.loads((out / "log.json").read_text())
    original = load_image(inputs["a"])
    assert torch.equal(load_image(out / "original.png"), original)
    shifts = log["inputs"]["shifts_dy_dx"]
    assert len(shifts) == 4 and max(abs(v) for s in shifts for v in s) <= 2
    for index, (dy, dx) in enumerate(shifts):
        assert torch.equal(load_image(out / "inputs" / f"input_{index + 1:02d}.png"), shift_image(original, dy, dx))


def test_cli_noise_demonstration_inputs_have_the_noise_level(inputs, tmp_path):
    out = tmp_path / "noise"
    assert main(["barycenter", inputs["grey"], "--perturb", "noise", "--count", "4", "--noise-scale", "0.07",
                 "--metric", "l2", "--steps", "2", "--seed", "2", "--out", str(out)]) == 0
    copies = torch.cat([load_image(out / "inputs" / f"input_{i:02d}.png") for i in range(1, 5)])
    assert float((copies - load_image(inputs["grey"])).std()) == pytest.approx(0.07, rel=0.03)


def test_cli_resume_continues_to_the_uninterrupted_result(inputs, tmp_path):
    first, whole = tmp_path / "first", tmp_path / "whole"
    common = ["barycenter", inputs["a"], "--perturb", "noise", "--count", "3", "--metric", "l2",
              "--checkpoint-every", "2"]
    assert main([*common, "--steps", "4", "--out", str(first)]) == 0  # no --seed: drawn and recorded
    seed = json.loads((first / "log.json").read_text())["seed"]
    assert main([*common, "--steps", "7", "--out", str(first), "--resume"]) == 0  # seed from the checkpoint
    assert main([*common, "--steps", "7", "--out", str(whole), "--seed", str(seed)]) == 0
    resumed = json.loads((first / "log.json").read_text())
    assert resumed["resumed_from_step"] == 4 and resumed["seed"] == seed
    assert np.array_equal(load_image(first / "barycenter.png").numpy(), load_image(whole / "barycenter.png").numpy())
    assert resumed["history"] == json.loads((whole / "log.json").read_text())["history"]


@pytest.mark.parametrize("args,message", [
    (["{a}", "{tall}"], "same size"),
    (["{a}", "{a}_missing.png"], "no such file"),
    (["{a}", "{b}", "--weights", "1,2,3"], "3 weights for 2"),
    (["{a}", "{b}", "--weights", "1,x"], "comma-separated"),
    (["{a}", "{b}", "--weights", "1,-1"], "non-negative"),
    (["{a}", "{b}", "--perturb", "noise"], "one image"),
    (["{a}"], "at least 2 images"),
    (["{a}", "{b}", "--power", "0.5"], "power"),
    (["{a}", "{b}", "--refs-per-step", "3"], "refs_per_step"),
    (["{a}", "{b}", "--crop", "0,0,64,64"], "does not fit"),
    (["{a}", "{b}", "--crop", "0,0"], "TOP,LEFT"),
    (["{a}", "--perturb", "noise", "--noise-scale", "-1"], "non-negative"),
    (["{a}", "--perturb", "shift", "--max-shift", "40"], "too large"),
    (["{tiny}", "{tiny}", "--metric", "elpips-vgg"], "at least 16x16"),
    (["{a}", "{b}", "--init", "{tall}"], "init image"),
    (["{a}", "{b}", "--init", "blurry"], "no such file"),
    (["{a}", "{b}", "--resume"], "needs --out"),
])
def test_cli_bad_input_fails_cleanly(inputs, tmp_path, capsys, args, message):
    metric = [] if "--metric" in args else ["--metric", "l2"]
    out = [] if "--resume" in args else ["--out", str(tmp_path / "out")]
    argv = ["barycenter", *[a.format(**inputs) for a in args], *metric, *out, "--backbone-weights", "random",
            "--steps", "1", "--seed", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("elpips barycenter: error:") and message in err[-1]
    assert not (tmp_path / "out").exists()  # bad input writes nothing


def test_cli_refuses_to_overwrite_or_resume_nothing(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["barycenter", inputs["a"], inputs["b"], "--metric", "l2", "--steps", "1", "--out", str(out)]
    assert main([*base, "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(base) == 0
    assert main(base) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_cli_negative_steps_is_a_usage_error(inputs):
    with pytest.raises(SystemExit) as raised:
        main(["barycenter", inputs["a"], inputs["b"], "--steps", "-1"])
    assert raised.value.code == 2
