"""``elpips batch`` in one process: the jobs-file format, up-front validation, markers, resume, failures.
(The sharded run over two ranks is in test_distributed.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from elpips.scripts.cli import main
from elpips.scripts.jobs import JobsFileError, options_to_argv, parse_job, read_jobs
from jobfiles import distance_job, write_images, write_jobs

RANDOM = ["--backbone-weights", "random"]


def markers(out: Path) -> dict[str, list[str]]:
    return {folder.name: sorted(p.name for p in folder.glob("*.json") if p.name in ("DONE.json", "FAILED.json"))
            for folder in sorted((out / "jobs").iterdir())}


# -- the format ----------------------------------------------------------------------------------------------------
def test_job_format_list_and_dict_args():
    job = parse_job('{"id": "x", "command": "geodesic", "args": ["a.png", "b.png", "--frames", 6]}', 1)
    assert (job.id, job.command, job.argv, job.line) == ("x", "geodesic", ("a.png", "b.png", "--frames", "6"), 1)
    job = parse_job(json.dumps({"command": "barycenter", "inputs": ["a", "b"],
                                "args": {"power": 1, "--steps": 3, "resume": False, "perturb": None,
                                         "weights": "1,2", "compare": ["l2", "lpips-vgg"], "spatial": True}}), 7)
    assert job.id == "7"  # the line number by default
    assert job.argv == ("a", "b", "--power", "1", "--steps", "3", "--weights", "1,2", "--compare", "l2",
                        "lpips-vgg", "--spatial")
    assert options_to_argv({"x": 0.5}) == ["--x", "0.5"]


@pytest.mark.parametrize("line, fragment", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"command": "train"}', "command 'train' is not one of geodesic, barycenter, distance"),
    ('{"args": []}', "command None"),
    ('{"command": "distance", "id": "../x"}', "is not a folder name"),
    ('{"command": "distance", "id": true}', "is not a string"),
    ('{"command": "distance", "arguments": []}', "unknown key 'arguments'"),
    ('{"command": "distance", "args": "a b"}', "'args' must be a list"),
    ('{"command": "distance", "args": {"samples": [1, [2]]}}', "is not a string or a number"),
    ('{"command": "distance", "args": {"backbone_weights": "random"}}', "option 'backbone_weights': write "
     "'backbone-weights'"),
    ('{"command": "distance", "args": ["a", "b", "--backbone_weights=random"]}', "write 'backbone-weights'"),
])
def test_parse_job_rejects(line, fragment):
    with pytest.raises(ValueError, match=None) as caught:
        parse_job(line, 3)
    assert fragment in str(caught.value)


# -- validation before any work ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case, fragment", [
    ("missing", "no such jobs file"),
    ("folder", "jobs.jsonl: is a folder, not a jobs file"),
    ("empty", "no jobs"),
    ("bad json", "line 2: not valid JSON"),
    ("unknown command", "line 2: command 'train' is not one of"),
    ("duplicate", "line 3: duplicate id 'a' (also on line 1)"),
    ("default id clash", "line 3: duplicate id '3' (also on line 1)"),
    ("reserved", "line 2: --out: set by elpips batch"),
    ("reserved abbreviated", "line 2: --device: set by elpips batch"),
    ("bad option", "line 2: unrecognized arguments: --frobnicate"),
    ("bad value", "line 2: argument --samples: must be a positive integer"),
    ("missing positional", "line 2: the following arguments are required: b"),
    ("help", "line 2:"),
    ("underscore key", "line 2: option 'backbone_weights': write 'backbone-weights'"),
])
def test_bad_jobs_file_exits_2_with_one_line_before_any_work(tmp_path, capsys, case, fragment):
    a, b, _ = write_images(tmp_path)
    good = distance_job("a", a, b)
    second = {
        "bad json": '{"id": "b", "command": ',
        "unknown command": {"command": "train"},
        "reserved": {"command": "geodesic", "args": [a, b, "--out", "x"]},
        "reserved abbreviated": {"command": "distance", "args": [a, b, "--dev", "cpu"]},
        "bad option": {"command": "distance", "args": [a, b, "--frobnicate"]},
        "bad value": {"command": "distance", "args": [a, b, "--samples", "0"]},
        "missing positional": {"command": "distance", "args": [a]},
        "help": {"command": "distance", "args": [a, b, "--help"]},
        "underscore key": {"command": "distance", "inputs": [a, b], "args": {"backbone_weights": "random"}},
    }
    jobs = tmp_path / "jobs.jsonl"
    if case == "empty":
        write_jobs(jobs, ["", "# nothing"])
    elif case == "duplicate":
        write_jobs(jobs, [good, distance_job("b", a, b), distance_job("a", b, a)])
    elif case == "default id clash":
        write_jobs(jobs, [distance_job("3", a, b), "", {"command": "distance", "args": [a, b]}])
    elif case == "folder":
        jobs.mkdir()
    elif case != "missing":
        write_jobs(jobs, [good, second[case]])
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("elpips batch: error: ") and fragment in err[0], err
    assert captured.out == "" and not out.exists()  # nothing ran


def test_marker_with_other_arguments_is_an_error(tmp_path, capsys):
    a, b, c = write_images(tmp_path)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [distance_job("x", a, b)])
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--out", str(out)]) == 0
    write_jobs(jobs, [distance_job("x", a, c)])
    capsys.readouterr()
    assert main(["batch", str(jobs), "--out", str(out)]) == 2
    assert "job 'x' is marked done" in capsys.readouterr().err


def test_unwritable_out_is_one_error_before_any_work(tmp_path, capsys):
    a, b, _ = write_images(tmp_path)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [distance_job("ab", a, b)])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["batch", str(jobs), "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write to" in err[0]


def test_a_job_folder_that_cannot_be_written_is_a_failed_row(tmp_path, capsys):
    a, b, c = write_images(tmp_path)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [distance_job("blocked", a, b), distance_job("fine", a, c)])
    out = tmp_path / "out"
    (out / "jobs").mkdir(parents=True)
    (out / "jobs" / "blocked").write_text("a file where the job's folder should be")
    assert main(["batch", str(jobs), "--out", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    rows = {row["id"]: row for row in summary["jobs"]}
    assert rows["fine"]["status"] == "done"
    assert rows["blocked"]["status"] == "failed" and "cannot write to" in rows["blocked"]["error"]


# -- running, resuming, failing ------------------------------------------------------------------------------------
def test_run_resume_redo_and_failure_in_one_process(tmp_path, capsys):
    a, b, c = write_images(tmp_path)
    entries = [distance_job("ab", a, b), distance_job("ac", a, c, metric="l2"),
               distance_job("broken", a, str(tmp_path / "missing.png")),
               {"id": "bary", "command": "barycenter", "inputs": [a, b, c],
                "args": ["--steps", "2", "--eval-samples", "1", "--seed", "0", *RANDOM, "--metric", "elpips-squeeze"]}]
    jobs = write_jobs(tmp_path / "jobs.jsonl", entries)
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--out", str(out)]) == 1  # one job failed, the others ran
    assert markers(out) == {"ab": ["DONE.json"], "ac": ["DONE.json"], "bary": ["DONE.json"], "broken": ["FAILED.json"]}
    result = json.loads((out / "jobs" / "ab" / "result.json").read_text())
    assert result["a"] == a and result["samples"] == 2 and result["calibrated"] is False
    assert json.loads((out / "jobs" / "ac" / "result.json").read_text())["metric"] == "l2"
    assert (out / "jobs" / "bary" / "barycenter.png").is_file()
    failed = json.loads((out / "jobs" / "broken" / "FAILED.json").read_text())
    assert failed["status"] == "failed" and "missing.png" in failed["error"] and failed["rank"] == 0
    done = json.loads((out / "jobs" / "ab" / "DONE.json").read_text())
    assert done["status"] == "done" and done["rank"] == 0 and done["seconds"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert [(row["id"], row["status"]) for row in summary["jobs"]] == [
        ("ab", "done"), ("ac", "done"), ("broken", "failed"), ("bary", "done")]
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    table = capsys.readouterr().out
    assert "broken" in table and "failed" in table

    # rerun: the done jobs are skipped (markers untouched), the failed one is retried
    stamps = {name: (out / "jobs" / name / "DONE.json").stat().st_mtime_ns for name in ("ab", "ac", "bary")}
    (out / "jobs" / "ac" / "DONE.json").unlink()  # as if the node running it had died
    (out / "jobs" / "bary" / "log.json").unlink()  # partial outputs: resumed from its checkpoint
    (out / "jobs" / "bary" / "DONE.json").unlink()
    write_jobs(jobs, entries[:2] + entries[3:])  # and the broken job taken out of the list
    assert main(["batch", str(jobs), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {row["id"]: row["status"] for row in summary["jobs"]} == {"ab": "skipped", "ac": "done", "bary": "done"}
    assert (out / "jobs" / "ab" / "DONE.json").stat().st_mtime_ns == stamps["ab"]
    assert "--resume" in json.loads((out / "jobs" / "bary" / "DONE.json").read_text())["run_argv"]
    assert (out / "jobs" / "bary" / "log.json").is_file()
    assert main(["batch", str(jobs), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {row["status"] for row in summary["jobs"]} == {"skipped"}


def test_a_job_keeps_its_own_pixel_limit(tmp_path, capsys):
    """A job's --max-pixels holds for that job only, as for the same command run directly (32x32 = 1,024 pixels)."""
    a, b, _ = write_images(tmp_path)
    assert main(["distance", a, b, "--metric", "l2", "--max-pixels", "1000"]) == 2
    direct = capsys.readouterr().err.strip()
    assert direct.endswith("over the limit of 1,000 pixels (max_pixels)") and len(direct.splitlines()) == 1
    jobs = write_jobs(tmp_path / "jobs.jsonl", [distance_job("small", a, b, metric="l2", **{"max-pixels": 1000}),
                                                distance_job("default", a, b, metric="l2")])
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--out", str(out)]) == 1
    rows = {row["id"]: row for row in json.loads((out / "summary.json").read_text())["jobs"]}
    assert rows["small"]["status"] == "failed" and rows["default"]["status"] == "done"
    assert f"elpips distance: error: {rows['small']['error']}" == direct
    assert json.loads((out / "jobs" / "small" / "FAILED.json").read_text())["error"] == rows["small"]["error"]


def test_every_resumable_command_resumes_a_folder_holding_its_run(tmp_path):
    import torch
    from elpips.scripts.batch import RESUMABLE, job_argv
    from elpips.scripts.run_folder import RunFolder

    for command in RESUMABLE:
        folder = tmp_path / command
        job = parse_job(json.dumps({"id": command, "command": command, "args": ["x"]}), 1)
        folder.mkdir()
        (folder / "stderr.txt").write_text("a job that failed before its run began")
        assert "--resume" not in job_argv(job, folder, torch.device("cpu"))
        with RunFolder(folder, command).claim({"seed": 0}):
            pass
        assert job_argv(job, folder, torch.device("cpu"))[-3:] == ["--out", str(folder), "--resume"]


def test_dry_run_lists_the_plan(tmp_path, capsys):
    a, b, _ = write_images(tmp_path)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [distance_job("ab", a, b)])
    assert main(["batch", str(jobs), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "ab  distance" in capsys.readouterr().out and not (tmp_path / "out").exists()


def test_jobs_file_with_a_byte_order_mark(tmp_path, capsys):
    a, b, _ = write_images(tmp_path)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_bytes(b"\xef\xbb\xbf" + json.dumps(distance_job("ab", a, b)).encode() + b"\r\n")
    assert [job.id for job in read_jobs(jobs)] == ["ab"]
    assert main(["batch", str(jobs), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "ab  distance" in capsys.readouterr().out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_jobs_file_that_is_a_fifo_is_refused_without_reading(tmp_path):
    fifo = tmp_path / "jobs.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(JobsFileError, match=r"jobs.jsonl: not a regular file$"):
        read_jobs(fifo)


def test_read_jobs_skips_blank_and_comment_lines(tmp_path):
    jobs = write_jobs(tmp_path / "j.jsonl", ["# header", "", '{"command": "distance", "args": ["a", "b"]}'])
    assert [job.id for job in read_jobs(jobs)] == ["3"]
    with pytest.raises(JobsFileError, match="line 1"):
        read_jobs(write_jobs(tmp_path / "k.jsonl", ['{"command": "distance"}']), lambda job: int("x"))
