"""2AFC scoring (elpips.experiments.twoafc) and ``elpips 2afc`` on a synthetic BAPPS-layout folder with known answers:
p0 = ref + small noise, p1 = ref + large noise, so every metric prefers p0 and the score is 1 - h."""

from __future__ import annotations

import json
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from elpips.experiments.twoafc import (
    DatasetError,
    evaluate_2afc,
    list_categories,
    list_triplets,
    load_judge,
    twoafc_scores,
)
from elpips.scripts.cli import main

SIZE = 32
JUDGEMENTS = {"agree": 0.0, "disagree": 1.0, "split": 0.5}  # category -> h (fraction preferring p1)
PER_CATEGORY = 3


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))


def make_bapps(root: Path, judgements: dict[str, float] = JUDGEMENTS, count: int = PER_CATEGORY,
               split: str = "val") -> Path:
    """``root/2afc/<split>/<category>/{ref,p0,p1,judge}`` with ``count`` triplets per category."""
    rng = np.random.default_rng(0)
    for category, h in judgements.items():
        folder = root / "2afc" / split / category
        for index in range(count):
            coarse = rng.random((8, 8, 3))
            ref = np.kron(coarse, np.ones((SIZE // 8, SIZE // 8, 1)))  # blocky texture, in [0, 1]
            stem = f"{index:06d}"
            _write_png(folder / "ref" / f"{stem}.png", ref)
            _write_png(folder / "p0" / f"{stem}.png", ref + 0.02 * rng.standard_normal(ref.shape))
            _write_png(folder / "p1" / f"{stem}.png", ref + 0.35 * rng.standard_normal(ref.shape))
            (folder / "judge").mkdir(parents=True, exist_ok=True)
            np.save(folder / "judge" / f"{stem}.npy", np.array([h], dtype=np.float32))
    return root


@pytest.fixture
def bapps(tmp_path: Path) -> Path:
    return make_bapps(tmp_path / "bapps")


def test_twoafc_scores_closed_form():
    d0 = torch.tensor([0.1, 0.5, 0.3, 0.3, 0.2])
    d1 = torch.tensor([0.2, 0.4, 0.3, 0.3, 0.9])
    h = torch.tensor([0.25, 0.25, 0.0, 1.0, 0.6])
    expected = torch.tensor([0.75, 0.25, 0.5, 0.5, 0.4], dtype=torch.float64)
    assert torch.allclose(twoafc_scores(d0, d1, h), expected)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        twoafc_scores(d0, d1, h + 1)
    with pytest.raises(ValueError, match="equal lengths"):
        twoafc_scores(d0, d1[:2], h)


@pytest.mark.parametrize("name", ["lpips-vgg", "elpips-vgg", "lpips-squeeze", "l2"])
def test_known_answers(bapps, random_metric, name):
    result = evaluate_2afc(random_metric(name), bapps, samples=4, generator=torch.Generator().manual_seed(0))
    assert result.categories == {"agree": 1.0, "disagree": 0.0, "split": 0.5}
    assert result.mean == 0.5
    assert result.triplets == 3 * PER_CATEGORY
    assert result.counts == {name: PER_CATEGORY for name in JUDGEMENTS}


def test_partial_judgements_give_one_minus_h(tmp_path, random_metric):
    root = make_bapps(tmp_path / "b", {"a": 0.2, "b": 0.9}, count=2)
    result = evaluate_2afc(random_metric("lpips-squeeze"), root)
    assert result.categories == pytest.approx({"a": 0.8, "b": 0.1})
    assert result.mean == pytest.approx(0.45)


def test_layout_helpers_limit_and_categories(bapps, random_metric):
    assert list_categories(bapps) == ["agree", "disagree", "split"]
    assert list_categories(bapps / "2afc") == ["agree", "disagree", "split"]  # the 2afc folder itself works too
    triplets = list_triplets(bapps, "val", "agree", limit=2)
    assert [t.ref.name for t in triplets] == ["000000.png", "000001.png"]
    assert load_judge(triplets[0].judge) == 0.0
    result = evaluate_2afc(random_metric("l2"), bapps, categories=["split", "agree"], limit=2, batch_size=1)
    assert list(result.categories) == ["split", "agree"] and result.triplets == 4


def _break(root: Path, how: str) -> str:
    """Damage the fixture; return a fragment the error message must contain."""
    category = root / "2afc" / "val" / "agree"
    if how == "missing image":
        (category / "p1" / "000001.png").unlink()
        return "000001.png: missing"
    if how == "judge out of range":
        np.save(category / "judge" / "000000.npy", np.array([1.5]))
        return "outside [0, 1]"
    if how == "corrupt judge":
        (category / "judge" / "000002.npy").write_bytes(b"not numpy")
        return "cannot be read"
    if how == "judge array":
        np.save(category / "judge" / "000000.npy", np.zeros(3))
        return "expected one number"
    if how == "no split":
        (root / "2afc" / "val").rename(root / "2afc" / "test")
        return "no split 'val'"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing image", "judge out of range", "corrupt judge", "judge array", "no split"])
def test_malformed_data_raises_clear_error(bapps, random_metric, how):
    fragment = _break(bapps, how)
    with pytest.raises(DatasetError, match=re.escape(fragment)):
        evaluate_2afc(random_metric("l2"), bapps)


# -- the command line ----------------------------------------------------------------------------------------------
def test_cli_json_and_out_file(bapps, tmp_path, capsys):
    out = tmp_path / "result.json"
    code = main(["2afc", "--data", str(bapps), "--metric", "elpips-squeeze", "--backbone-weights", "random",
                 "--samples", "2", "--limit", "2", "--seed", "0", "--json", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["metric"] == "elpips-squeeze"
    assert printed["categories"] == {"agree": 1.0, "disagree": 0.0, "split": 0.5}
    assert printed["mean"] == 0.5 and printed["triplets"] == 6
    assert printed["calibrated"] is False
    assert json.loads(out.read_text()) == printed


def test_cli_table_with_categories(bapps, capsys):
    code = main(["2afc", "--data", str(bapps), "--metric", "l2", "--categories", "agree,split"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2AFC agreement, l2, split val (6 triplets")
    assert [line.split()[:2] for line in lines[1:]] == [["agree", "1.0000"], ["split", "0.5000"], ["mean", "0.7500"]]


@pytest.mark.parametrize("args, fragment", [
    (["--data", "{missing}"], "no such folder"),
    (["--data", "{tmp}"], "has no 2afc/ folder"),
    (["--data", "{bapps}", "--categories", "cnn"], "no category 'cnn'"),
    (["--data", "{bapps}", "--split", "train"], "no split 'train'"),
    (["--data", "{bapps}", "--categories", "agree", "agree"], "listed more than once"),
])
def test_cli_bad_data_exits_2_with_one_line(bapps, tmp_path, capsys, args, fragment):
    paths = {"missing": str(tmp_path / "nowhere"), "tmp": str(tmp_path), "bapps": str(bapps)}
    argv = ["2afc", *[arg.format(**paths) for arg in args], "--metric", "l2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("elpips 2afc: error: ") and fragment in err[0]


def test_cli_malformed_judge_exits_2(bapps, capsys):
    fragment = _break(bapps, "judge out of range")
    assert main(["2afc", "--data", str(bapps), "--metric", "l2"]) == 2
    assert fragment in capsys.readouterr().err
