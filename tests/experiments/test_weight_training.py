"""``elpips train-weights`` and elpips.experiments.weight_training on a synthetic BAPPS-layout set whose judgements
come from a teacher metric with known random weights (tests/synthetic_bapps.py): the learned weights must agree
with the teacher on held-out triplets nearly as well as the teacher itself; resume, bad data, two ranks, and the
run folder (its record, refusal, lock, temporary files, a full disk, the resume hint)."""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import socket
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from elpips import Metric, distributed
from elpips.experiments.reductions import triplet_reductions
from elpips.experiments.triplet_reader import BappsTriplets
from elpips.experiments.weight_training import TrainingSettings, learning_rate, weight_correlations
from elpips.scripts import train_weights as train_weights_cli
from elpips.scripts.cli import main
from elpips.scripts.run_folder import LOCK_NAME, SETTINGS_NAME
from helpers import NO_SPACE, dead_pid, fail_second_checkpoint_write
from ranks import free_port, set_rank_environment
from synthetic_bapps import make_synthetic_bapps, teacher_metric

TEACHER = "lpips-squeeze"  # deterministic: the teacher agrees with its own judgements, ceiling 1.0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a machine busy with other work, more threads can be many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, one_thread) -> Path:
    """600 training and 200 held-out 32-px triplets judged by the teacher (about 10 s on an idle 2-core CPU)."""
    root = tmp_path_factory.mktemp("synthetic")
    teacher, _ = teacher_metric(TEACHER, root)
    return make_synthetic_bapps(root, teacher, {"train": 600, "val": 200})


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as archive:
        return [archive[f"lin{index}"] for index in range(len(archive.files))]


def _argv(data: Path, out: Path, *options: str, metric: str = TEACHER) -> list[str]:
    return ["train-weights", "--data", str(data), "--metric", metric, "--backbone-weights", "random",
            "--out", str(out), "--threads", "1", *options]


def _train(data: Path, out: Path, *options: str, metric: str = TEACHER) -> int:
    return main(_argv(data, out, *options, metric=metric))


@pytest.mark.parametrize("budget, samples", [(None, 3), (64 * 2**20, 8)])  # one pass; two (fresh masks in the 2nd)
def test_reductions_give_the_metric_distances(synthetic, budget, samples):
    """reductions @ weights == Metric.compare's distances under the same samples (E-LPIPS and LPIPS), also when
    the memory budget cuts the rows of the stratified sample into passes."""
    batch = BappsTriplets.from_folder(synthetic, "val", limit=6).load(range(6))
    for name in ("elpips-squeeze", "lpips-squeeze"):
        metric = Metric(name, backbone_weights="random", device="cpu", memory_budget=budget)
        if budget is not None and metric.is_stochastic:
            assert metric.images_per_pass(32, 32) < 3 * samples * 6  # ref, p0, p1 of every row: over the budget
        weights = torch.cat(metric.linear_weights)
        reductions = triplet_reductions(metric, batch, samples, generator=torch.Generator().manual_seed(5))
        expected = metric.compare(batch.ref, [batch.p0, batch.p1], n=samples,
                                  generator=torch.Generator().manual_seed(5))
        assert torch.allclose((reductions @ weights).T, expected, rtol=1e-5, atol=1e-7), name


def test_schedule_and_correlation_closed_forms():
    lpips = TrainingSettings()  # 5 epochs at the base rate, then 1 - k/5 after each decay epoch (LPIPS train.py)
    assert [learning_rate(lpips, epoch, 0) / 1e-4 for epoch in range(1, 11)] == pytest.approx(
        [1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    kettunen = TrainingSettings.from_recipe("kettunen")
    assert [learning_rate(kettunen, 1, step) / 1e-4 for step in (0, 50, 75, 100, 500)] == [0, 0, 0.5, 1, 1]
    a = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0])]
    result = weight_correlations(a, [torch.tensor([2.0, 4.0, 6.0]), torch.tensor([0.0, 5.0])])
    assert result["per_tap"] == [pytest.approx(1.0), None]
    assert result["all"] == pytest.approx(np.corrcoef([1, 2, 3, 1, 1], [2, 4, 6, 0, 5])[0, 1])


def test_learned_weights_agree_with_the_teacher(synthetic, tmp_path, capsys):
    out = tmp_path / "learned.npz"
    code = _train(synthetic, out, "--epochs", "3", "--decay-epochs", "3", "--lr", "0.03", "--batch-size", "20",
                  "--cache-reductions", "--compare-to", str(synthetic / "teacher.npz"), str(synthetic / "uniform.npz"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    log = json.loads((tmp_path / "learned-run" / "log.json").read_text())
    curve = [record["validation"]["mean"] for record in log["history"]]
    ceiling = log["comparisons"][str(synthetic / "teacher.npz")]["validation"]["mean"]
    uniform = log["comparisons"][str(synthetic / "uniform.npz")]["validation"]["mean"]
    initial, learned = curve[0], curve[-1]
    assert ceiling == 1.0  # a deterministic teacher agrees with its own judgements
    assert learned >= ceiling - 0.05, curve
    assert learned >= initial + 0.5, curve  # the default start (uniform in +-1/sqrt(C)) is near chance or worse
    assert learned >= uniform + 0.01, (curve, uniform)  # better than every channel alike: the weights were learned
    assert len(curve) == 7 and "epoch 6 done" in captured.err and "step 180/180" in captured.err  # no TTY: lines
    learned_weights = _weights(out)
    assert all((w >= 0).all() for w in learned_weights)
    metric = Metric(TEACHER, backbone_weights="random", linear_weights=out, device="cpu")  # the format loads
    assert all(np.array_equal(a.numpy(), b) for a, b in zip(metric.linear_weights, learned_weights, strict=False))


def test_elpips_weights_reach_the_teachers_own_agreement(tmp_path):
    """E-LPIPS teacher: judgements from 4-sample distances; its ceiling is its own held-out agreement under fresh
    validation samples, and the student trains under a new ensemble sample for every triplet and batch."""
    teacher, teacher_file = teacher_metric("elpips-squeeze", tmp_path)
    data = make_synthetic_bapps(tmp_path / "data", teacher, {"train": 200, "val": 80}, teacher_samples=4,
                                hard_fraction=0)
    code = _train(data, tmp_path / "w.npz", "--epochs", "1", "--decay-epochs", "1", "--lr", "0.05", "--batch-size",
                  "20", "--val-samples", "4", "--compare-to", str(teacher_file), metric="elpips-squeeze")
    assert code == 0
    log = json.loads((tmp_path / "w-run" / "log.json").read_text())
    curve = [record["validation"]["mean"] for record in log["history"]]
    ceiling = log["comparisons"][str(teacher_file)]["validation"]["mean"]
    assert curve[-1] >= ceiling - 0.05 and curve[-1] >= curve[0] + 0.3, (curve, ceiling)


def test_kettunen_recipe_and_cache_rules(synthetic, tmp_path):
    """The authors' recipe: zero start and a rate of 0 for the first 50 steps, so 8 steps leave every weight at
    exactly 0; it trains E-LPIPS without the ensemble, so its reductions can be cached (with the ensemble: refused)."""
    common = ["--metric", "elpips-squeeze", "--limit", "40", "--val-limit", "10", "--epochs", "1",
              "--decay-epochs", "1", "--batch-size", "10", "--val-samples", "2"]
    assert _train(synthetic, tmp_path / "k.npz", *common[2:], "--recipe", "kettunen", "--cache-reductions",
                  metric="elpips-squeeze") == 0
    log = json.loads((tmp_path / "k-run" / "log.json").read_text())
    assert {key: log["settings"][key] for key in ("beta1", "warmup_steps", "symmetric_loss", "ensemble")} == {
        "beta1": 0.9, "warmup_steps": 50, "symmetric_loss": True, "ensemble": False}
    assert all((w == 0).all() for w in _weights(tmp_path / "k.npz"))
    assert _train(synthetic, tmp_path / "c.npz", *common[2:], "--cache-reductions", metric="elpips-squeeze") == 2


def test_resume_equals_uninterrupted(synthetic, tmp_path, monkeypatch, capsys):
    options = ["--metric", "elpips-squeeze", "--limit", "40", "--val-limit", "10", "--epochs", "1",
               "--decay-epochs", "1", "--lr", "0.01", "--batch-size", "10", "--chunk-size", "5",
               "--val-samples", "2", "--checkpoint-every", "3", "--seed", "4", "--dropout-keep", "0.95",
               "--scale-levels", "1"]
    whole = tmp_path / "whole.npz"
    assert _train(synthetic, whole, *options[2:], metric="elpips-squeeze") == 0

    original = train_weights_cli.Progress.step

    def interrupt(self, info):
        original(self, info)
        if info.step == 7:  # one step after the checkpoint of step 6 (epoch 1 ends at step 4): redone on resume
            raise KeyboardInterrupt

    monkeypatch.setattr(train_weights_cli.Progress, "step", interrupt)
    parts = tmp_path / "parts.npz"
    capsys.readouterr()
    assert _train(synthetic, parts, *options[2:], metric="elpips-squeeze") == 130
    assert not parts.exists()
    run_dir = tmp_path / "parts-run"
    hint = "elpips " + shlex.join([*_argv(synthetic, parts, *options[2:], metric="elpips-squeeze"), "--resume",
                                   "--run-dir", str(run_dir)])  # --out (the weights file) kept
    assert f"interrupted: continue with: {hint}" in capsys.readouterr().err
    assert not (run_dir / LOCK_NAME).exists()
    monkeypatch.setattr(train_weights_cli.Progress, "step", original)
    assert _train(synthetic, parts, *options[2:], "--resume", "--run-dir", str(run_dir), metric="elpips-squeeze") == 0

    for a, b in zip(_weights(whole), _weights(parts), strict=False):
        assert np.array_equal(a, b)
    logs = [json.loads((tmp_path / f"{name}-run" / "log.json").read_text()) for name in ("whole", "parts")]
    assert [r["validation"] for r in logs[0]["history"]] == [r["validation"] for r in logs[1]["history"]]
    assert [r.get("train_loss") for r in logs[0]["history"]] == [r.get("train_loss") for r in logs[1]["history"]]
    assert logs[1]["resumed_from_step"] == 6 and logs[1]["dropout_keep"] == 0.95 and logs[1]["scale_levels"] == 1
    recorded = json.loads((run_dir / SETTINGS_NAME).read_text())
    assert recorded["kind"] == "train-weights"
    settings = recorded["settings"]
    assert settings["seed"] == 4 and settings["training"]["seed"] == 4 and settings["training"]["learning_rate"] == 0.01
    assert settings["metrics"][0]["ensemble"]["dropout_keep"] == 0.95
    assert settings["metrics"][0]["ensemble"]["scale_levels"] == 1
    assert (settings["data"], settings["split"], settings["categories"], settings["limit"]) == (
        str(synthetic), "train", ["synthetic"], 40)
    assert settings["train_triplets"] == 40 and settings["validation_triplets"] == 10
    capsys.readouterr()
    assert _train(synthetic, parts, *options[2:], metric="elpips-squeeze") == 2  # a finished run is not redone
    error = capsys.readouterr().err
    assert "already holds a run" in error and "--resume" in error and "--run-dir" in error
    assert _train(synthetic, parts, *options[2:], "--resume", "--lr", "0.02", metric="elpips-squeeze") == 2
    assert "training.learning_rate was 0.01, now 0.02" in capsys.readouterr().err
    assert _train(synthetic, parts, *options[2:-2], "--resume", metric="elpips-squeeze") == 2
    assert "metrics[0].ensemble.scale_levels was" in capsys.readouterr().err  # another ensemble


def test_bad_data_is_one_clear_error(synthetic, tmp_path, capsys):
    out = tmp_path / "out" / "w.npz"
    assert _train(tmp_path / "missing", out) == 2
    assert _train(synthetic, out, "--split", "nosuchsplit") == 2
    broken = tmp_path / "broken"
    (broken / "2afc" / "train").mkdir(parents=True)
    (broken / "2afc" / "val").mkdir(parents=True)
    assert _train(broken, out) == 2
    copy = make_corrupt_copy(synthetic, tmp_path / "corrupt")
    assert _train(copy, out, "--limit", "20", "--val-limit", "10") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("elpips train-weights")]
    assert len(errors) == 4 and all(": error: " in line for line in errors)
    assert "missing: no such folder" in errors[0] and "nosuchsplit" in errors[1]
    assert "no category folders" in errors[2] and "000003.npy" in errors[3]
    assert not (tmp_path / "out").exists()  # nothing written, no empty run folder left behind


# -- the run folder -------------------------------------------------------------------------------------------------
QUICK = ["--metric", "elpips-squeeze", "--limit", "40", "--val-limit", "10", "--epochs", "1", "--decay-epochs", "1",
         "--batch-size", "10", "--val-samples", "2", "--checkpoint-every", "3", "--seed", "1"]


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error" in line or "Traceback" in line]


def test_a_held_lock_refuses_a_resume_and_leftovers_of_kills_are_cleared(synthetic, tmp_path, capsys):
    out, run_dir = tmp_path / "w.npz", tmp_path / "w-run"
    assert _train(synthetic, out, *QUICK[2:], metric="elpips-squeeze") == 0
    log = (run_dir / "log.json").read_bytes()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}
    (run_dir / LOCK_NAME).write_text(json.dumps(holder))
    capsys.readouterr()
    assert _train(synthetic, out, *QUICK[2:], "--resume", metric="elpips-squeeze") == 2
    errors = _error_lines(capsys)
    assert len(errors) == 1 and "in use by another run" in errors[0] and f"pid {os.getpid()}" in errors[0], errors
    assert (run_dir / "log.json").read_bytes() == log
    (run_dir / LOCK_NAME).write_text(json.dumps({**holder, "pid": dead_pid()}))  # left by a killed run
    orphan = run_dir / ".checkpoint.pt.k1ll3d.tmp"  # a checkpoint write that was killed
    orphan.write_bytes(b"half a checkpoint")
    assert _train(synthetic, out, *QUICK[2:], "--resume", metric="elpips-squeeze") == 0
    err = capsys.readouterr().err
    assert "taking over the lock" in err and "removed 1 temporary file(s)" in err
    assert not orphan.exists() and not (run_dir / LOCK_NAME).exists()


def test_a_full_disk_is_one_line_naming_the_run_folder_and_the_run_resumes(synthetic, tmp_path, monkeypatch,
                                                                           capsys):
    """The checkpoint is serialised in memory and written in one write: a full disk is an OSError with its cause
    (one line, exit 2), the last good checkpoint stays, its temporary file goes, and the run resumes from it."""
    out, run_dir = tmp_path / "w.npz", tmp_path / "w-run"
    original = fail_second_checkpoint_write(monkeypatch)
    capsys.readouterr()
    assert _train(synthetic, out, *QUICK[2:], metric="elpips-squeeze") == 2
    assert _error_lines(capsys) == [f"elpips train-weights: error: cannot write to '{run_dir}': {NO_SPACE}"]
    assert [path.name for path in run_dir.iterdir() if ".tmp" in path.name or path.name == LOCK_NAME] == []
    assert (run_dir / "checkpoint.pt").is_file() and not out.exists()
    monkeypatch.setattr(pathlib.Path, "write_bytes", original)
    assert _train(synthetic, out, *QUICK[2:], "--resume", metric="elpips-squeeze") == 0
    assert json.loads((run_dir / "log.json").read_text())["resumed_from_step"] == 3 and out.is_file()


def make_corrupt_copy(source: Path, target: Path) -> Path:
    """A copy of ``source`` with one held-out judgement file that is not a .npy file."""
    import shutil

    shutil.copytree(source / "2afc", target / "2afc")
    (target / "2afc" / "val" / "synthetic" / "judge" / "000003.npy").write_bytes(b"not a numpy file")
    return target


# -- two ranks ------------------------------------------------------------------------------------------------------
def _two_rank_child(rank: int, port: int, folder: str, data: str, options: list[str]) -> None:
    """One of two gloo ranks (the environment torchrun would set) running the command; its exit code or error
    goes to ``folder/rankN.json``."""
    set_rank_environment(rank, 2, port)
    torch.set_num_threads(1)
    try:
        with distributed.process_group("cpu"):
            result = {"code": main(["train-weights", "--data", data, "--out", str(Path(folder) / "ranks.npz"),
                                    "--device", "cpu", *options])}
    except BaseException:  # noqa: BLE001 - reported to the parent through the file
        result = {"error": traceback.format_exc()}
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(result))


def test_two_ranks_equal_one_process(synthetic, tmp_path):
    options = ["--metric", "elpips-squeeze", "--backbone-weights", "random", "--limit", "30", "--val-limit", "10",
               "--epochs", "1", "--decay-epochs", "1", "--lr", "0.01", "--batch-size", "10", "--chunk-size", "3",
               "--val-samples", "2", "--seed", "2", "--threads", "1"]
    mp.spawn(_two_rank_child, args=(free_port(), str(tmp_path), str(synthetic), options), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert [r.get("code") for r in results] == [0, 0], results
    assert main(["train-weights", "--data", str(synthetic), "--out", str(tmp_path / "one.npz"), *options]) == 0
    for a, b in zip(_weights(tmp_path / "ranks.npz"), _weights(tmp_path / "one.npz"), strict=False):
        assert np.array_equal(a, b)  # every rank takes the one-process step on the same reductions
    logs = [json.loads((tmp_path / f"{name}-run" / "log.json").read_text()) for name in ("ranks", "one")]
    assert logs[0]["processes"] == 2 and logs[1]["processes"] == 1
    assert [r["validation"] for r in logs[0]["history"]] == [r["validation"] for r in logs[1]["history"]]
