"""Backbone weights: the real torchvision loading path (offline, via a written cache file), files, errors."""

from __future__ import annotations

import urllib.error

import elpips
import pytest
import torch
from elpips.backbones import SqueezeNetFeatures, VGG16Features
from elpips.weights import expected_checkpoint_path, load_backbone_weights


def seeded_torchvision_state(backbone: str, seed: int) -> dict:
    """A full torchvision-layout state dict (features and a token classifier), seeded."""
    generator = torch.Generator().manual_seed(seed)
    module = VGG16Features() if backbone == "vgg16" else SqueezeNetFeatures()
    state = {key: torch.randn(value.shape, generator=generator) * 0.05 for key, value in module.state_dict().items()}
    state["classifier.1.weight"] = torch.randn(4, 4, generator=generator)
    return state


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("name,backbone,file_name", [
    ("elpips-vgg", "vgg16", "vgg16-397923af.pth"),
    ("lpips-squeeze", "squeezenet1_1", "squeezenet1_1-b8a52dc0.pth"),
])
def test_imagenet_weights_load_from_torch_home_cache(torch_home, no_network, images, name, backbone, file_name):
    path = expected_checkpoint_path(backbone)
    assert path == torch_home / "hub" / "checkpoints" / file_name
    state = seeded_torchvision_state(backbone, seed=3)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    metric = elpips.Metric(name, backbone_weights="imagenet", device="cpu", seed=0)
    assert metric.calibrated and metric.weights_info.source == "imagenet"
    for key, value in metric.backbone.state_dict().items():
        assert torch.equal(value, state[key])
    from_file = elpips.Metric(name, backbone_weights=path, device="cpu", seed=0)
    x, y = images(1, 40, 40, seed=1), images(1, 40, 40, seed=2)
    assert torch.equal(metric(x, y), from_file(x, y))


def test_missing_weights_offline_give_one_clear_error(torch_home, no_network):
    with pytest.raises(elpips.WeightsUnavailableError) as info:
        elpips.Metric("elpips-vgg", backbone_weights="imagenet", device="cpu")
    message = str(info.value)
    assert "vgg16-397923af.pth" in message
    assert str(torch_home / "hub" / "checkpoints") in message
    assert "backbone_weights=PATH" in message
    assert 'backbone_weights="random" (uncalibrated, for smoke tests)' in message
    assert "Name or service not known" in message


def test_weights_file_errors(tmp_path):
    with pytest.raises(elpips.WeightsUnavailableError, match="does not exist"):
        elpips.Metric("elpips-vgg", backbone_weights=tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(elpips.WeightsUnavailableError, match="could not be read"):
        elpips.Metric("elpips-vgg", backbone_weights=corrupt)
    wrong = tmp_path / "squeeze.pth"
    torch.save(seeded_torchvision_state("squeezenet1_1", 0), wrong)
    with pytest.raises(elpips.WeightsUnavailableError, match="does not fit vgg16"):
        elpips.Metric("elpips-vgg", backbone_weights=wrong)


def test_features_only_state_dict_accepted(tmp_path):
    state = seeded_torchvision_state("vgg16", 1)
    features_only = {key[len("features."):]: value for key, value in state.items() if key.startswith("features.")}
    path = tmp_path / "features.pth"
    torch.save(features_only, path)
    module = VGG16Features()
    info = load_backbone_weights(module, "vgg16", path)
    assert info.source == "file" and info.calibrated
    assert torch.equal(module.features[0].weight, state["features.0.weight"])


def test_random_backbone_is_seeded():
    a, b, c = VGG16Features(), VGG16Features(), VGG16Features()
    load_backbone_weights(a, "vgg16", "random")
    load_backbone_weights(b, "vgg16", "random:0")
    info = load_backbone_weights(c, "vgg16", "random:5")
    assert torch.equal(a.features[0].weight, b.features[0].weight)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    assert info.calibrated is False and "seed 5" in info.description
    with pytest.raises(ValueError, match="integer"):
        load_backbone_weights(c, "vgg16", "random:x")


def test_linear_weights_override_and_errors(tmp_path, images):
    import numpy as np

    weights = {f"lin{i}": np.full(c, 0.5, dtype=np.float32) for i, c in enumerate([64, 128, 256, 512, 512])}
    path = tmp_path / "lin.npz"
    np.savez(path, **weights)
    metric = elpips.Metric("lpips-vgg", backbone_weights="random", linear_weights=path, device="cpu")
    assert all(torch.all(w == 0.5) for w in metric.linear_weights)
    with pytest.raises(ValueError, match="channels"):
        elpips.Metric("elpips-vgg", backbone_weights="random", linear_weights=path)
    with pytest.raises(elpips.WeightsUnavailableError, match="does not exist"):
        elpips.Metric("lpips-vgg", backbone_weights="random", linear_weights=tmp_path / "missing.npz")


@pytest.mark.parametrize("value, fragment", [
    (float("nan"), "lin2 holds NaN or Inf values"),
    (float("inf"), "lin2 holds NaN or Inf values"),
    (-1.0, "lin2 holds negative weights"),
])
def test_linear_weights_must_be_finite_and_non_negative(tmp_path, value, fragment):
    import numpy as np
    from elpips.weights import load_linear_weights

    weights = {f"lin{i}": np.full(c, 0.5, dtype=np.float32) for i, c in enumerate([64, 128, 256, 512, 512])}
    weights["lin2"][7] = value
    path = tmp_path / "bad.npz"
    np.savez(path, **weights)
    with pytest.raises(ValueError) as info:
        load_linear_weights(path)
    assert str(info.value).startswith(f"linear weights file '{path}': {fragment}")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=fragment):
        elpips.Metric("lpips-vgg", backbone_weights="random", linear_weights=path, device="cpu")


@pytest.mark.parametrize("name, content", [
    ("garbage.pt", b"not a weights file at all"),
    ("garbage.npz", b"PK\x03\x04 not a zip either"),
])
def test_unreadable_linear_weights_file_is_one_line(tmp_path, name, content):
    from elpips.weights import load_linear_weights

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(elpips.WeightsUnavailableError) as info:
        load_linear_weights(path)
    message = str(info.value)
    assert message.startswith(f"linear weights file '{path}' could not be read: ")
    assert message.endswith("(expected a linear weights file: an .npz of lin0 ... linK or an lpips-layout .pth)")
    assert "\n" not in message and "weights_only" not in message
    with pytest.raises(elpips.WeightsUnavailableError, match="is a folder, not a linear weights file"):
        load_linear_weights(tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("content, expected", [
    (b"hello, not a weights file", "could not be read: not a PyTorch weights file"),
    ("objects", "holds Python objects besides tensors"),
    ("tensor", "is not a state dict (it holds a Tensor)"),
    ("truncated", "could not be read: PytorchStreamReader failed reading zip archive"),
    ("folder", "is a folder, not a weights file"),
])
def test_weights_file_messages_are_one_sentence(tmp_path, content, expected, capsys):
    path = tmp_path / "weights.pth"
    if content == "objects":
        torch.save({"features.0.weight": _RunsCode()}, path)
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content == "truncated":
        torch.save({"features.0.weight": torch.zeros(3)}, path)
        path.write_bytes(path.read_bytes()[:60])
    elif content == "folder":
        path = tmp_path
    else:
        path.write_bytes(content)
    with pytest.raises(elpips.WeightsUnavailableError) as info:
        elpips.Metric("lpips-vgg", backbone_weights=path)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message and "weights_only=False" not in message
    assert "this must never run" not in capsys.readouterr().out


def test_corrupt_cached_weights_say_so(torch_home, no_network):
    path = expected_checkpoint_path("vgg16")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a download")
    with pytest.raises(elpips.WeightsUnavailableError, match="are corrupt or incomplete: delete the file"):
        elpips.Metric("lpips-vgg", backbone_weights="imagenet")
