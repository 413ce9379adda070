"""The command table's contract: every shared option reaches every command that registers it.

For every command of :data:`elpips.scripts.cli.COMMAND_MODULES` that takes ``--metric``, a tiny run with the
ensemble changed, a seed, a memory budget and the device asserts that the metric actually built has that
ensemble and that the run's record (``run.json``, or the JSON the command prints) holds every option; a pixel
limit below the inputs' size is refused by every command that has ``--max-pixels``; and every resumable command
refuses a resume with another ensemble. A new command is covered by being in the table: a command with ``--metric``
and no case here fails :func:`test_every_metric_command_has_a_case`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import elpips
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from elpips.scripts.cli import COMMAND_MODULES, build_parser, main
from elpips.solver.averaging import DEFAULT_AVERAGE_LAST

SIZE = 32
SHARED = ["--backbone-weights", "random", "--seed", "7", "--memory-budget", "300M", "--device", "cpu"]
ENSEMBLE = ["--no-flip", "--dropout-keep", "0.5"]
PRECISION = ["--precision", "bfloat16"]


def _png(path: Path, seed: int, size: int = SIZE) -> str:
    rng = np.random.default_rng(seed)
    image = np.kron(rng.random((8, 8, 3)), np.ones((size // 8, size // 8, 1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.round(image * 255).astype(np.uint8))
    return str(path)


def _bapps(root: Path) -> str:
    """A two-split BAPPS layout (``2afc/{train,val}/c/{ref,p0,p1,judge}``), two triplets each."""
    for split in ("train", "val"):
        folder = root / "2afc" / split / "c"
        for index in range(2):
            stem = f"{index:06d}"
            for part, seed in (("ref", 0), ("p0", 1), ("p1", 2)):
                _png(folder / part / f"{stem}.png", 10 * index + seed)
            (folder / "judge").mkdir(parents=True, exist_ok=True)
            np.save(folder / "judge" / f"{stem}.npy", np.array([0.25], dtype=np.float32))
    return str(root)


def _images(tmp: Path, count: int = 3) -> list[str]:
    return [_png(tmp / f"in{index}.png", index) for index in range(count)]


def _clip(tmp: Path) -> str:
    for index in range(3):
        _png(tmp / "clip" / f"f{index}.png", 20 + index)
    return str(tmp / "clip")


Case = Callable[[Path], list[str]]
"""``case(tmp) -> argv`` of a tiny run whose record is ``tmp/out/run.json`` (or the JSON on stdout)."""

CASES: dict[str, Case] = {
    "distance": lambda tmp: ["distance", *_images(tmp, 2), "--metric", "elpips-squeeze", "--samples", "1",
                             "--json"],
    "compare": lambda tmp: ["compare", *_images(tmp, 3), "--metric", "elpips-squeeze", "--samples", "1", "--json"],
    "barycenter": lambda tmp: ["barycenter", *_images(tmp, 2), "--metric", "elpips-squeeze", "--steps", "1",
                               "--eval-samples", "1", "--out", str(tmp / "out")],
    "attack": lambda tmp: ["attack", "a1", *_images(tmp, 3), "--metric", "elpips-squeeze", "--steps", "1",
                           "--samples-per-step", "1", "--check-samples", "2", "--eval-max-samples", "4",
                           "--out", str(tmp / "out")],
    "2afc": lambda tmp: ["2afc", "--data", _bapps(tmp / "bapps"), "--metric", "elpips-squeeze", "--samples", "1",
                         "--json"],
    "geodesic": lambda tmp: ["geodesic", *_images(tmp, 2), "--metric", "elpips-squeeze", "--frames", "3",
                             "--steps", "1", "--samples", "1", "--out", str(tmp / "out")],
    "interpolate": lambda tmp: ["interpolate", _clip(tmp), "--metric", "elpips-squeeze", "--factor", "2",
                                "--steps", "1", "--samples", "1", "--out", str(tmp / "out")],
    "train-example": lambda tmp: ["train-example", "--images", *_images(tmp, 2), "--steps", "1", "--crop", "16",
                                  "--batch", "1", "--out", str(tmp / "out")],
    "train-weights": lambda tmp: ["train-weights", "--data", _bapps(tmp / "bapps"), "--metric", "elpips-squeeze",
                                  "--out", str(tmp / "w.npz"), "--run-dir", str(tmp / "out"), "--epochs", "1",
                                  "--decay-epochs", "0", "--batch-size", "2", "--val-samples", "1"],
}
"""Every command with ``--metric``: a tiny run of it."""

RESUMABLE = {"barycenter", "geodesic", "interpolate", "train-weights"}
"""Commands with ``--resume`` (besides ``attack a1 --ablation``, tested with the ablation)."""


def _options(command: str) -> set[str]:
    parser = build_parser(command)
    subparsers = next(action for action in parser._actions if action.dest == "command")
    command_parser = subparsers.choices[command]
    if command == "attack":
        command_parser = next(action for action in command_parser._actions if action.dest == "attack").choices["a1"]
    return {flag for action in command_parser._actions for flag in action.option_strings}


def test_every_metric_command_has_a_case():
    with_metric = {command for command in COMMAND_MODULES if "--metric" in _options(command)}
    assert with_metric == set(CASES), "every command with --metric needs a tiny run in CASES"
    for command in with_metric:
        assert {"--no-flip", "--dropout-keep", "--seed", "--device", "--memory-budget", "--max-pixels",
                "--threads", "--precision"} <= \
            _options(command), command


@pytest.fixture
def built_metrics(monkeypatch) -> list[elpips.Metric]:
    """Every :class:`elpips.Metric` built while the test runs."""
    built: list[elpips.Metric] = []
    original = elpips.Metric.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.threads_when_built = torch.get_num_threads()
        built.append(self)

    monkeypatch.setattr(elpips.Metric, "__init__", spy)
    return built


def _record(tmp: Path, printed: str) -> tuple[dict, dict]:
    """``(ensemble, everything else)`` of the run's record: ``run.json``'s settings, or the printed JSON."""
    if (tmp / "out" / "run.json").is_file():
        settings = json.loads((tmp / "out" / "run.json").read_text())["settings"]
        assert "threads" in settings["environment"]
        return settings["metrics"][0]["ensemble"], {"seed": settings["seed"], **settings["environment"],
                                                    "precision": settings["metrics"][0]["precision"]}
    result = json.loads(printed)
    return result["ensemble"], {"seed": result["sampling_seed"], "device": result["device"],
                                "memory_budget": result["memory_budget"], "precision": result["precision"]}


@pytest.mark.parametrize("command", sorted(CASES))
def test_shared_options_reach_the_metric_and_the_record(command, tmp_path, capsys, built_metrics):
    argv = CASES[command](tmp_path)
    threads = torch.get_num_threads()
    wanted = 2 if threads == 1 else 1
    assert main([*argv, *ENSEMBLE, *SHARED, *PRECISION, "--threads", str(wanted)]) == 0, capsys.readouterr().err
    assert torch.get_num_threads() == threads  # restored after the command
    assert all(metric.threads_when_built == wanted for metric in built_metrics), command
    name = argv[argv.index("--metric") + 1] if "--metric" in argv else "elpips-vgg"
    used = [metric for metric in built_metrics if metric.name == name]
    assert used and all(not m.ensemble.flip and m.ensemble.dropout_keep == 0.5 for m in used), command
    assert all(m.precision == "bfloat16" for m in used), command
    ensemble, record = _record(tmp_path, capsys.readouterr().out)
    assert ensemble["flip"] is False and ensemble["dropout_keep"] == 0.5 and ensemble["swap"] is True
    assert record["seed"] == 7 and record["device"] == "cpu" and record["memory_budget"] == 300 * 2**20
    assert record["precision"] == "bfloat16"


@pytest.mark.parametrize("command", sorted(CASES))
def test_the_pixel_limit_reaches_every_command(command, tmp_path, capsys):
    argv = CASES[command](tmp_path)
    assert main([*argv, *SHARED, "--max-pixels", str(SIZE * SIZE - 1)]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]
    assert len(error) == 1 and error[0].startswith(f"elpips {command}: error: ") and "pixel" in error[0], error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", sorted(RESUMABLE))
def test_a_resume_with_another_ensemble_is_refused(command, tmp_path, capsys):
    argv = CASES[command](tmp_path)
    assert main([*argv, *SHARED]) == 0
    before = (tmp_path / "out" / "run.json").read_text()
    capsys.readouterr()
    assert main([*argv, *SHARED, "--resume", "--no-color"]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]
    assert len(error) == 1 and "metrics[0].ensemble.color was True, now False" in error[0], error
    assert (tmp_path / "out" / "run.json").read_text() == before


@pytest.mark.parametrize("command", sorted(CASES))
def test_tileable_reaches_the_metric_and_the_record(command, tmp_path, capsys, built_metrics):
    argv = CASES[command](tmp_path)
    assert main([*argv, *SHARED, "--tileable"]) == 0, capsys.readouterr().err
    name = argv[argv.index("--metric") + 1] if "--metric" in argv else "elpips-vgg"
    used = [metric for metric in built_metrics if metric.name == name]
    assert used and all(m.ensemble.tileable and m.ensemble.padding == 0 for m in used), command
    ensemble, _ = _record(tmp_path, capsys.readouterr().out)
    assert ensemble["tileable"] is True and ensemble["max_offset"] is None


@pytest.mark.parametrize("command", sorted(RESUMABLE))
def test_a_resume_with_another_tileable_setting_is_refused(command, tmp_path, capsys):
    argv = CASES[command](tmp_path)
    assert main([*argv, *SHARED, "--tileable"]) == 0
    capsys.readouterr()
    assert main([*argv, *SHARED, "--resume"]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]
    assert len(error) == 1 and "metrics[0].ensemble.tileable was True, now False" in error[0], error


@pytest.mark.parametrize("flags", [["--max-offset", "3"], ["--crop-instead-of-pad"]])
def test_tileable_contradictions_name_the_flags(flags, tmp_path, capsys):
    assert main([*CASES["distance"](tmp_path), *SHARED, "--tileable", *flags]) == 2
    assert f"--tileable and {flags[0]} contradict each other" in capsys.readouterr().err


def test_average_last_reaches_the_solver_of_every_command_that_registers_it(tmp_path, capsys, monkeypatch):
    from elpips.barycenters import solver as barycenter_solver
    from elpips.geodesics import solver as geodesic_solver

    resolved: list[float] = []
    for module in (barycenter_solver, geodesic_solver):
        original = module.resolve_average_last

        def spy(average_last, metric, original=original):
            resolved.append(original(average_last, metric))
            return resolved[-1]

        monkeypatch.setattr(module, "resolve_average_last", spy)
    commands = sorted(command for command in COMMAND_MODULES if "--average-last" in _options(command))
    assert commands == ["barycenter", "geodesic", "interpolate"]
    for command in commands:
        for flag, expected in ((["--average-last", "0.75"], 0.75), ([], None)):
            resolved.clear()
            folder = tmp_path / f"{command}{len(flag)}"
            assert main([*CASES[command](folder), *SHARED, *flag]) == 0, capsys.readouterr().err
            assert resolved and set(resolved) == {DEFAULT_AVERAGE_LAST if expected is None else expected}, command
            settings = json.loads((folder / "out" / "run.json").read_text())["settings"]
            assert settings["average_last"] == expected, command  # as given: None leaves it to the solver


@pytest.mark.parametrize("command", ["barycenter", "geodesic", "interpolate"])
def test_a_resume_with_another_average_last_is_refused(command, tmp_path, capsys):
    argv = CASES[command](tmp_path)
    assert main([*argv, *SHARED, "--average-last", "0.25"]) == 0
    before = (tmp_path / "out" / "run.json").read_text()
    capsys.readouterr()
    assert main([*argv, *SHARED, "--resume", "--average-last", "0.75"]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]
    assert len(error) == 1 and "average_last was 0.25, now 0.75" in error[0], error
    assert (tmp_path / "out" / "run.json").read_text() == before
