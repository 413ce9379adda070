"""A run folder belongs to one run: every command that writes one (``geodesic``, ``barycenter``, ``attack``,
``train-example``; ``export`` re-rendering a saved run) owns it through :class:`RunFolder`.

* An existing run is refused unless the command resumes it (``--resume``); resuming needs a run to continue.
* ``run.json`` records the settings that determine the result, the seed included (a run without ``--seed``
  records the seed it drew). A resume uses that seed and refuses other settings, naming each one, old vs new.
* A lock file (``.lock``: pid, host, start time, created with ``O_EXCL``) is held for the run's lifetime; a
  second run into the folder is refused with the holder named; a lock left by a killed process on this host is
  taken over with a note.
* Temporary files of interrupted writes (``.NAME.*.tmp*``) are removed when a run takes the folder.
* Nothing is created before :meth:`RunFolder.claim`: commands check their inputs and build the metric first.
* Inside ``claim``, an OS write error (a full disk, no permission, a read-only file system) becomes one
  :class:`~elpips.io.OutputWriteError` naming the folder and the cause; Ctrl-C prints the command that resumes.
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
from pathlib import Path
from typing import Any, Iterator

from elpips.io import OutputWriteError, write_json
from elpips.solver import CHECKPOINT_NAME

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
        resume: the run continues the one in ``path`` (``--resume``).
        resumable: the command can resume (its Ctrl-C prints how).
        argv: the command line after ``elpips`` (for the resume hint); ``None``: no exact command is shown.
        owner: this process writes the folder (under torchrun only rank 0 does; other ranks do nothing here).
    """

    def __init__(self, path: str | os.PathLike, command: str, resume: bool = False, resumable: bool = True,
                 argv: list[str] | None = None, owner: bool = True) -> None:
        self.path = Path(path)
        self.command = command
        self.resume = resume
        self.resumable = resumable
        self.argv = argv
        self.owner = owner
        self.locked = False

    # -- checks before anything is created ---------------------------------------------------------------------
    def holds_run(self) -> bool:
        """Whether the folder already holds (part of) a run."""
        return any((self.path / name).exists() for name in RUN_FILES)

    def check(self) -> None:
        """Refuse a folder holding a run unless resuming; refuse a resume with no run to continue."""
        if self.resume and not self.holds_run():
            raise ValueError(f"--resume: no run to continue in '{self.path}' (no checkpoint, no {SETTINGS_NAME})")
        if not self.resume and self.holds_run():
            advice = "pass --resume to continue it, or" if self.resumable else "remove it or"
            raise ValueError(f"'{self.path}' already holds a run: {advice} choose another --out")

    def recorded_settings(self) -> dict[str, Any] | None:
        """The settings in ``run.json``, or ``None`` when the folder has none."""
        path = self.path / SETTINGS_NAME
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"'{path}' is unreadable ({error}): the run's settings are unknown") from None

    def settings(self, current: dict[str, Any]) -> dict[str, Any]:
        """The settings this run uses: ``current`` (``seed: None`` = draw one) for a new run; on resume the
        recorded ones, which ``current`` must match (a ``None`` seed takes the recorded seed)."""
        current = json.loads(json.dumps(current))  # tuples as lists: compared as run.json holds them
        recorded = self.recorded_settings() if self.resume else None
        if recorded is None and self.resume and current.get("seed", 0) is None:
            raise ValueError(f"--resume: '{self.path}' records no settings ({SETTINGS_NAME}, written by newer "
                             "versions): pass the run's --seed")
        if recorded is None:
            if current.get("seed", 0) is None:
                current["seed"] = secrets.randbelow(2**31)
            return current
        if current.get("seed", 0) is None:
            current["seed"] = recorded.get("seed")
        differing = [f"{key} was {recorded.get(key)!r}, now {current.get(key)!r}"
                     for key in sorted(set(recorded) | set(current)) if recorded.get(key) != current.get(key)]
        if differing:
            raise ValueError(f"cannot resume '{self.path}' with other settings: {'; '.join(differing)} (resume "
                             "with the run's settings, or start a new run in another --out)")
        return recorded

    # -- ownership ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def claim(self, settings: dict[str, Any] | None = None) -> Iterator["RunFolder"]:
        """Create the folder, take its lock, remove temporary files of earlier kills and record ``settings``
        (a new run); release the lock when the block ends, however it ends. OS errors in the block become one
        :class:`~elpips.io.OutputWriteError`; Ctrl-C prints the resume command."""
        if not self.owner:
            yield self
            return
        try:
            with self._translated_os_errors():
                self.path.mkdir(parents=True, exist_ok=True)
                self._lock()
                self.check()  # again under the lock: a run started meanwhile may have finished
                self._remove_temporary_files()
                if settings is not None and not (self.path / SETTINGS_NAME).exists():
                    write_json(self.path / SETTINGS_NAME, {"command": self.command, "settings": settings})
                yield self
        except KeyboardInterrupt:
            if self.resumable:
                print(f"interrupted: continue with: {self.resume_command()}", file=sys.stderr)
            raise
        finally:
            self._unlock()

    def resume_command(self) -> str:
        """The command line that continues this run (``elpips ... --resume --out DIR``)."""
        if self.argv is None:
            return f"the same command plus --resume --out {shlex.quote(str(self.path))}"
        kept, skip = [], False
        for argument in self.argv:
            if skip:
                skip = False
            elif argument == "--out":
                skip = True
            elif argument != "--resume" and not argument.startswith("--out="):
                kept.append(argument)
        return shlex.join(["elpips", *kept, "--resume", "--out", str(self.path)])

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
                                        f"for it to end, or choose another --out") from None
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            with os.fdopen(handle, "w") as file:
                json.dump(holder, file)
            self.locked = True
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
