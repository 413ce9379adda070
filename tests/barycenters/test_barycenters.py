"""The barycenter solver: closed forms with the L2 distance, shared-step gradients, progress and exact resume."""

from __future__ import annotations

import pytest
import torch
from elpips.barycenters import (
    CLIP_HIGH,
    CLIP_LOW,
    draw_sample,
    evaluate_objective,
    noisy_copies,
    shared_step,
    shift_image,
    shifted_copies,
    solve,
)


def weighted_mean(images: torch.Tensor, weights: list[float]) -> torch.Tensor:
    w = torch.tensor(weights, dtype=torch.float64)
    return torch.einsum("n,nchw->chw", w / w.sum(), images.double()).float()


def rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).mean(dim=(1, 2, 3)).sqrt()


# -- closed forms with the L2 distance -------------------------------------------------------------------------
def test_l2_power2_reaches_weighted_mean_from_noise(random_metric):
    generator = torch.Generator().manual_seed(1)
    images = 0.1 + 0.8 * torch.rand(4, 3, 8, 8, generator=generator)
    weights = [1.0, 2.0, 3.0, 4.0]
    target = weighted_mean(images, weights)
    assert (target - images.mean(dim=0)).abs().max() > 0.05  # the weights matter for this check
    result = solve(images, random_metric("l2"), weights=weights, power=2, steps=250, init="noise", generator=0,
                   eval_samples=1)
    assert (result.image[0] - target).abs().max() <= 1e-3
    assert result.evaluations[-1].objective < result.evaluations[0].objective


def test_l2_power1_pixel_reaches_weighted_median(random_metric):
    base = torch.full((1, 3, 8, 8), 0.4)
    values = [0.1, 0.3, 0.6, 0.8, 0.95]
    weights = [0.1, 0.45, 0.1, 0.15, 0.2]  # weighted median 0.3; plain median 0.6; weighted mean 0.515
    images = base.repeat(5, 1, 1, 1)
    images[:, 1, 2, 3] = torch.tensor(values)
    # |x - x_i| is a cone at the solution: Adam hovers within about one learning rate of it, so a fast-decaying
    # schedule (a callable lr) settles it in a few hundred steps.
    result = solve(images, random_metric("l2"), weights=weights, power=1, steps=300, lr=lambda t: 0.03 * 0.98**t,
                   generator=0, eval_samples=1)
    pixel = float(result.image[0, 1, 2, 3])
    assert abs(pixel - 0.3) <= 1e-3
    others = torch.ones(3, 8, 8, dtype=torch.bool)
    others[1, 2, 3] = False
    assert (result.image[0] - 0.4)[others].abs().max() <= 1e-3


def test_plain_distance_function_reaches_weighted_mean():
    images = 0.2 + 0.6 * torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    weights = [0.5, 0.2, 0.3]
    result = solve(images, rms, weights=weights, steps=250, generator=1, eval_samples=1, device="cpu")
    assert (result.image[0] - weighted_mean(images, weights)).abs().max() <= 1e-3


def test_mean_init_with_zero_steps_is_the_weighted_mean(random_metric):
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    weights = [3.0, 1.0, 1.0]
    result = solve(images, random_metric("l2"), weights=weights, steps=0, init="mean", generator=0)
    expected = weighted_mean(images, weights).clamp(CLIP_LOW, CLIP_HIGH)
    torch.testing.assert_close(result.image[0], expected, rtol=0, atol=1e-6)
    assert [entry.step for entry in result.evaluations] == [0]


def test_evaluation_with_l2_is_the_closed_form(random_metric):
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    weights = torch.tensor([0.2, 0.3, 0.5])
    for power in (1.0, 2.0):
        evaluation = evaluate_objective(random_metric("l2"), x, images, weights, power, samples=4)
        distances = rms(x.expand(3, -1, -1, -1).double(), images.double())
        expected = float((weights.double() * distances**power).sum())
        assert evaluation.objective == pytest.approx(expected, rel=1e-6)
        assert evaluation.samples == 1  # a deterministic metric needs one draw


def test_subset_steps_are_unbiased_estimates_of_the_objective(random_metric):
    """refs_per_step=k scales the chosen terms by N/k: averaged over random subsets the step loss is the
    full objective (x held fixed by a negligible learning rate)."""
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    weights = [0.1, 0.2, 0.3, 0.4]
    losses, chosen = [], torch.zeros(4)
    result = solve(images, random_metric("l2"), weights=weights, steps=300, lr=1e-12, init="mean",
                   refs_per_step=2, generator=0, eval_samples=1,
                   callback=lambda info: (losses.append(info.loss), chosen.index_add_(0, info.indices,
                                                                                      torch.ones(2))))
    full = result.evaluations[0].objective
    assert sum(losses) / len(losses) == pytest.approx(full, rel=0.03)
    assert torch.allclose(chosen / 300, torch.full((4,), 0.5), atol=0.07)


# -- E-LPIPS: shared-feature step and progress ------------------------------------------------------------------
@pytest.mark.parametrize("power,samples", [(2.0, 1), (1.0, 2)])
def test_shared_step_gradient_equals_sum_of_per_pair_gradients(random_metric, images, power, samples):
    metric = random_metric("elpips-vgg")
    references = images(5, 32, 32, seed=1)
    x0 = images(1, 32, 32, seed=2)
    coefficients = torch.tensor([0.1, 0.3, 0.2, 0.25, 0.15])
    sample = draw_sample(metric, samples, 32, 32, torch.Generator().manual_seed(3))
    assert sample.dropout is not None and sample.transform.batch_size == samples

    x = x0.clone().requires_grad_(True)
    distances = shared_step(metric, x, references, coefficients, power, sample, samples, chunk_size=2)

    expected = torch.zeros_like(x0)
    for index in range(5):  # one pair at a time: 2 forward passes and 1 backward each
        xi = x0.clone().requires_grad_(True)
        fx = metric.features(xi.expand(samples, -1, -1, -1), sample)
        fr = metric.features(references[index:index + 1].expand(samples, -1, -1, -1), sample)
        distance = metric.distance_between(fx, fr).mean()
        (coefficients[index] * distance**power).backward()
        expected += xi.grad
        assert float(distances[index]) == pytest.approx(distance.item(), rel=1e-5)
    assert expected.abs().max() > 0
    torch.testing.assert_close(x.grad, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_elpips_seeded_objective_decreases(random_metric, images):
    metric = random_metric("elpips-vgg")
    inputs = images(3, 32, 32, seed=11)
    result = solve(inputs, metric=metric, steps=12, generator=0, checkpoint_every=12, eval_samples=8)
    start, end = result.evaluations[0], result.evaluations[-1]
    assert (start.step, end.step) == (0, 12)
    assert end.objective < 0.8 * start.objective
    # The evaluation is seeded: recomputing the start from the reference's noise start gives the same number.
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x0 = (0.5 + 0.2 * noise).clamp(CLIP_LOW, CLIP_HIGH)
    again = evaluate_objective(metric, x0, inputs, torch.full((3,), 1 / 3), 2.0, samples=8)
    assert again.objective == pytest.approx(start.objective, rel=1e-5)
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0
    assert result.image.min() >= CLIP_LOW and result.image.max() <= CLIP_HIGH


# -- checkpoints -------------------------------------------------------------------------------------------------
def _resume_run(metric, inputs, path, **kwargs):
    return solve(inputs, metric, weights=[0.5, 0.3, 0.2], steps=6, refs_per_step=2, samples_per_step=2,
                 generator=21, checkpoint=path, checkpoint_every=2, eval_samples=4, log_every=1, **kwargs)


def test_resume_after_interruption_equals_uninterrupted_run(random_metric, images, tmp_path):
    metric = random_metric("elpips-vgg")
    inputs = images(3, 32, 32, seed=12)
    full = _resume_run(metric, inputs, tmp_path / "full.pt")

    class Interrupted(Exception):
        pass

    def interrupt(info):
        if info.step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        _resume_run(metric, inputs, tmp_path / "part.pt", callback=interrupt)
    resumed = _resume_run(metric, inputs, tmp_path / "part.pt", resume=True)
    assert resumed.resumed_from == 2
    assert torch.equal(resumed.image, full.image)
    assert resumed.history == full.history
    assert [e.as_dict() for e in resumed.evaluations] == [e.as_dict() for e in full.evaluations]
    moments = [run.state["optimizer"]["state"][0]["exp_avg"] for run in (resumed, full)]
    assert torch.equal(*moments)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_resume_refuses_a_different_run(random_metric, tmp_path):
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    path = tmp_path / "run.pt"
    solve(images, metric=random_metric("l2"), steps=2, checkpoint=path, generator=0)
    with pytest.raises(ValueError, match="power"):
        solve(images, metric=random_metric("l2"), power=1, steps=4, checkpoint=path, resume=True)
    with pytest.raises(ValueError, match="images_sha256"):
        solve(images.flip(0), metric=random_metric("l2"), steps=4, checkpoint=path, resume=True)
    with pytest.raises(FileNotFoundError):
        solve(images, metric=random_metric("l2"), steps=4, checkpoint=tmp_path / "none.pt", resume=True)


# -- bad input ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    ({"weights": [1.0, 2.0]}, "2 weights for 3 images"),
    ({"weights": [1.0, -1.0, 1.0]}, "non-negative"),
    ({"weights": [0.0, 0.0, 0.0]}, "all be zero"),
    ({"power": 0.5}, "power"),
    ({"refs_per_step": 4}, "refs_per_step"),
    ({"refs_per_step": "some"}, "refs_per_step"),
    ({"samples_per_step": 0}, "samples_per_step"),
    ({"steps": -1}, "steps"),
    ({"init": "zeros"}, "init"),
    ({"init": torch.rand(1, 3, 4, 4)}, "init image"),
    ({"resume": True}, "checkpoint path"),
    ({"generator": "seed"}, "generator"),
    ({"device": "meta"}, "device"),
])
def test_bad_arguments_raise_value_error(random_metric, kwargs, message):
    images = torch.rand(3, 3, 8, 8)
    with pytest.raises(ValueError, match=message):
        solve(images, metric=random_metric("l2"), **{"steps": 1, **kwargs})


@pytest.mark.parametrize("images,message", [
    (torch.rand(3, 1, 8, 8), "shape"),
    (torch.rand(3, 3, 8, 8) + 1.0, r"\[0, 1\]"),
    (torch.zeros(3, 3, 8, 8, dtype=torch.uint8), "floating-point"),
])
def test_bad_images_raise_value_error(random_metric, images, message):
    with pytest.raises(ValueError, match=message):
        solve(images, metric=random_metric("l2"), steps=1)


def test_images_too_small_for_the_network(random_metric):
    with pytest.raises(ValueError, match="at least 16x16"):
        solve(torch.rand(2, 3, 8, 8), metric=random_metric("elpips-vgg"), steps=1)


# -- the demonstrations' inputs ------------------------------------------------------------------------------------
def test_shift_image_moves_content_and_reflects_the_border():
    image = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    for dy, dx in [(2, -1), (-2, 2), (0, 1), (1, 0)]:
        shifted = shift_image(image, dy, dx)
        assert shifted.shape == image.shape
        for y in range(9):
            for x in range(11):
                source_y, source_x = y - dy, x - dx
                source_y = -source_y if source_y < 0 else (2 * 8 - source_y if source_y > 8 else source_y)
                source_x = -source_x if source_x < 0 else (2 * 10 - source_x if source_x > 10 else source_x)
                assert torch.equal(shifted[0, :, y, x], image[0, :, source_y, source_x])
    with pytest.raises(ValueError, match="too large"):
        shift_image(image, 9, 0)


def test_shifted_copies_use_their_reported_shifts():
    image = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    copies, shifts = shifted_copies(image, count=10, max_shift=2, generator=torch.Generator().manual_seed(2))
    assert copies.shape == (10, 3, 12, 12) and shifts.shape == (10, 2)
    assert int(shifts.abs().max()) <= 2 and len({tuple(s) for s in shifts.tolist()}) > 1
    for copy, (dy, dx) in zip(copies, shifts.tolist(), strict=False):
        assert torch.equal(copy[None], shift_image(image, dy, dx))


def test_noisy_copies_have_the_requested_noise_level():
    image = torch.full((1, 3, 64, 64), 0.5)
    copies = noisy_copies(image, count=10, scale=0.07, generator=torch.Generator().manual_seed(3))
    assert copies.shape == (10, 3, 64, 64)
    assert float((copies - 0.5).std()) == pytest.approx(0.07, rel=0.02)
    assert not torch.equal(copies[0], copies[1])
    bright = noisy_copies(torch.ones(1, 3, 8, 8), count=2, scale=0.5, generator=torch.Generator().manual_seed(4))
    assert float(bright.max()) == 1.0 and float(bright.min()) >= 0.0
    with pytest.raises(ValueError, match="count"):
        noisy_copies(image, count=0)


def test_a_solve_never_returns_something_worse_than_its_start_silently(random_metric):
    """From the optimum (the mean, for L2 and p=2) a large step size can only move away: the start is returned,
    with a note; a solve that improves returns its last iterate without one."""
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    worse = solve(images, random_metric("l2"), steps=5, lr=0.3, init="mean", generator=0)
    assert worse.evaluations[-1].objective > worse.evaluations[0].objective
    assert worse.returned_step == 0 and "returning" in worse.note
    torch.testing.assert_close(worse.image[0], weighted_mean(images, [1, 1, 1]).clamp(CLIP_LOW, CLIP_HIGH),
                               rtol=0, atol=1e-6)
    better = solve(images, random_metric("l2"), steps=5, lr=0.01, init="noise", generator=0)
    assert better.returned_step == 5 and better.note is None
