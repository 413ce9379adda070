"""``elpips bench``: the smallest plan end to end (schema, positive finite ratios, files), option errors, the
memory probe and the precision check (bf16 autocast on CPU)."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stdout

import pytest
import torch
from elpips.benchmarks import measurements as benchmarks
from elpips.benchmarks import step_memory as bench_memory
from elpips.benchmarks.precision import measure_precision
from elpips.benchmarks.suite import BenchPlan, make_plan, run_suite, write_results
from elpips.scripts.cli import main

REQUIRED_RATIOS = ("elpips_vs_vgg_features", "elpips_vs_lpips", "barycenter_speedup", "geodesic_speedup",
                   "elpips_bfloat16_vs_vgg_features_channels_last", "elpips_float32_vs_vgg_features_channels_last")
PRECISION_RATIOS = ("bfloat16_vs_float32", "barycenter_bfloat16_vs_float32", "geodesic_bfloat16_vs_float32")


def tiny_plan() -> BenchPlan:
    """Every section at its smallest; one thread (steady on a loaded machine). Memory is tested on its own."""
    return BenchPlan(threads=1, size=32, solver_size=16, batch=1, repeats=1, single_repeats=1, warmup=0,
                     references=2, geodesic_frames=(2,), scaling_frames=(2,), scaling_sizes=(16,),
                     scaling_frames_at_sizes=2, scaling_repeats=1, memory_frames=(), variance_size=16,
                     variance_samples=2, variance_trials=2, profile_steps=1, spatial_samples=2,
                     spatial_memory_size=None, crop_size=32, crop_pairs=1, crop_samples=2,
                     precision_frames=2)


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_smallest_plan_writes_schema_with_positive_finite_ratios(tmp_path):
    record = run_suite(tiny_plan())
    for name in REQUIRED_RATIOS:
        value = record["ratios"][name]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, value)
    for value in record["ratios"].values():
        assert math.isfinite(value) and value > 0
    assert set(record["goals"]) == set(REQUIRED_RATIOS)
    for name in PRECISION_RATIOS:
        assert record["ratios"][name] > 0
    floor_goal = record["goals"]["elpips_bfloat16_vs_vgg_features_channels_last"]
    assert floor_goal["goal"] == "<= 0.7" and floor_goal["applies"] is False  # stated at 128 px, run at 32
    assert floor_goal["stated_at"] == {"size": 128, "threads": 1} and isinstance(floor_goal["met"], bool)
    assert record["precision"]["precisions"] == ["float32", "bfloat16"] and not record["precision"]["skipped"]
    assert record["spatial"]["timing"]["samples"] == 2 and "map_vs_distance" in record["ratios"]
    environment = record["environment"]
    for key in ("torch", "torch_threads", "device", "cpu_model", "load_average_start", "load_average_end"):
        assert key in environment
    assert record["plan"]["size"] == 32 and record["plan"]["batch"] == 1
    assert record["single"]["timings"]["elpips"]["median_s"] > 0
    assert record["scaling"]["rows"][0]["frames"] == 2
    assert record["variance"]["std_stratified"] >= 0
    assert record["crop"]["speed"]["network_input_px"] == {"pad": 39, "crop": 25}
    assert record["crop"]["distances"]["pairs"][0]["pad"] > 0 and record["ratios"]["crop_speedup"] > 0
    assert "convolution" in record["profile"]["elpips"]["categories"]
    assert record["cuda"]["status"] in ("not available", "not requested (--device cuda)")

    json_path, markdown_path = write_results(record, tmp_path / "benchmarks")
    assert json.loads(json_path.read_text())["ratios"] == record["ratios"]
    markdown = markdown_path.read_text()
    assert "elpips_vs_vgg_features" in markdown and "| ratio | value | goal |" in markdown
    assert "Distance map vs scalar distance" in markdown
    assert "Crop mode vs pad mode (32 px)" in markdown
    assert "## Precision (32 px single calls" in markdown and "indicative here" in markdown
    assert json_path.stem == markdown_path.stem


@pytest.mark.parametrize("option", [["--size", "16"], ["--batch", "0"], ["--repeats", "0"],
                                    ["--threads", "-1"], ["--device", "nope"]])
def test_bad_options_exit_2(option, tmp_path, capsys):
    try:
        code = main(["bench", *option, "--out", str(tmp_path)])
    except SystemExit as exit_info:  # a value argparse itself refuses (--threads -1)
        code = exit_info.code
    assert code == 2
    assert "elpips bench: error:" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_quick_plan_is_smaller_than_default():
    quick, default = make_plan(quick=True), make_plan()
    assert quick.size < default.size and quick.repeats < default.repeats
    assert default.references == 10 and default.geodesic_frames == (8, 16)
    assert default.scaling_frames == (4, 8, 16) and default.scaling_sizes == (64, 128, 256)
    assert make_plan(size=48).solver_size == 48
    assert make_plan().threads == 1 and make_plan(threads=0).threads is None and make_plan(threads=2).threads == 2


def test_memory_probe_reports_step_peak(one_thread):
    out = io.StringIO()
    with redirect_stdout(out):
        assert bench_memory.main(["--size", "16", "--frames", "2", "--chunk-size", "1", "--threads", "1"]) == 0
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    if "error" not in result:  # needs Linux /proc/self/clear_refs
        assert result["step_peak_mib"] >= 0 and result["rss_peak_mib"] >= result["rss_before_mib"]


def test_precision_check_bf16_on_cpu(one_thread):
    metric = benchmarks.timing_metric("cpu")
    result = measure_precision(metric, 16, 1, 1, repeats=1, warmup=0, modes=("bfloat16", "channels_last"))
    bf16 = result["modes"]["bfloat16"]
    if "error" not in bf16:
        assert math.isfinite(bf16["max_relative_error"]) and bf16["speedup_vs_float32"] > 0
    channels_last = result["modes"]["channels_last"]
    assert channels_last["max_relative_error"] < 1e-4 and channels_last["passes"]
    assert "float16" not in result["modes"]  # not requested
    on_cpu = measure_precision(metric, 16, 1, 1, repeats=1, warmup=0, modes=("float16",))
    assert "needs a CUDA device" in on_cpu["modes"]["float16"]["error"] and on_cpu["timings"] == {}
    with pytest.raises(ValueError, match="unknown precision modes"):
        measure_precision(metric, 16, 1, 1, 1, 0, modes=("int8",))
