"""The drop-in adapters: ``elpips.adapters.LPIPS`` against ``lpips.LPIPS``'s conventions and numbers, and the
torchmetrics class (update/compute, reductions, a 2-process gloo sync)."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import elpips
import elpips.adapters as adapters
import pytest
import torch
import torch.multiprocessing as mp
from helpers import lpips_peer
from ranks import free_port, set_rank_environment


def signed(images: torch.Tensor) -> torch.Tensor:
    return images * 2 - 1


@pytest.mark.parametrize("net,size", [("squeeze", (33, 40)), ("alex", (40, 36)), ("vgg", (32, 32))])
def test_lpips_adapter_equals_lpips_package_without_ensemble(images, net, size):
    adapter = adapters.LPIPS(net=net, ensemble=False, pnet_rand=True)
    assert adapter.metric.name == f"lpips-{net}" and adapter.metric.weights_info.spec == "random:0"
    peer = lpips_peer(net, adapter.metric)
    x, y = images(3, *size, seed=1), images(3, *size, seed=2)
    with torch.no_grad():
        expected = peer(signed(x), signed(y))
        ours = adapter(signed(x), signed(y))
        normalized = adapter(x, y, normalize=True)
    assert ours.shape == expected.shape == (3, 1, 1, 1)
    assert ((ours - expected).abs() / expected).max().item() <= 1e-5
    assert ((normalized - expected).abs() / expected).max().item() <= 1e-5
    assert expected.min() > 0.01


def test_lpips_adapter_with_ensemble_equals_metric(images):
    adapter = adapters.LPIPS(net="squeeze", backbone_weights="random", seed=3, n=2)
    metric = elpips.Metric("elpips-squeeze", backbone_weights="random", seed=3, device="cpu")
    x, y = images(2, 32, 32, seed=1), images(2, 32, 32, seed=2)
    x.requires_grad_(True)
    ours = adapter(signed(x), signed(y))
    assert ours.shape == (2, 1, 1, 1)
    assert torch.equal(ours.detach().flatten(), metric(x.detach(), y, n=2))
    ours.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert list(adapter.parameters()) == []


def test_lpips_adapter_errors_name_the_arguments(images):
    with pytest.raises(ValueError, match="ensemble=False"):
        adapters.LPIPS(net="alex", backbone_weights="random")
    with pytest.raises(ValueError, match="net must be one of"):
        adapters.LPIPS(net="resnet", backbone_weights="random")
    with pytest.raises(ValueError, match="either metric= or net="):
        adapters.LPIPS(net="vgg", metric="l2")
    with pytest.raises(ValueError, match="pretrained=False"):
        adapters.LPIPS(pretrained=False, backbone_weights="random")
    adapter = adapters.LPIPS(metric="l2")
    x = images(1, 16, 16)
    with pytest.raises(ValueError, match=r"in0 must hold values in \[0, 1\] \(normalize=True\)"):
        adapter(x * 2 - 1, x, normalize=True)
    with pytest.raises(ValueError, match=r"in1 must hold values in \[-1, 1\]"):
        adapter(x, x * 3)
    with pytest.raises(ValueError, match="retPerLayer"):
        adapter(x, x, retPerLayer=True)


def test_torchmetrics_class_needs_torchmetrics(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    monkeypatch.setattr(adapters, "_LAZY", {})
    with pytest.raises(ImportError, match=r"pip install elpips\[torchmetrics\]"):
        from elpips.adapters import LearnedPerceptualImagePatchSimilarity  # noqa: F401


torchmetrics = pytest.importorskip("torchmetrics")


def test_torchmetrics_update_compute_and_reductions(images):
    x, y = images(4, 32, 32, seed=1), images(4, 32, 32, seed=2)
    metric = elpips.Metric("lpips-squeeze", backbone_weights="random", device="cpu")
    expected = metric(x, y)
    mean = adapters.LearnedPerceptualImagePatchSimilarity("squeeze", ensemble=False, backbone_weights="random")
    assert isinstance(mean, torchmetrics.Metric)
    mean.update(signed(x[:3]), signed(y[:3]))
    mean.update(signed(x[3:]), signed(y[3:]))
    torch.testing.assert_close(mean.compute(), expected.mean())
    mean.reset()
    mean.update(signed(x[:1]), signed(y[:1]))
    torch.testing.assert_close(mean.compute(), expected[0])
    total = adapters.LearnedPerceptualImagePatchSimilarity("squeeze", reduction="sum", normalize=True,
                                                           ensemble=False, backbone_weights="random")
    torch.testing.assert_close(total(x, y), expected.sum())
    with pytest.raises(ValueError, match="reduction must be"):
        adapters.LearnedPerceptualImagePatchSimilarity(reduction="none", backbone_weights="random")
    with pytest.raises(ValueError, match="net_type='alex' has no E-LPIPS variant"):
        adapters.LearnedPerceptualImagePatchSimilarity("alex", backbone_weights="random")


def _sync_child(rank: int, port: int, folder: str) -> None:
    set_rank_environment(rank, 2, port)
    torch.set_num_threads(1)
    try:
        torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
        generator = torch.Generator().manual_seed(5)
        x, y = torch.rand(3, 3, 32, 32, generator=generator), torch.rand(3, 3, 32, 32, generator=generator)
        mine = slice(0, 1) if rank == 0 else slice(1, 3)  # unequal shares: the count is synchronised too
        metric = adapters.LearnedPerceptualImagePatchSimilarity("squeeze", normalize=True, ensemble=False,
                                                                backbone_weights="random")
        metric.update(x[mine], y[mine])
        result = {"synced": metric.compute().item()}
        torch.distributed.destroy_process_group()
    except BaseException:  # noqa: BLE001 - reported to the parent through the file
        result = {"error": traceback.format_exc()}
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(result))


def test_torchmetrics_state_syncs_over_two_gloo_ranks(tmp_path):
    mp.spawn(_sync_child, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for result in results:
        assert "error" not in result, result["error"]
    generator = torch.Generator().manual_seed(5)
    x, y = torch.rand(3, 3, 32, 32, generator=generator), torch.rand(3, 3, 32, 32, generator=generator)
    expected = elpips.Metric("lpips-squeeze", backbone_weights="random", device="cpu")(x, y).mean().item()
    assert results[0]["synced"] == pytest.approx(expected, rel=1e-5)
    assert results[1]["synced"] == pytest.approx(expected, rel=1e-5)
