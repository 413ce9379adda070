"""Job lists for ``elpips batch``: the JSON-lines format, validation, completion markers, summaries.

A jobs file holds one JSON object per line (blank lines and lines starting with ``#`` are skipped)::

    {"id": "catdog", "command": "geodesic", "args": ["example:cat", "example:dog", "--frames", "6"]}
    {"command": "distance", "inputs": ["a.png", "b.png"], "args": {"samples": 64, "metric": "elpips-squeeze"}}
    {"id": "median", "command": "barycenter", "inputs": ["a.png", "b.png", "c.png"],
     "args": {"power": 1, "steps": 200, "backbone-weights": "random"}}

Keys:

``command`` (required)
    ``geodesic``, ``barycenter``, ``distance`` or ``interpolate``: the ``elpips`` subcommand the job runs.
``id`` (optional)
    the job's name and the name of its folder ``OUT/jobs/<id>/``: letters, digits, ``.``, ``_``, ``-`` (up to
    100 characters, not starting with ``.`` or ``-``); default: the line number (``"3"``). Ids must be unique.
``inputs`` (optional)
    positional arguments (image paths or ``example:NAME``), placed first.
``args`` (optional)
    the rest of the subcommand's command line, either as an argv list (strings or numbers), or as an object
    of options: ``{"frames": 6}`` is ``--frames 6`` (keys are the flags' names, spelled with ``-``:
    ``backbone-weights``, never ``backbone_weights``), ``{"spatial": true}`` is ``--spatial`` (``false`` or
    ``null`` leave the option out), ``{"compare": "l2,lpips-vgg"}`` is ``--compare l2,lpips-vgg``, and a list gives
    an option several values (``{"opt": ["a", "b"]}`` is ``--opt a b``).

``--out``, ``--resume`` and ``--device`` are chosen by ``elpips batch`` and may not appear in a job.

A job's folder receives its outputs, ``stdout.txt`` and ``stderr.txt``, and last a marker written atomically:
``DONE.json`` on success (skipped on a rerun), ``FAILED.json`` with the error otherwise (retried on a rerun).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elpips.io import write_json

COMMANDS = ("geodesic", "barycenter", "distance", "interpolate")
"""The subcommands a job may run."""

RESERVED_OPTIONS = ("out", "resume", "device")
"""Options ``elpips batch`` sets itself."""

DONE = "DONE.json"
FAILED = "FAILED.json"
JOBS_FOLDER = "jobs"
SUMMARY = "summary.json"

_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


class JobsFileError(ValueError):
    """The jobs file is missing or one of its lines is not a valid job (the message names the line)."""


@dataclass(frozen=True)
class Job:
    """One line of a jobs file.

    Attributes:
        id: the job's name (its folder under ``OUT/jobs/``).
        command: ``geodesic``, ``barycenter``, ``distance`` or ``interpolate``.
        argv: the subcommand's arguments (without ``--out``, ``--resume``, ``--device``).
        line: the line number in the jobs file (1-based).
    """

    id: str
    command: str
    argv: tuple[str, ...]
    line: int

    def as_dict(self) -> dict:
        return {"id": self.id, "command": self.command, "argv": list(self.argv), "line": self.line}


def options_to_argv(options: dict[str, Any]) -> list[str]:
    """``{"frames": 6, "spatial": True, "compare": ["a", "b"]}`` -> ``--frames 6 --spatial --compare a b``."""
    argv: list[str] = []
    for key, value in options.items():
        if not isinstance(key, str) or not key.strip("-"):
            raise ValueError(f"option name {key!r} is not a name")
        flag = _checked_flag(key if key.startswith("-") else f"--{key}")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv.extend([flag, *(_scalar(item, key) for item in value)])
        else:
            argv.extend([flag, _scalar(value, key)])
    return argv


def _checked_flag(flag: str) -> str:
    """``flag`` unless its name is spelled with ``_``: option keys are the flags' names (``backbone-weights``)."""
    name = flag.lstrip("-").split("=", 1)[0]
    if "_" in name:
        raise ValueError(f"option {name!r}: write {name.replace('_', '-')!r} (option keys are spelled like the "
                         f"flags, with '-')")
    return flag


def _scalar(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"option {key!r}: value {value!r} is not a string or a number")
    return str(value)


def parse_job(text: str, line: int) -> Job:
    """One line of a jobs file (already known to be non-blank); :class:`ValueError` says what is wrong."""
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"expected a JSON object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - {"id", "command", "args", "inputs"})
    if unknown:
        raise ValueError(f"unknown key {', '.join(map(repr, unknown))} (keys: id, command, inputs, args)")
    command = entry.get("command")
    if command not in COMMANDS:
        raise ValueError(f"command {command!r} is not one of {', '.join(COMMANDS)}")
    job_id = entry.get("id", line)
    if isinstance(job_id, bool) or not isinstance(job_id, (str, int)):
        raise ValueError(f"id {job_id!r} is not a string")
    job_id = str(job_id)
    if not _ID.fullmatch(job_id):
        raise ValueError(f"id {job_id!r} is not a folder name (letters, digits, '.', '_', '-'; at most 100)")
    inputs = entry.get("inputs", [])
    if not isinstance(inputs, list):
        raise ValueError("'inputs' must be a list of paths")
    args = entry.get("args", [])
    if isinstance(args, dict):
        args = options_to_argv(args)
    elif isinstance(args, list):
        args = [_scalar(item, "args") for item in args]
        args = [_checked_flag(item) if item.startswith("--") else item for item in args]
    else:
        raise ValueError("'args' must be a list of arguments or an object of options")
    return Job(job_id, command, tuple([_scalar(item, "inputs") for item in inputs] + args), line)


def read_jobs(path: str | os.PathLike, check: Callable[[Job], None] | None = None) -> list[Job]:
    """Every job of a jobs file, checked line by line (``check(job)`` may raise ``ValueError`` too).

    Raises:
        JobsFileError: the file is missing, a folder or empty, or a line is bad (the message names the file and
            line). A UTF-8 byte-order mark at the start is skipped.
    """
    source = Path(path)
    if source.is_dir():
        raise JobsFileError(f"{source}: is a folder, not a jobs file")
    if not source.is_file():
        raise JobsFileError(f"{source}: {'not a regular file' if source.exists() else 'no such jobs file'}")
    try:
        lines = source.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark some editors write
    except (OSError, UnicodeDecodeError) as error:
        raise JobsFileError(f"{source}: cannot be read ({error})") from None
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            job = parse_job(text, number)
            if job.id in seen:
                raise ValueError(f"duplicate id {job.id!r} (also on line {seen[job.id]})")
            if check is not None:
                check(job)
        except ValueError as error:
            raise JobsFileError(f"{source}, line {number}: {error}") from None
        seen[job.id] = number
        jobs.append(job)
    if not jobs:
        raise JobsFileError(f"{source}: no jobs (one JSON object per line)")
    return jobs


def job_dir(out: str | os.PathLike, job: Job | str) -> Path:
    """``OUT/jobs/<id>``."""
    return Path(out) / JOBS_FOLDER / (job if isinstance(job, str) else job.id)


def read_marker(folder: Path, name: str = DONE) -> dict | None:
    """The marker's content, or ``None`` when there is none (or it cannot be read: treated as absent)."""
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def pending_jobs(jobs: Iterable[Job], out: str | os.PathLike) -> tuple[list[Job], dict[str, dict]]:
    """``(jobs without a DONE marker, {id: marker} of those with one)``.

    Raises:
        JobsFileError: a job is marked done with other arguments than the file now gives it.
    """
    pending, done = [], {}
    for job in jobs:
        marker = read_marker(job_dir(out, job))
        if marker is None:
            pending.append(job)
            continue
        if marker.get("command") != job.command or marker.get("argv") != list(job.argv):
            raise JobsFileError(f"line {job.line}: job {job.id!r} is marked done in {job_dir(out, job)} with other "
                                f"arguments ({' '.join([marker.get('command') or '?', *marker.get('argv', [])])}); "
                                f"delete that folder to redo it, or give the job a new id")
        done[job.id] = marker
    return pending, done


def write_marker(folder: Path, name: str, data: dict) -> Path:
    """Write ``DONE.json`` or ``FAILED.json`` atomically, removing the other one first (the marker is last)."""
    other = folder / (FAILED if name == DONE else DONE)
    other.unlink(missing_ok=True)
    return write_json(folder / name, data)


def summary_table(rows: list[dict]) -> str:
    """A short plain-text table of ``summary.json``'s rows (id, command, status, rank, seconds)."""
    width = max([len("id"), *(len(row["id"]) for row in rows)])
    lines = [f"{'id':<{width}}  {'command':<10}  {'status':<7}  {'rank':>4}  {'seconds':>8}"]
    for row in rows:
        seconds = "" if row.get("seconds") is None else f"{row['seconds']:.1f}"
        rank = "" if row.get("rank") is None else str(row["rank"])
        lines.append(f"{row['id']:<{width}}  {row['command']:<10}  {row['status']:<7}  {rank:>4}  {seconds:>8}"
                     + (f"  {row['error']}" if row.get("error") else ""))
    return "\n".join(lines)
