"""Where the weights come from: backbone convolutions (ImageNet, a file, or seeded random) and linear weights.

Backbones are loaded the torchvision way: the weights enum's URL, cached under ``$TORCH_HOME/hub/checkpoints``
(downloaded on first use). Without a cache and without network, :class:`WeightsUnavailableError` says which file
is expected where, and how to pass a file instead. There is no silent fallback to random weights: random
weights exist only when asked for by name (``"random"`` or ``"random:SEED"``) and are reported as uncalibrated.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn
from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

from .backbones.common import init_like_torchvision

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
LINEAR_WEIGHTS_DIR = PACKAGE_DATA / "linear_weights"

TORCHVISION_WEIGHTS = {
    "vgg16": VGG16_Weights.IMAGENET1K_V1,
    "squeezenet1_1": SqueezeNet1_1_Weights.IMAGENET1K_V1,
    "alexnet": AlexNet_Weights.IMAGENET1K_V1,
}
DEFAULT_RANDOM_SEED = 0


RANDOM_HINT = 'backbone_weights="random" (uncalibrated, for smoke tests)'
"""How the offline weights error names the random backbone (the commands reword it to their flag)."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable, or a weights file is unusable."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where a metric's backbone weights came from.

    Attributes:
        source: ``"imagenet"``, ``"file"`` or ``"random"``.
        description: human-readable origin (file path, cache path or random seed).
        calibrated: ``False`` for random weights: distances are then not perceptual.
        spec: what was asked for, as a record holds it: ``"imagenet"``, the file's path, ``"random:SEED"``.
    """

    source: str
    description: str
    calibrated: bool
    spec: str


def expected_checkpoint_path(backbone: str) -> Path:
    """Path torchvision caches ``backbone``'s ImageNet weights at (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    url = TORCHVISION_WEIGHTS[backbone].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _features_only(state: dict, origin: str) -> dict[str, torch.Tensor]:
    """Keep the ``features.*`` entries of a torchvision state dict (or accept a features-only dict)."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        features = {f"features.{k}": v for k, v in state.items() if k[:1].isdigit()}
    if not features:
        raise WeightsUnavailableError(
            f"{origin} holds no torchvision 'features.*' weights (keys start with {sorted(state)[:3]})"
        )
    return features


def _load_imagenet_state(backbone: str) -> tuple[dict, WeightsInfo]:
    weights = TORCHVISION_WEIGHTS[backbone]
    path = expected_checkpoint_path(backbone)
    if path.is_file():
        try:
            state = _read_state(path, "", "")
        except WeightsUnavailableError:
            raise WeightsUnavailableError(
                f"the cached ImageNet weights '{path}' are corrupt or incomplete: delete the file to download it "
                f"again, or pass backbone_weights=PATH") from None
        return state, WeightsInfo("imagenet", f"torchvision {weights} ({path})", True, "imagenet")
    try:
        state = torch.hub.load_state_dict_from_url(weights.url, progress=True, map_location="cpu",
                                                   weights_only=True)
    except Exception as error:  # network errors come in many types (URLError, HTTPError, OSError...)
        raise WeightsUnavailableError(
            f"The ImageNet weights of {backbone} are not cached and could not be downloaded "
            f"({_first_line(error)}): put '{path.name}' into '{path.parent}' (or set TORCH_HOME), or pass "
            f"backbone_weights=PATH with a torchvision state dict; for a smoke run without them, "
            f"{RANDOM_HINT}."
        ) from None
    return state, WeightsInfo("imagenet", f"torchvision {weights} ({path})", True, "imagenet")


def _first_line(error: BaseException) -> str:
    """The first sentence of an error message (torch's often go on for several lines of advice)."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line.split(". ")[0].rstrip(".:")


def _read_state(path: Path, what: str, advice: str) -> dict:
    """``torch.load(path, weights_only=True)`` with one clear sentence for every way it can fail."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" in str(error).lower():
            raise WeightsUnavailableError(
                f"{what} holds Python objects besides tensors; weights are loaded with weights_only=True, which "
                f"never runs code from a file: save a plain state dict (torch.save(model.state_dict(), PATH))"
            ) from None
        raise WeightsUnavailableError(f"{what} could not be read: not a PyTorch weights file ({advice})") from None
    except Exception as error:  # truncated zips, wrong magic numbers, unreadable files ...
        reason = _first_line(error)
        reason = "not a PyTorch weights file" if reason.isdigit() or not reason else reason
        raise WeightsUnavailableError(f"{what} could not be read: {reason} ({advice})") from None
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{what} is not a state dict (it holds a {type(state).__name__})")
    return state


def _load_file_state(path: Path) -> tuple[dict, WeightsInfo]:
    if path.is_dir():
        raise WeightsUnavailableError(f"backbone weights '{path}' is a folder, not a weights file")
    if not path.is_file():
        raise WeightsUnavailableError(f"backbone weights file '{path}' does not exist")
    state = _read_state(path, f"backbone weights file '{path}'", "expected a torchvision state dict")
    return state, WeightsInfo("file", str(path), True, str(path))


def parse_random_seed(spec: str) -> int | None:
    """``"random"`` -> default seed, ``"random:7"`` -> 7, anything else -> ``None``."""
    if spec == "random":
        return DEFAULT_RANDOM_SEED
    if spec.startswith("random:"):
        try:
            return int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"random backbone seed must be an integer, got {spec!r}") from None
    return None


def load_backbone_weights(module: nn.Module, backbone: str, spec: str | os.PathLike) -> WeightsInfo:
    """Fill ``module`` (a backbone in torchvision layout) with weights from ``spec``.

    Args:
        module: :class:`~elpips.backbones.VGG16Features`, :class:`~elpips.backbones.SqueezeNetFeatures` or
            :class:`~elpips.backbones.AlexNetFeatures`.
        backbone: ``"vgg16"``, ``"squeezenet1_1"`` or ``"alexnet"``.
        spec: ``"imagenet"``, ``"random"``, ``"random:SEED"`` or a path to a torchvision state dict.
    """
    text = os.fspath(spec)
    seed = parse_random_seed(text)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            init_like_torchvision(module)
        return WeightsInfo("random", f"random {backbone} (seed {seed}) - UNCALIBRATED, not a perceptual metric",
                           False, f"random:{seed}")
    if text == "imagenet":
        state, info = _load_imagenet_state(backbone)
    else:
        state, info = _load_file_state(Path(text).expanduser())
    features = _features_only(state, info.description)
    try:
        module.load_state_dict(features, strict=True)
    except RuntimeError as error:
        raise WeightsUnavailableError(
            f"{info.description} does not fit {backbone}: {str(error).splitlines()[0]}"
        ) from error
    return info


def _lpips_package_file(net: str) -> Path:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailableError(
            "the LPIPS v0.1 linear weights come from the 'lpips' package: pip install lpips"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"


def _linear_weights_from_dict(weights: dict, origin: str) -> list[torch.Tensor]:
    """``lin0..linK`` (npz: ``[C]``; lpips ``.pth``: ``linN.model.1.weight`` ``[1, C, 1, 1]``) -> list of ``[C]``."""
    result = []
    for index in range(len(weights)):
        for key in (f"lin{index}", f"lin{index}.model.1.weight"):
            if key in weights:
                result.append(torch.as_tensor(np.asarray(weights[key]), dtype=torch.float32).reshape(-1))
                break
        else:
            raise WeightsUnavailableError(f"{origin}: expected keys lin0..lin{len(weights) - 1}, got {sorted(weights)}")
    for index, weight in enumerate(result):
        if not torch.isfinite(weight).all():
            raise ValueError(f"linear weights file '{origin}': lin{index} holds NaN or Inf values")
        if (weight < 0).any():
            raise ValueError(f"linear weights file '{origin}': lin{index} holds negative weights (a distance is a "
                             "sum of squares weighted by them: they must be >= 0)")
    return result


def load_linear_weights(spec: str | os.PathLike) -> tuple[list[torch.Tensor], str]:
    """Per-tap linear weights, each ``[C_l]`` float32, and their origin: a packaged name or ``lpips:NET`` as
    given (independent of where the package is installed), else the file's path.

    Args:
        spec: a packaged name (``"elpips_vgg"``, ``"elpips_squeeze"``, ``"kettunen_lpips_vgg"``,
            ``"kettunen_lpips_squeeze"``), ``"lpips:vgg"`` / ``"lpips:squeeze"`` / ``"lpips:alex"`` (the ``lpips``
            package's v0.1 files), or a path to an ``.npz`` (``lin0 ... linK``) or an ``lpips``-layout ``.pth`` file.
    """
    text = os.fspath(spec)
    origin = text  # packaged names keep their name: a record must not depend on where the package lives
    if text.startswith("lpips:"):
        path = _lpips_package_file(text.split(":", 1)[1])
    elif (LINEAR_WEIGHTS_DIR / f"{text}.npz").is_file():
        path = LINEAR_WEIGHTS_DIR / f"{text}.npz"
    else:
        path = Path(text).expanduser()
        origin = str(path)
    if path.is_dir():
        raise WeightsUnavailableError(f"linear weights '{path}' is a folder, not a linear weights file")
    if not path.is_file():
        raise WeightsUnavailableError(f"linear weights file '{path}' does not exist")
    what = f"linear weights file '{path}'"
    advice = "expected a linear weights file: an .npz of lin0 ... linK or an lpips-layout .pth"
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                weights = {key: archive[key] for key in archive.files}
        except Exception as error:  # not a zip, pickled objects inside, truncated ...
            raise WeightsUnavailableError(f"{what} could not be read: {_first_line(error)} ({advice})") from None
    else:
        weights = _read_state(path, what, advice)
    return _linear_weights_from_dict(weights, str(path)), origin


def save_linear_weights(path: str | os.PathLike, weights: list[torch.Tensor]) -> Path:
    """Write per-tap linear weights (each ``[C_l]``) as an ``.npz`` of float32 ``lin0 ... linK``, the format
    :func:`load_linear_weights` reads (``Metric(linear_weights=PATH)``); atomically (temporary name, then rename)."""
    from .io import atomic_path

    target = Path(path)
    if target.suffix != ".npz":
        raise ValueError(f"linear weights are written as .npz files, got '{target}'")
    arrays: dict[str, Any] = {f"lin{index}": weight.detach().to("cpu", torch.float32).reshape(-1).numpy()
              for index, weight in enumerate(weights)}
    with atomic_path(target) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    return target
