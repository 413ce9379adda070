"""The benchmarks' one set of helpers: timing (``benchmarks/timing.py``), child processes and peak memory
(``benchmarks/memory.py``), inputs (``benchmarks/measurements.py``); and no benchmark keeps its own copy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from elpips.benchmarks.memory import measure_in_child, run_child
from elpips.benchmarks.timing import Stopwatch, time_once, timed_call

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_timed_call_returns_the_value_with_wall_and_cpu_seconds():
    timed = timed_call(lambda: sum(range(100_000)))
    assert timed.value == sum(range(100_000)) and timed.wall_s > 0 and timed.cpu_s >= 0
    assert time_once(lambda: None, "cpu") >= 0
    clock = Stopwatch()
    first, second = clock.lap(), clock.lap()
    assert first >= 0 and second >= 0 and clock.total() >= first + second


def test_run_child_captures_output_exit_code_and_wall_time():
    done = run_child([sys.executable, "-c", "import sys; print('out'); print('e' * 200000, file=sys.stderr); "
                                            "sys.exit(3)"])
    assert done.returncode == 3 and done.stdout.strip() == "out" and len(done.stderr.strip()) == 200000
    assert done.wall_s > 0 and (done.peak_rss_mib is None or done.peak_rss_mib > 0)
    assert done.failure() == f"measurement process failed (3): {'e' * 200000}"


def test_run_child_kills_on_timeout():
    with pytest.raises(subprocess.TimeoutExpired):
        run_child([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)


def test_measure_in_child_reads_the_last_json_line_with_the_malloc_environment():
    script = ("import json, os; print('noise'); print(json.dumps({'mmap': os.environ['MALLOC_MMAP_THRESHOLD_'], "
              "'threads': os.environ['OMP_NUM_THREADS']}))")
    assert measure_in_child([sys.executable, "-c", script], {"OMP_NUM_THREADS": "1"}) == {"mmap": "65536",
                                                                                          "threads": "1"}
    failed = measure_in_child([sys.executable, "-c", "raise SystemExit('broken')"])
    assert failed == {"error": "measurement process failed (1): broken"}
    with pytest.raises(subprocess.CalledProcessError):
        measure_in_child([sys.executable, "-c", "raise SystemExit(2)"], check=True)


def _calls_and_imports(path: Path) -> tuple[set[str], set[str]]:
    """Dotted names called (``time.perf_counter``) and modules imported in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    calls, imports = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value,
                                                                                             ast.Name):
            calls.add(f"{node.func.value.id}.{node.func.attr}")
        elif isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imports.add(node.module)
    return calls, imports


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda path: path.name)
def test_benchmarks_use_the_shared_helpers(path):
    calls, imports = _calls_and_imports(path)
    if path.name != "timing.py":
        assert not calls & {"time.perf_counter", "time.process_time", "time.monotonic", "time.time"}, \
            f"{path.name} times by hand: use benchmarks/timing.py (timed_call, time_once, Stopwatch)"
    if path.name not in ("memory.py", "environment.py"):  # environment: `git describe`, not a measurement
        assert "subprocess" not in imports and "resource" not in imports, \
            f"{path.name} runs its own child process or memory probe: use benchmarks/memory.py"
    if path.name != "measurements.py":
        assert "F.interpolate" not in calls, f"{path.name} resizes by hand: use measurements.example_image"
    assert "1.96" not in path.read_text(), f"{path.name}: use elpips.estimate.Z_95"


def test_cpu_profiling_writes_nothing_to_stderr(capfd):
    import torch
    from elpips.benchmarks.op_profile import profile_side

    result = profile_side(lambda: torch.ones(16).sum(), 2, torch.device("cpu"))
    assert result["self_time_ms_per_step"] > 0
    assert capfd.readouterr().err == ""  # no Kineto start/stop lines, no "gpuGetDeviceCount failed"
