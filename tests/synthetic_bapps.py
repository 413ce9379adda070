"""A synthetic BAPPS-layout 2AFC set whose "human" judgements come from a teacher metric with known weights.

References are random crops of the shipped example images; p0 and p1 are each a random distortion of the
reference (noise, blur, colour shift, contrast, shift, posterisation, pixelation) at a random strength. The
judgement of a triplet is 1 when the teacher finds p1 closer, else 0, so a student with the teacher's weights
agrees with every judgement (a deterministic teacher) or nearly every one (E-LPIPS: the teacher's own agreement
under fresh ensemble samples is the ceiling).
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from elpips import Metric
from elpips.io import load_image
from elpips.weights import save_linear_weights

EXAMPLES = ("cat", "dog", "house", "teddy")


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(np.ceil(3 * sigma)))
    position = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (position / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    padded = F.pad(image[None], (radius, radius, 0, 0), mode="reflect")
    horizontal = F.conv2d(padded, kernel, groups=3)
    padded = F.pad(horizontal, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(padded, kernel.transpose(-1, -2), groups=3)[0]


def distort(image: torch.Tensor, kind: int, strength: float, generator: torch.Generator) -> torch.Tensor:
    """One of seven distortions of ``image`` ``[3, H, W]`` at ``strength`` in ``[0, 1]``."""
    if kind == 0:
        out = image + (0.02 + 0.15 * strength) * torch.randn(image.shape, generator=generator)
    elif kind == 1:
        out = _blur(image, 0.5 + 1.5 * strength)
    elif kind == 2:
        out = image + (0.05 + 0.25 * strength) * (torch.rand(3, 1, 1, generator=generator) * 2 - 1)
    elif kind == 3:
        mean = image.mean(dim=(1, 2), keepdim=True)
        out = (image - mean) * (1 + (0.2 + 0.6 * strength) * (1 if strength > 0.5 else -1)) + mean
    elif kind == 4:
        step = 1 + int(3 * strength)
        out = torch.roll(image, shifts=(step, -step), dims=(1, 2))
    elif kind == 5:
        levels = int(16 - 12 * strength)
        out = torch.round(image * levels) / levels
    else:
        factor = 2 + int(2 * strength)
        small = F.avg_pool2d(image[None], factor)
        out = F.interpolate(small, size=image.shape[-2:], mode="nearest")[0]
    return out.clamp(0, 1)


def _matched_distortion(ref: torch.Tensor, other: torch.Tensor, kind: int, generator: torch.Generator) -> torch.Tensor:
    """Distortion ``kind`` of ``ref`` at the strength (of 6) whose RMS pixel error is closest to ``other``'s: the
    pixel error does not decide the pair, the weighting of the network's channels does."""
    target = (other - ref).square().mean().sqrt()
    candidates = [distort(ref, kind, strength / 5, generator) for strength in range(6)]
    errors = torch.stack([((candidate - ref).square().mean().sqrt() - target).abs() for candidate in candidates])
    return candidates[int(errors.argmin())]


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def teacher_weights(channels: list[int], seed: int) -> list[torch.Tensor]:
    """Random non-negative weights far from uniform: per tap a factor ``10^(3u - 2)``, per channel ``u^2``
    (``u`` uniform in [0, 1))."""
    generator = torch.Generator().manual_seed(seed)
    factors = 10 ** (3 * torch.rand(len(channels), generator=generator) - 2)
    return [factor * torch.rand(count, generator=generator) ** 2
            for factor, count in zip(factors, channels, strict=False)]


def _random_triplets(count: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``[ref, p0, p1]`` stacks ``[count, 3, size, size]``, quantised to 8 bits as the PNG files will hold them."""
    sources = [load_image(f"example:{name}")[0] for name in EXAMPLES]
    triplets = []
    for _ in range(count):
        source = sources[int(torch.randint(len(sources), (1,), generator=generator))]
        top = int(torch.randint(source.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(source.shape[2] - size + 1, (1,), generator=generator))
        ref = source[:, top:top + size, left:left + size]
        kinds = torch.randperm(7, generator=generator)[:2].tolist()  # two different kinds: never p0 == p1
        p0 = distort(ref, kinds[0], float(torch.rand(1, generator=generator)), generator)
        triplet = [ref, p0, _matched_distortion(ref, p0, kinds[1], generator)]
        triplets.append([torch.from_numpy(_to_uint8(image)).permute(2, 0, 1).float() / 255 for image in triplet])
    return [torch.stack(group) for group in zip(*triplets, strict=False)]


def _prefers_p1(metric: Metric, ref: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor, samples: int,
                seed: int) -> torch.Tensor:
    distances = metric.compare(ref, [p0, p1], n=samples if metric.is_stochastic else 1,
                               generator=torch.Generator().manual_seed(seed))
    return distances[1] < distances[0]


def make_synthetic_bapps(root: Path, teacher: Metric, counts: dict[str, int], size: int = 32, seed: int = 0,
                         teacher_samples: int = 32, hard_fraction: float = 0.4,
                         category: str = "synthetic") -> Path:
    """``root/2afc/<split>/<category>/{ref,p0,p1,judge}`` with ``counts[split]`` triplets per split, judged by
    ``teacher`` (``teacher_samples`` ensemble samples per distance for E-LPIPS).

    Most random triplets are ranked alike by any sensible weights (the heavier distortion loses), which would make
    the test blind. So twice the triplets are drawn and ``hard_fraction`` of those kept are ones where the
    teacher and uniform weights (every channel 1: the untrained network) disagree, when there are enough.
    """
    generator = torch.Generator().manual_seed(seed)
    if hard_fraction == 0:  # every random triplet as it comes
        for split, count in counts.items():
            ref, p0, p1 = _random_triplets(count, size, generator)
            judge = _prefers_p1(teacher, ref, p0, p1, teacher_samples, seed + 1)
            _write_split(root / "2afc" / split / category, ref, p0, p1, judge.float())
        return root
    uniform = Metric(teacher.name, backbone_weights="random", device="cpu",
                     linear_weights=save_linear_weights(root / "uniform.npz",
                                                        [torch.ones_like(w) for w in teacher.linear_weights]))
    for split, count in counts.items():
        ref, p0, p1 = _random_triplets(2 * count, size, generator)
        judge = _prefers_p1(teacher, ref, p0, p1, teacher_samples, seed + 1)
        disagree = judge != _prefers_p1(uniform, ref, p0, p1, teacher_samples, seed + 2)
        hard = torch.nonzero(disagree).flatten()[:int(hard_fraction * count)]
        easy = torch.nonzero(~disagree).flatten()[:count - len(hard)]
        keep = torch.cat([hard, easy])[torch.randperm(len(hard) + len(easy), generator=generator)]
        _write_split(root / "2afc" / split / category, ref[keep], p0[keep], p1[keep], judge[keep].float())
    return root


def _write_split(folder: Path, ref: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor, judge: torch.Tensor) -> None:
    for name in ("ref", "p0", "p1", "judge"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for index in range(len(judge)):
        stem = f"{index:06d}"
        for name, images in (("ref", ref), ("p0", p0), ("p1", p1)):
            iio.imwrite(folder / name / f"{stem}.png", _to_uint8(images[index]))
        np.save(folder / "judge" / f"{stem}.npy", judge[index:index + 1].numpy())


def teacher_metric(name: str, root: Path, seed: int = 7) -> tuple[Metric, Path]:
    """``name`` on the seeded random backbone with :func:`teacher_weights`, and the weights' file."""
    probe = Metric(name, backbone_weights="random", device="cpu")
    path = save_linear_weights(root / "teacher.npz", teacher_weights(list(probe.backbone.tap_channels), seed))
    return Metric(name, backbone_weights="random", linear_weights=path, device="cpu", seed=0), path
