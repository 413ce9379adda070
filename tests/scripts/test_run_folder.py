"""A run folder belongs to one run: refusal of an existing run, the lock, stale locks, temporary files of kills,
nothing created on bad input, the resume hint, and the settings check of a resume (the seed included)."""

from __future__ import annotations

import json
import os

import elpips.io
import elpips.scripts.geodesic as geodesic_command
import imageio.v3 as iio
import numpy as np
import pytest
from elpips.scripts.cli import main
from elpips.scripts.run_folder import LOCK_NAME, SETTINGS_NAME, RunFolder, RunFolderBusy
from helpers import dead_pid

GEODESIC = ["--metric", "l2", "--frames", "3", "--samples", "2", "--checkpoint-every", "1"]
BARYCENTER = ["--metric", "l2", "--eval-samples", "2", "--checkpoint-every", "1"]


@pytest.fixture
def pictures(tmp_path):
    """Two 24x24 PNGs that differ."""
    paths = []
    for index in range(3):
        image = np.random.default_rng(index).integers(0, 256, (24, 24, 3), dtype=np.uint8)
        path = tmp_path / f"in{index}.png"
        iio.imwrite(path, image)
        paths.append(str(path))
    return paths


def last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_geodesic_refuses_an_existing_run_without_resume(pictures, tmp_path, capsys):
    a, b, c = pictures
    out = tmp_path / "run"
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "2", "--out", str(out)]) == 0
    checkpoint = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["geodesic", a, c, *GEODESIC, "--steps", "2", "--out", str(out)]) == 2
    error = last_error(capsys)
    assert "already holds a run" in error and "--resume" in error
    assert (out / "checkpoint.pt").read_bytes() == checkpoint
    assert json.loads((out / "log.json").read_text())["keyframes"] == [a, b]


def test_a_second_run_into_a_locked_folder_is_one_error_naming_the_holder(pictures, tmp_path, capsys):
    a, b, _ = pictures
    out = tmp_path / "run"
    with RunFolder(out, "barycenter").claim():
        assert main(["barycenter", a, b, *BARYCENTER, "--steps", "1", "--out", str(out)]) == 2
        error = last_error(capsys)
        assert "in use by another run" in error and f"pid {os.getpid()}" in error
        assert not (out / "inputs").exists() and not (out / "log.json").exists()
    assert not (out / LOCK_NAME).exists()


def test_claim_refuses_a_live_holder_directly(tmp_path):
    holder = RunFolder(tmp_path / "run", "geodesic")
    with holder.claim(), pytest.raises(RunFolderBusy, match="in use"), RunFolder(tmp_path / "run", "geodesic").claim():
        pass


def test_a_stale_lock_is_taken_over_with_a_note(pictures, tmp_path, capsys):
    a, b, _ = pictures
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename, "started": "then"}))
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "1", "--out", str(out)]) == 0
    assert "taking over the lock of a run that no longer runs" in capsys.readouterr().err
    assert (out / "log.json").is_file() and not (out / LOCK_NAME).exists()


def test_temporary_files_of_a_killed_run_are_removed_on_the_next_start(pictures, tmp_path, capsys):
    a, b, _ = pictures
    out = tmp_path / "run"
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "2", "--out", str(out)]) == 0
    orphans = [out / ".checkpoint.pt.x1y2.tmp.pt", out / "frames" / ".frame_001.png.abc.tmp.png"]
    for orphan in orphans:
        orphan.write_bytes(b"half a file")
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "2", "--resume", "--out", str(out)]) == 0
    assert "removed 2 temporary file(s)" in capsys.readouterr().err
    assert not any(orphan.exists() for orphan in orphans)


@pytest.mark.parametrize("command, arguments", [
    ("geodesic", ["{a}", "missing.png", "--metric", "l2"]),
    ("geodesic", ["{a}", "{b}", "--frames", "2", "--metric", "l2"]),
    ("geodesic", ["{a}", "{b}", "--backbone-weights", "{tmp}/none.pt"]),
    ("barycenter", ["{a}", "missing.png", "--metric", "l2"]),
    ("barycenter", ["{a}", "{b}", "--backbone-weights", "{tmp}/none.pt"]),
    ("train-example", ["--images", "missing.png", "--metric", "l2"]),
    ("train-example", ["--metric", "lpips-vgg", "--backbone-weights", "{tmp}/none.pt"]),
    ("attack", ["a2", "missing.png", "--epsilon", "0.03", "--metric", "l2"]),
    ("interpolate", ["{tmp}/missing.mp4", "--metric", "l2"]),
    ("interpolate", ["{tmp}/in*.png", "--metric", "elpips-squeeze", "--backbone-weights", "{tmp}/none.pt"]),
    ("interpolate", ["{tmp}/in*.png", "--metric", "lpips-squeeze", "--max-offset", "3"]),
])
def test_bad_input_creates_no_folder(pictures, tmp_path, monkeypatch, capsys, command, arguments):
    a, b, _ = pictures
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    filled = [argument.format(a=a, b=b, tmp=tmp_path) for argument in arguments]
    assert main([command, *filled]) == 2
    assert last_error(capsys).startswith(f"elpips {command}: error:")
    assert main([command, *filled, "--out", str(tmp_path / "out")]) == 2
    assert list(work.iterdir()) == [] and not (tmp_path / "out").exists()


def test_ctrl_c_prints_the_exact_resume_command_and_releases_the_lock(pictures, tmp_path, monkeypatch, capsys):
    a, b, _ = pictures
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(geodesic_command, "solve", interrupted)
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "2", "--out", str(out)]) == 130
    hint = f"elpips geodesic {a} {b} {' '.join(GEODESIC)} --steps 2 --resume --out {out}"
    assert f"interrupted: continue with: {hint}" in capsys.readouterr().err
    assert not (out / LOCK_NAME).exists() and (out / SETTINGS_NAME).is_file()


def test_resume_with_another_seed_is_refused_naming_old_and_new(pictures, tmp_path, capsys):
    a, b, _ = pictures
    out = tmp_path / "run"
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "2", "--seed", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "2", "--seed", "5", "--resume", "--out", str(out)]) == 2
    assert "seed was 1, now 5" in last_error(capsys)
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "3", "--seed", "1", "--resume", "--out", str(out)]) == 2
    assert "steps was 2, now 3" in last_error(capsys)
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "2", "--resume", "--out", str(out)]) == 0
    assert json.loads((out / "log.json").read_text())["seed"] == 1


def test_a_run_without_seed_records_the_seed_it_drew_and_resume_continues_that_stream(pictures, tmp_path):
    a, b, _ = pictures
    interrupted, whole = tmp_path / "interrupted", tmp_path / "whole"
    assert main(["barycenter", a, b, *BARYCENTER, "--steps", "2", "--out", str(interrupted)]) == 0
    seed = json.loads((interrupted / SETTINGS_NAME).read_text())["settings"]["seed"]
    assert isinstance(seed, int) and json.loads((interrupted / "log.json").read_text())["seed"] == seed
    assert main(["barycenter", a, b, *BARYCENTER, "--steps", "4", "--resume", "--out", str(interrupted)]) == 0
    assert json.loads((interrupted / "log.json").read_text())["seed"] == seed
    assert main(["barycenter", a, b, *BARYCENTER, "--steps", "4", "--seed", str(seed), "--out", str(whole)]) == 0
    assert np.array_equal(iio.imread(interrupted / "barycenter.png"), iio.imread(whole / "barycenter.png"))


def test_export_waits_for_no_run_it_would_mix_with(pictures, tmp_path, capsys):
    a, b, _ = pictures
    out = tmp_path / "run"
    assert main(["geodesic", a, b, *GEODESIC, "--steps", "1", "--out", str(out)]) == 0
    with RunFolder(out, "geodesic", resume=True).claim():
        assert main(["export", str(out), "--fps", "3"]) == 2
        assert "in use by another run" in last_error(capsys)
    assert main(["export", str(out), "--fps", "3"]) == 0
    assert json.loads((out / "log.json").read_text())["export"]["fps"] == 3


def test_a_full_disk_at_the_start_leaves_neither_lock_nor_folder(tmp_path, monkeypatch):
    import errno

    import elpips.scripts.run_folder as run_folder

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_folder.json, "dump", full)
    folder = RunFolder(tmp_path / "new" / "run", "geodesic")
    with pytest.raises(elpips.io.OutputWriteError, match="No space left on device"), folder.claim({"seed": 1}):
        pass
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    with RunFolder(tmp_path / "new" / "run", "geodesic").claim({"seed": 1}) as claimed:  # a retry goes through
        assert (claimed.path / LOCK_NAME).is_file()


@pytest.mark.parametrize("argv", [["geodesic", "a.png", "b.png", "--out=old", "--steps", "3"],
                                  ["geodesic", "a.png", "b.png", "--out", "old", "--resume", "--steps", "3"]])
def test_the_resume_hint_names_the_folder_once(tmp_path, argv):
    hint = RunFolder(tmp_path / "run dir", "geodesic", argv=argv).resume_command()
    assert hint == f"elpips geodesic a.png b.png --steps 3 --resume --out '{tmp_path / 'run dir'}'"


def test_ctrl_c_in_a_run_that_cannot_resume_says_what_is_left(tmp_path, capsys):
    with (pytest.raises(KeyboardInterrupt),
          RunFolder(tmp_path / "run", "train-example", resumable=False).claim({"seed": 1})):
        raise KeyboardInterrupt
    error = capsys.readouterr().err
    assert "unfinished run that train-example cannot continue" in error and not (tmp_path / "run" / LOCK_NAME).exists()
