"""Discrete paths through keyframes: frame counts, the linear blend, resampling in time and scale in space.

A path with keyframes ``P_0 .. P_S`` and ``k_s`` intervals in segment ``s`` is one tensor ``[K+1, 3, H, W]``
(``K = sum k_s``); keyframe ``s`` sits at index ``sum(k_0 .. k_{s-1})``. Everything here is pure tensor
arithmetic: no metric, no files.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from elpips.solver import CLIP_HIGH, CLIP_LOW


def segment_intervals(frames: int | Sequence[int], num_keyframes: int) -> tuple[int, ...]:
    """Intervals per keyframe segment from a frame count.

    Args:
        frames: an int, the total number of frames on the path including the keyframes (the paper's
            "10-frame path" is ``frames=10``: A, 8 interior frames, B); the ``frames - 1`` intervals are spread
            as evenly as possible over the segments, earlier segments taking the remainder. Or a sequence with
            one entry per segment: the number of intervals (interior frames + 1) of that segment.
        num_keyframes: ``S + 1 >= 2``.

    Returns:
        ``(k_0, ..., k_{S-1})``, each ``>= 1``, with at least one interior frame in total.
    """
    segments = num_keyframes - 1
    if segments < 1:
        raise ValueError(f"a path needs at least 2 keyframes, got {num_keyframes}")
    if isinstance(frames, bool) or not isinstance(frames, (int, Sequence)):
        raise ValueError(f"frames must be an int or a sequence of ints, got {type(frames).__name__}")
    if isinstance(frames, int):
        total = frames - 1
        if total <= segments:
            raise ValueError(
                f"frames={frames} leaves no frame to optimise between {num_keyframes} keyframes: "
                f"use frames >= {num_keyframes + 1}"
            )
        base, extra = divmod(total, segments)
        return tuple(base + (1 if s < extra else 0) for s in range(segments))
    intervals = tuple(frames)
    if len(intervals) != segments:
        raise ValueError(f"frames per segment needs {segments} entries for {num_keyframes} keyframes, "
                         f"got {len(intervals)}")
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in intervals):
        raise ValueError(f"intervals per segment must be integers >= 1, got {list(intervals)}")
    if sum(intervals) <= segments:
        raise ValueError(f"intervals {list(intervals)} leave no frame to optimise: some segment needs >= 2")
    return intervals


def keyframe_indices(intervals: Sequence[int]) -> list[int]:
    """Path indices of the keyframes: ``[0, k_0, k_0 + k_1, ..., K]``."""
    indices = [0]
    for count in intervals:
        indices.append(indices[-1] + int(count))
    return indices


def free_mask(intervals: Sequence[int]) -> torch.Tensor:
    """``[K+1]`` bool: ``True`` for interior (optimised) frames, ``False`` at keyframes."""
    mask = torch.ones(sum(intervals) + 1, dtype=torch.bool)
    mask[keyframe_indices(intervals)] = False
    return mask


def linear_path(keyframes: torch.Tensor, intervals: Sequence[int]) -> torch.Tensor:
    """Piecewise-linear blend through ``keyframes`` ``[S+1, 3, H, W]``: frame ``j`` of segment ``s`` is
    ``(1 - j/k_s) P_s + (j/k_s) P_{s+1}``. Returns ``[K+1, 3, H, W]`` with the keyframes copied exactly."""
    if keyframes.shape[0] != len(intervals) + 1:
        raise ValueError(f"{keyframes.shape[0]} keyframes need {keyframes.shape[0] - 1} segment counts, "
                         f"got {len(intervals)}")
    parts = [keyframes[:1]]
    for s, count in enumerate(intervals):
        t = torch.arange(1, count + 1, dtype=keyframes.dtype, device=keyframes.device) / count
        t = t[:, None, None, None]
        blend = (1 - t) * keyframes[s] + t * keyframes[s + 1]
        blend[-1] = keyframes[s + 1]
        parts.append(blend)
    return torch.cat(parts)


def _resample_segment(segment: torch.Tensor, new_count: int) -> torch.Tensor:
    """``[k+1, ...]`` -> ``[new_count+1, ...]`` by linear interpolation in the frame index (exact copies where
    a new position falls on an old frame, computed in integer arithmetic)."""
    old_count = segment.shape[0] - 1
    frames = []
    for j in range(new_count + 1):
        index, remainder = divmod(j * old_count, new_count)
        if remainder == 0:
            frames.append(segment[index])
        else:
            weight = remainder / new_count
            frames.append((1 - weight) * segment[index] + weight * segment[index + 1])
    return torch.stack(frames)


def resample_path(path: torch.Tensor, intervals: Sequence[int], new_intervals: Sequence[int]) -> torch.Tensor:
    """Change the number of intervals per segment, keeping the keyframes.

    Args:
        path: ``[K+1, 3, H, W]`` with ``intervals`` per segment.
        new_intervals: target intervals per segment (same number of segments).

    Returns:
        ``[K'+1, 3, H, W]``: every segment linearly interpolated at ``new_k + 1`` evenly spaced positions.
    """
    if len(intervals) != len(new_intervals):
        raise ValueError(f"cannot resample {len(intervals)} segments into {len(new_intervals)}")
    if path.shape[0] != sum(intervals) + 1:
        raise ValueError(f"path has {path.shape[0]} frames, intervals {list(intervals)} need {sum(intervals) + 1}")
    starts = keyframe_indices(intervals)
    parts = [path[:1]]
    for s, new_count in enumerate(new_intervals):
        segment = path[starts[s]:starts[s + 1] + 1]
        parts.append(_resample_segment(segment, int(new_count))[1:])
    return torch.cat(parts)


def subdivide(path: torch.Tensor, intervals: Sequence[int] | None = None) -> torch.Tensor:
    """Double the intervals: old frames stay at the even indices, each new frame is the mean of its two
    neighbours. ``[K+1, 3, H, W]`` -> ``[2K+1, 3, H, W]``."""
    intervals = [path.shape[0] - 1] if intervals is None else list(intervals)
    return resample_path(path, intervals, [2 * k for k in intervals])


def downscale(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Box-filter ``[B, 3, H, W]`` to ``[B, 3, H // factor, W // factor]`` (area averaging)."""
    if factor == 1:
        return images
    height, width = images.shape[-2:]
    return F.interpolate(images, size=(height // factor, width // factor), mode="area")


def _wrapped_linear(length: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D linear interpolation from ``length`` to ``size`` samples on a circle (``align_corners=False``
    coordinates): output ``i`` reads ``(1 - w) x[i0] + w x[i1]``, indices modulo ``length``."""
    position = (torch.arange(size, device=device, dtype=torch.float64) + 0.5) * length / size - 0.5
    low = torch.floor(position)
    weight = (position - low).to(torch.float32)
    low = low.long()
    return low % length, (low + 1) % length, weight


def upsample_periodic(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``[B, C, h, w]`` to ``size`` on the torus: the last row interpolates towards the
    first (``F.interpolate``'s coordinates, with wrap-around instead of clamping at the borders)."""
    top, bottom, wy = _wrapped_linear(images.shape[-2], size[0], images.device)
    rows = images.index_select(-2, top) * (1 - wy)[:, None] + images.index_select(-2, bottom) * wy[:, None]
    left, right, wx = _wrapped_linear(images.shape[-1], size[1], images.device)
    return rows.index_select(-1, left) * (1 - wx) + rows.index_select(-1, right) * wx


def upscale_path(coarse: torch.Tensor, keyframes: torch.Tensor, intervals: Sequence[int],
                 factor: int, periodic: bool = False) -> torch.Tensor:
    """Lift a path solved at ``1/factor`` resolution to full resolution.

    The full-resolution linear blend keeps the keyframes' fine detail; the coarse solution contributes its
    departure from the coarse linear blend, bilinearly upsampled:
    ``x = blend_full + up(x_coarse - blend_coarse)``, clipped to the solver's range, keyframes exact.

    Args:
        coarse: ``[K+1, 3, h, w]``.
        keyframes: ``[S+1, 3, H, W]`` at full resolution.
        periodic: upsample the departure on the torus (:func:`upsample_periodic`; the tileable mode), so that
            a path whose frames tile at the coarse scale still tiles.
    """
    full_blend = linear_path(keyframes, intervals)
    if factor == 1:
        return coarse.clone()
    coarse_blend = linear_path(downscale(keyframes, factor), intervals)
    if periodic:
        residual = upsample_periodic(coarse - coarse_blend, (keyframes.shape[-2], keyframes.shape[-1]))
    else:
        residual = F.interpolate(coarse - coarse_blend, size=keyframes.shape[-2:], mode="bilinear",
                                 align_corners=False)
    lifted = (full_blend + residual).clamp(CLIP_LOW, CLIP_HIGH)
    lifted[keyframe_indices(intervals)] = keyframes
    return lifted
