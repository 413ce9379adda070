"""Two gloo ranks (torch.multiprocessing.spawn, the environment torchrun would set): ``elpips batch`` runs every
job exactly once and resumes; sharded 2AFC equals the single-process scores exactly."""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from elpips import distributed
from elpips.experiments.twoafc import evaluate_2afc
from ranks import free_port, set_rank_environment

WORLD = 2


def spawn(worker, *args) -> list[dict]:
    """Run ``worker(rank, folder, *args) -> dict`` on two ranks of one gloo group; their results in rank order."""
    folder = Path(args[0])
    port = free_port()
    mp.spawn(_child, args=(port, worker, *args), nprocs=WORLD, join=True)
    results = [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    for result in results:
        assert "error" not in result, result["error"]
    return results


def _child(rank: int, port: int, worker, folder: str, *args) -> None:
    set_rank_environment(rank, WORLD, port)
    torch.set_num_threads(1)
    try:
        with distributed.process_group("cpu"):  # the group every call inside uses (and leaves running)
            result = worker(rank, Path(folder), *args)
    except BaseException:  # noqa: BLE001 - reported to the parent through the file
        result = {"error": traceback.format_exc()}
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(result))


# -- elpips batch --------------------------------------------------------------------------------------------------
def _batch_worker(rank: int, folder: Path, jobs: str, out: str) -> dict:
    from elpips.scripts.cli import main

    with distributed.local_scope():
        local = [distributed.rank_and_world(), distributed.is_distributed(), distributed.launched_by_torchrun()]
    codes = [main(["batch", jobs, "--out", out])]
    distributed.barrier()
    if rank == 0:
        (Path(out) / "jobs" / "d2" / "DONE.json").unlink()  # as if the rank running it had died before the end
    distributed.barrier()
    codes.append(main(["batch", jobs, "--out", out]))
    return {"codes": codes, "local_scope": local}


def test_batch_two_ranks_each_job_once_then_resume(tmp_path):
    from jobfiles import distance_job, write_images, write_jobs

    a, b, c = write_images(tmp_path)
    random = ["--backbone-weights", "random", "--seed", "0"]
    entries = [distance_job("d1", a, b), distance_job("d2", a, c), distance_job("d3", b, c, metric="l2"),
               distance_job("d4", b, a), distance_job("broken", a, str(tmp_path / "missing.png")),
               {"id": "geo", "command": "geodesic", "inputs": [a, b],
                "args": ["--frames", "3", "--steps", "2", "--samples", "1", "--metric", "elpips-squeeze", *random]}]
    jobs = write_jobs(tmp_path / "jobs.jsonl", entries)
    out = tmp_path / "out"
    results = spawn(_batch_worker, str(tmp_path), str(jobs), str(out))

    assert [r["codes"] for r in results] == [[1, 1], [1, 1]]  # the broken job fails on both runs, on every rank
    assert results[0]["local_scope"] == [[0, 1], False, False]
    assert results[1]["local_scope"] == [[0, 1], False, False]
    folders = {p.name: p for p in (out / "jobs").iterdir()}
    assert sorted(folders) == sorted(entry["id"] for entry in entries)
    for name, job_folder in folders.items():
        present = sorted(p.name for p in job_folder.iterdir() if p.name in ("DONE.json", "FAILED.json"))
        assert present == (["FAILED.json"] if name == "broken" else ["DONE.json"]), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2
    rows = {row["id"]: row for row in summary["jobs"]}
    # second run: only d2 (marker deleted) and the failed job ran again; the rest were skipped
    assert {name: row["status"] for name, row in rows.items()} == {
        "d1": "skipped", "d2": "done", "d3": "skipped", "d4": "skipped", "broken": "failed", "geo": "skipped"}
    # first run: round robin over the six pending jobs in file order; second run: d2 then broken
    ranks = {name: json.loads((folder / ("FAILED.json" if name == "broken" else "DONE.json")).read_text())["rank"]
             for name, folder in folders.items()}
    assert ranks == {"d1": 0, "d2": 0, "d3": 0, "d4": 1, "broken": 1, "geo": 1}
    for name in ("d1", "d2", "d3", "d4"):
        result = json.loads((folders[name] / "result.json").read_text())
        assert result["distance"] > 0
    geodesic_log = json.loads((folders["geo"] / "log.json").read_text())
    assert geodesic_log["frames"] == 3 and geodesic_log.get("processes", 1) == 1  # one rank, unsharded
    assert len(list((folders["geo"] / "frames").glob("*.png"))) == 3


# -- sharded 2AFC --------------------------------------------------------------------------------------------------
SIZE = 32


def make_noisy_bapps(root: Path, counts: dict[str, int]) -> Path:
    """A BAPPS folder where p0 and p1 carry equal noise and judgements are random: the E-LPIPS decisions
    depend on the samples drawn, so a seeding mistake changes the scores."""
    rng = np.random.default_rng(1)
    for category, count in counts.items():
        folder = root / "2afc" / "val" / category
        for name in ("ref", "p0", "p1", "judge"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            ref = np.kron(rng.random((8, 8, 3)), np.ones((SIZE // 8, SIZE // 8, 1)))
            stem = f"{index:06d}"
            for name in ("ref", "p0", "p1"):
                image = ref if name == "ref" else ref + 0.12 * rng.standard_normal(ref.shape)
                iio.imwrite(folder / name / f"{stem}.png", np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
            np.save(folder / "judge" / f"{stem}.npy", np.array([rng.random()], dtype=np.float32))
    return root


def _metric():
    import elpips

    return elpips.Metric("elpips-squeeze", backbone_weights="random", device="cpu", seed=0)


def _score(result) -> dict:
    return {"seed": result.seed, "categories": result.categories, "mean": result.mean,
            "scores": {name: values.tolist() for name, values in result.scores.items()}}


def _twoafc_worker(rank: int, folder: Path, data: str, out: str) -> dict:
    from elpips.scripts.cli import main

    metric = _metric()
    seeded = _score(evaluate_2afc(metric, data, samples=2, batch_size=2, seed=5))
    unseeded = _score(evaluate_2afc(metric, data, samples=2, batch_size=2))  # rank 0 draws, broadcasts
    code = main(["2afc", "--data", data, "--metric", "elpips-squeeze", "--backbone-weights", "random",
                 "--samples", "2", "--batch-size", "2", "--seed", "5", "--json", "--out", out + f".rank{rank}"])
    return {"seeded": seeded, "unseeded": unseeded, "code": code}


def test_sharded_2afc_equals_single_process(tmp_path, capsys):
    from elpips.scripts.cli import main

    data = make_noisy_bapps(tmp_path / "bapps", {"blur": 5, "noise": 4})
    results = spawn(_twoafc_worker, str(tmp_path), str(data), str(tmp_path / "cli.json"))

    metric = _metric()
    single = _score(evaluate_2afc(metric, data, samples=2, batch_size=2, seed=5))
    assert len(single["scores"]["blur"]) == 5 and len(single["scores"]["noise"]) == 4
    other_seed = _score(evaluate_2afc(metric, data, samples=2, batch_size=2, seed=6))
    assert other_seed["scores"] != single["scores"]  # the samples matter here, so equality below means something
    for result in results:  # every rank returns the whole result
        assert result["seeded"]["seed"] == 5
        for name in single["scores"]:
            np.testing.assert_allclose(result["seeded"]["scores"][name], single["scores"][name], rtol=0, atol=1e-12)
            assert abs(result["seeded"]["categories"][name] - single["categories"][name]) <= 1e-12
        assert abs(result["seeded"]["mean"] - single["mean"]) <= 1e-12
    assert results[0]["unseeded"] == results[1]["unseeded"]  # one seed, rank 0's
    again = _score(evaluate_2afc(metric, data, samples=2, batch_size=2, seed=results[0]["unseeded"]["seed"]))
    assert again == results[0]["unseeded"]

    # the command: rank 0 alone writes --out, with the single-process numbers
    assert [result["code"] for result in results] == [0, 0]
    assert not (tmp_path / "cli.json.rank1").exists()
    sharded = json.loads((tmp_path / "cli.json.rank0").read_text())
    assert main(["2afc", "--data", str(data), "--metric", "elpips-squeeze", "--backbone-weights", "random",
                 "--samples", "2", "--batch-size", "2", "--seed", "5", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert sharded["processes"] == 2 and alone["processes"] == 1
    assert ({k: v for k, v in sharded.items() if k != "processes"}
            == {k: v for k, v in alone.items() if k != "processes"})
    assert sharded["categories"] == single["categories"]


def test_chunk_seeds_make_categories_independent(tmp_path):
    data = make_noisy_bapps(tmp_path / "bapps", {"blur": 3, "noise": 3})
    metric = _metric()
    both = evaluate_2afc(metric, data, samples=2, batch_size=2, seed=9)
    alone = evaluate_2afc(metric, data, categories=["noise"], samples=2, batch_size=2, seed=9)
    assert torch.equal(both.scores["noise"], alone.scores["noise"])


def test_torchrun_2afc_reports_once_with_the_single_process_numbers(tmp_path):
    """A real ``torchrun`` launch (the group ends before the report: only rank 0 may print)."""
    import shutil
    import subprocess
    import sys

    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
        if torchrun is None:
            pytest.skip("no torchrun next to this interpreter")
    data = make_noisy_bapps(tmp_path / "bapps", {"blur": 3, "noise": 2})
    argv = ["-m", "elpips", "2afc", "--data", str(data), "--metric", "elpips-squeeze", "--backbone-weights", "random",
            "--samples", "2", "--batch-size", "2", "--seed", "5", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sharded = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node=2", *argv], capture_output=True,
                             text=True, env=env, timeout=300)
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    alone = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=300)
    assert alone.returncode == 0, alone.stderr[-2000:]
    report = json.loads(sharded.stdout)  # one JSON document: a second rank printing would break this
    expected = json.loads(alone.stdout)
    assert report["processes"] == 2 and expected["processes"] == 1
    assert report["categories"] == expected["categories"] and report["mean"] == expected["mean"]
