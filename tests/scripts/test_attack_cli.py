"""``elpips attack a1|a2`` end to end on 32 px images with the random backbone: files, JSON, exact budgets of
the saved 8-bit images, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from elpips.io import load_image
from elpips.scripts.cli import main

SIZE = 32


def _write(path: Path, seed: int, size: int = SIZE, noise_of: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if noise_of is None:
        image = np.kron(rng.random((8, 8, 3)), np.ones((size // 8, size // 8, 1)))
    else:
        image = noise_of + 0.05 * rng.standard_normal(noise_of.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    return image


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    source = _write(tmp_path / "source.png", 1)
    _write(tmp_path / "target.png", 2)
    _write(tmp_path / "anchor.png", 3, noise_of=source)
    for index in range(3):
        _write(tmp_path / "set" / f"{index}.png", 10 + index, size=40)  # larger: centre-cropped to 32
    _write(tmp_path / "small.png", 4, size=24)
    (tmp_path / "one").mkdir()
    _write(tmp_path / "one" / "0.png", 5)
    names = {"source": "source.png", "target": "target.png", "anchor": "anchor.png", "set": "set",
             "small": "small.png", "one": "one", "out": "out"}
    return {key: str(tmp_path / name) for key, name in names.items()}


RANDOM = ["--backbone-weights", "random", "--seed", "0"]


def test_a2_several_metrics_with_dataset(files, capsys):
    code = main(["attack", "a2", files["source"], "--epsilon", "0.02", "--metrics", "lpips-squeeze,l2",
                 "--dataset", files["set"], "--steps", "3", "--out", files["out"], *RANDOM])
    assert code == 0
    out = Path(files["out"])
    results = json.loads((out / "results.json").read_text())
    assert results["attack"] == "a2" and results["figure_rows"] == ["lpips-squeeze", "l2"]
    assert results["epsilon_l2"] == pytest.approx(0.02 * math.sqrt(3 * SIZE * SIZE))
    source = load_image(files["source"])
    for entry in results["results"]:
        attacked = load_image(out / entry["attacked_image"])  # the saved 8-bit file itself
        difference = (attacked - source).double()
        assert float(difference.square().mean().sqrt()) <= 0.02  # budget holds for the file, exactly
        assert entry["rms_change"] == pytest.approx(float(difference.square().mean().sqrt()), abs=1e-9)
        assert entry["normalizer_pairs"] == 3
        assert entry["normalized_distance"] == pytest.approx(entry["distance"] / entry["normalizer"])
    lpips_entry, l2_entry = results["results"]
    assert lpips_entry["calibrated"] is False and lpips_entry["distance"] > lpips_entry["start_distance"]
    assert l2_entry["distance"] == pytest.approx(l2_entry["rms_change"], abs=1e-6)
    figure = iio.imread(out / "figure.png")
    assert figure.shape[0] > 2 * SIZE and figure.shape[1] > 3 * SIZE  # 2 rows x (source, attacked, difference)
    assert figure.shape[1] >= 3 * 160  # enlarged to about 160 px per column, legible at 100 % zoom
    assert "normalized" in capsys.readouterr().out


def test_a1_json_on_stdout(files, capsys):
    code = main(["attack", "a1", files["source"], files["target"], files["anchor"], "--metric",
                 "lpips-squeeze", "--steps", "4", "--out", files["out"], "--json", *RANDOM])
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    entry = results["results"][0]
    assert entry["metric"] == "lpips-squeeze" and results["anchor"] == files["anchor"]
    assert entry["distance"] <= entry["anchor_distance"] and entry["margin"] <= 0  # deterministic metric
    assert entry["relative_pull"] > 0 and entry["relative_remaining"] < 1
    assert (Path(files["out"]) / "attacked-lpips-squeeze.png").is_file()


def test_a2_elpips_smoke(files):
    code = main(["attack", "a2", files["source"], "--epsilon", "0.03", "--metric", "elpips-squeeze",
                 "--steps", "2", "--samples-per-step", "2", "--eval-max-samples", "20", "--out", files["out"],
                 *RANDOM])
    assert code == 0
    entry = json.loads((Path(files["out"]) / "results.json").read_text())["results"][0]
    assert entry["samples"] == 20 and entry["half_width"] > 0  # fresh many-sample estimate, not the attacker's


@pytest.mark.parametrize("argv, fragment", [
    (["a2", "{missing}", "--epsilon", "0.01"], "no such file"),
    (["a2", "{source}", "--epsilon", "0.01", "--metrics", "lpips-vgg,nope"], "unknown metric 'nope'"),
    (["a2", "{source}", "--epsilon", "0.01", "--metrics", "l2,l2"], "lists a metric twice"),
    (["a2", "{source}", "--epsilon", "0.01", "--dataset", "{one}"], "at least 2 images"),
    (["a2", "{source}", "--epsilon", "0.01", "--dataset", "{missing}"], "no such folder"),
    (["a1", "{source}", "{target}", "{small}"], "same size"),
])
def test_bad_input_exits_2_with_one_line(files, tmp_path, capsys, argv, fragment):
    paths = dict(files, missing=str(tmp_path / "nothing.png"))
    args = ["attack", *[arg.format(**paths) for arg in argv], "--metric", "l2", "--out", files["out"]]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("elpips attack: error: ") and fragment in err[0], err
    assert not Path(files["out"]).exists()  # nothing half-written


def test_dataset_images_smaller_than_source_are_rejected(files, tmp_path, capsys):
    _write(tmp_path / "set" / "tiny.png", 7, size=24)
    assert main(["attack", "a2", files["source"], "--epsilon", "0.01", "--metric", "l2", "--dataset",
                 files["set"], "--out", files["out"]]) == 2
    assert "at least the source's size" in capsys.readouterr().err


@pytest.mark.parametrize("epsilon", ["0", "-0.1", "nan", "abc"])
def test_bad_epsilon_is_a_usage_error(files, capsys, epsilon):
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", "a2", files["source"], "--epsilon", epsilon])
    assert exit_info.value.code == 2
    assert "--epsilon" in capsys.readouterr().err
