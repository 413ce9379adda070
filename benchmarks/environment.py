"""The environment a benchmark ran in: versions, threads, device, CPU model, load, commit."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import elpips
import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages (``None`` where the OS has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def git_commit() -> str | None:
    """The source tree's commit (with ``-dirty`` for uncommitted changes), ``None`` outside a checkout."""
    root = Path(elpips.__file__).resolve().parent.parent
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root,
                                   capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return described.stdout.strip() or None


def device_name(device: torch.device) -> str:
    """A readable name of ``device``: the GPU's name, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def environment(device: torch.device) -> dict:
    """Everything needed to compare a run with another one (JSON-ready)."""
    import torchvision

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elpips_version": elpips.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "cuda": cuda,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "platform": platform.platform(),
        "load_average_start": load_average(),
    }
