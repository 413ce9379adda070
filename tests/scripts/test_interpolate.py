"""Frame interpolation of clips: reading videos, GIFs and folders; windows; ``elpips interpolate`` end to end
(the L2 cross-fade in closed form, input frames kept exactly, resume after a kill, a batch job)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from elpips import Metric
from elpips.clips import open_clip
from elpips.geodesics import SolveSettings, crossfade, output_count, plan_windows, solve_window
from elpips.geodesics.clip import window_seed
from elpips.io import ImageLoadError
from elpips.scripts import interpolate as interpolate_command
from elpips.scripts.cli import main
from elpips.scripts.render.clip import SIDE_WIDTH, side_scale
from elpips.scripts.render.figures import LABEL_HEIGHT
from elpips.scripts.run_folder import LOCK_NAME, SETTINGS_NAME
from helpers import dead_pid, missing_references

SIZE = 32
FAST = ["--backbone-weights", "random", "--metric", "elpips-squeeze", "--samples", "1", "--seed", "3"]


def moving_square(count: int = 4, size: int = SIZE) -> np.ndarray:
    """``[count, size, size, 3]`` uint8: a bright square moving right over a horizontal gradient."""
    base = np.linspace(0, 160, size, dtype=np.uint8)[None, :, None].repeat(size, 0).repeat(3, 2)
    frames = []
    for left in np.linspace(2, size - 8, count).astype(int):
        frame = base.copy()
        frame[10:18, left:left + 6] = (250, 200, 40)
        frames.append(frame)
    return np.stack(frames)


@pytest.fixture
def clip_files(tmp_path):
    """The same 4-frame clip as a folder of PNGs, an animated GIF and an MP4 (10 fps)."""
    frames = moving_square()
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(frames):
        iio.imwrite(folder / f"shot{index + 1}.png", frame)  # shot10 would sort after shot9: natural order
    iio.imwrite(tmp_path / "clip.gif", frames, duration=125, loop=0)
    writer = imageio_ffmpeg.write_frames(str(tmp_path / "clip.mp4"), (SIZE, SIZE), fps=10, macro_block_size=2,
                                         ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return {"frames": folder, "gif": tmp_path / "clip.gif", "video": tmp_path / "clip.mp4", "arrays": frames}


# -- reading clips -------------------------------------------------------------------------------------------------
def test_open_clip_reads_folders_globs_gifs_and_videos(clip_files):
    arrays = clip_files["arrays"]
    expected = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255
    for spec, kind in [(clip_files["frames"], "frames"), (f"{clip_files['frames']}/shot*.png", "frames"),
                       (clip_files["gif"], "gif")]:
        clip = open_clip(spec)
        assert (clip.kind, clip.count, clip.size) == (kind, 4, (SIZE, SIZE))
        assert torch.equal(clip.frames(0, 4), expected)  # lossless inputs: exactly the frames
    assert open_clip(clip_files["frames"]).fps == 8.0 and abs(open_clip(clip_files["gif"]).fps - 1000 / 120) < 1
    video = open_clip(clip_files["video"])
    assert (video.kind, video.count, video.fps, video.size) == ("video", 4, 10.0, (SIZE, SIZE))
    decoded = video.frames(2, 4)
    assert (decoded - expected[2:]).abs().mean() < 0.03  # H.264 is lossy
    assert torch.equal(video.frames(0, 1)[0], video.frame(0)[0])  # going back restarts the decoder
    assert torch.equal(video.frames(2, 4), decoded)
    assert open_clip(clip_files["video"], fps=24).fps == 24.0


def test_bad_clips_are_clear_errors(clip_files, tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    iio.imwrite(single / "a.png", clip_files["arrays"][0])
    (tmp_path / "empty").mkdir()
    iio.imwrite(clip_files["frames"] / "shot9.png", clip_files["arrays"][0][:30])
    (tmp_path / "notes.txt").write_text("hello")
    cases = [(tmp_path / "nothing.mp4", "no such file"), (single, "has 1 frame; at least 2 needed"),
             (tmp_path / "empty", "no image files"), (f"{tmp_path}/*.jpeg", "no file matches"),
             (tmp_path / "notes.txt", "not a video"),
             (clip_files["frames"], "Sizing(resize=(height, width)) or Sizing(fit='smallest'|'largest')")]
    for spec, message in cases:
        with pytest.raises(ImageLoadError, match=None) as caught:
            open_clip(spec)
        assert message in str(caught.value), (spec, str(caught.value))
    from elpips.sizing import Sizing

    assert open_clip(clip_files["frames"], Sizing(fit="smallest")).size == (30, SIZE)


# -- windows -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keyframes, per_window", [(2, 2), (5, 2), (6, 3), (7, 4), (4, 9)])
def test_windows_write_every_output_frame_exactly_once(keyframes, per_window):
    factor = 3
    windows = plan_windows(keyframes, per_window)
    owned = [index for window in windows for index in range(*window.owned(factor, keyframes))]
    assert owned == list(range(output_count(keyframes, factor)))
    assert windows[0].first == 0 and windows[-1].last == keyframes - 1
    assert all(a.last == b.first for a, b in zip(windows, windows[1:], strict=False))
    assert all(window.segments <= per_window - 1 for window in windows)


def test_l2_window_is_the_crossfade_and_keeps_its_keyframes():
    """Under L2 the geodesic is the linear blend (closed form); Adam only jitters it by about one step."""
    keys = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    window = plan_windows(3, 3)[0]
    result = solve_window(keys, Metric("l2", device="cpu"), window=window, factor=4, seed=0,
                          settings=SolveSettings(steps=6, eval_samples=1))
    closed_form = torch.stack([(1 - j / 4) * keys[s] + (j / 4) * keys[s + 1] for s in range(2) for j in range(4)]
                              + [keys[2]])
    assert torch.equal(crossfade(keys, 4), closed_form)
    assert (result.frames - closed_form).abs().max() <= 0.012  # lr 0.005 per step; frames 1/4 apart differ by ~0.1
    assert all(torch.equal(result.frames[4 * s], keys[s]) for s in range(3))
    assert abs(result.energy - result.crossfade_energy) / result.crossfade_energy < 1e-3


# -- the command ---------------------------------------------------------------------------------------------------
def read_frames(run_dir) -> np.ndarray:
    log = json.loads((run_dir / "log.json").read_text())
    return np.stack([iio.imread(run_dir / name) for name in log["files"]["frames"]])


def test_interpolate_l2_gives_the_crossfade_with_every_export(clip_files, tmp_path):
    out = tmp_path / "run"
    assert main(["interpolate", str(clip_files["frames"]), "--factor", "3", "--metric", "l2", "--steps", "4",
                 "--out", str(out)]) == 0
    frames = read_frames(out).astype(np.float64)
    keys = clip_files["arrays"].astype(np.float64)
    closed_form = np.stack([(1 - j / 3) * keys[t] + (j / 3) * keys[t + 1] for t in range(3) for j in range(3)]
                           + [keys[3]])
    assert frames.shape == (10, SIZE, SIZE, 3)
    assert np.abs(frames - closed_form).max() <= 3  # a few Adam steps of 0.005 around the exact blend
    assert np.array_equal(frames[::3], keys)  # the input frames, exactly, at their times
    log = json.loads((out / "log.json").read_text())
    assert log["frames"] == 10 and log["keyframe_indices"] == [0, 3, 6, 9] and log["factor"] == 3
    assert log["video"] == {"fps": 24.0, "input_fps": 8.0, "slow_motion": False, "duration_s": round(10 / 24, 3)}
    assert len(log["result"]["distances"]) == 9 and len(log["windows"]) == 3
    assert log["input"]["kind"] == "frames" and log["input"]["sizing"]["fit"] is None
    for name in ("interpolated.mp4", "comparison.mp4", "scanline.png", "scanline_comparison.png", "index.html"):
        assert (out / name).is_file(), name
    reader = imageio_ffmpeg.read_frames(str(out / "interpolated.mp4"))
    meta = next(reader)
    assert meta["fps"] == 24 and sum(1 for _ in reader) == 10
    reader = imageio_ffmpeg.read_frames(str(out / "comparison.mp4"))
    meta = next(reader)
    side = [np.frombuffer(raw, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for raw in reader]
    k = side_scale(SIZE)  # each half enlarged to be about SIDE_WIDTH pixels wide, captioned in a 14-px font
    assert k == min(8, SIDE_WIDTH // SIZE) and meta["size"][1] == k * SIZE + LABEL_HEIGHT
    assert len(side) == 10 and meta["size"][0] >= 2 * k * SIZE + 4  # both halves, 4 px apart (captions widen)
    fade_half = np.stack(side)[:, LABEL_HEIGHT + k // 2::k, -k * SIZE + k // 2::k].astype(np.float64)
    assert fade_half.shape[1:3] == (SIZE, SIZE)
    assert np.abs(fade_half - closed_form).mean() < 6  # the right half is the cross-fade (H.264 is lossy)
    assert iio.imread(out / "scanline.png").shape[0] == 10 * log["export"]["scale"]
    assert missing_references(out)[0] == []
    assert not list((out / "windows").glob("*.pt"))  # checkpoints of finished windows are dropped


def test_input_frames_are_kept_exactly_under_elpips(clip_files, tmp_path):
    out = tmp_path / "run"
    assert main(["interpolate", str(clip_files["gif"]), "--factor", "2", "--window", "3", "--steps", "2", *FAST,
                 "--slow-motion", "--out", str(out)]) == 0
    frames = read_frames(out)
    assert np.array_equal(frames[::2], clip_files["arrays"])
    linear = (frames[::2][:-1].astype(np.float64) + frames[::2][1:]) / 2
    assert np.abs(frames[1::2] - linear).max() > 0  # the new frames come from the solver, not the blend
    log = json.loads((out / "log.json").read_text())
    assert [(w["first"], w["last"]) for w in log["windows"]] == [(0, 2), (2, 3)]
    assert log["video"]["fps"] == log["video"]["input_fps"] and log["weights"]["calibrated"] is False


def test_resume_after_a_kill_skips_finished_windows(clip_files, tmp_path, monkeypatch, capsys):
    arguments = [str(clip_files["frames"]), "--factor", "2", "--steps", "3", "--checkpoint-every", "1", *FAST]
    assert main(["interpolate", *arguments, "--out", str(tmp_path / "full")]) == 0

    original = interpolate_command.WindowProgress.__call__

    def killed_in_second_window(self, info):
        original(self, info)
        if self.done == 1 and info.step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(interpolate_command.WindowProgress, "__call__", killed_in_second_window)
    cut = tmp_path / "cut"
    assert main(["interpolate", *arguments, "--out", str(cut)]) == 130
    hint = shlex.join(["elpips", "interpolate", *arguments, "--resume", "--out", str(cut)])
    assert f"interrupted: continue with: {hint}" in capsys.readouterr().err
    assert (cut / "windows/window_00000.json").is_file() and (cut / "windows/window_00001.pt").is_file()
    assert not (cut / LOCK_NAME).exists() and (cut / SETTINGS_NAME).is_file()
    assert not (cut / "windows/window_00001.json").exists() and not (cut / "log.json").exists()
    monkeypatch.setattr(interpolate_command.WindowProgress, "__call__", original)

    solved = []
    solve = interpolate_command.solve_window

    def counting(keyframes, metric, **options):
        solved.append((options["window"].index, options.get("resume")))
        return solve(keyframes, metric, **options)

    monkeypatch.setattr(interpolate_command, "solve_window", counting)
    assert main(["interpolate", *arguments, "--out", str(cut)]) == 2  # a second run must say --resume
    assert main(["interpolate", *arguments, "--out", str(cut), "--resume"]) == 0
    assert solved == [(1, True), (2, False)]  # window 0 is not redone; window 1 continues its checkpoint
    full, resumed = (json.loads((tmp_path / name / "log.json").read_text()) for name in ("full", "cut"))
    assert [w["resumed_from"] for w in resumed["windows"]] == [0, 2, 0]
    assert resumed["result"] == full["result"] and resumed["seed"] == full["seed"] == 3
    assert np.array_equal(read_frames(cut), read_frames(tmp_path / "full"))
    assert main(["interpolate", *arguments, "--steps", "4", "--out", str(cut), "--resume"]) == 2


def last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_ensemble_options_reach_the_solver_and_every_record(clip_files, tmp_path, monkeypatch, capsys):
    used = []
    solve = interpolate_command.solve_window

    def recording(keyframes, metric, **options):
        used.append(metric.ensemble)
        return solve(keyframes, metric, **options)

    monkeypatch.setattr(interpolate_command, "solve_window", recording)
    out = tmp_path / "run"
    arguments = [str(clip_files["frames"]), "--factor", "2", "--steps", "1", *FAST]
    assert main(["interpolate", *arguments, "--no-flip", "--dropout-keep", "0.5", "--out", str(out)]) == 0
    assert len(used) == 3 and all(not ensemble.flip and ensemble.dropout_keep == 0.5 for ensemble in used)
    assert used[0].offset and used[0].swap  # the pieces not switched off stay on
    recorded = json.loads((out / SETTINGS_NAME).read_text())
    assert (recorded["command"], recorded["kind"]) == ("interpolate", "interpolate")
    ensemble = recorded["settings"]["metrics"][0]["ensemble"]
    assert (ensemble["flip"], ensemble["dropout_keep"]) == (False, 0.5)
    assert recorded["settings"]["seed"] == 3 and recorded["settings"]["factor"] == 2
    assert recorded["settings"]["input"]["frames"] == 4 and recorded["settings"]["input"]["kind"] == "frames"
    logged = json.loads((out / "log.json").read_text())["weights"]["ensemble"]
    assert (logged["flip"], logged["dropout_keep"]) == (False, 0.5)

    plain = tmp_path / "plain"
    assert main(["interpolate", *arguments, "--out", str(plain)]) == 0
    capsys.readouterr()
    assert main(["interpolate", *arguments, "--no-flip", "--resume", "--out", str(plain)]) == 2
    assert "metrics[0].ensemble.flip was True, now False" in last_error(capsys)
    assert main(["interpolate", *arguments, "--factor", "3", "--window", "3", "--resume", "--out", str(plain)]) == 2
    error = last_error(capsys)
    assert "factor was 2, now 3" in error and "window was 2, now 3" in error
    assert main(["interpolate", *arguments, "--max-offset", "3", "--metric", "lpips-squeeze", "--out",
                 str(tmp_path / "none")]) == 2
    assert "--max-offset" in last_error(capsys) and not (tmp_path / "none").exists()


def test_window_seeds_derive_from_the_run_seed_and_survive_a_resume(clip_files, tmp_path, capsys):
    """Window i draws its samples from window_seed(seed, i) (its distances from the next integer): pinned here, so
    that a change of the derivation, which would change every run's frames, is seen."""
    assert [window_seed(3, index) for index in range(3)] == [3153781302, 914380560, 1920659666]
    out = tmp_path / "run"
    arguments = [str(clip_files["frames"]), "--factor", "2", "--steps", "2", *FAST[:-2]]  # no --seed: one is drawn
    assert main(["interpolate", *arguments, "--out", str(out)]) == 0
    seed = json.loads((out / SETTINGS_NAME).read_text())["settings"]["seed"]
    markers = [json.loads((out / f"windows/window_{index:05d}.json").read_text()) for index in range(3)]
    assert [marker["seed"] for marker in markers] == [window_seed(seed, index) for index in range(3)]
    assert len({marker["seed"] for marker in markers}) == 3
    assert [window["seed"] for window in json.loads((out / "log.json").read_text())["windows"]] == \
        [marker["seed"] for marker in markers]
    frames = read_frames(out)
    (out / "windows/window_00001.json").unlink()  # window 1 is solved again on resume
    assert main(["interpolate", *arguments, "--resume", "--out", str(out)]) == 0
    assert json.loads((out / "windows/window_00001.json").read_text())["seed"] == markers[1]["seed"]
    assert np.array_equal(read_frames(out), frames)


def test_a_resume_into_a_running_folder_is_refused_and_stale_locks_and_temporary_files_are_cleared(
        clip_files, tmp_path, capsys):
    out = tmp_path / "run"
    arguments = [str(clip_files["frames"]), "--factor", "2", "--metric", "l2", "--steps", "1", "--samples", "1"]
    assert main(["interpolate", *arguments, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["interpolate", *arguments, "--out", str(out)]) == 2
    assert "already holds a run" in last_error(capsys)
    log = (out / "log.json").read_bytes()
    (out / "windows/window_00002.json").unlink()
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": "now"}))
    assert main(["interpolate", *arguments, "--resume", "--out", str(out)]) == 2
    error = last_error(capsys)
    assert "in use by another run" in error and f"pid {os.getpid()}" in error
    assert (out / "log.json").read_bytes() == log and not (out / "windows/window_00002.json").exists()

    (out / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename, "started": "then"}))
    orphans = [out / "frames" / ".frame_005.png.x1.tmp.png", out / "windows" / ".window_00002.pt.y2.tmp.pt"]
    for orphan in orphans:
        orphan.write_bytes(b"half a file")
    assert main(["interpolate", *arguments, "--resume", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "taking over the lock of a run that no longer runs" in err and "removed 2 temporary file(s)" in err
    assert not any(orphan.exists() for orphan in orphans) and not (out / LOCK_NAME).exists()
    assert (out / "windows/window_00002.json").is_file()


def test_export_refuses_an_interpolation_and_leaves_it_untouched(clip_files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["interpolate", str(clip_files["frames"]), "--factor", "2", "--metric", "l2", "--steps", "1",
                 "--samples", "1", "--out", str(out)]) == 0
    files = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in out.rglob("*") if path.is_file()}
    assert out / "interpolated.mp4" in files and out / "index.html" in files
    capsys.readouterr()
    assert main(["export", str(out), "--fps", "3"]) == 2
    assert last_error(capsys) == (f"elpips export: error: '{out}' holds a run of kind 'interpolate', not 'geodesic'")
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in out.rglob("*") if path.is_file()} == files


@pytest.mark.parametrize("arguments, message", [
    (["{clip}", "--factor", "1"], "--factor must be an integer >= 2"),
    (["{clip}", "--window", "1"], "--window must be an integer >= 2"),
    (["{clip}", "--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["{clip}", "--resume"], "--resume needs --out"),
    (["{clip}", "--resume", "--out", "{tmp}/new"], "no run to continue in"),
    (["{tmp}/missing.mp4"], "no such file"),
    (["{clip}", "--resize", "big"], "--resize must be WIDTHxHEIGHT"),
    (["{clip}", "--center-crop"], "--center-crop needs"),
    (["{clip}", "--row", "40"], "--row 40 is outside"),
    (["{clip}", "--metric", "elpips-squeeze", "--backbone-weights", "{tmp}/missing.pth"], "missing.pth"),
    (["{gif}", "--max-pixels", "500"], "are over the limit of 500 pixels (max_pixels)"),
])
def test_bad_interpolate_input_is_one_error_line_and_exit_2(clip_files, tmp_path, capsys, arguments,
                                                            message):
    filled = [argument.format(clip=clip_files["frames"], gif=clip_files["gif"], tmp=tmp_path) for argument in arguments]
    out = [] if "--out" in filled or "--resume" in filled else ["--out", str(tmp_path / "run")]
    metric = [] if "--metric" in filled else ["--metric", "l2"]
    assert main(["interpolate", *filled, *metric, "--steps", "0", "--samples", "1", *out]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("elpips interpolate: error:") and message in error
    assert not (tmp_path / "run").exists()  # nothing written before the error


def test_interpolate_as_a_batch_job(clip_files, tmp_path):
    from jobfiles import write_jobs

    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"id": "clip", "command": "interpolate", "inputs": [str(clip_files["gif"])],
         "args": {"factor": 2, "metric": "l2", "steps": 1, "samples": 1, "seed": 0}}])
    assert main(["batch", str(jobs), "--out", str(tmp_path / "batch")]) == 0
    folder = tmp_path / "batch/jobs/clip"
    assert (folder / "DONE.json").is_file() and len(read_frames(folder)) == 7
    assert np.array_equal(read_frames(folder)[::2], clip_files["arrays"])
    frames = read_frames(folder)
    for name in ("DONE.json", "log.json", "windows/window_00002.json"):  # as if the job had died in its last window
        (folder / name).unlink()
    assert main(["batch", str(jobs), "--out", str(tmp_path / "batch")]) == 0
    assert "--resume" in json.loads((folder / "DONE.json").read_text())["run_argv"]
    assert np.array_equal(read_frames(folder), frames)


# -- windows over two ranks ----------------------------------------------------------------------------------------
def _two_rank_worker(rank: int, folder, clip: str, out: str, full_disk_on: int | None) -> dict:
    import contextlib
    import errno
    import io

    if rank == full_disk_on:
        def no_space(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        interpolate_command.save_image = no_space  # this process only
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["interpolate", clip, "--factor", "2", "--steps", "2", *FAST, "--out", out])
    return {"code": code, "stderr": stderr.getvalue().splitlines()}


def _rank_child(rank: int, port: int, folder: str, clip: str, out: str, full_disk_on: int | None = None) -> None:
    """One of two gloo ranks (the environment torchrun would set), reporting through ``folder/rank<r>.json``;
    ``full_disk_on``: the rank whose frame writes fail with ENOSPC."""
    import traceback

    from elpips import distributed
    from ranks import set_rank_environment

    set_rank_environment(rank, 2, port)
    torch.set_num_threads(1)
    try:
        with distributed.process_group("cpu"):  # as torchrun would start it
            result = _two_rank_worker(rank, folder, clip, out, full_disk_on)
    except BaseException:  # noqa: BLE001 - reported to the parent through the file
        result = {"error": traceback.format_exc()}
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(result))


def test_two_ranks_share_the_windows_each_written_once(clip_files, tmp_path):
    import torch.multiprocessing as mp
    from ranks import free_port

    out = tmp_path / "ranks"
    mp.spawn(_rank_child, args=(free_port(), str(tmp_path), str(clip_files["frames"]), str(out)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert all("error" not in result for result in results), results
    assert [result["code"] for result in results] == [0, 0]
    markers = [json.loads((out / f"windows/window_{index:05d}.json").read_text()) for index in range(3)]
    assert [(marker["rank"], marker["world_size"]) for marker in markers] == [(0, 2), (1, 2), (0, 2)]
    log = json.loads((out / "log.json").read_text())
    assert log["processes"] == 2 and [w["rank"] for w in log["windows"]] == [0, 1, 0]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank ran: the same arithmetic, so the same frames
    try:
        assert main(["interpolate", str(clip_files["frames"]), "--factor", "2", "--steps", "2", *FAST,
                     "--out", str(tmp_path / "alone")]) == 0
    finally:
        torch.set_num_threads(threads)
    alone = json.loads((tmp_path / "alone/log.json").read_text())
    assert np.array_equal(read_frames(out), read_frames(tmp_path / "alone"))
    assert alone["result"] == log["result"] and alone["processes"] == 1


def test_a_full_disk_on_one_rank_stops_both_with_one_line_naming_the_folder(clip_files, tmp_path):
    import torch.multiprocessing as mp
    from ranks import free_port

    out = tmp_path / "ranks"
    mp.spawn(_rank_child, args=(free_port(), str(tmp_path), str(clip_files["frames"]), str(out), 1), nprocs=2,
             join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert all("error" not in result for result in results), results
    assert [result["code"] for result in results] == [2, 2]
    errors = [[line for line in result["stderr"] if "error" in line] for result in results]
    cause = f"cannot write to '{out}': No space left on device"
    assert errors == [[f"elpips interpolate: error: rank 1 failed: {cause}"], [f"elpips interpolate: error: {cause}"]]
    assert (out / "windows/window_00000.json").is_file() and not (out / "windows/window_00001.json").exists()
    assert not (out / LOCK_NAME).exists() and not (out / "log.json").exists()


def test_pan_clip_from_a_shipped_example(tmp_path):
    from elpips.clips import pan_frames
    from elpips.io import load_image
    from elpips.sizing import resample

    cat = load_image("example:cat")  # 150 x 240: square crops at offsets 0 .. 90
    frames = pan_frames(cat, 4, 50)
    assert frames.shape == (4, 3, 50, 50)
    assert torch.equal(frames[0], resample(cat[..., :, :150], 50, 50)[0])
    assert torch.equal(frames[3], resample(cat[..., :, 90:240], 50, 50)[0])
    assert main(["examples", "--pan", "cat", "--frames", "3", "--size", "40", "--out", str(tmp_path / "pan")]) == 0
    assert open_clip(tmp_path / "pan").count == 3
