"""``elpips train-example``: train a small denoiser or deblurrer with L2, LPIPS or E-LPIPS as the loss.

A minimal example of :class:`elpips.Metric` as a training loss. A few-layer residual CNN learns to remove
Gaussian noise (``--task denoise``) or Gaussian blur (``--task deblur``) from random crops of the given images.
The bottom ``--crop`` rows of every image are held out: validation crops come from there, training crops from
the rows above. Outputs (``--out``, default ``outputs/train-<loss>-<time>/``, every file written atomically):

* ``log.json``: the options, the weights' origin (``calibrated: false`` for a random backbone), the training
  loss of every step and, every ``--val-every`` steps, the validation PSNR and the L2, LPIPS and E-LPIPS
  distances of the model's outputs to the clean crops (all metrics on the same backbone weights).
* ``samples.png``: a contact sheet, one row per validation crop: degraded | output | clean.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from elpips import Metric
from elpips.experiments.denoiser import ResidualCNN
from elpips.io import load_image, save_image, write_json
from torch import nn

from .common import (
    add_metric_options,
    calibration_label,
    check_ensemble_options,
    default_run_dir,
    make_metric,
    positive_int,
    progress_bar,
    run_record,
    weights_report,
)
from .render.figures import column, labelled, row, tile
from .run_folder import RunFolder

LOSSES = ("l2", "lpips-vgg", "elpips-vgg")
TASKS = ("denoise", "deblur")
DEFAULT_IMAGES = [f"example:{name}" for name in ("cat", "dog", "house", "teddy")]
VALIDATION_CROPS_PER_IMAGE = 2
SAMPLE_ROWS = 4
VALIDATION_ELPIPS_SAMPLES = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-example",
        description="Train a few-layer residual CNN to denoise or deblur random crops of images, with the "
                    "chosen loss; write a loss log (log.json) and validation samples (samples.png). The "
                    "defaults take under 2 minutes on a 2-core CPU.",
    )
    parser.add_argument("--task", choices=TASKS, default="denoise", help="what to undo")
    parser.add_argument("--images", nargs="+", default=DEFAULT_IMAGES, metavar="IMG",
                        help="training images (paths or example:NAME); the "
                             "bottom --crop rows of each are held out for validation")
    add_metric_options(parser, default="elpips-vgg", choices=LOSSES)
    parser.add_argument("--loss", dest="metric", choices=LOSSES, default=argparse.SUPPRESS,
                        help="training loss (default elpips-vgg; --metric is the same option)")
    parser.add_argument("--steps", type=positive_int, default=300, help="optimiser steps")
    parser.add_argument("--crop", type=positive_int, default=32, help="crop size in pixels")
    parser.add_argument("--batch", type=positive_int, default=8, help="crops per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--width", type=positive_int, default=32, help="channels of the CNN")
    parser.add_argument("--depth", type=positive_int, default=4, help="convolutions of the CNN")
    parser.add_argument("--noise-sigma", type=float, default=0.1,
                        help="denoise: noise standard deviation; deblur: 0.01 noise is added")
    parser.add_argument("--blur-sigma", type=float, default=1.5, help="deblur: Gaussian blur sigma")
    parser.add_argument("--val-every", type=positive_int, default=None,
                        help="steps between validation evaluations (default: steps / 10)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default: outputs/train-<loss>-<time>)")
    parser.set_defaults(handler=run)


# -- model and data -------------------------------------------------------------------------------------------------
def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (radius ``ceil(3 sigma)``, reflect padding) of ``[N, 3, H, W]``."""
    radius = max(1, math.ceil(3 * sigma))
    position = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (position / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(F.conv2d(padded, horizontal, groups=channels), vertical, groups=channels)


@dataclass
class Degradation:
    task: str
    noise_sigma: float
    blur_sigma: float

    def __call__(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The degraded version of ``clean`` ``[N, 3, H, W]`` (clamped to [0, 1])."""
        degraded = clean if self.task == "denoise" else gaussian_blur(clean, self.blur_sigma)
        sigma = self.noise_sigma if self.task == "denoise" else 0.01
        noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        return (degraded + sigma * noise).clamp(0, 1)


def load_training_images(specs: list[str], crop: int) -> list[torch.Tensor]:
    """Load every image; each must be at least ``2 * crop`` high (training rows + held-out rows) and ``crop`` wide."""
    images = []
    for spec in specs:
        image = load_image(spec)
        height, width = image.shape[-2:]
        if height < 2 * crop or width < crop:
            raise ValueError(
                f"{spec} is {height}x{width} pixels: --crop {crop} needs at least {2 * crop}x{crop} (training "
                f"crops above, the bottom {crop} rows held out for validation); use a smaller --crop"
            )
        images.append(image)
    return images


def random_crops(images: list[torch.Tensor], count: int, crop: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random crops from the training part (all rows but the bottom ``crop``) of random images."""
    crops = []
    for _ in range(count):
        image = images[int(torch.randint(len(images), (1,), generator=generator))]
        height, width = image.shape[-2:]
        top = int(torch.randint(height - 2 * crop + 1, (1,), generator=generator))
        left = int(torch.randint(width - crop + 1, (1,), generator=generator))
        crops.append(image[0, :, top:top + crop, left:left + crop])
    return torch.stack(crops)


def validation_crops(images: list[torch.Tensor], crop: int) -> torch.Tensor:
    """Fixed crops from the held-out bottom ``crop`` rows: the left and right end of every image."""
    crops = []
    for image in images:
        width = image.shape[-1]
        for left in sorted({0, width - crop}) if VALIDATION_CROPS_PER_IMAGE > 1 else [0]:
            crops.append(image[0, :, -crop:, left:left + crop])
    return torch.stack(crops)


def psnr(output: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1]."""
    mse = (output - clean).square().mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return -10 * torch.log10(mse)


# -- training ---------------------------------------------------------------------------------------------------------
def check_options(args: argparse.Namespace) -> None:
    if not args.lr > 0 or not math.isfinite(args.lr):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    if not 0 <= args.noise_sigma <= 1:
        raise ValueError(f"--noise-sigma must be in [0, 1], got {args.noise_sigma}")
    if not 0 < args.blur_sigma <= 10:
        raise ValueError(f"--blur-sigma must be in (0, 10], got {args.blur_sigma}")
    if args.depth < 2:
        raise ValueError(f"--depth must be >= 2 (the CNN needs at least 2 convolutions), got {args.depth}")
    if args.crop < 16:
        raise ValueError(f"--crop must be at least 16 pixels (the smallest the metrics accept), got {args.crop}")


def evaluate(model: nn.Module, degraded: torch.Tensor, clean: torch.Tensor, metrics: dict[str, Metric],
             seed: int) -> tuple[dict, torch.Tensor]:
    """Validation PSNR and the mean distance of every metric (E-LPIPS: the same seeded samples each time)."""
    with torch.no_grad():
        output = model(degraded)
        result = {"psnr": float(psnr(output, clean).mean())}
        for name, metric in metrics.items():
            generator = torch.Generator().manual_seed(seed)
            samples = VALIDATION_ELPIPS_SAMPLES if metric.is_stochastic else 1
            result[name] = float(metric(output, clean, n=samples, generator=generator, reduction="mean"))
    return result, output


def samples_sheet(degraded: torch.Tensor, output: torch.Tensor, clean: torch.Tensor, degraded_label: str):
    """One row per crop: degraded | output | clean (enlarged to about 128 px)."""
    scale = max(1, min(4, 128 // clean.shape[-1]))
    rows = []
    picks = sorted({round(i * (len(clean) - 1) / max(1, SAMPLE_ROWS - 1)) for i in range(SAMPLE_ROWS)})
    for index in picks:  # spread over the images
        tiles = [tile(image[index], scale) for image in (degraded, output, clean)]
        if not rows:
            tiles = [labelled(t, text) for t, text in zip(tiles, (degraded_label, "output", "clean"), strict=False)]
        rows.append(row(tiles))
    return column(rows)


def run(args: argparse.Namespace) -> int:
    check_options(args)
    return train(args)  # --threads: set and restored around the command by common.command_settings


def train(args: argparse.Namespace) -> int:
    check_ensemble_options(args, [args.metric])  # the loss's ensemble; validation metrics keep their own
    folder = RunFolder(args.out or default_run_dir(f"train-{args.metric}"), "train-example", resumable=False,
                       argv=getattr(args, "argv", None))
    folder.check()
    images = load_training_images(args.images, args.crop)
    seed = 0 if args.seed is None else args.seed
    args.seed = seed  # one seed for the model, the data and the loss's ensemble samples: runs repeat exactly
    loss_metric = make_metric(args)
    # Validation metrics share the loss metric's backbone weights but keep their own ensembles; the loss metric
    # itself is reused.
    validation_metrics = {name: (loss_metric if name == loss_metric.name else
                                 make_metric(args, name, own_ensemble=True, announce=False))
                          for name in LOSSES}
    options = {name: getattr(args, name) for name in (
        "images", "task", "steps", "crop", "batch", "lr", "width", "depth", "noise_sigma", "blur_sigma",
        "val_every")}
    with folder.claim(folder.settings(run_record(args, [loss_metric], seed, **options))):
        return train_in(folder.path, args, images, loss_metric, validation_metrics)


def train_in(out: Path, args: argparse.Namespace, images: list[torch.Tensor], loss_metric: Metric,
             validation_metrics: dict[str, Metric]) -> int:
    """Train, validate and write ``log.json`` and ``samples.png`` into ``out``."""
    seed, device = args.seed, loss_metric.device
    with torch.random.fork_rng(devices=[]):  # the model's initial weights, without touching the global RNG
        torch.manual_seed(seed)
        model = ResidualCNN(args.width, args.depth).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    degrade = Degradation(args.task, args.noise_sigma, args.blur_sigma)
    data_generator = torch.Generator().manual_seed(seed)
    val_clean = validation_crops(images, args.crop)
    val_degraded = degrade(val_clean, torch.Generator().manual_seed(seed + 1)).to(device)
    val_clean = val_clean.to(device)
    val_every = args.val_every or max(1, args.steps // 10)
    calibrated = all(metric.calibrated for metric in validation_metrics.values())

    log: dict = {
        "task": args.task, "loss": args.metric, "images": list(args.images), "steps": args.steps,
        "crop": args.crop, "batch": args.batch, "lr": args.lr, "width": args.width, "depth": args.depth,
        "noise_sigma": args.noise_sigma, "blur_sigma": args.blur_sigma if args.task == "deblur" else None,
        "seed": seed, "device": str(device), "threads": torch.get_num_threads(), "validation_crops": len(val_clean),
        "validation_elpips_samples": VALIDATION_ELPIPS_SAMPLES,
        "uncalibrated": not calibrated,
        "note": None if calibrated else "random backbone: LPIPS/E-LPIPS losses and distances are NOT perceptual",
        **weights_report(loss_metric),
        "input_validation": evaluate(nn.Identity(), val_degraded, val_clean, validation_metrics, seed)[0],
        "train_loss": [], "validation": [],
    }
    started = time.perf_counter()
    with progress_bar(f"train {args.metric}", args.steps, unit="step") as bar:
        for step in range(1, args.steps + 1):
            clean = random_crops(images, args.batch, args.crop, data_generator)
            degraded = degrade(clean, data_generator)
            loss = loss_metric(model(degraded.to(device)), clean.to(device), reduction="mean")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            value = loss.item()
            log["train_loss"].append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if step % val_every == 0 or step == args.steps:
                result, val_output = evaluate(model, val_degraded, val_clean, validation_metrics, seed)
                log["validation"].append({"step": step, **result})
                log["wall_seconds"] = time.perf_counter() - started
                write_json(out / "log.json", log)
    degraded_label = "noisy" if args.task == "denoise" else "blurred"
    save_image(out / "samples.png", samples_sheet(val_degraded, val_output, val_clean, degraded_label))
    write_json(out / "log.json", log)
    print_summary(log, out)
    return 0


def print_summary(log: dict, out: Path) -> None:
    first, last = log["validation"][0], log["validation"][-1]
    train = log["train_loss"]
    head = min(10, len(train))
    label = calibration_label(log["loss"], log["calibrated"])
    print(f"{log['task']} with {label}: {log['steps']} steps in {log['wall_seconds']:.1f} s")
    print(f"  training loss  {sum(train[:head]) / head:.4f} (first {head} steps) -> "
          f"{sum(train[-head:]) / head:.4f} (last {head})")
    before = log["input_validation"]
    print(f"  validation     input -> step {first['step']} -> step {last['step']}")
    for key in ("psnr", *LOSSES):
        unit = " dB" if key == "psnr" else ""
        print(f"    {key:11s}  {before[key]:.4f}{unit} -> {first[key]:.4f}{unit} -> {last[key]:.4f}{unit}")
    print(f"wrote {out / 'log.json'} and {out / 'samples.png'}")
    if log["uncalibrated"]:
        print("note: random backbone - the LPIPS/E-LPIPS numbers are not perceptual", file=sys.stderr)
