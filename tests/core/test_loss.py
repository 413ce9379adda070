"""The metric as a training loss: reductions, frozen weights, checkpointing, training, DDP, ``elpips train-example``."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import elpips
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from elpips.scripts.cli import main
from ranks import free_port
from torch import nn


def tiny_model(seed: int = 0) -> nn.Module:
    """A two-convolution residual CNN (the kind ``train-example`` trains), deterministic in ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    return model


def restore(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (x + model(x)).clamp(0, 1)


# -- reduction ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["elpips-vgg", "lpips-squeeze"])
def test_reductions_equal_per_image_values(random_metric, images, name):
    metric = random_metric(name)
    x, y = images(3, 32, 32, seed=1), images(3, 32, 32, seed=2)
    per_image = metric(x, y, n=2, generator=torch.Generator().manual_seed(4))
    # independent computation of the same sample through the solver layer
    if metric.is_stochastic:
        sample = metric.sample(6, 32, 32, generator=torch.Generator().manual_seed(4))
        expected = metric.distance_between(metric.features(x.repeat(2, 1, 1, 1), sample),
                                           metric.features(y.repeat(2, 1, 1, 1), sample)).reshape(2, 3).mean(0)
    else:
        expected = metric.distance_between(metric.features(x), metric.features(y))
    assert per_image.shape == (3,)
    torch.testing.assert_close(per_image, expected, rtol=1e-6, atol=0)
    mean = metric(x, y, n=2, generator=torch.Generator().manual_seed(4), reduction="mean")
    total = metric(x, y, n=2, generator=torch.Generator().manual_seed(4), reduction="sum")
    assert mean.shape == () and total.shape == ()
    torch.testing.assert_close(mean, expected.mean(), rtol=1e-6, atol=0)
    torch.testing.assert_close(total, expected.sum(), rtol=1e-6, atol=0)
    explicit_none = metric(x, y, n=2, generator=torch.Generator().manual_seed(4), reduction="none")
    assert torch.equal(explicit_none, per_image)


def test_constructor_reduction_and_validation(images):
    x, y = images(2, 32, 32, seed=1), images(2, 32, 32, seed=2)
    summed = elpips.Metric("lpips-vgg", backbone_weights="random", device="cpu", reduction="sum")
    per_image = summed(x, y, reduction="none")
    torch.testing.assert_close(summed(x, y), per_image.sum(), rtol=1e-6, atol=0)
    assert "reduction='sum'" in repr(summed)
    with pytest.raises(ValueError, match="reduction must be one of none, mean, sum"):
        summed(x, y, reduction="average")
    with pytest.raises(ValueError, match="reduction must be one of"):
        elpips.Metric("l2", reduction="max")


# -- frozen weights ----------------------------------------------------------------------------------------------------
class Restorer(nn.Module):
    """A user model that holds the loss metric as a submodule."""

    def __init__(self, metric: elpips.Metric) -> None:
        super().__init__()
        self.net = tiny_model()
        self.loss = metric


def test_weights_are_buffers_never_parameters(random_metric, images):
    metric = random_metric("elpips-vgg")
    assert list(metric.parameters()) == []
    buffers = dict(metric.named_buffers())
    assert "backbone.features.0.weight" in buffers and "backbone.features.28.bias" in buffers
    assert all(not b.requires_grad for b in buffers.values())
    assert set(metric.state_dict()) == set(buffers)

    holder = Restorer(metric)
    optimiser = torch.optim.Adam(holder.parameters(), lr=1e-3)
    optimised = {id(p) for group in optimiser.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in holder.net.parameters()} and len(optimised) == 4
    assert not optimised & {id(b) for b in buffers.values()}

    noisy, clean = images(2, 32, 32, seed=1), images(2, 32, 32, seed=2)
    loss = holder.loss(restore(holder.net, noisy), clean, reduction="mean")
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in holder.net.parameters())
    assert all(b.grad is None for b in metric.buffers())


def test_state_dict_round_trip(images):
    x, y = images(1, 32, 32, seed=1), images(1, 32, 32, seed=2)
    source = elpips.Metric("lpips-squeeze", backbone_weights="random:1", device="cpu")
    target = elpips.Metric("lpips-squeeze", backbone_weights="random:2", device="cpu")
    assert not torch.equal(source(x, y), target(x, y))
    target.load_state_dict(source.state_dict())
    assert torch.equal(source(x, y), target(x, y))
    assert list(target.parameters()) == []


# -- training ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lpips-vgg", "elpips-vgg"])
def test_optimiser_steps_lower_the_loss(random_metric, images, name):
    metric = random_metric(name, seed=3)
    clean = images(4, 32, 32, seed=5)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(6))).clamp(0, 1)
    model = tiny_model(seed=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    record = elpips.sample_transform(4, 32, 32, generator=torch.Generator().manual_seed(7))

    def fixed_loss() -> float:  # a fixed, dropout-free evaluation: the same function before and after
        with torch.no_grad():
            return float(metric(restore(model, noisy), clean, transform=record, dropout=False, reduction="mean"))

    before = fixed_loss()
    for _ in range(10):
        loss = metric(restore(model, noisy), clean, reduction="mean")  # E-LPIPS: a fresh sample every step
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = fixed_loss()
    assert after < 0.8 * before, (before, after)


# -- activation checkpointing ------------------------------------------------------------------------------------------
def saved_bytes(function) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while ``function()`` runs (each storage once)."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function()
    return sum(storages.values())


@pytest.mark.parametrize("name", ["elpips-vgg", "lpips-squeeze"])
def test_checkpointing_gives_equal_gradients(images, name):
    metric = elpips.Metric(name, backbone_weights="random", device="cpu", seed=0).double()
    output = images(2, 32, 32, seed=1).double().requires_grad_()
    clean = images(2, 32, 32, seed=2).double()

    def gradients(checkpointing: bool, both: bool):
        metric.checkpoint_activations = checkpointing
        x = output.detach().clone().requires_grad_()
        y = clean.clone().requires_grad_(both)
        loss = metric(x, y, n=2, generator=torch.Generator().manual_seed(3), reduction="sum")
        loss.backward()
        return loss.detach(), x.grad, y.grad

    for both in (False, True):
        plain, checkpointed = gradients(False, both), gradients(True, both)
        torch.testing.assert_close(checkpointed[0], plain[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(checkpointed[1], plain[1], rtol=1e-10, atol=1e-14)
        if both:
            torch.testing.assert_close(checkpointed[2], plain[2], rtol=1e-10, atol=1e-14)
    assert plain[1].abs().sum() > 0

    # compare(): candidates differentiated, reference shared
    candidates = torch.stack([output.detach(), clean.flip(-1)]).requires_grad_()
    grads = []
    for checkpointing in (False, True):
        metric.checkpoint_activations = checkpointing
        candidates.grad = None
        metric.compare(clean, candidates, generator=torch.Generator().manual_seed(4)).sum().backward()
        grads.append(candidates.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-14)

    # checkpointing really keeps less for the backward pass
    def loss_of(checkpointing):
        metric.checkpoint_activations = checkpointing
        return lambda: metric(output, clean, generator=torch.Generator().manual_seed(3))

    assert saved_bytes(loss_of(True)) < 0.7 * saved_bytes(loss_of(False))


def test_checkpointing_under_bf16_autocast(images):
    metric = elpips.Metric("lpips-squeeze", backbone_weights="random", device="cpu", checkpoint_activations=True)
    x = images(2, 32, 32, seed=1).requires_grad_()
    y = images(2, 32, 32, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = metric(x, y, reduction="mean")
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    exact = metric(x, y, reduction="mean")
    assert abs(float(loss.detach()) - float(exact.detach())) < 0.1 * float(exact.detach())


# -- DistributedDataParallel -------------------------------------------------------------------------------------------
DDP_METRIC = "elpips-squeeze"


def rank_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + rank)
    clean = torch.rand(2, 3, 32, 32, generator=generator)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    return noisy, clean


def rank_metric(rank: int) -> elpips.Metric:
    return elpips.Metric(DDP_METRIC, backbone_weights="random", device="cpu", seed=10 + rank)


def ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=120))
    try:
        model = DistributedDataParallel(tiny_model(seed=0))
        metric = rank_metric(rank)  # not wrapped: the loss is computed on the DDP output
        noisy, clean = rank_batch(rank)
        loss = metric(restore(model, noisy), clean, reduction="mean")
        loss.backward()
        torch.save([p.grad for p in model.module.parameters()], os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gradient_is_the_mean_of_per_rank_gradients(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    port = free_port()
    monkeypatch.setenv("MASTER_PORT", str(port))
    mp.spawn(ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    synced = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]

    per_rank = []
    for rank in range(2):  # the same computation in one process, rank by rank
        model = tiny_model(seed=0)
        noisy, clean = rank_batch(rank)
        rank_metric(rank)(restore(model, noisy), clean, reduction="mean").backward()
        per_rank.append([p.grad for p in model.parameters()])
    assert not torch.allclose(per_rank[0][0], per_rank[1][0])  # the ranks really differ
    for index in range(len(per_rank[0])):
        expected = (per_rank[0][index] + per_rank[1][index]) / 2
        for rank in range(2):
            torch.testing.assert_close(synced[rank][index], expected, rtol=1e-5, atol=1e-8)


# -- elpips train-example ----------------------------------------------------------------------------------------------
@pytest.fixture
def small_pngs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(2):
        smooth = np.kron(rng.integers(0, 256, (10, 12, 3)), np.ones((4, 4, 1))).astype(np.uint8)  # 40x48
        paths.append(str(tmp_path / f"img{index}.png"))
        iio.imwrite(paths[-1], smooth)
    return paths


def test_train_example_writes_log_and_samples(tmp_path, small_pngs, capsys):
    out = tmp_path / "run"
    code = main(["train-example", "--images", *small_pngs, "--loss", "lpips-vgg", "--backbone-weights", "random",
                 "--steps", "3", "--crop", "16", "--batch", "2", "--val-every", "2", "--seed", "1",
                 "--out", str(out)])
    assert code == 0
    log = json.loads((out / "log.json").read_text())
    assert log["loss"] == "lpips-vgg" and log["uncalibrated"] is True and log["calibrated"] is False
    assert len(log["train_loss"]) == 3 and all(v > 0 for v in log["train_loss"])
    assert [entry["step"] for entry in log["validation"]] == [2, 3]
    assert log["validation_crops"] == 4  # left and right end of the held-out rows of each image
    assert set(log["validation"][0]) == {"step", "psnr", "l2", "lpips-vgg", "elpips-vgg"}
    # the degraded validation inputs: Gaussian noise of sigma 0.1 (a little less after clamping to [0, 1])
    assert 0.08 < log["input_validation"]["l2"] <= 0.1
    assert 20 <= log["input_validation"]["psnr"] < 22
    sheet = iio.imread(out / "samples.png")
    # 4 rows (one per validation crop) of degraded | output | clean, 16 px crops enlarged 4x, 6 px gaps, one 20-px label
    assert sheet.shape == (4 * 64 + 20 + 3 * 6, 3 * 64 + 2 * 6, 3)
    printed = capsys.readouterr()
    assert "UNCALIBRATED" in printed.out and "wrote" in printed.out


def test_train_example_bad_input(tmp_path, small_pngs, capsys):
    out = tmp_path / "run"
    code = main(["train-example", "--images", *small_pngs, "--backbone-weights", "random", "--crop", "32",
                 "--out", str(out)])
    assert code == 2
    assert "needs at least 64x32" in capsys.readouterr().err
    code = main(["train-example", "--images", str(tmp_path / "missing.png"), "--backbone-weights", "random",
                 "--out", str(out)])
    assert code == 2 and "no such file" in capsys.readouterr().err
    code = main(["train-example", "--images", *small_pngs, "--lr", "-1", "--backbone-weights", "random",
                 "--out", str(out)])
    assert code == 2 and "--lr must be a positive number" in capsys.readouterr().err
    assert not out.exists()
