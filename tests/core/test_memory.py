"""Memory-bounded evaluation: samples, candidates and batch images go through the network in passes sized from
a budget, and the results are those of one pass (exactly, where the dropout masks do not enter)."""

from __future__ import annotations

import elpips
import elpips._features
import elpips.memory
import pytest
import torch
from elpips.memory import BYTES_PER_PIXEL_FLOAT32, default_memory_budget, images_per_pass, parse_memory_size


def _budget_for(images: int, backbone: str, height: int, width: int) -> int:
    """A budget that admits exactly ``images`` padded ``height x width`` images per pass."""
    return BYTES_PER_PIXEL_FLOAT32[backbone] * (height + 7) * (width + 7) * images + 1


def _spy_pass_sizes(metric: elpips.Metric, monkeypatch) -> list[int]:
    sizes: list[int] = []
    features = elpips.Metric.features

    def recording(self, images, sample=None):
        sizes.append(images.shape[-4] if images.dim() == 5 else images.shape[0])
        if images.dim() == 5:
            sizes[-1] = images.shape[0] * images.shape[1]
        return features(self, images, sample)

    monkeypatch.setattr(elpips.Metric, "features", recording)
    return sizes


def test_images_per_pass_from_budget():
    assert images_per_pass(10 * 2048 * 100, "vgg16", 100) == 10
    assert images_per_pass(10 * 2048 * 100 - 1, "vgg16", 100) == 9
    assert images_per_pass(1, "vgg16", 100) == 1  # one image over the budget is still evaluated
    assert images_per_pass(2 * 2048 * 100, "vgg16", 100, element_size=8) == 1  # float64 costs twice


GIB = 1024**3


@pytest.mark.parametrize("available, expected", [
    (4 * GIB, GIB),                      # a quarter of the free memory
    (6 * GIB + 4, 3 * GIB // 2 + 1),     # a quarter, rounded down
    (7 * GIB, 7 * GIB // 4),
    (8 * GIB, 2 * GIB),                  # a quarter is 2 GiB
    (64 * GIB, 2 * GIB),                 # at most 2 GiB
    (128 * 1024**2, 64 * 1024**2),       # at least the minimum budget
    (None, 2 * GIB),                     # free memory unknown
], ids=["4G", "6G+4", "7G", "8G", "64G", "128M", "unknown"])
def test_default_cpu_budget_is_2g_or_a_quarter_of_the_free_memory(monkeypatch, available, expected):
    """docs/algorithm.md#memory: on the CPU (and MPS) the default budget is 2 GiB or a quarter of the available
    memory, whichever is less (never below the 64 MiB minimum)."""
    monkeypatch.setattr(elpips.memory, "available_cpu_memory", lambda: available)
    for device in ("cpu", "mps"):
        assert default_memory_budget(torch.device(device)) == expected


def test_metric_without_a_budget_uses_the_default(monkeypatch):
    """``memory_budget=None``: passes are sized from the default budget (1 GiB with 4 GiB free): 4096 images of
    64 x 64 pixels (L2 has no offset padding) at 64 bytes per pixel."""
    monkeypatch.setattr(elpips.memory, "available_cpu_memory", lambda: 4 * GIB)
    metric = elpips.Metric("l2", device="cpu")
    assert metric.images_per_pass(64, 64) == GIB // (64 * 64 * 64) == 4096


def test_parse_memory_size():
    assert parse_memory_size("512M") == 512 * 1024**2
    assert parse_memory_size("1.5GiB") == int(1.5 * 1024**3)
    assert parse_memory_size("2g") == 2 * 1024**3
    with pytest.raises(ValueError, match="not a size"):
        parse_memory_size("lots")
    with pytest.raises(ValueError, match="minimum"):
        parse_memory_size("1K")


def test_sixteen_samples_never_in_one_pass(images, monkeypatch):
    """16 samples of a pair at 48 px with a budget of 3 images per pass: no pass holds more than 3 images,
    every sample is evaluated, and without dropout the distances equal the one-pass ones exactly."""
    x, y = images(1, 48, 48, seed=1), images(1, 48, 48, seed=2)
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu")
    one_pass = metric.sample_distances(x, y, 16, torch.Generator().manual_seed(3), dropout=False)
    metric.memory_budget = _budget_for(3, "vgg16", 48, 48)
    sizes = _spy_pass_sizes(metric, monkeypatch)
    passes = metric.sample_distances(x, y, 16, torch.Generator().manual_seed(3), dropout=False)
    assert max(sizes) <= 3 and sum(sizes) == 2 * 16
    torch.testing.assert_close(passes, one_pass, rtol=1e-5, atol=1e-7)


def test_passes_keep_the_stratified_record(images, monkeypatch):
    """Split into passes, the rows still come from one stratified record of n images: at n = 8 the flip codes
    are each used exactly twice."""
    x, y = images(1, 40, 40, seed=1), images(1, 40, 40, seed=2)
    metric = elpips.Metric("elpips-squeeze", backbone_weights="random", device="cpu")
    metric.memory_budget = _budget_for(4, "squeezenet1_1", 40, 40)  # 2 pairs a pass
    records: dict[int, elpips.TransformRecord] = {}  # x and y of a pass share one record
    network_input = elpips._features.network_input

    def recording(metric, x, sample):
        records[id(sample.transform)] = sample.transform
        return network_input(metric, x, sample)

    monkeypatch.setattr(elpips._features, "network_input", recording)
    metric.sample_distances(x, y, 8, torch.Generator().manual_seed(4))
    assert len(records) == 4
    flips = [code for record in records.values() for code in record.flip.tolist()]
    assert sorted(flips) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_chunked_with_dropout_is_unbiased(images):
    """With dropout, later passes draw their own masks: the mean over many samples agrees with one-pass
    sampling within the 95% intervals of both."""
    x, y = images(1, 32, 32, seed=5), images(1, 32, 32, seed=6)
    metric = elpips.Metric("elpips-squeeze", backbone_weights="random", device="cpu")
    one = metric.sample_distances(x, y, 96, torch.Generator().manual_seed(7)).double()
    metric.memory_budget = _budget_for(4, "squeezenet1_1", 32, 32)
    split = metric.sample_distances(x, y, 96, torch.Generator().manual_seed(8)).double()
    difference = float(one.mean() - split.mean())
    standard_error = float((one.var() / 96 + split.var() / 96).sqrt())
    assert abs(difference) < 4 * standard_error


def test_compare_in_passes_equals_one_pass(images, monkeypatch):
    reference = images(1, 40, 40, seed=1)
    candidates = [images(1, 40, 40, seed=s) for s in (2, 3, 4, 5)]
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu")
    generator = torch.Generator().manual_seed(9)
    sample = metric.sample(6, 40, 40, generator, dropout=False)
    stacked = torch.stack(candidates)

    def fixed_sample(*args, **kwargs):
        return elpips.EnsembleSample(sample.transform, None)

    monkeypatch.setattr(metric, "sample", fixed_sample)
    one_pass = metric.compare_samples(reference, stacked, 6)
    metric.memory_budget = _budget_for(5, "vgg16", 40, 40)
    sizes = _spy_pass_sizes(metric, monkeypatch)
    passes = metric.compare_samples(reference, stacked, 6)
    assert max(sizes) <= 5
    torch.testing.assert_close(passes, one_pass, rtol=1e-5, atol=1e-7)


def test_lpips_batch_in_passes(images, monkeypatch):
    x, y = images(5, 32, 32, seed=1), images(5, 32, 32, seed=2)
    metric = elpips.Metric("lpips-squeeze", backbone_weights="random", device="cpu")
    whole = metric(x, y)
    metric.memory_budget = BYTES_PER_PIXEL_FLOAT32["squeezenet1_1"] * 32 * 32 * 4 + 1
    sizes = _spy_pass_sizes(metric, monkeypatch)
    torch.testing.assert_close(metric(x, y), whole, rtol=1e-6, atol=1e-8)
    assert max(sizes) <= 2


def test_budget_below_minimum_is_an_error():
    with pytest.raises(ValueError, match="memory_budget"):
        elpips.Metric("l2", memory_budget=1000)
