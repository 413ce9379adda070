"""``elpips compare REF A B ...``: which candidate is closest to a reference, with uncertainties."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from elpips import get_config
from elpips.estimate import summarize
from elpips.io import ensure_output_dir, load_images, to_uint8
from elpips.spatial import SpatialMaps, compare_maps

from .common import add_metric_options, add_sampling_options, make_metric, metric_label, samples_text, weights_report
from .distance import add_map_options, check_map_metric, estimate_with_options, map_caption


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
    parser.add_argument("--maps", metavar="DIR", default=None,
                        help="write a heat map per candidate (NN_NAME.png: reference, candidate, map with colour "
                             "bar, overlay on the reference; NN_NAME.npy: float values) into DIR; one colour range "
                             "for all candidates; with --samples the distances come from the maps' samples")
    add_map_options(parser)
    parser.set_defaults(handler=run)


def map_file_stem(index: int, name: str) -> str:
    """``03_house`` for candidate 3 loaded from ``.../house.png`` (the index keeps equal names apart)."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(name.split(":")[-1]).stem) or "candidate"
    return f"{index:02d}_{stem}"


def write_candidate_maps(folder: Path, args: argparse.Namespace, metric, result: SpatialMaps,
                         reference: torch.Tensor, candidates: torch.Tensor) -> list[str]:
    """One figure and one ``.npy`` per candidate, all on one colour range (:func:`heatmaps.color_limit` of all)."""
    from .render import heatmaps  # the rendering code loads only when maps are asked for

    values = result.map[:, 0, 0].detach().float().cpu().numpy()  # [M, H, W]
    vmax = heatmaps.color_limit(values)
    written = []
    for index, name in enumerate(args.candidates):
        stem = map_file_stem(index, name)
        one = SpatialMaps(result.map[index], result.half_width[index], result.distances[:, index], result.samples)
        title, footnote = map_caption(metric, one, vmax)
        figure = heatmaps.map_figure([("reference", to_uint8(reference)), (name, to_uint8(candidates[index]))],
                                     values[index], vmax, title, footnote)
        written.append(str(heatmaps.write_figure(folder / f"{stem}.png", figure)))
        heatmaps.write_raw(folder / f"{stem}.npy", values[index])
    return written


def run(args: argparse.Namespace) -> int:
    folder = None
    if args.maps is not None:
        check_map_metric(args.metric)
        folder = ensure_output_dir(args.maps)
    images = load_images([args.reference, *args.candidates], get_config(args.metric).min_size)
    metric = make_metric(args)
    images = images.to(metric.device)
    reference, candidates = images[:1], images[1:].unsqueeze(1)  # [1,3,H,W], [M,1,3,H,W]
    maps = None
    with torch.no_grad():
        if folder is not None and not args.auto:  # distances from the maps' own samples
            maps = compare_maps(metric, reference, candidates, args.samples, chunk_size=args.chunk)
            estimate = summarize(maps.distances.double())
        else:
            estimate = estimate_with_options(
                metric, lambda k: metric.compare_samples(reference, candidates, k), args,
                lambda update: metric.estimate_compare(reference, candidates, args.abs_tol, args.rel_tol,
                                                       args.max_samples, progress=update),
            )
            if folder is not None:
                maps = compare_maps(metric, reference, candidates, estimate.samples, chunk_size=args.chunk)
    map_files = [] if maps is None else write_candidate_maps(folder, args, metric, maps, reference,
                                                              candidates[:, 0])
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
                for name, d, h in zip(args.candidates, means, half_widths, strict=False)]
        print(json.dumps({"reference": args.reference, "candidates": rows, "closest": args.candidates[best],
                          "margin": margin, "samples": estimate.samples, "maps": map_files,
                          **weights_report(metric)}, indent=2))
        return 0
    width = max(len(name) for name in args.candidates)
    print(f"{metric_label(metric)} distances to {args.reference} "
          f"({samples_text(estimate.samples)}, shared by all candidates):")
    for index in order:
        marker = "  <- closest" if index == best else ""
        uncertainty = f" ± {half_widths[index]:.4f}" if metric.is_stochastic else ""
        print(f"  {args.candidates[index]:<{width}}  {means[index]:.4f}{uncertainty}{marker}")
    if margin is not None:
        sure = "" if margin["difference"] > margin["half_width_95"] else " (not significant at 95%)"
        print(f"closest: {args.candidates[best]}, by {margin['difference']:.4f} ± {margin['half_width_95']:.4f} "
              f"over {margin['to']}{sure}")
    if map_files:
        print(f"wrote {len(map_files)} maps (figures and .npy values) into {folder}/")
    return 0
