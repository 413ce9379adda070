"""``elpips distance A B``: the distance between two images, with its 95% uncertainty."""

from __future__ import annotations

import argparse
import json

import torch

from elpips.estimate import Estimate, summarize
from elpips import get_config
from elpips.io import load_images
from elpips.solver import phase

from .common import (add_metric_options, add_sampling_options, make_metric, metric_label, progress_bar,
                     weights_report)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "distance",
        description="Distance between two images of equal size, with a 95% confidence half-width. "
                    "Use example:cat / example:dog for the shipped example images.",
    )
    parser.add_argument("a", help="first image (PNG, JPEG, ...; or example:NAME)")
    parser.add_argument("b", help="second image")
    add_metric_options(parser)
    add_sampling_options(parser)
    parser.set_defaults(handler=run)


def estimate_with_options(metric, draw, args: argparse.Namespace, count_fn) -> Estimate:
    """Run ``--samples N`` (one stratified batch) or ``--auto`` (sequential) sampling."""
    if not metric.is_stochastic:
        return summarize(draw(1))
    if not args.auto:
        return summarize(draw(args.samples).double())
    with progress_bar(f"{metric.name}", args.max_samples) as bar:
        def update(estimate: Estimate) -> None:
            bar.n = estimate.samples
            bar.set_postfix(mean=f"{float(estimate.mean.flatten()[0]):.4f}",
                            half_width=f"{float(estimate.half_width.max()):.4f}")
        return count_fn(update)


def run(args: argparse.Namespace) -> int:
    images = load_images([args.a, args.b], get_config(args.metric).min_size)
    metric = make_metric(args)
    images = images.to(metric.device)
    x, y = images[:1], images[1:]
    samples = 1 if not metric.is_stochastic else args.max_samples if args.auto else args.samples
    with torch.no_grad(), phase(f"{metric.name}: evaluating ({'up to ' if args.auto else ''}{samples} "
                                f"sample{'s' if samples > 1 else ''})", enabled=not args.auto):
        estimate = estimate_with_options(
            metric, lambda k: metric.sample_distances(x, y, k), args,
            lambda update: metric.estimate(x, y, args.abs_tol, args.rel_tol, args.max_samples, progress=update),
        )
    distance, half_width = float(estimate.mean[0]), float(estimate.half_width[0])
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "distance": distance, "half_width_95": half_width,
                          "samples": estimate.samples, **weights_report(metric)}, indent=2))
    else:
        uncertainty = ""
        if metric.is_stochastic:
            uncertainty = (f" ± {half_width:.4f} (95% CI, {estimate.samples} samples)" if estimate.samples > 1
                           else " (1 sample: no uncertainty estimate; use --samples 2 or more)")
        print(f"{metric_label(metric)}: {distance:.4f}{uncertainty}")
    return 0
