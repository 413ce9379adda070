"""``elpips distance A B``: the distance between two images, with its 95% uncertainty."""

from __future__ import annotations

import argparse
import json

import torch
from elpips import get_config
from elpips.estimate import Estimate, summarize
from elpips.io import load_images, to_uint8
from elpips.solver import phase
from elpips.spatial import SpatialMaps, distance_map

from .common import (
    add_metric_options,
    add_sampling_options,
    make_metric,
    metric_label,
    positive_int,
    progress_bar,
    samples_text,
    weights_report,
)


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
    add_map_options(parser)
    parser.add_argument("--map", metavar="FILE.png", default=None,
                        help="write a heat map of where A and B differ (colour bar, value range, overlay on A); "
                             "with --samples its mean is the printed distance (same samples)")
    parser.add_argument("--map-raw", metavar="FILE.npy|FILE.tiff", default=None,
                        help="write the map's float values (.npy, or a 32-bit float .tiff)")
    parser.set_defaults(handler=run)


def add_map_options(parser: argparse.ArgumentParser) -> None:
    """``--chunk``: samples per network pass of a distance map (memory)."""
    parser.add_argument("--chunk", type=positive_int, default=None, metavar="K",
                        help="distance maps: ensemble samples per network pass (memory; default: as many as "
                             "the memory budget allows); the map does not depend on it")


def check_map_metric(name: str) -> None:
    """Maps need network taps: ``ValueError`` for the pixel metric."""
    if get_config(name).backbone == "none":
        raise ValueError(f"distance maps need an LPIPS or E-LPIPS metric, not {name}")


def map_caption(metric, result: SpatialMaps, vmax: float) -> tuple[str, str | None]:
    """The figure's title (metric, samples, mean, maximum, colour range ``0..vmax``) and footnote (the
    random-backbone caveat)."""
    samples = f", {samples_text(result.samples)}" if metric.is_stochastic else ""
    title = (f"{metric_label(metric)}{samples}: map mean {float(result.map.mean()):.4g}, max "
             f"{float(result.map.max()):.3g}, colours 0..{vmax:.3g}")
    footnote = None
    if not metric.calibrated:
        footnote = ("random backbone (uncalibrated): shows where this random network's features differ, "
                    "not where people see a difference")
    return title, footnote


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


def check_map_outputs(args: argparse.Namespace) -> bool:
    """Check ``--map``/``--map-raw`` before any work; whether a map is wanted."""
    if args.map is None and args.map_raw is None:
        return False
    from .render import heatmaps  # the rendering code loads only when a map is asked for

    check_map_metric(args.metric)
    if args.map is not None:
        heatmaps.check_output_file(args.map)
    if args.map_raw is not None:
        heatmaps.check_output_file(heatmaps.check_raw_path(args.map_raw))
    return True


def write_map_outputs(args: argparse.Namespace, metric, result: SpatialMaps, a_image: torch.Tensor,
                      b_image: torch.Tensor) -> dict:
    """Write the figure and/or raw values of ``result`` (one pair); returns what was written for the report."""
    from .render import heatmaps

    values = result.map[0, 0].detach().float().cpu().numpy()
    vmax = heatmaps.color_limit(values)
    written = {"map_max": float(values.max()), "map_mean": float(values.mean()), "map_samples": result.samples}
    if args.map is not None:
        title, footnote = map_caption(metric, result, vmax)
        figure = heatmaps.map_figure([("A", to_uint8(a_image)), ("B", to_uint8(b_image))], values, vmax, title,
                                     footnote)
        written["map"] = str(heatmaps.write_figure(args.map, figure))
    if args.map_raw is not None:
        written["map_raw"] = str(heatmaps.write_raw(args.map_raw, values))
    return written


def run(args: argparse.Namespace) -> int:
    wants_map = check_map_outputs(args)
    images = load_images([args.a, args.b], get_config(args.metric).min_size)
    metric = make_metric(args)
    images = images.to(metric.device)
    x, y = images[:1], images[1:]
    result = None
    samples = 1 if not metric.is_stochastic else args.max_samples if args.auto else args.samples
    with torch.no_grad(), phase(f"{metric.name}: evaluating ({'up to ' if args.auto else ''}{samples} "
                                f"sample{'s' if samples > 1 else ''})", enabled=not args.auto):
        if wants_map and not args.auto:  # the distance from the map's own samples
            result = distance_map(metric, x, y, args.samples, chunk_size=args.chunk)
            estimate = summarize(result.distances.double())
        else:
            estimate = estimate_with_options(
                metric, lambda k: metric.sample_distances(x, y, k), args,
                lambda update: metric.estimate(x, y, args.abs_tol, args.rel_tol, args.max_samples,
                                               progress=update),
            )
            if wants_map:
                result = distance_map(metric, x, y, estimate.samples, chunk_size=args.chunk)
    written = {} if result is None else write_map_outputs(args, metric, result, x, y)
    distance, half_width = float(estimate.mean[0]), float(estimate.half_width[0])
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "distance": distance, "half_width_95": half_width,
                          "samples": estimate.samples, **written, **weights_report(metric)}, indent=2))
        return 0
    uncertainty = ""
    if metric.is_stochastic:
        uncertainty = (f" ± {half_width:.4f} (95% CI, {estimate.samples} samples)" if estimate.samples > 1
                       else " (1 sample: no uncertainty estimate; use --samples 2 or more)")
    print(f"{metric_label(metric)}: {distance:.4f}{uncertainty}")
    for key in ("map", "map_raw"):
        if key in written:
            print(f"wrote {written[key]} (map range 0..{written['map_max']:.4g})")
    return 0
