"""Seeded results of the default E-LPIPS against values recorded from the code before the ensemble became
configurable (tests/data/seeded_baseline.json): the same transform records, the same number of random draws
(the generator's next value after sampling), and the same distances.

Distances are compared at 1 thread, where they were recorded; they match bit for bit on the machine that
recorded them, and within 2e-6 relative elsewhere (the convolutions' float rounding may differ between CPUs).
"""

from __future__ import annotations

import json
from pathlib import Path

import elpips
import pytest
import torch

BASELINE = json.loads((Path(__file__).parent / "data" / "seeded_baseline.json").read_text())


def _as_dict(record: elpips.TransformRecord) -> dict:
    return {"scale_level": record.scale_level, "scale_offset": list(record.scale_offset),
            "offset": record.offset.tolist(), "flip": record.flip.tolist(), "swap": record.swap,
            "permutation": record.permutation.tolist(), "color": [[float(v) for v in row] for row in record.color]}


@pytest.mark.parametrize("case", BASELINE["records"], ids=lambda case: "-".join(map(str, case["args"])))
def test_default_records_and_random_draws_unchanged(case):
    batch, height, width, scales, seed, mode = case["args"]
    generator = torch.Generator().manual_seed(seed)
    record = elpips.sample_transform(batch, height, width, scale_levels=scales, generator=generator, color_mode=mode)
    assert _as_dict(record) == case["record"]
    assert int(torch.randint(0, 2**62, (1,), generator=generator)) == case["next_draw"]


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("case", BASELINE["distances"], ids=lambda case: case["metric"])
def test_default_distances_unchanged(case, one_thread):
    generator = torch.Generator().manual_seed(11)
    x = torch.rand(2, 3, 48, 48, generator=generator)
    y = torch.rand(2, 3, 48, 48, generator=generator)
    metric = elpips.Metric(case["metric"], backbone_weights="random", device="cpu", seed=case["seed"])
    forward = metric(x, y, n=case["n"])
    samples = metric.sample_distances(x, y, 3)
    compared = metric.compare(x, [y, x.flip(-1)], n=2)
    next_draw = int(torch.randint(0, 2**62, (1,), generator=metric.generator))
    assert next_draw == case["next_draw"]  # the same number of random draws
    for values, expected in ((forward, case["forward"]), (samples, case["sample_distances_3"]),
                             (compared, case["compare_2"])):
        torch.testing.assert_close(values, torch.tensor(expected), rtol=2e-6, atol=0)
