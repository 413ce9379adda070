"""``elpips 2afc --data DIR``: agreement with human 2AFC judgements on BAPPS (per category and mean).

``torchrun --nproc-per-node=G -m elpips 2afc --data DIR ...`` shares the triplets out between the ranks and
gives the same numbers as one process (rank 0 prints and writes ``--out``)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

from elpips import distributed
from elpips.experiments.twoafc import agreed_seed, choose_categories, evaluate_2afc, my_triplet_count
from elpips.io import write_json

from .common import (
    add_metric_options,
    make_metric,
    metric_label,
    parse_categories,
    positive_int,
    progress_bar,
    weights_report,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "2afc",
        description="Score a metric on BAPPS 2AFC triplets: per triplet (d0<d1)(1-h) + (d1<d0)h + (d0=d1)/2, "
                    "h = fraction of humans preferring p1. DIR holds 2afc/<split>/<category>/{ref,p0,p1,judge}/ "
                    "(scripts/download_dataset_valonly.sh of github.com/richzhang/PerceptualSimilarity downloads it "
                    "into dataset/).",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="BAPPS dataset folder (containing 2afc/)")
    parser.add_argument("--split", default="val", help="split folder under 2afc/")
    parser.add_argument("--categories", nargs="+", default=None, metavar="NAME",
                        help="categories to score, space- or comma-separated (default: all in the split)")
    add_metric_options(parser)
    parser.add_argument("--samples", type=positive_int, default=32, metavar="N",
                        help="E-LPIPS samples per distance, shared by p0 and p1")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="score only the first N triplets of each category (quick runs)")
    parser.add_argument("--batch-size", type=positive_int, default=50,
                        help="triplets per batch; each batch-sized chunk of a category has its own "
                             "seeded samples, so the scores depend on --seed and --batch-size, not on the number "
                             "of processes")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the JSON result to FILE")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Score on one process, or sharded over the ranks of a ``torchrun`` launch (same result; rank 0 reports)."""
    categories = parse_categories(args.categories)
    choose_categories(args.data, args.split, categories)  # bad data or names fail before the metric loads
    with distributed.process_group(args.device) as device:
        if distributed.is_distributed():
            args.device = str(device)
        rank, world = distributed.rank_and_world()  # decided inside the group: after it, every rank is "rank 0"
        metric = make_metric(args) if rank == 0 else _quiet(make_metric, args)
        seed = agreed_seed(args.seed)
        total = my_triplet_count(args.data, args.split, categories, args.limit, args.batch_size)
        label = f"2afc {metric.name}" + (f" [rank {rank}/{world}]" if world > 1 else "")
        with progress_bar(label, total, unit="triplet", enabled=rank == 0) as bar:
            result = evaluate_2afc(metric, args.data, args.split, categories, args.samples, args.limit,
                                   args.batch_size, progress=bar.update, seed=seed)
    if rank != 0:
        return 0
    report = {"metric": metric.name, "categories": result.categories, "mean": result.mean,
              "triplets": result.triplets, "counts": result.counts, "split": args.split,
              "samples": args.samples if metric.is_stochastic else 1, "seed": result.seed,
              "batch_size": args.batch_size, "processes": world, **weights_report(metric)}
    if args.out:
        write_json(args.out, report)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    width = max(len(name) for name in [*result.categories, "mean"])
    print(f"2AFC agreement, {metric_label(metric)}, split {args.split} "
          f"({result.triplets} triplets{', ' + str(args.samples) + ' samples each' if metric.is_stochastic else ''}"
          f"{f', {world} processes' if world > 1 else ''}):")
    for name, score in result.categories.items():
        print(f"  {name:<{width}}  {score:.4f}  ({result.counts[name]} triplets)")
    print(f"  {'mean':<{width}}  {result.mean:.4f}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _quiet(function, *arguments):
    """``function(*arguments)`` with its stderr notes dropped (ranks other than 0 repeat rank 0's notes)."""
    with contextlib.redirect_stderr(io.StringIO()):
        return function(*arguments)
