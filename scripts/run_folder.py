"""A run folder belongs to one run: every command that writes one (``geodesic``, ``barycenter``, ``interpolate``,
``attack`` and ``attack a1 --ablation``, ``train-example``, ``train-weights``; ``export`` re-rendering a saved run;
``batch``'s job folders through the commands they run) owns it through :class:`RunFolder`.

* An existing run is refused unless the command resumes it (``--resume``); resuming needs a run to continue.
* ``run.json`` holds the run's *record*: the command, the kind of run the folder holds, and every setting that
  determines the result (the metrics' identities with weights and ensemble, sizing, solver options, the seed
  actually used; see :mod:`elpips.record`). A resume recomputes the record, refuses any difference (naming each
  one, old vs new) and continues with the recorded seed.
* A lock file (``.lock``: pid, host, start time, created with ``O_EXCL``) is held for the run's lifetime; a
  second run into the folder is refused with the holder named; a lock left by a killed process on this host is
  taken over with a note.
* Temporary files of interrupted writes (``.NAME.*.tmp*``) are removed when a run takes the folder.
* Nothing is created before :meth:`RunFolder.claim`: commands check their inputs and build the metric first; a
  claim that fails (a full disk) leaves neither a lock nor a folder it created behind.
* Inside ``claim``, an OS write error (a full disk, no permission, a read-only file system) becomes one
  :class:`~elpips.io.OutputWriteError` naming the folder and the cause; Ctrl-C prints the command that resumes.
* Under torchrun, rank 0 checks, records and locks the folder; the other ranks wait for it and fail alike.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from elpips.distributed import barrier, broadcast_object, is_main_process, raise_on_every_rank
from elpips.io import OutputWriteError, write_json
from elpips.record import as_json, differences
from elpips.solver import CHECKPOINT_NAME

T = TypeVar("T")
ENVIRONMENT = "environment"
"""The part of a record that a resume may change: where the run runs (device, memory budget), not what it
computes."""

LOCK_NAME = ".lock"
SETTINGS_NAME = "run.json"
RUN_FILES = (SETTINGS_NAME, CHECKPOINT_NAME, "log.json", "results.json")
"""Files whose presence shows that a folder holds a run."""
TEMPORARY_PATTERN = ".*.tmp*"
"""Names of the temporary files of :func:`elpips.io.atomic_path` (and of ``torch.save`` through it)."""
UNREADABLE_LOCK_GRACE_S = 10.0
"""A lock file that cannot be parsed (its writer was killed mid-write) is stale once this old."""


class RunFolderBusy(ValueError):
    """Another live process holds the run folder's lock."""


class RunFolder:
    """The folder of one run of ``command``.

    Args:
        path: the folder.
        command: the command's name (``"geodesic"`` ...), for messages and ``run.json``.
        kind: what the folder holds, recorded in ``run.json`` (default ``command``; ``"a1-ablation"`` for an
            ablation); a resume or a re-export of another kind is refused.
        resume: the run continues the one in ``path`` (``--resume``).
        resumable: the command can resume (its Ctrl-C prints how).
        argv: the command line after ``elpips`` (for the resume hint); ``None``: no exact command is shown.
        may_change: settings a resume may change (``steps``: a run continues to more steps).
        folder_option: the command's option naming the folder (``--out``; ``--run-dir`` for ``train-weights``,
            whose ``--out`` is the weights file), in messages and the resume hint.
    """

    def __init__(self, path: str | os.PathLike, command: str, *, kind: str | None = None, resume: bool = False,
                 resumable: bool = True, argv: list[str] | None = None, may_change: tuple[str, ...] = (),
                 folder_option: str = "--out") -> None:
        self.path = Path(path)
        self.command = command
        self.kind = kind or command
        self.resume = resume
        self.resumable = resumable
        self.argv = argv
        self.may_change = may_change
        self.folder_option = folder_option
        self.locked = False

    # -- checks before anything is created ---------------------------------------------------------------------
    def holds_run(self) -> bool:
        """Whether the folder already holds (part of) a run."""
        return any((self.path / name).exists() for name in RUN_FILES)

    def check(self) -> None:
        """Refuse a folder holding a run unless resuming; refuse a resume with no run to continue, or of a run
        of another kind."""
        if self.resume and not self.holds_run():
            raise ValueError(f"--resume: no run to continue in '{self.path}' (no checkpoint, no {SETTINGS_NAME})")
        if not self.resume and self.holds_run():
            advice = "pass --resume to continue it, or" if self.resumable else "remove it or"
            raise ValueError(f"'{self.path}' already holds a run: {advice} choose another {self.folder_option}")
        if self.resume:
            self.check_kind()

    def check_kind(self) -> None:
        """Refuse a folder whose ``run.json`` records a run of another kind."""
        recorded = self.recorded_kind()
        if recorded is not None and recorded != self.kind:
            raise ValueError(f"'{self.path}' holds a run of kind {recorded!r}, not {self.kind!r}")

    def recorded(self) -> dict[str, Any] | None:
        """The whole ``run.json`` (``command``, ``kind``, ``settings``), or ``None`` when the folder has none."""
        path = self.path / SETTINGS_NAME
        if not path.is_file():
            return None
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
            content["settings"]  # noqa: B018 - a record without settings is unreadable
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"'{path}' is unreadable ({error}): the run's settings are unknown") from None
        return content

    def recorded_kind(self) -> str | None:
        content = self.recorded()
        return None if content is None else content.get("kind", content.get("command"))

    def recorded_settings(self) -> dict[str, Any] | None:
        """The settings in ``run.json``, or ``None`` when the folder has none."""
        content = self.recorded()
        return None if content is None else content["settings"]

    def seed(self, requested: int | None) -> int:
        """The seed this run uses: on resume the recorded one (``requested``, if given, must equal it), else
        ``requested`` or a freshly drawn one."""
        recorded = self.recorded_settings() if self.resume else None
        if recorded is not None and "seed" in recorded:
            if requested is not None and requested != recorded["seed"]:
                raise ValueError(f"cannot resume '{self.path}' with other settings: seed was {recorded['seed']!r}, "
                                 f"now {requested!r} (resume with the run's settings, or start a new run in "
                                 f"another {self.folder_option})")
            return int(recorded["seed"])
        if self.resume and requested is None:
            raise ValueError(f"--resume: '{self.path}' records no settings ({SETTINGS_NAME}): pass the run's --seed")
        return secrets.randbelow(2**31) if requested is None else requested

    def settings(self, current: dict[str, Any]) -> dict[str, Any]:
        """The record this run uses: ``current`` for a new run; on resume the recorded one, which ``current``
        must match except for :attr:`may_change` (``ValueError`` naming every difference)."""
        current = as_json(current)
        recorded = self.recorded_settings() if self.resume else None
        if recorded is None:
            return current
        differing = differences(recorded, current, ignore=(*self.may_change, ENVIRONMENT))
        if differing:
            raise ValueError(f"cannot resume '{self.path}' with other settings: {'; '.join(differing)} (resume "
                             f"with the run's settings, or start a new run in another {self.folder_option})")
        return {**recorded, **{key: current[key] for key in (*self.may_change, ENVIRONMENT) if key in current}}

    def agree(self, prepare: Callable[[RunFolder], T]) -> T:
        """``prepare(self)`` (the checks and the record) on rank 0 only; every rank gets its result, or raises
        its ``ValueError``. The folder's path (a timestamp by default) is rank 0's everywhere."""
        outcome: tuple[Any, str | None] = (None, None)
        if is_main_process():
            try:
                outcome = (prepare(self), None)
            except ValueError as error:
                outcome = (None, str(error))
        self.path, (result, problem) = broadcast_object((self.path, outcome))
        if problem is not None:
            raise ValueError(problem)
        return result

    # -- ownership ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def claim(self, settings: dict[str, Any] | None = None) -> Iterator[RunFolder]:
        """Create the folder, take its lock, remove temporary files of earlier kills and record ``settings``
        (a new run); release the lock when the block ends, however it ends. OS errors in the block become one
        :class:`~elpips.io.OutputWriteError`; Ctrl-C prints the resume command.

        Under torchrun rank 0 claims; the other ranks wait for it (and fail with it), and rank 0 keeps the lock
        until every rank has left the block."""
        if not is_main_process():
            raise_on_every_rank(None)
            yield self
            barrier()
            return
        created = [parent for parent in [self.path, *self.path.parents] if not parent.exists()]
        try:
            with self._translated_os_errors():
                try:
                    self.path.mkdir(parents=True, exist_ok=True)
                    self._lock()
                    self.check()  # again under the lock: a run started meanwhile may have finished
                    self._remove_temporary_files()
                    if settings is not None and not (self.path / SETTINGS_NAME).exists():
                        write_json(self.path / SETTINGS_NAME,
                                   {"command": self.command, "kind": self.kind, "settings": settings})
                except BaseException as failure:
                    self._unlock()
                    _remove_empty(created)
                    raise_on_every_rank(failure if isinstance(failure, Exception) else None)
                    raise
                raise_on_every_rank(None)
                yield self
                barrier()
        except KeyboardInterrupt:
            if self.resumable:
                print(f"interrupted: continue with: {self.resume_command()}", file=sys.stderr)
            else:
                print(f"interrupted: '{self.path}' holds an unfinished run that {self.command} cannot continue: "
                      "remove it, or choose another --out", file=sys.stderr)
            raise
        finally:
            self._unlock()

    def resume_command(self) -> str:
        """The command line that continues this run (``elpips ... --resume --out DIR``, with the command's
        :attr:`folder_option`)."""
        option = self.folder_option
        if self.argv is None:
            return f"the same command plus --resume {option} {shlex.quote(str(self.path))}"
        kept, skip = [], False
        for argument in self.argv:
            if skip:
                skip = False
            elif argument == option:
                skip = True
            elif argument != "--resume" and not argument.startswith(f"{option}="):
                kept.append(argument)
        return shlex.join(["elpips", *kept, "--resume", option, str(self.path)])

    @contextlib.contextmanager
    def _translated_os_errors(self) -> Iterator[None]:
        try:
            yield
        except OutputWriteError:
            raise
        except OSError as error:
            cause = (error.strerror or os.strerror(error.errno)) if error.errno else str(error)
            raise OutputWriteError(f"cannot write to '{self.path}': {cause}") from None

    def _lock(self) -> None:
        lock = self.path / LOCK_NAME
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for attempt in range(2):
            try:
                handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if attempt or not self._stale(lock):
                    raise RunFolderBusy(f"'{self.path}' is in use by another run ({describe_holder(lock)}): wait "
                                        f"for it to end, or choose another {self.folder_option}") from None
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            self.locked = True  # from here on, a failure removes the lock again (no empty lock left behind)
            with os.fdopen(handle, "w") as file:
                json.dump(holder, file)
            return

    def _stale(self, lock: Path) -> bool:
        """A lock whose process is gone (same host), or unreadable and older than a grace period."""
        holder = read_holder(lock)
        if holder is None:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - lock.stat().st_mtime < UNREADABLE_LOCK_GRACE_S:
                    return False
            print(f"note: '{self.path}': replacing an unreadable lock file left by an interrupted run",
                  file=sys.stderr)
            return True
        if holder.get("host") != socket.gethostname() or process_alive(int(holder.get("pid", -1))):
            return False
        print(f"note: '{self.path}': taking over the lock of a run that no longer runs ({describe_holder(lock)})",
              file=sys.stderr)
        return True

    def _unlock(self) -> None:
        if self.locked:
            with contextlib.suppress(OSError):
                (self.path / LOCK_NAME).unlink()
            self.locked = False

    def _remove_temporary_files(self) -> None:
        removed = 0
        for temporary in self.path.rglob(TEMPORARY_PATTERN):
            if temporary.is_file():
                temporary.unlink()
                removed += 1
        if removed:
            print(f"note: '{self.path}': removed {removed} temporary file(s) left by an interrupted run",
                  file=sys.stderr)


def _remove_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that exist and are empty: what a failed claim created."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def read_holder(lock: Path) -> dict[str, Any] | None:
    """The lock file's ``{pid, host, started}``, or ``None`` if it cannot be read."""
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def describe_holder(lock: Path) -> str:
    holder = read_holder(lock)
    if holder is None:
        return "lock file unreadable"
    return f"pid {holder['pid']} on {holder.get('host', '?')}, started {holder.get('started', '?')}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as error:
        return error.errno != errno.ESRCH
    return True
