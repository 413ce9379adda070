"""``benchmarks/device_run.sh``: what it would run on a GPU and in its CPU smoke mode (``--dry-run``), and that
every option it passes is one the commands accept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from elpips.scripts.cli import build_parser

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_run.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def dry_run(tmp_path: Path, *arguments: str, **settings: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), **settings}
    return subprocess.run(["bash", str(SCRIPT), *arguments], env=environment, capture_output=True, text=True,
                          check=False, timeout=60)


def commands(result: subprocess.CompletedProcess) -> list[list[str]]:
    return [line[2:].split() for line in result.stdout.splitlines() if line.startswith("+ ")]


def elpips_arguments(command: list[str]) -> list[str]:
    return command[command.index("elpips") + 1:]


def test_gpu_plan_installs_then_checks_then_benches(tmp_path):
    result = dry_run(tmp_path, "--dry-run")
    assert result.returncode == 0, result.stderr
    planned = commands(result)
    assert [command[2] for command in planned[-3:-2]] == ["pip"]
    check, bench = elpips_arguments(planned[-2]), elpips_arguments(planned[-1])
    assert check[:3] == ["check-device", "--device", "cuda"] and "--speed-size" not in check
    assert bench[:3] == ["bench", "--device", "cuda"] and "--quick" not in bench
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_cpu_smoke_mode_and_its_options_parse(tmp_path):
    result = dry_run(tmp_path, "--dry-run", DEVICE="cpu", QUICK="1")
    assert result.returncode == 0, result.stderr
    planned = commands(result)
    assert len(planned) == 2 and not any("pip" in command for command in planned)  # no install on the CPU
    parsed = [build_parser(elpips_arguments(command)[0]).parse_args(elpips_arguments(command)) for command in planned]
    for arguments in parsed:
        assert arguments.device == "cpu" and arguments.out == str(tmp_path / "out")
    assert parsed[0].speed_size == 32 and parsed[1].quick and parsed[1].size == 32


def test_unknown_argument_is_refused(tmp_path):
    result = dry_run(tmp_path, "--fast")
    assert result.returncode == 2 and "usage" in result.stderr
