"""The geodesic solver: closed forms under L2, the shared-feature step under E-LPIPS, subdivision, resume."""

from __future__ import annotations

import pytest
import torch
from elpips.geodesics import (
    evaluate_path,
    free_mask,
    keyframe_indices,
    linear_path,
    path_step,
    plan_levels,
    resample_path,
    segment_intervals,
    solve,
    subdivide,
    time_ladder,
    upscale_path,
)
from elpips.geodesics.path import downscale
from elpips.solver import reference_learning_rate
from elpips.transforms import TransformRecord

L2_SCHEDULE = reference_learning_rate  # base 0.03: converges below 1e-3 within a few hundred steps here


def perturbed(path: torch.Tensor, intervals, sigma: float = 0.1, seed: int = 3) -> torch.Tensor:
    """``path`` plus Gaussian noise on the interior frames, clipped to [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    noisy = (path + sigma * torch.randn(path.shape, generator=generator)).clamp(0, 1)
    noisy[keyframe_indices(intervals)] = path[keyframe_indices(intervals)]
    return noisy


# -- frame counts, paths, subdivision ------------------------------------------------------------------------
def test_segment_intervals_spread_frames_over_segments():
    assert segment_intervals(10, 2) == (9,)
    assert segment_intervals(10, 3) == (5, 4)
    assert segment_intervals([3, 1, 2], 4) == (3, 1, 2)
    for frames, keys in ((2, 2), (3, 3), ([1, 1], 3), ([2], 3), ([0, 3], 3), (5, 1)):
        with pytest.raises(ValueError):
            segment_intervals(frames, keys)


def test_linear_path_is_the_closed_form_blend(images):
    keys = images(3, 8, 8)
    path = linear_path(keys, (4, 2))
    assert path.shape == (7, 3, 8, 8)
    for j in range(5):
        assert torch.allclose(path[j], (1 - j / 4) * keys[0] + (j / 4) * keys[1], atol=1e-6)
    assert torch.allclose(path[5], 0.5 * keys[1] + 0.5 * keys[2], atol=1e-6)
    assert torch.equal(path[[0, 4, 6]], keys)


def test_subdivision_doubles_the_intervals_and_keeps_the_old_frames(images):
    path = images(4, 8, 8)  # any path: 3 intervals
    finer = subdivide(path)
    assert finer.shape[0] == 2 * 3 + 1
    assert torch.equal(finer[0::2], path)
    assert torch.allclose(finer[1::2], (path[:-1] + path[1:]) / 2, atol=1e-7)
    two_segments = subdivide(images(6, 8, 8, seed=1), (2, 3))
    assert two_segments.shape[0] == 11
    assert torch.equal(two_segments[0::2], images(6, 8, 8, seed=1))


def test_resampling_between_frame_counts_is_piecewise_linear(images):
    keys = images(2, 8, 8)
    coarse = linear_path(keys, (2,))
    assert torch.allclose(resample_path(coarse, (2,), (9,)), linear_path(keys, (9,)), atol=1e-6)
    path = images(5, 8, 8, seed=2)
    assert torch.equal(resample_path(path, (4,), (4,)), path)


def test_coarse_to_fine_plan():
    assert time_ladder((9,)) == [(2,), (3,), (5,), (9,)]
    levels = plan_levels((9,), 50)
    assert [level.frames for level in levels] == [3, 4, 6, 10]
    assert sum(level.steps for level in levels) == 50 and levels[-1].steps == 25
    assert [level.scale for level in plan_levels((9,), 50, spatial=True)] == [2, 2, 2, 1]
    assert plan_levels((9,), 50, coarse_to_fine=False)[0].steps == 50
    assert len(plan_levels((9,), 2)) == 2  # coarse stages without steps are dropped


def test_upscaling_a_coarse_linear_blend_gives_the_full_linear_blend(images):
    keys = images(2, 16, 12)
    coarse = linear_path(downscale(keys, 2), (3,))
    lifted = upscale_path(coarse, keys, (3,), 2)
    assert torch.allclose(lifted, linear_path(keys, (3,)).clamp(1e-5, 1 - 1e-5), atol=1e-6)
    assert torch.equal(lifted[[0, 3]], keys)


# -- L2: closed forms ----------------------------------------------------------------------------------------
def test_l2_geodesic_is_the_linear_blend(random_metric, images):
    metric = random_metric("l2")
    keys = images(2, 12, 12)
    target = linear_path(keys, (5,))
    result = solve(keys, frames=6, metric=metric, steps=400, init=perturbed(target, (5,)), lr=L2_SCHEDULE,
                   coarse_to_fine=False)
    assert (result.frames - target).abs().max() <= 1e-3
    assert torch.equal(result.frames[[0, 5]], keys)
    expected = float(((keys[0] - keys[1]).square().mean()).sqrt()) / 5  # RMS(A - B) / K per interval
    assert torch.allclose(result.distances, torch.full((5,), expected), rtol=1e-2)
    assert result.speed_spread()[0] < 0.01
    assert result.energy == pytest.approx(5 * expected**2, rel=2e-2)


def test_l2_spline_through_three_keyframes_is_piecewise_linear(random_metric, images):
    metric = random_metric("l2")
    keys = images(3, 12, 12, seed=4)
    intervals = (2, 4)
    target = linear_path(keys, intervals)
    result = solve(keys, frames=[2, 4], metric=metric, steps=400, init=perturbed(target, intervals),
                   lr=L2_SCHEDULE, coarse_to_fine=True)
    assert result.keyframe_indices == [0, 2, 6]
    assert torch.equal(result.frames[[0, 2, 6]], keys)
    assert (result.frames - target).abs().max() <= 1e-3
    for segment in result.segment_distances():
        assert float(segment.max() - segment.min()) <= 0.01 * float(segment.mean())


# -- E-LPIPS: the shared-feature step ------------------------------------------------------------------------
def fixed_sample(metric):
    """A non-trivial E-LPIPS sample for one image: scale 2, offsets, flip, swap, permutation, colour, dropout."""
    record = TransformRecord(2, (1, 0), torch.tensor([[3, 5]]), torch.tensor([0]), True,
                             torch.tensor([[2, 0, 1]]), torch.tensor([[0.5, 0.9, 0.3]]))
    return metric.sample_for(record, dropout=True, generator=torch.Generator().manual_seed(9))


def test_shared_feature_step_equals_the_per_pair_gradient_sum(random_metric, images):
    metric = random_metric("elpips-vgg")
    keys = images(2, 32, 32)
    intervals = (4,)
    path = perturbed(linear_path(keys, intervals), intervals, 0.05)
    free = free_mask(intervals)
    sample = fixed_sample(metric)
    variable = path[free].clone().requires_grad_(True)
    distances = path_step(metric, path, free, variable, sample)

    pair_variable = path[free].clone().requires_grad_(True)
    frames = [keys[:1], *pair_variable.split(1), keys[1:]]
    per_pair = [metric.distance_between(metric.features(a, sample), metric.features(b, sample))[0]
                for a, b in zip(frames[:-1], frames[1:], strict=False)]
    torch.stack(per_pair).square().sum().backward()
    assert torch.allclose(distances[:, 0], torch.stack(per_pair).detach(), rtol=1e-5, atol=1e-9)
    assert float(pair_variable.grad.abs().max()) > 0
    assert torch.allclose(variable.grad, pair_variable.grad, rtol=1e-4,
                          atol=1e-4 * float(pair_variable.grad.abs().max()))


def test_chunked_and_unchunked_steps_agree(random_metric, images):
    metric = random_metric("elpips-vgg")
    keys = images(3, 32, 32, seed=1)
    intervals = (4, 3)
    path = perturbed(linear_path(keys, intervals), intervals, 0.05)
    free = free_mask(intervals)
    sample = fixed_sample(metric)
    results = []
    for chunk in (1, 2, 100):
        variable = path[free].clone().requires_grad_(True)
        results.append((path_step(metric, path, free, variable, sample, chunk_size=chunk), variable.grad))
    (d_ref, g_ref), scale = results[-1], float(results[-1][1].abs().max())
    for distances, grad in results[:-1]:
        assert torch.allclose(distances, d_ref, rtol=1e-5, atol=1e-9)
        assert torch.allclose(grad, g_ref, rtol=1e-4, atol=1e-4 * scale)


def test_elpips_many_sample_energy_decreases(random_metric, images):
    metric = random_metric("elpips-vgg")
    keys = images(2, 32, 32, seed=5)
    intervals = (4,)
    start = perturbed(linear_path(keys, intervals), intervals, 0.05)

    def energy(path: torch.Tensor) -> float:  # the same 8 seeded samples for both paths: a paired comparison
        return evaluate_path(metric, path, samples=8, generator=torch.Generator().manual_seed(7), batch=8).energy

    result = solve(keys, frames=5, metric=metric, steps=8, init=start, coarse_to_fine=False,
                   generator=torch.Generator().manual_seed(1), eval_samples=1)
    assert energy(result.frames) < 0.85 * energy(start)  # measured: 0.69
    assert torch.equal(result.frames[[0, 4]], keys)
    assert len(result.energy_history) == 8


# -- checkpoints ---------------------------------------------------------------------------------------------
class Stop(Exception):
    pass


def test_resume_equals_uninterrupted_run(random_metric, images, tmp_path):
    metric = random_metric("elpips-vgg")
    keys = images(2, 32, 32, seed=6)
    settings = dict(frames=5, metric=metric, steps=6, eval_samples=2, checkpoint_every=1)
    full = solve(keys, generator=torch.Generator().manual_seed(2), **settings)
    assert [level.frames for level in full.levels] == [3, 5]  # the resume crosses a subdivision

    def stop_after_two(info):
        if info.step == 2:
            raise Stop

    checkpoint = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(Stop):
        solve(keys, generator=torch.Generator().manual_seed(2), checkpoint=checkpoint, callback=stop_after_two,
              **settings)
    resumed = solve(keys, generator=torch.Generator().manual_seed(999), checkpoint=checkpoint, resume=True,
                    **settings)
    assert resumed.resumed_from == 2
    assert torch.equal(resumed.frames, full.frames)
    assert resumed.energy_history == full.energy_history
    assert torch.equal(resumed.distances, full.distances)
    assert not list(checkpoint.parent.glob(".*tmp*"))  # atomic writes leave no temporaries

    with pytest.raises(ValueError, match="other settings"):
        solve(keys, frames=4, metric=metric, steps=6, checkpoint=checkpoint, resume=True)


def test_bad_input_raises_value_error(random_metric, images):
    metric = random_metric("l2")
    keys = images(2, 12, 12)
    with pytest.raises(ValueError, match="no frame to optimise"):
        solve(keys, frames=2, metric=metric, steps=1)
    with pytest.raises(ValueError, match="shape"):
        solve(keys, frames=4, metric=metric, steps=1, init=torch.rand(3, 3, 12, 12))
    with pytest.raises(ValueError, match="same size"):
        solve([keys[:1], torch.rand(1, 3, 10, 12)], frames=4, metric=metric, steps=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        solve(keys * 2, frames=4, metric=metric, steps=1)
    with pytest.raises(ValueError, match="steps"):
        solve(keys, frames=4, metric=metric, steps=-1)
    with pytest.raises(ValueError, match="spatial"):
        solve(images(2, 20, 20), frames=4, metric=random_metric("elpips-vgg"), steps=1, spatial=True)
    with pytest.raises(FileNotFoundError):
        solve(keys, frames=4, metric=metric, steps=1, checkpoint="/nonexistent/ckpt.pt", resume=True)


def test_a_solve_never_returns_a_path_worse_than_its_start_silently(random_metric, images):
    """Under L2 the linear blend is the geodesic: steps with a large rate can only leave it, so the blend comes
    back, with a note; a solve from a perturbed start that improves keeps its own path and no note."""
    metric = random_metric("l2")
    keys = images(2, 12, 12)
    target = linear_path(keys, (5,))
    worse = solve(keys, metric, frames=6, steps=5, lr=0.3, coarse_to_fine=False)
    assert worse.note is not None and "returning the starting path" in worse.note
    assert torch.equal(worse.frames, target) and worse.energy == worse.start_energy
    better = solve(keys, metric, frames=6, steps=50, init=perturbed(target, (5,)), lr=L2_SCHEDULE,
                   coarse_to_fine=False)
    assert better.note is None and better.energy < better.start_energy
