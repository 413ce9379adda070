"""A full disk (or any OS write error) during a run: one line naming the folder and the cause, exit 2, nothing
half-written, the run resumable from its last good checkpoint (an interpolation from its last finished window),
and ``elpips export`` possible from what was saved.

A small tmpfs is mounted when the tests run as root and ``mount`` is permitted; the stub tests (a writer that
raises ``ENOSPC``) always run."""

from __future__ import annotations

import errno
import json
import pathlib
import shutil
import subprocess

import elpips.scripts.render.run as render_run_module
import imageio.v3 as iio
import numpy as np
import pytest
from elpips.scripts.cli import main
from helpers import NO_SPACE, fail_second_checkpoint_write

GEODESIC = ["--metric", "l2", "--frames", "4", "--samples", "2", "--seed", "3"]


@pytest.fixture
def pictures(tmp_path):
    paths = []
    for index in range(2):
        image = np.random.default_rng(index).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        path = tmp_path / f"in{index}.png"
        iio.imwrite(path, image)
        paths.append(str(path))
    return paths


def leftovers(folder: pathlib.Path) -> list[pathlib.Path]:
    """Temporary files and locks left in ``folder``."""
    return [path for path in folder.rglob("*") if ".tmp" in path.name or path.name == ".lock"]


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line or "Traceback" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_checkpoint_write_failing_with_enospc_is_one_line_and_the_run_resumes(pictures, tmp_path, monkeypatch,
                                                                               capsys):
    a, b = pictures
    out = tmp_path / "run"
    original = fail_second_checkpoint_write(monkeypatch)
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "4", "--checkpoint-every", "1", "--out", str(out)]) == 2
    assert one_error_line(capsys) == f"elpips geodesic: error: cannot write to '{out}': {NO_SPACE}"
    assert leftovers(out) == [] and (out / "checkpoint.pt").is_file()
    monkeypatch.setattr(pathlib.Path, "write_bytes", original)
    resumed = ["geodesic", a, b, *GEODESIC, "--steps", "4", "--checkpoint-every", "1", "--resume", "--out", str(out)]
    assert main(resumed) == 0
    assert json.loads((out / "log.json").read_text())["timings"]["resumed_from_step"] == 1
    whole = tmp_path / "whole"
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "4", "--out", str(whole)]) == 0
    for name in ("frames/frame_001.png", "frames/frame_002.png"):
        assert np.array_equal(iio.imread(out / name), iio.imread(whole / name))


def test_an_export_failing_with_enospc_leaves_a_run_that_export_can_finish(pictures, tmp_path, monkeypatch, capsys):
    a, b = pictures
    out = tmp_path / "run"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(render_run_module, "write_index", disk_full)
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "2", "--out", str(out)]) == 2
    assert one_error_line(capsys) == f"elpips geodesic: error: cannot write to '{out}': {NO_SPACE}"
    assert leftovers(out) == [] and not (out / "index.html").exists()
    monkeypatch.undo()
    assert main(["export", str(out)]) == 0
    assert (out / "index.html").is_file() and (out / "animation.gif").is_file()


def test_an_os_error_in_export_is_one_line_naming_the_folder(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    (run / "frames").mkdir(parents=True)
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    iio.imwrite(run / "frames" / "frame_000.png", image)
    iio.imwrite(run / "frames" / "frame_001.png", image)
    log = {"files": {"frames": ["frames/frame_000.png", "frames/frame_001.png"]}, "weights": {"metric": "l2"},
           "size": [16, 16]}
    (run / "log.json").write_text(json.dumps(log))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(run / "scanline.png"))

    monkeypatch.setattr(render_run_module, "export_path", read_only)
    assert main(["export", str(run)]) == 2
    assert one_error_line(capsys) == f"elpips export: error: cannot write to '{run}': Read-only file system"
    assert leftovers(run) == []


def test_an_os_error_outside_a_run_folder_is_one_line(tmp_path, monkeypatch, capsys):
    import elpips.scripts.examples as examples

    def denied(args):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x.json"))

    monkeypatch.setattr(examples, "run", denied)
    assert main(["examples"]) == 2
    assert one_error_line(capsys) == f"elpips examples: error: Permission denied ('{tmp_path / 'x.json'}')"


@pytest.fixture
def clip(tmp_path):
    """A folder of 3 frames (32x32)."""
    folder = tmp_path / "clip"
    folder.mkdir()
    for index in range(3):
        iio.imwrite(folder / f"f{index}.png", np.random.default_rng(index).integers(0, 256, (32, 32, 3), np.uint8))
    return str(folder)


INTERPOLATE = ["--factor", "2", "--metric", "elpips-squeeze", "--backbone-weights", "random", "--steps", "2",
               "--samples", "1", "--seed", "3"]


def test_interpolate_frame_write_failing_with_enospc_is_one_line_and_the_run_resumes(clip, tmp_path, monkeypatch,
                                                                                     capsys):
    import elpips.scripts.interpolate as interpolate_command

    out = tmp_path / "run"
    original = interpolate_command.save_image
    writes = []

    def third_frame_fails(path, image):
        writes.append(path)
        if len(writes) == 3:  # the first frame of the second window
            raise OSError(errno.ENOSPC, NO_SPACE)
        return original(path, image)

    monkeypatch.setattr(interpolate_command, "save_image", third_frame_fails)
    assert main(["interpolate", clip, *INTERPOLATE, "--out", str(out)]) == 2
    assert one_error_line(capsys) == f"elpips interpolate: error: cannot write to '{out}': {NO_SPACE}"
    assert leftovers(out) == [] and (out / "windows/window_00000.json").is_file()
    assert not (out / "windows/window_00001.json").exists() and not (out / "log.json").exists()
    monkeypatch.undo()
    assert main(["interpolate", clip, *INTERPOLATE, "--resume", "--out", str(out)]) == 0
    whole = tmp_path / "whole"
    assert main(["interpolate", clip, *INTERPOLATE, "--out", str(whole)]) == 0
    for index in range(5):
        name = f"frames/frame_{index:03d}.png"
        assert np.array_equal(iio.imread(out / name), iio.imread(whole / name)), name


def test_interpolate_failing_to_record_its_settings_leaves_no_folder(clip, tmp_path, monkeypatch, capsys):
    import elpips.scripts.run_folder as run_folder_module

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(run_folder_module, "write_json", disk_full)
    out = tmp_path / "new" / "run"
    assert main(["interpolate", clip, *INTERPOLATE, "--out", str(out)]) == 2
    assert one_error_line(capsys) == f"elpips interpolate: error: cannot write to '{out}': {NO_SPACE}"
    assert not (tmp_path / "new").exists()


def test_interpolate_export_failing_with_enospc_is_one_line_and_resume_finishes(clip, tmp_path, monkeypatch, capsys):
    import elpips.scripts.interpolate as interpolate_command

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, NO_SPACE)

    out = tmp_path / "run"
    monkeypatch.setattr(interpolate_command, "write_index", disk_full)
    assert main(["interpolate", clip, *INTERPOLATE, "--out", str(out)]) == 2
    assert one_error_line(capsys) == f"elpips interpolate: error: cannot write to '{out}': {NO_SPACE}"
    assert leftovers(out) == [] and not (out / "index.html").exists()
    monkeypatch.undo()
    assert main(["interpolate", clip, *INTERPOLATE, "--resume", "--out", str(out)]) == 0
    assert (out / "index.html").is_file() and (out / "log.json").is_file()


@pytest.fixture
def small_disk(tmp_path):
    """A 96 KiB tmpfs (root and mount permission needed; skipped otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount_point)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_a_real_full_disk_is_one_line_and_the_run_resumes_elsewhere(pictures, small_disk, tmp_path, capsys):
    a, b = pictures
    out = small_disk / "run"
    arguments = ["geodesic", a, b, *GEODESIC, "--steps", "3", "--checkpoint-every", "1"]
    assert main([*arguments, "--out", str(out)]) == 2
    assert one_error_line(capsys) == f"elpips geodesic: error: cannot write to '{out}': {NO_SPACE}"
    assert leftovers(out) == []
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    assert main([*arguments, "--resume", "--out", str(moved)]) == 0
    assert (moved / "index.html").is_file()
