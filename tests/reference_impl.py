"""An independent float64 recomputation of one E-LPIPS sample, written from the spec for the tests.

Transforms are done image by image with NumPy (``np.pad`` reflect, explicit block means, slicing for flips,
transposes, fancy indexing for permutations); the networks are written out with ``torch.nn.functional`` in
float64 from a torchvision-layout state dict; the distance follows docs/algorithm.md#distance literally. It shares no
code with the package.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SHIFT = np.array([-0.030, -0.088, -0.188])
SCALE = np.array([0.458, 0.448, 0.450])


def transform_one(image: np.ndarray, index: int, record) -> np.ndarray:
    """docs/algorithm.md#transforms for image ``index`` of the batch. ``image``: ``[3, H, W]`` float64.

    The record's ensemble settings give the maximum offset ``M`` (0 with the offset off) and the crop mode
    ("crop instead of pad": the scale step keeps ``(h - s + 1) // s * s`` rows from ``oy``, the offset step
    keeps ``h - M`` rows from ``dy``; likewise columns).
    """
    ensemble = record.ensemble
    crop = ensemble.crop
    padding = ensemble.max_offset if ensemble.offset else 0
    s = record.scale_level
    if s > 1:
        _, h, w = image.shape
        oy, ox = record.scale_offset
        if crop:
            full_h = (h - s + 1) // s * s
            full_w = (w - s + 1) // s * s
            image = image[:, oy:oy + full_h, ox:ox + full_w]
        else:
            full_h = (s - 1 + h + s - 1) // s * s
            full_w = (s - 1 + w + s - 1) // s * s
            image = np.pad(image, ((0, 0), (oy, full_h - h - oy), (ox, full_w - w - ox)), mode="reflect")
        c, ph, pw = image.shape
        image = image.reshape(c, ph // s, s, pw // s, s).mean(axis=(2, 4))
    dy, dx = (int(v) for v in record.offset[index])
    if crop:
        _, h, w = image.shape
        image = image[:, dy:dy + h - padding, dx:dx + w - padding]
    else:
        image = np.pad(image, ((0, 0), (padding - dy, dy), (padding - dx, dx)), mode="reflect")
    code = int(record.flip[index])
    if code in (0, 2):
        image = image[:, :, ::-1]
    if code in (1, 2):
        image = image[:, ::-1, :]
    if record.swap:
        image = image.transpose(0, 2, 1)
    image = image[np.asarray(record.permutation[index])]
    image = image * np.asarray(record.color[index], dtype=np.float64)[:, None, None]
    return np.ascontiguousarray(image)


def transform_batch(images: torch.Tensor, record) -> torch.Tensor:
    """``[N, 3, H, W]`` -> float64 transformed batch."""
    array = images.detach().double().numpy()
    return torch.from_numpy(np.stack([transform_one(array[i], i, record) for i in range(len(array))]))


def network_input(images: torch.Tensor) -> torch.Tensor:
    x = images * 2 - 1
    return (x - torch.from_numpy(SHIFT)[:, None, None]) / torch.from_numpy(SCALE)[:, None, None]


def vgg_taps(x: torch.Tensor, state: dict) -> list[torch.Tensor]:
    """Average-pooled VGG16: the input and all 13 ReLU outputs."""
    conv_indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    pool_after = {1, 3, 6, 9}
    taps = [x]
    for number, index in enumerate(conv_indices):
        x = F.relu(F.conv2d(x, state[f"features.{index}.weight"].double(), state[f"features.{index}.bias"].double(),
                            padding=1))
        taps.append(x)
        if number in pool_after:
            x = F.avg_pool2d(x, 2)
    return taps


def _fire(x: torch.Tensor, state: dict, index: int) -> torch.Tensor:
    def conv(name: str, inputs: torch.Tensor, padding: int) -> torch.Tensor:
        return F.relu(F.conv2d(inputs, state[f"features.{index}.{name}.weight"].double(),
                               state[f"features.{index}.{name}.bias"].double(), padding=padding))

    squeezed = conv("squeeze", x, 0)
    return torch.cat([conv("expand1x1", squeezed, 0), conv("expand3x3", squeezed, 1)], dim=1)


def squeeze_taps(x: torch.Tensor, state: dict) -> list[torch.Tensor]:
    """SqueezeNet 1.1 with floor max pooling: input, conv1, fire2..fire9."""
    taps = [x]
    x = F.relu(F.conv2d(x, state["features.0.weight"].double(), state["features.0.bias"].double(), stride=2))
    taps.append(x)
    for index in range(2, 13):
        if index in (2, 5, 8):
            x = F.max_pool2d(x, 3, 2)
        else:
            x = _fire(x, state, index)
            taps.append(x)
    return taps


def distance(taps_a: list[torch.Tensor], taps_b: list[torch.Tensor], weights: list[np.ndarray]) -> np.ndarray:
    """docs/algorithm.md#distance: per tap unit-normalise, squared difference, pixel mean, dot with weights; sum
    taps."""
    total = np.zeros(taps_a[0].shape[0])
    for a, b, w in zip(taps_a, taps_b, weights, strict=False):
        a = a.numpy()
        b = b.numpy()
        a = a / (np.sqrt((a**2).sum(axis=1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b**2).sum(axis=1, keepdims=True)) + 1e-10)
        per_channel = ((a - b) ** 2).mean(axis=(2, 3))  # [N, C]
        total += per_channel @ np.asarray(w, dtype=np.float64)
    return total


def elpips_sample(x: torch.Tensor, y: torch.Tensor, record, state: dict, weights: list[np.ndarray],
                  backbone: str = "vgg16") -> np.ndarray:
    """One E-LPIPS sample without dropout, float64: ``[N]``."""
    taps = vgg_taps if backbone == "vgg16" else squeeze_taps
    with torch.no_grad():
        taps_x = taps(network_input(transform_batch(x, record)), state)
        taps_y = taps(network_input(transform_batch(y, record)), state)
    return distance(taps_x, taps_y, weights)
