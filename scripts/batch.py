"""``elpips batch JOBS.jsonl [--out DIR]``: run a list of geodesic, barycenter, distance and interpolate jobs.

Under ``torchrun`` the jobs are shared out between the ranks (round robin over the jobs not yet done, as rank
0 read them), each job run whole by one rank on its device; alone, one process runs them all. The job file
format is described in :mod:`elpips.scripts.jobs`. Each job writes into ``DIR/jobs/<id>/`` and finishes with a
``DONE.json`` (skipped when the command is run again) or ``FAILED.json`` marker; rank 0 writes
``DIR/summary.json``. Exit code 0: every job done; 1: some job failed; 2: bad jobs file (nothing run).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import io
import json
import socket
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch
from elpips import distributed
from elpips.io import OutputWriteError, ensure_output_dir, write_json, write_text

from .cli import HelpFormatter, command_module
from .common import command_settings, error_message
from .jobs import (
    COMMANDS,
    DONE,
    FAILED,
    RESERVED_OPTIONS,
    SUMMARY,
    Job,
    job_dir,
    pending_jobs,
    read_jobs,
    summary_table,
    write_marker,
)
from .run_folder import RunFolder

DEFAULT_TIMEOUT_HOURS = 168.0
"""A week: the collective timeout under torchrun (the final barrier waits for the slowest rank)."""

RESUMABLE = ("geodesic", "barycenter", "interpolate")
"""Commands that continue an interrupted run in their folder with ``--resume`` (a folder holds one when
:meth:`RunFolder.holds_run <elpips.scripts.run_folder.RunFolder.holds_run>` says so)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch",
        description="Run every job of JOBS.jsonl (one JSON object per line: {\"id\": ..., \"command\": "
                    "\"geodesic|barycenter|distance|interpolate\", \"inputs\": [...], \"args\": [...] or {...}}), "
                    "each into DIR/jobs/<id>/ with a DONE.json or FAILED.json marker, and write DIR/summary.json. Jobs "
                    "already done are skipped, so running the same command again resumes. Under torchrun "
                    "(torchrun --nproc-per-node=G -m elpips batch ...) the jobs are shared out between the ranks. "
                    "Exit code 1 when a job failed.",
    )
    parser.add_argument("jobs", metavar="JOBS.jsonl", help="the jobs file")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder, shared by all ranks (default outputs/batch-<JOBS name>)")
    parser.add_argument("--device", default=None,
                        help="device of the jobs (default: cuda:LOCAL_RANK under torchrun with CUDA, else the best "
                             "available)")
    parser.add_argument("--dry-run", action="store_true", help="check the file and list the plan; run nothing")
    parser.add_argument("--timeout-hours", type=float, default=DEFAULT_TIMEOUT_HOURS, metavar="H",
                        help="how long a rank that has finished its jobs waits for the others before giving up "
                             "in hours (the jobs are shared out in advance, so the "
                             "wait is the difference between the ranks' shares)")
    parser.set_defaults(handler=run)


class _RaisingParser(argparse.ArgumentParser):
    """An argument parser that raises ``ValueError`` instead of printing usage and exiting."""

    def error(self, message: str):
        raise ValueError(message)

    def exit(self, status: int = 0, message: str | None = None):
        raise ValueError(message or "asked to exit (is --help or --version among the arguments?)")

    def print_help(self, file=None):
        raise ValueError("--help is not a job argument")


@functools.lru_cache(maxsize=1)
def _job_parser() -> argparse.ArgumentParser:
    parser = _RaisingParser(prog="elpips", add_help=False, formatter_class=HelpFormatter)
    subparsers = parser.add_subparsers(dest="command", parser_class=functools.partial(_RaisingParser,
                                                                                      formatter_class=HelpFormatter))
    for name in COMMANDS:
        command_module(name).register(subparsers)
    return parser


def parse_job_arguments(command: str, argv: list[str]) -> argparse.Namespace:
    """The subcommand's namespace for ``argv`` (``ValueError`` with argparse's message when it is bad)."""
    return _job_parser().parse_args([command, *argv])


def check_job(job: Job) -> None:
    """Parse the job's arguments as its subcommand would; refuse the options ``elpips batch`` sets."""
    namespace = parse_job_arguments(job.command, list(job.argv))
    taken = [f"--{name}" for name in RESERVED_OPTIONS if getattr(namespace, name, None) not in (None, False)]
    if taken:
        raise ValueError(f"{', '.join(taken)}: set by elpips batch, not by a job")


def job_argv(job: Job, folder: Path, device: torch.device) -> list[str]:
    """The job's arguments plus what the batch decides: ``--out`` (and ``--resume`` when the folder holds a
    run of an interrupted job) for geodesic/barycenter/interpolate, ``--json`` for distance, and ``--device``."""
    argv = [*job.argv, "--device", str(device)]
    if job.command == "distance":
        return [*argv, "--json"]
    argv += ["--out", str(folder)]
    if job.command in RESUMABLE and RunFolder(folder, job.command).holds_run():
        argv.append("--resume")
    return argv


def execute(job: Job, out: Path, device: torch.device, rank: int, world: int) -> dict:
    """Run one job in this process with its stdout/stderr in its folder; write its marker; return its row.
    A job whose folder cannot be written is a failed row (without a marker: there is nowhere to put it)."""
    folder = job_dir(out, job)
    try:
        return _execute(job, folder, device, rank, world)
    except OSError as failure:
        error = f"cannot write to '{folder}': {failure.strerror or failure}"
        return {"id": job.id, "command": job.command, "status": "failed", "rank": rank, "seconds": 0.0,
                "error": error}


def _execute(job: Job, folder: Path, device: torch.device, rank: int, world: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    argv = job_argv(job, folder, device)
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    captured = io.StringIO()
    error = None
    with open(folder / "stderr.txt", "w", encoding="utf-8", buffering=1) as stderr, \
            contextlib.redirect_stdout(captured), contextlib.redirect_stderr(stderr), distributed.local_scope():
        try:
            namespace = parse_job_arguments(job.command, argv)
            with command_settings(namespace):
                code = int(namespace.handler(namespace) or 0)
            if code:
                raise RuntimeError(f"{job.command} returned exit code {code}")
            if job.command == "distance":
                write_json(folder / "result.json", json.loads(captured.getvalue()))
        except KeyboardInterrupt:
            raise
        except BaseException as failure:  # noqa: BLE001 - a failed job must not stop the others (SystemExit too)
            error = error_message(failure) if isinstance(failure, (ValueError, OSError)) \
                else f"{type(failure).__name__}: {error_message(failure)}"
            traceback.print_exc(file=stderr)
    write_text(folder / "stdout.txt", captured.getvalue())
    seconds = round(time.perf_counter() - clock, 3)
    marker = {"status": "failed" if error else "done", "id": job.id, "command": job.command, "argv": list(job.argv),
              "run_argv": argv, "rank": rank, "world_size": world, "host": socket.gethostname(),
              "device": str(device), "started": started, "seconds": seconds}
    if error:
        marker["error"] = error
    write_marker(folder, FAILED if error else DONE, marker)
    _release_memory(device)
    return {"id": job.id, "command": job.command, "status": marker["status"], "rank": rank, "seconds": seconds,
            **({"error": error} if error else {})}


def _release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _read_plan(args: argparse.Namespace, out: Path):
    """Rank 0's reading of the jobs file: ``("ok", jobs, pending, done)`` or ``("error", message)``."""
    try:
        jobs = read_jobs(args.jobs, check_job)
        if not args.dry_run:
            ensure_output_dir(out)
        try:
            pending, done = pending_jobs(jobs, out)
        except ValueError as error:  # name the file, as the other jobs-file errors do
            raise ValueError(f"{args.jobs}, {error}") from None
    except (ValueError, OutputWriteError) as error:
        return ("error", str(error))
    return ("ok", jobs, pending, done)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("outputs") / f"batch-{Path(args.jobs).stem}"
    began = time.perf_counter()
    # gloo even on CUDA: the ranks only swap the plan and the result rows (the jobs do not communicate)
    if not args.timeout_hours > 0:
        raise ValueError(f"--timeout-hours must be > 0, got {args.timeout_hours}")
    timeout = timedelta(hours=args.timeout_hours)
    with distributed.process_group(args.device, backend="gloo", timeout=timeout) as device:
        rank, world = distributed.rank_and_world()
        plan = distributed.broadcast_object(_read_plan(args, out) if rank == 0 else None)
        if plan[0] == "error":
            if rank == 0:
                raise ValueError(plan[1])
            return 2  # rank 0 says why
        _, jobs, pending, done = plan
        mine = distributed.round_robin(pending, rank, world)
        tag = f"[rank {rank}/{world}] " if world > 1 else ""
        if args.dry_run:
            _print_plan(jobs, pending, done, world, rank)
            return 0
        if rank == 0:
            print(f"{tag}{len(jobs)} jobs, {len(done)} already done, {len(pending)} to run on {world} "
                  f"process{'es' if world > 1 else ''}; outputs in {out}/", file=sys.stderr)
        rows = []
        with RunFolder(out, "batch", resumable=False).claim():  # one batch at a time in DIR (its lock)
            for number, job in enumerate(mine, start=1):
                print(f"{tag}job {job.id} ({job.command}, {number}/{len(mine)} of this rank) started",
                      file=sys.stderr)
                row = execute(job, out, device, rank, world)
                rows.append(row)
                outcome = "done" if row["status"] == "done" else f"FAILED: {row['error']}"
                print(f"{tag}job {job.id} {outcome} ({row['seconds']:.1f} s)", file=sys.stderr)
            distributed.barrier()
            finished = {row["id"]: row for rows_of_rank in distributed.gather_objects(rows) for row in rows_of_rank}
    summary = []
    for job in jobs:
        if job.id in finished:
            summary.append(finished[job.id])
        else:
            marker = done[job.id]
            summary.append({"id": job.id, "command": job.command, "status": "skipped", "rank": marker.get("rank"),
                            "seconds": marker.get("seconds")})
    failed = [row["id"] for row in summary if row["status"] == "failed"]
    if rank == 0:
        counts = {status: sum(row["status"] == status for row in summary) for status in ("done", "skipped", "failed")}
        write_json(out / SUMMARY, {"jobs_file": str(args.jobs), "out": str(out), "processes": world,
                                   "wall_s": round(time.perf_counter() - began, 3), "counts": counts,
                                   "jobs": summary})
        print(summary_table(summary))
        print(f"{counts['done']} done, {counts['skipped']} skipped (done before), {counts['failed']} failed; "
              f"wrote {out / SUMMARY}")
    return 1 if failed else 0


def _print_plan(jobs: list[Job], pending: list[Job], done: dict, world: int, rank: int) -> None:
    if rank != 0:
        return
    runs_on = {job.id: index % world for index, job in enumerate(pending)}
    for job in jobs:
        where = f"rank {runs_on[job.id]}" if job.id in runs_on else "done, skipped"
        print(f"{job.id}  {job.command} {' '.join(job.argv)}  ->  {where}")
