"""``elpips geodesic`` and ``elpips export`` end to end on tiny images, resume after an interruption, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
from elpips.scripts.cli import main
from elpips.scripts.render.frames import scanline_image
from elpips.solver import ProgressReport
from helpers import missing_references

SMALL = ["--backbone-weights", "random", "--frames", "4", "--samples", "2", "--seed", "1"]


@pytest.fixture
def pictures(tmp_path):
    """Three 32x32 PNG keyframes (a bright square moving across a gradient) and an odd-sized one."""
    paths = []
    base = np.linspace(0, 160, 32, dtype=np.uint8)[None, :, None].repeat(32, 0).repeat(3, 2)
    for index, left in enumerate((2, 14, 24)):
        image = base.copy()
        image[10:18, left:left + 6] = (250, 200, 40)
        path = tmp_path / f"key{index}.png"
        iio.imwrite(path, image)
        paths.append(str(path))
    odd = tmp_path / "odd.png"
    iio.imwrite(odd, base[:30])
    return paths, str(odd)


def test_geodesic_writes_every_export_and_compares(pictures, tmp_path, capsys):
    (a, b, _), _ = pictures
    out = tmp_path / "run"
    assert main(["geodesic", a, b, *SMALL, "--steps", "3", "--compare", "l2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "elpips-vgg [UNCALIBRATED: random backbone]" in printed and "l2:" in printed
    for name in ("scanline.png", "scanline_marked.png", "animation.gif", "animation.mp4", "comparison.png",
                 "index.html", "log.json", "compare/l2/index.html", "compare/l2/animation.gif"):
        assert (out / name).is_file(), name
    frames = np.stack([iio.imread(out / "frames" / f"frame_{i:03d}.png") for i in range(4)])
    assert np.array_equal(frames[0], iio.imread(a)) and np.array_equal(frames[3], iio.imread(b))
    log = json.loads((out / "log.json").read_text())
    assert log["frames"] == 4 and len(log["energy_history"]) == 3 and len(log["result"]["distances"]) == 3
    assert log["weights"]["calibrated"] is False and log["weights"]["backbone_weights"].startswith("random")
    assert log["export"]["row"] == 16 and log["compare"] == [{"metric": "l2", "dir": "compare/l2"}]
    assert set(log["timings"]) >= {"solve_s", "step_s_mean", "export_s"}
    assert np.array_equal(iio.imread(out / "scanline.png"), scanline_image(frames, 16, log["export"]["scale"]))
    assert iio.imread(out / "animation.gif", index=None).shape[0] == 4 + 2
    reader = imageio_ffmpeg.read_frames(str(out / "animation.mp4"))
    next(reader)
    assert sum(1 for _ in reader) == 4
    l2_frames = np.stack([iio.imread(out / "compare/l2/frames" / f"frame_{i:03d}.png") for i in range(4)])
    linear = np.stack([(1 - t) * frames[0] + t * frames[3] for t in np.arange(4) / 3])
    assert np.abs(l2_frames - linear).max() <= 2  # 3 Adam steps from the blend barely move the L2 optimum
    for run_dir in (out, out / "compare/l2"):
        assert missing_references(run_dir)[0] == []

    (out / "index.html").unlink()
    assert main(["export", str(out), "--row", "5", "--scale", "2", "--no-pingpong", "--fps", "4"]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")  # re-rendered, with the tiled preview and its seams
    assert 'id="tiled"' in page and 'data-src="frames/frame_000.png"' in page
    seams = json.loads(re.search(r'<script id="seam-list" type="application/json">(.*?)</script>', page).group(1))
    assert len(seams) == 4 and seams == pytest.approx(log["result"]["seam_statistic"])
    assert f"<title>{out.name}: geodesic {Path(a).name} → {Path(b).name}" in page and str(tmp_path) not in page
    assert np.array_equal(iio.imread(out / "scanline.png"), scanline_image(frames, 5, 2))
    assert iio.imread(out / "animation.gif", index=None).shape[0] == 4
    assert iio.imread(out / "compare/l2/scanline.png").shape == (4 * 2, 32 * 2, 3)
    log = json.loads((out / "log.json").read_text())
    assert log["export"] == {"row": 5, "scale": 2, "fps": 4.0, "pingpong": False}
    assert missing_references(out)[0] == []


def test_interrupted_run_resumes_to_the_uninterrupted_result(pictures, tmp_path, monkeypatch):
    a, b, c = pictures[0]
    spline = [a, b, c, *SMALL, "--frames", "5", "--steps", "4", "--checkpoint-every", "1"]
    assert main(["geodesic", *spline, "--out", str(tmp_path / "full")]) == 0

    original = ProgressReport.__call__

    def interrupt_at_step_two(self, info):
        original(self, info)
        if info.step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressReport, "__call__", interrupt_at_step_two)
    assert main(["geodesic", *spline, "--out", str(tmp_path / "cut")]) == 130
    monkeypatch.setattr(ProgressReport, "__call__", original)
    assert main(["geodesic", *spline, "--out", str(tmp_path / "cut"), "--resume"]) == 0

    full = json.loads((tmp_path / "full/log.json").read_text())
    resumed = json.loads((tmp_path / "cut/log.json").read_text())
    assert resumed["timings"]["resumed_from_step"] == 2
    assert resumed["energy_history"] == full["energy_history"]
    assert resumed["result"]["distances"] == full["result"]["distances"]
    assert full["keyframe_indices"] == [0, 2, 4]
    for i in range(5):
        name = f"frames/frame_{i:03d}.png"
        assert np.array_equal(iio.imread(tmp_path / "cut" / name), iio.imread(tmp_path / "full" / name))


@pytest.mark.parametrize("arguments, message", [
    (["missing.png", "{a}"], "no such file"),
    (["{a}", "{odd}"], "same size"),
    (["{a}", "{b}", "--frames", "2"], "no frame to optimise"),
    (["{a}", "{b}", "--compare", "l2,nope"], "unknown metric 'nope'"),
    (["{a}", "{b}", "--compare", "lpips-vgg,l2"], "twice"),
    (["{a}", "{b}", "--row", "32"], "row 32 is outside"),
    (["{a}", "{b}", "--fps", "0"], "--fps"),
    (["{a}", "{b}", "--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["{a}", "{b}", "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["{a}", "{b}", "--resume"], "--resume needs --out"),
    (["{a}", "{b}", "--resume", "--out", "{tmp}/empty"], "no checkpoint"),
    (["{a}", "{b}", "--out", "{a}/run"], "cannot write to"),  # a folder inside a file: fails before solving
])
def test_bad_geodesic_input_is_one_error_line_and_exit_2(pictures, tmp_path, capsys, arguments, message):
    (a, b, _), odd = pictures
    filled = [argument.format(a=a, b=b, odd=odd, tmp=tmp_path) for argument in arguments]
    assert main(["geodesic", *filled, "--metric", "l2", "--steps", "1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("elpips geodesic: error:") and message in error


def test_bad_export_input_is_one_error_line_and_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path)]) == 2
    assert "no log.json" in capsys.readouterr().err
    (tmp_path / "log.json").write_text("{broken")
    assert main(["export", str(tmp_path)]) == 2
    assert "unreadable" in capsys.readouterr().err
