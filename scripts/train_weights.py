"""``elpips train-weights --data DIR --metric NAME --out WEIGHTS.npz``: learn the per-channel linear weights of a
metric's taps from BAPPS-layout 2AFC judgements (the LPIPS training; :mod:`elpips.experiments.weight_training`).

The run folder (``--run-dir``, default ``WEIGHTS-run/`` beside ``--out``) belongs to the run
(:class:`~elpips.scripts.run_folder.RunFolder`): ``run.json`` records what determines the weights (data, splits,
categories, limits, the training settings, the start, the metric's identity, the seed), ``checkpoint.pt`` (every
``--checkpoint-every`` steps and every epoch; ``--resume`` continues bit-exactly, with the recorded settings),
``log.json`` (options, the validation curve, comparisons) and ``epoch-NN.npz`` (the weights after each epoch).
``--out`` is written at the end. ``torchrun --nproc-per-node=G -m elpips train-weights ...`` shares every batch out
between the ranks with the one-process result (rank 0 claims the folder, writes and reports)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from elpips import distributed
from elpips.experiments.reductions import tap_channels
from elpips.experiments.triplet_reader import BappsTriplets
from elpips.experiments.weight_training import (
    RECIPES,
    StepReport,
    TrainingSettings,
    check_training,
    train_weights,
    validation_scores,
    validation_set,
    weight_correlations,
)
from elpips.io import ensure_output_dir, write_json
from elpips.record import tensor_digest
from elpips.solver import CHECKPOINT_NAME, ProgressReport, phase
from elpips.weights import load_linear_weights, save_linear_weights

from .common import (
    add_metric_options,
    make_metric,
    metric_label,
    parse_categories,
    positive_int,
    run_record,
    samples_text,
    weights_report,
)
from .run_folder import RunFolder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-weights",
        description="Train the non-negative per-channel linear weights of every tap of a metric (frozen network) "
                    "on 2AFC triplets, with LPIPS' ranking loss, Adam and its epoch schedule; score a held-out "
                    "split after every epoch. DIR holds 2afc/<split>/<category>/{ref,p0,p1,judge}/.",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="BAPPS dataset folder (containing 2afc/)")
    parser.add_argument("--out", required=True, metavar="WEIGHTS.npz", help="learned weights (Metric(linear_weights=))")
    parser.add_argument("--split", default="train", help="training split")
    parser.add_argument("--categories", nargs="+", default=None, metavar="NAME",
                        help="training categories (default: all)")
    parser.add_argument("--val-split", default="val", help="held-out split scored every epoch")
    parser.add_argument("--val-categories", nargs="+", default=None, metavar="NAME", help="default all")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N", help="first N triplets per category")
    parser.add_argument("--val-limit", type=positive_int, default=None, metavar="N",
                        help="first N held-out triplets per category (validation keeps V x 2 x channels floats)")
    add_metric_options(parser, choices=METRICS_WITH_WEIGHTS)
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="lpips",
                        help="lpips: the LPIPS trainer's settings; kettunen: the E-LPIPS authors' "
                             "train_run.py (zero start, warm-up, symmetric loss, no ensemble in training)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs at the base rate")
    parser.add_argument("--decay-epochs", type=int, default=None, help="epochs with a decaying rate")
    parser.add_argument("--lr", type=float, default=None, help="Adam base learning rate")
    parser.add_argument("--beta1", type=float, default=None, help="Adam beta1 (lpips 0.5, kettunen 0.9)")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="W > 0: rate scaled by clip((step - W) / W, 0, 1) (lpips 0, kettunen 50)")
    parser.add_argument("--symmetric-loss", action=argparse.BooleanOptionalAction, default=None,
                        help="average the loss with p0 and p1 swapped (lpips off, kettunen on)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="triplets per step")
    parser.add_argument("--chunk-size", type=positive_int, default=None,
                        help="triplets per ensemble-sample draw and per unit shared between processes")
    parser.add_argument("--val-samples", type=positive_int, default=None,
                        help="E-LPIPS samples per validation distance")
    parser.add_argument("--ensemble", action=argparse.BooleanOptionalAction, default=None,
                        help="E-LPIPS: train under ensemble samples (lpips recipe) or without them (kettunen)")
    parser.add_argument("--init", default=None, metavar="lpips|zeros|NAME|PATH",
                        help="starting weights: the recipe's initialisation, or a weights name/file")
    parser.add_argument("--cache-reductions", action="store_true",
                        help="deterministic networks: keep every training triplet's reductions in memory after the "
                             "first pass (N x 2 x channels floats)")
    parser.add_argument("--run-dir", default=None, metavar="DIR",
                        help="the run's folder: run.json, checkpoint and log (default WEIGHTS-run/ beside --out)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir (with its recorded settings and seed)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=None, help="steps")
    parser.add_argument("--compare-to", nargs="+", default=[], metavar="WEIGHTS",
                        help="also score these weights (names or files) on the held-out split and correlate them "
                             "tap by tap with the learned ones")
    parser.set_defaults(handler=run)


METRICS_WITH_WEIGHTS = ("elpips-vgg", "elpips-squeeze", "lpips-vgg", "lpips-squeeze")


def settings_from(args: argparse.Namespace, seed: int) -> TrainingSettings:
    initialization = args.init if args.init in ("lpips", "zeros") else None
    return TrainingSettings.from_recipe(
        args.recipe, epochs=args.epochs, decay_epochs=args.decay_epochs, learning_rate=args.lr, beta1=args.beta1,
        warmup_steps=args.warmup_steps, symmetric_loss=args.symmetric_loss,
        batch_size=args.batch_size, chunk_size=args.chunk_size, val_samples=args.val_samples, ensemble=args.ensemble,
        initialization=initialization, seed=seed, checkpoint_every=args.checkpoint_every,
        cache_reductions=args.cache_reductions or None)


def run(args: argparse.Namespace) -> int:
    """Check everything that can fail early, then train on one process or every rank of a launch."""
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must name an .npz file, got '{out}'")
    folder = RunFolder(args.run_dir or out.with_name(out.stem + "-run"), "train-weights", resume=args.resume,
                       argv=getattr(args, "argv", None), folder_option="--run-dir")
    start = None if args.init in (None, "lpips", "zeros") else load_linear_weights(args.init)[0]
    compared = {spec: load_linear_weights(spec)[0] for spec in args.compare_to}
    with distributed.process_group(args.device) as device:  # --threads: common.command_settings
        if distributed.is_distributed():
            args.device = str(device)
        return train(args, folder, out, start, compared)


def train(args: argparse.Namespace, folder: RunFolder, out: Path, start: list[torch.Tensor] | None,
          compared: dict) -> int:
    """Read the data, build the metric, reduce the held-out split and check it all (nothing is created before),
    then claim the run folder (rank 0; the other ranks wait) and train."""
    main = distributed.is_main_process()
    seed = folder.agree(lambda folder: (folder.check(), run_seed(folder, args.seed))[1])
    settings = settings_from(args, seed)
    train_set = BappsTriplets.from_folder(args.data, args.split, parse_categories(args.categories), args.limit)
    val_set = BappsTriplets.from_folder(args.data, args.val_split, parse_categories(args.val_categories),
                                        args.val_limit)
    metric = make_metric(args, seed=seed, announce=main)
    train_set.min_size = val_set.min_size = metric.min_size
    check_training(metric, train_set, val_set, settings, start)
    _check_compared(compared, tap_channels(metric))
    recorded = folder.agree(lambda folder: folder.settings(record(args, metric, seed, settings, train_set, val_set,
                                                                  start)))
    with phase(f"train-weights: reducing {len(val_set)} held-out triplets ({samples_text(settings.val_samples)} each)",
               enabled=main):
        held_out = validation_set(metric, val_set, settings)  # reads every held-out file: bad data stops here
    with folder.claim(recorded):
        if main:
            ensure_output_dir(out.parent)
        return _train_and_report(args, settings, out, folder.path, metric, start, compared, train_set, val_set,
                                 held_out)


def run_seed(folder: RunFolder, requested: int | None) -> int:
    """``--seed``, 0 by default (a run without one is reproducible); on resume the run's recorded seed."""
    if requested is None and folder.recorded_settings() is None:
        requested = 0
    return folder.seed(requested)


def record(args: argparse.Namespace, metric, seed: int, settings: TrainingSettings, train_set: BappsTriplets,
           val_set: BappsTriplets, start: list[torch.Tensor] | None) -> dict[str, Any]:
    """The run's record (``run.json``; a resume must repeat it): the data, splits, categories and limits, the
    training settings, the start, the metric's identity and the seed."""
    return run_record(
        args, [metric], seed, data=str(args.data), split=args.split, categories=_names(train_set), limit=args.limit,
        train_triplets=len(train_set), val_split=args.val_split, val_categories=_names(val_set),
        val_limit=args.val_limit, validation_triplets=len(val_set), training=asdict(settings),
        init=args.init or settings.initialization, init_sha256=None if start is None else tensor_digest(start))


def _names(triplets: BappsTriplets) -> list[str]:
    return list(dict.fromkeys(triplets.categories))


def _train_and_report(args, settings: TrainingSettings, out: Path, run_dir: Path, metric, start, compared: dict,
                      train_set: BappsTriplets, val_set: BappsTriplets, held_out) -> int:
    main = distributed.is_main_process()
    checkpoint = run_dir / CHECKPOINT_NAME
    log = {"command": "train-weights", "data": str(args.data), "split": args.split, "val_split": args.val_split,
           "train_triplets": len(train_set), "validation_triplets": len(val_set), "recipe": args.recipe,
           "settings": vars(settings).copy(), "init": args.init or settings.initialization,
           "scale_levels": metric.scale_levels, "dropout_keep": metric.dropout_keep,
           "processes": distributed.rank_and_world()[1], **weights_report(metric), "out": str(out), "history": []}
    log.pop("linear_weights")  # the metric's own weights, which training does not use
    progress = Progress(metric.name, settings, len(train_set)) if main else None

    def on_epoch(history: list[dict], weights: list[torch.Tensor]) -> None:
        if main:
            progress.epoch_line(history[-1])
            save_linear_weights(run_dir / f"epoch-{history[-1]['epoch']:02d}.npz", weights)
            write_json(run_dir / "log.json", {**log, "history": history})

    try:  # a resumed run that ended before its first checkpoint starts again
        result = train_weights(metric, train_set, val_set, settings, start, checkpoint,
                               args.resume and checkpoint.is_file(), progress.step if progress else None, on_epoch,
                               held_out=held_out)
    finally:
        if progress is not None:
            progress.close()
    if not main:
        return 0
    log["history"] = result.history
    log["resumed_from_step"] = result.resumed_from
    log["comparisons"] = {spec: {"validation": validation_scores(result.validation, weights),
                                 "correlation": weight_correlations(result.weights, weights)}
                          for spec, weights in compared.items()}
    save_linear_weights(out, result.weights)
    write_json(run_dir / "log.json", log)
    report(log, metric, out, run_dir)
    return 0


def _check_compared(compared: dict, channels: list[int]) -> None:
    """``--compare-to`` weights must fit the metric's taps (checked before the run, not after it)."""
    for spec, weights in compared.items():
        if [len(w) for w in weights] != channels:
            raise ValueError(f"--compare-to {spec}: channels {[len(w) for w in weights]} do not fit this metric's "
                             f"taps {channels}")


def report(log: dict, metric, out: Path, run_dir: Path) -> None:
    first, last = log["history"][0]["validation"], log["history"][-1]["validation"]
    print(f"train-weights {metric_label(metric)}: {log['train_triplets']} training triplets, "
          f"{len(log['history']) - 1} epochs; held-out 2AFC ({log['validation_triplets']} triplets)")
    print(f"  initial weights  {first['mean']:.4f}")
    print(f"  learned weights  {last['mean']:.4f}")
    for spec, comparison in log["comparisons"].items():
        taps = " ".join("-" if r is None else f"{r:.2f}" for r in comparison["correlation"]["per_tap"])
        overall = comparison["correlation"]["all"]
        print(f"  {spec}  {comparison['validation']['mean']:.4f}  (correlation with learned: all "
              f"{'-' if overall is None else f'{overall:.3f}'}; per tap {taps})")
    print(f"wrote {out} and {run_dir / 'log.json'}")


class Progress:
    """Progress over the run's steps (:class:`~elpips.solver.ProgressReport`: a tqdm bar on a terminal, plain
    lines every 10% and at least every 10 s otherwise), and one line per epoch."""

    def __init__(self, name: str, settings: TrainingSettings, triplets: int) -> None:
        per_epoch = -(-triplets // settings.batch_size)
        self.total = per_epoch * settings.total_epochs
        self.report = ProgressReport(f"train-weights {name}", self.total, self.describe)

    @staticmethod
    def describe(info: StepReport) -> dict:
        return {"epoch": f"{info.epoch}/{info.total_epochs}", "batch": f"{info.batch}/{info.batches}",
                "loss": f"{info.loss:.4f}", "lr": f"{info.learning_rate:.3g}"}

    def step(self, info: StepReport) -> None:
        self.report(info)

    def epoch_line(self, record: dict) -> None:
        self.report.bar.clear()  # the bar of a terminal; without one it is disabled and this does nothing
        print(f"train-weights: epoch {record['epoch']} done: loss {record['train_loss']:.4f}, training agreement "
              f"{record['train_agreement']:.4f}, held-out 2AFC {record['validation']['mean']:.4f}", file=sys.stderr)

    def close(self) -> None:
        self.report.close()

