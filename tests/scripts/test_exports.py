"""Exports: scanline plots against the frames they come from, animations decoded back, the viewer's links."""

from __future__ import annotations

import json

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from elpips.scripts.render.frames import (
    ExportSettings,
    comparison_figure,
    comparison_time_scale,
    even_sized,
    export_path,
    frames_to_uint8,
    marked_frame,
    save_frames,
    scanline_image,
    write_gif,
    write_mp4,
)
from elpips.scripts.render.viewer import write_index
from helpers import missing_references


def random_frames(count: int = 5, height: int = 12, width: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def test_frames_to_uint8_rounds_and_clips():
    frames = torch.tensor([0.0, 0.5, 1.0, 1 / 255 * 0.49]).reshape(1, 1, 1, 4).expand(2, 3, 1, 4)
    array = frames_to_uint8(frames)
    assert array.shape == (2, 1, 4, 3) and array.dtype == np.uint8
    assert array[0, 0, :, 0].tolist() == [0, 128, 255, 0]
    with pytest.raises(ValueError):
        frames_to_uint8(torch.zeros(2, 4, 5, 5))


def test_scanline_rows_are_the_chosen_row_of_each_frame():
    frames = random_frames(5, 12, 16)
    image = scanline_image(frames, row=7, scale=3)
    assert image.shape == (5 * 3, 16 * 3, 3)
    blocks = image.reshape(5, 3, 16, 3, 3)  # [frame, dy, x, dx, channel]
    for dy in range(3):
        for dx in range(3):
            assert np.array_equal(blocks[:, dy, :, dx], frames[:, 7])
    tall = scanline_image(frames, row=0, scale=2, time_scale=5)
    assert tall.shape == (25, 32, 3) and np.array_equal(tall[5 * 4, ::2], frames[4, 0])


def test_marked_frame_paints_only_the_row_red():
    frame = random_frames(1, 6, 5)[0]
    marked = marked_frame(frame, row=2, scale=2)
    assert marked.shape == (12, 10, 3)
    assert (marked[4:6] == [255, 0, 0]).all()
    unmarked = np.delete(marked, [4, 5], axis=0)
    assert np.array_equal(unmarked[::2, ::2], np.delete(frame, 2, axis=0))


def test_gif_decodes_with_the_right_frame_count(tmp_path):
    frames = random_frames(5, 12, 16)
    path = write_gif(tmp_path / "a.gif", frames, fps=10, pingpong=True)
    decoded = iio.imread(path, index=None)
    assert decoded.shape[:3] == (5 + 3, 12, 16)  # forward, then back without repeating the ends
    write_gif(tmp_path / "b.gif", frames, fps=10, pingpong=False)
    assert iio.imread(tmp_path / "b.gif", index=None).shape[0] == 5
    assert iio.immeta(tmp_path / "b.gif")["duration"] == 100


def test_mp4_decodes_with_the_right_frame_count_and_content(tmp_path):
    smooth = np.linspace(0, 255, 5 * 13 * 17 * 3).reshape(5, 13, 17, 3).astype(np.uint8)  # odd size: padded
    path = write_mp4(tmp_path / "a.mp4", smooth, fps=8)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    decoded = [np.frombuffer(frame, np.uint8).reshape(14, 18, 3) for frame in reader]
    assert meta["size"] == (18, 14) and len(decoded) == 5
    assert np.abs(np.stack(decoded)[:, :13, :17].astype(int) - smooth).mean() < 12
    assert even_sized(smooth).shape == (5, 14, 18, 3)


def test_save_frames_numbers_files_and_removes_stale_ones(tmp_path):
    save_frames(tmp_path, random_frames(12))
    paths = save_frames(tmp_path, random_frames(3, seed=1))
    assert [p.name for p in paths] == ["frame_000.png", "frame_001.png", "frame_002.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame_000.png", "frame_001.png", "frame_002.png"]
    assert np.array_equal(iio.imread(tmp_path / "frame_002.png"), random_frames(3, seed=1)[2])


def test_comparison_figure_layout():
    columns = [("a", random_frames(4, 16, 8, seed=1)), ("b", random_frames(4, 16, 8, seed=2))]
    scale, row, gap, label = 2, 3, 8, 22
    figure = comparison_figure(columns, row=row, scale=scale)
    time_scale = comparison_time_scale(4, 16, scale)
    assert time_scale == 4  # the evolution is half as tall as the enlarged frame
    assert figure.shape == (label + 16 * scale + 4 * time_scale + 2 * gap, 3 * gap + 2 * 8 * scale, 3)
    for number, (_, frames) in enumerate(columns):
        left = gap + number * (8 * scale + gap)
        panel = figure[label:label + 16 * scale, left:left + 8 * scale]
        assert np.array_equal(panel, marked_frame(frames[2], row, scale))  # the middle frame, row in red
        top = label + 16 * scale + gap
        evolution = figure[top:top + 4 * time_scale, left:left + 8 * scale]
        assert np.array_equal(evolution, scanline_image(frames, row, scale, time_scale))
    with pytest.raises(ValueError):
        comparison_figure([("a", random_frames(4)), ("b", random_frames(5))], row=0, scale=1)


def test_export_path_writes_every_file_and_the_index_references_only_existing_files(tmp_path):
    frames = random_frames(6, 12, 16)
    files = export_path(tmp_path, frames, ExportSettings(row=4, scale=2, fps=5, pingpong=False))
    assert files["frames"] == [f"frames/frame_{i:03d}.png" for i in range(6)]
    assert np.array_equal(iio.imread(tmp_path / "scanline.png"), scanline_image(frames, 4, 2))
    assert np.array_equal(iio.imread(tmp_path / "scanline_marked.png"), marked_frame(frames[3], 4, 2))
    assert iio.imread(tmp_path / "animation.gif", index=None).shape[0] == 6
    assert not list(tmp_path.rglob(".*"))  # no temporaries left behind
    log = {"files": files, "export": {"row": 4, "scale": 2, "fps": 5.0, "pingpong": False}, "size": [12, 16],
           "keyframes": ["a.png", "b.png"], "steps": 3,
           "weights": {"metric": "l2", "calibrated": True}, "result": {"energy": 1.0, "distances": [0.1] * 5}}
    write_index(tmp_path, log)
    (tmp_path / "log.json").write_text(json.dumps(log))
    missing, parser = missing_references(tmp_path)
    assert missing == []
    assert parser.frame_list == files["frames"]
    assert {"animation.gif", "animation.mp4", "scanline.png", "scanline_marked.png"} <= set(parser.links)
    (tmp_path / "animation.mp4").unlink()
    assert missing_references(tmp_path)[0] == ["animation.mp4"]  # the check can fail


def test_export_settings_are_checked():
    with pytest.raises(ValueError, match="row"):
        ExportSettings(row=12).resolved(12, 16)
    with pytest.raises(ValueError, match="fps"):
        ExportSettings(fps=0).resolved(12, 16)
    assert ExportSettings().resolved(12, 16).row == 6


def test_a_missing_mp4_encoder_is_said_on_stderr_and_in_the_viewer(tmp_path, monkeypatch, capsys):
    import sys

    from elpips.scripts.render import frames as frames_module

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import imageio_ffmpeg raises ImportError
    monkeypatch.setattr(frames_module, "_encoder_noted", False)
    files = export_path(tmp_path, random_frames(4), ExportSettings(row=4, scale=1, fps=5, pingpong=False))
    export_path(tmp_path, random_frames(4), ExportSettings(row=4, scale=1, fps=5, pingpong=False))
    assert "mp4" not in files and not (tmp_path / "animation.mp4").exists()
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "imageio-ffmpeg" in notes[0]
    log = {"files": files, "export": {"row": 4, "scale": 1, "fps": 5.0, "pingpong": False}, "size": [12, 16],
           "keyframes": ["a.png", "b.png"], "steps": 3, "weights": {"metric": "l2", "calibrated": True}}
    write_index(tmp_path, log)
    assert "MP4 not written: install imageio-ffmpeg" in (tmp_path / "index.html").read_text()


def test_a_clip_without_the_mp4_encoder_writes_no_videos_and_says_so(tmp_path, monkeypatch, capsys):
    import sys

    from elpips.scripts.render import frames as frames_module
    from elpips.scripts.render.clip import ClipExport, render_clip

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    monkeypatch.setattr(frames_module, "_encoder_noted", False)
    paths = save_frames(tmp_path / "frames", random_frames(3))
    files = render_clip(tmp_path, paths, ClipExport(factor=2, fps=5, row=2, scale=1, label="geodesic"))
    assert "mp4" not in files and "comparison_mp4" not in files and not list(tmp_path.glob("*.mp4"))
    assert capsys.readouterr().err.count("note: MP4 not written") == 1
    log = {"files": {"frames": [f"frames/{path.name}" for path in paths], **files}, "size": [12, 16],
           "export": {"row": 2, "scale": 1, "fps": 5.0, "pingpong": False}, "weights": {"metric": "l2"}}
    write_index(tmp_path, log)
    assert (tmp_path / "index.html").read_text().count("MP4 not written: install imageio-ffmpeg") == 2


def test_figure_captions_are_at_least_12_px_and_never_cut():
    from elpips.scripts.attack import figure, figure_headings
    from elpips.scripts.render.figures import LABEL_HEIGHT, labelled

    caption = "elpips-vgg [UNCALIBRATED: random backbone] Ag"
    image = labelled(np.zeros((8, 16, 3), np.uint8), caption)
    ink = np.nonzero((image[:LABEL_HEIGHT] < 128).any(axis=2))
    assert ink[0].max() - ink[0].min() + 1 >= 12  # cap height + descender of a 14-px font (the bitmap one: ~8)
    assert image.shape[1] > 16 and ink[1].max() < image.shape[1] - 1  # widened to the caption, not cut
    rows = [[torch.rand(3, 16, 16) for _ in range(3)] for _ in range(2)]
    picture = figure(rows, ["lpips-vgg: d 0.1", "l2: d 0.2"], figure_headings("a2"))
    assert picture.shape[1] >= 3 * 160 and picture.shape[0] >= 2 * 160 + 3 * LABEL_HEIGHT  # headings + row labels
