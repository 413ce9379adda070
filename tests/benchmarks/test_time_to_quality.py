"""``benchmarks/time_to_quality.py`` at its smallest: every variant's row (or its reason to be skipped), finite
objectives, and the JSON and Markdown it writes."""

from __future__ import annotations

import json
import math

from elpips.benchmarks import time_to_quality


def test_smallest_run_writes_every_variant(tmp_path, capsys):
    arguments = ["--budget", "0.01", "--size", "32", "--count", "2", "--path-size", "32", "--frames", "3",
                 "--eval-samples", "1", "--calibration-steps", "1", "--out", str(tmp_path)]
    assert time_to_quality.main(arguments) == 0
    (written,) = tmp_path.glob("time_to_quality-*.json")
    record = json.loads(written.read_text())
    variants = {(row["solver"], row["variant"]): row for row in record["rows"]}
    assert set(variants) == {("barycenter", "reference"), ("barycenter", "default"),
                             ("barycenter", "default_averaged_last_0.3"), ("barycenter", "bfloat16"),
                             ("geodesic", "reference"), ("geodesic", "default"), ("geodesic", "bfloat16"),
                             ("geodesic", "linear_start")}
    assert "skipped" in variants["geodesic", "reference"]
    for row in record["rows"]:
        if "skipped" not in row:
            assert math.isfinite(row["objective"]) and row["objective"] >= 0
            assert row["steps"] >= (0 if row["variant"] == "linear_start" else 1)
    assert variants["barycenter", "default_averaged_last_0.3"]["averaged_iterates"] >= 1
    assert record["plan"]["threads"] == 1 and record["load_average_start"] is not None
    assert "| barycenter | reference |" in written.with_suffix(".md").read_text()
    assert "wrote" in capsys.readouterr().out
