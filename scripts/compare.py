"""``elpips compare REF A B ...``: which candidate is closest to a reference, with uncertainties."""

from __future__ import annotations

import argparse
import json

import torch

from elpips.estimate import summarize
from elpips import get_config
from elpips.io import load_images

from .common import add_metric_options, add_sampling_options, make_metric, metric_label, weights_report
from .distance import estimate_with_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        description="Distances from a reference to each candidate under shared ensemble samples, so the "
                    "difference between candidates is measured with low variance.",
    )
    parser.add_argument("reference", help="reference image")
    parser.add_argument("candidates", nargs="+", help="candidate images (same size as the reference)")
    add_metric_options(parser)
    add_sampling_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    images = load_images([args.reference, *args.candidates], get_config(args.metric).min_size)
    metric = make_metric(args)
    images = images.to(metric.device)
    reference, candidates = images[:1], images[1:].unsqueeze(1)  # [1,3,H,W], [M,1,3,H,W]
    with torch.no_grad():
        estimate = estimate_with_options(
            metric, lambda k: metric.compare_samples(reference, candidates, k), args,
            lambda update: metric.estimate_compare(reference, candidates, args.abs_tol, args.rel_tol,
                                                   args.max_samples, progress=update),
        )
    means = estimate.mean[:, 0].tolist()
    half_widths = estimate.half_width[:, 0].tolist()
    order = sorted(range(len(means)), key=means.__getitem__)
    best = order[0]
    margin = None
    if len(order) > 1:
        draws = estimate.draws[:, :, 0]
        paired = summarize(draws[:, order[1]] - draws[:, best])
        margin = {"to": args.candidates[order[1]], "difference": float(paired.mean),
                  "half_width_95": float(paired.half_width)}
    if args.json:
        rows = [{"candidate": name, "distance": d, "half_width_95": h}
                for name, d, h in zip(args.candidates, means, half_widths)]
        print(json.dumps({"reference": args.reference, "candidates": rows, "closest": args.candidates[best],
                          "margin": margin, "samples": estimate.samples, **weights_report(metric)}, indent=2))
        return 0
    width = max(len(name) for name in args.candidates)
    print(f"{metric_label(metric)} distances to {args.reference} ({estimate.samples} samples, shared by all candidates):")
    for index in order:
        marker = "  <- closest" if index == best else ""
        uncertainty = f" ± {half_widths[index]:.4f}" if metric.is_stochastic else ""
        print(f"  {args.candidates[index]:<{width}}  {means[index]:.4f}{uncertainty}{marker}")
    if margin is not None:
        sure = "" if margin["difference"] > margin["half_width_95"] else " (not significant at 95%)"
        print(f"closest: {args.candidates[best]}, by {margin['difference']:.4f} ± {margin['half_width_95']:.4f} "
              f"over {margin['to']}{sure}")
    return 0
