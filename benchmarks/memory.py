"""Peak-memory helpers of every benchmark: the peak resident-set growth of one step (CPU, Linux) and the peak
allocated CUDA memory.

CPU: measure in a fresh interpreter (configurations must not inherit each other's allocator caches) started with
:data:`MALLOC_ENV`, which makes glibc ``mmap`` every block above 64 KiB so that freed tensors leave the resident
set at once. :func:`peak_rss_step` runs one warm-up call, resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), runs the measured call and reports ``VmHWM - VmRSS``.

Child processes: :func:`run_child` runs a command and reports its wall time and the child's peak resident set
(``ru_maxrss`` from ``os.wait4``); :func:`measure_in_child` runs a measuring child (with :data:`MALLOC_ENV`) and
reads the JSON line it prints last; :func:`probe_command` calls a ``main(argv)`` in a fresh interpreter under this
module's own probe, which prints the call's return value, wall time and the process's peak resident set.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .timing import Stopwatch, sync

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
"""Environment of a measuring child process (see the module docstring)."""


def status_kib(field: str) -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/self/status``; ``None`` where unavailable."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); ``False`` if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_step(step: Callable[[], object], warmup: bool = True) -> dict:
    """Peak RSS increase (MiB) of one call of ``step`` in this process, after a warm-up call.

    Returns ``{"rss_before_mib", "rss_peak_mib", "step_peak_mib"}`` or ``{"error": ...}`` where the kernel offers
    no peak mark.
    """
    if warmup:
        step()  # one-time allocations (kernel caches, lazily built state) do not count
    before = status_kib("VmRSS")
    if before is None or not reset_peak_rss():
        return {"error": "peak RSS is not measurable here (needs Linux /proc/self/clear_refs)"}
    step()
    peak = status_kib("VmHWM")
    return {"rss_before_mib": before / 1024, "rss_peak_mib": peak / 1024, "step_peak_mib": (peak - before) / 1024}


def peak_cuda_step(step: Callable[[], object], device: torch.device | str) -> dict:
    """Peak allocated CUDA memory (MiB) of one call of ``step`` above the memory allocated before it."""
    step()
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"allocated_before_mib": before / 2**20, "allocated_peak_mib": peak / 2**20,
            "step_peak_mib": (peak - before) / 2**20}


def own_peak_rss_mib() -> float:
    """This process's peak resident set so far (MiB; ``ru_maxrss``, which Linux gives in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(frozen=True)
class ChildRun:
    """A finished child process: exit code, output, wall time seen from here, and its peak resident set."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_mib: float | None
    """``ru_maxrss`` of the child (MiB; Linux KiB / 1024); ``None`` where ``os.wait4`` is missing."""

    def last_json(self) -> dict:
        """The last line of the child's output, parsed as JSON."""
        return json.loads(self.stdout.strip().splitlines()[-1])

    def failure(self) -> str:
        """One line on a failed child: its exit code and the last line of its error output."""
        tail = (self.stderr.strip().splitlines() or ["no output"])[-1]
        return f"measurement process failed ({self.returncode}): {tail}"


def run_child(command: Sequence[str], env: Mapping[str, str] | None = None,
              timeout: float | None = None) -> ChildRun:
    """Run ``command`` to its end, its output captured; wall time from start to exit, and the child's peak RSS.

    ``env``: the child's whole environment (default: this one's). ``timeout``: seconds, after which the child is
    killed and :class:`subprocess.TimeoutExpired` raised.
    """
    command = list(command)
    clock = Stopwatch()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=None if env is None else dict(env))
    if not hasattr(os, "wait4"):
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        return ChildRun(process.returncode, stdout, stderr, clock.total(), None)
    output: dict[str, str] = {}
    readers = [threading.Thread(target=lambda name=name, stream=stream: output.__setitem__(name, stream.read()),
                                daemon=True)
               for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))]
    for reader in readers:
        reader.start()
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        process.kill()

    timer = threading.Timer(timeout, kill) if timeout is not None else None
    if timer is not None:
        timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        if timer is not None:
            timer.cancel()
    wall = clock.total()
    process.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    process.stdout.close()
    process.stderr.close()
    if killed.is_set():
        raise subprocess.TimeoutExpired(command, timeout, output.get("stdout"), output.get("stderr"))
    return ChildRun(process.returncode, output.get("stdout", ""), output.get("stderr", ""), wall,
                    usage.ru_maxrss / 1024)


def measure_in_child(command: Sequence[str], extra_env: Mapping[str, str] | None = None,
                     timeout: float | None = None, check: bool = False) -> dict:
    """Run a measuring child process (this environment, :data:`MALLOC_ENV` and ``extra_env``) and return the JSON
    line it prints last; ``{"error": ...}`` if it fails, or :class:`subprocess.CalledProcessError` with ``check``."""
    done = run_child(command, {**os.environ, **MALLOC_ENV, **(extra_env or {})}, timeout)
    if done.returncode != 0:
        if check:
            raise subprocess.CalledProcessError(done.returncode, list(command), done.stdout, done.stderr)
        return {"error": done.failure()}
    return done.last_json()


def probe_command(entry: str, argv: Sequence[str]) -> list[str]:
    """A fresh interpreter calling ``entry`` (``"package.module:function"``, a ``main(argv) -> int``) with ``argv``
    under :func:`main`: the entry's own output, then one JSON line ``{"code", "wall_s", "peak_rss_mib"}`` (its
    return value, the seconds of the call after the import, the peak RSS of the process)."""
    return [sys.executable, "-m", "elpips.benchmarks.memory", entry, *argv]


def main(argv: list[str] | None = None) -> int:
    """Child-process entry point of :func:`probe_command`: ``ENTRY ARGS...``."""
    entry, *rest = sys.argv[1:] if argv is None else argv
    module, _, function = entry.partition(":")
    target = getattr(importlib.import_module(module), function)
    clock = Stopwatch()
    code = target(rest)
    print(json.dumps({"code": code, "wall_s": clock.total(), "peak_rss_mib": own_peak_rss_mib()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
