"""``elpips attack a1 ... --ablation``: attack A1 against every rung of the ensemble ladder (the paper's Figure 3).

The run folder (``--out``, default ``outputs/attack-a1-ablation-<time>``) belongs to the run
(:class:`~elpips.scripts.run_folder.RunFolder`, kind ``a1-ablation``): an existing run is refused without
``--resume``, a running one by its lock; ``run.json`` records the ladder, the attack settings, the images, the crop,
the full metric's identity and the seed, and ``--resume`` continues with them (any difference is refused) and
skips the rungs that are done. It holds ``attacked-<rung>.png`` (8-bit, exactly what was measured),
``rung-<rung>.json`` (each rung's result as soon as it is done), ``figure.png`` (source, target, one attacked
image per rung), ``results.json`` and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from elpips.configs import LADDER, LADDER_LABELS
from elpips.experiments.ablation import AblationSettings, RungResult, attack_rung
from elpips.experiments.robustness import EIGHT_BIT
from elpips.io import load_image, save_image, write_json, write_text
from elpips.record import tensor_digest

from .common import (
    default_run_dir,
    ensemble_changes,
    make_metric,
    metric_label,
    progress_bar,
    run_record,
    weights_report,
)
from .render.figures import ablation_figure
from .run_folder import RunFolder

FULL_METRIC = "elpips-vgg"
KIND = "a1-ablation"
REPORT_FIELDS = ("distance", "half_width", "anchor_distance", "anchor_half_width", "margin", "margin_half_width",
                 "samples")


def check_options(args: argparse.Namespace) -> None:
    """The ablation runs the ladder's own metrics: ``--metric``/``--metrics`` and the ``--no-X`` switches do not
    apply (parameters such as ``--scale-levels`` do: to every rung that has the piece, and to the full metric)."""
    if args.metrics is not None or args.metric != FULL_METRIC:
        raise ValueError("--ablation attacks every rung of the ladder: leave out --metric/--metrics")
    switches = sorted(name for name, value in ensemble_changes(args).items() if value is False)
    if switches:
        raise ValueError(f"--ablation runs the ladder's own pieces: leave out --no-{', --no-'.join(switches)} "
                         "(use --metrics with ladder names to attack variants of your own)")


def settings_from(args: argparse.Namespace, seed: int) -> AblationSettings:
    return AblationSettings(steps=args.steps, samples_per_step=args.samples_per_step, step_size=args.step_size,
                            seed=seed, check_samples=args.check_samples, eval_max_samples=args.eval_max_samples,
                            levels=EIGHT_BIT)


def _entry(result: RungResult, metric, settings: AblationSettings) -> dict:
    """One rung as written into ``rung-<name>.json`` and ``results.json``."""
    own, full = result.own.row(), result.full.row()
    return {
        "rung": LADDER_LABELS[result.name], "label": metric_label(metric), **weights_report(metric),
        "attacked_image": f"attacked-{result.name}.png",
        "relative_pull": own["relative_pull"], "relative_remaining": own["relative_remaining"],
        "rms_change": own["rms_change"], "attacker_threshold": float(result.attacker_threshold[0]),
        "own": {name: own[name] for name in REPORT_FIELDS},
        "full": {name: full[name] for name in REPORT_FIELDS},
        "settings": asdict(settings),
    }


def record(args: argparse.Namespace, full, settings: AblationSettings, inputs: torch.Tensor) -> dict:
    """The run's record (``run.json``; a resume must repeat it): the ladder, the attack settings, the images (names
    and pixels), the crop, the full metric's identity and the seed."""
    return run_record(args, [full], settings.seed, ladder=list(LADDER), attack=asdict(settings),
                      images=[args.source, args.target, args.anchor], crop=args.crop,
                      inputs_sha256=tensor_digest([inputs]))


def _finished_rung(out: Path, name: str, resume: bool) -> dict | None:
    """The saved entry of a rung that the run being resumed finished (its settings are the run's: ``run.json``)."""
    path = out / f"rung-{name}.json"
    if not resume or not path.is_file():
        return None
    return json.loads(path.read_text())


def run_ablation(args: argparse.Namespace, inputs: torch.Tensor) -> int:
    """Attack every rung (``inputs``: source, target, anchor ``[3, 3, H, W]``) in the run folder ``--out``: a new
    run, or with ``--resume`` the rest of the run there (its recorded seed and settings)."""
    folder = RunFolder(args.out or default_run_dir("attack-a1-ablation"), "attack", kind=KIND, resume=args.resume,
                       argv=getattr(args, "argv", None))
    folder.check()
    settings = settings_from(args, folder.seed(args.seed))
    full = make_metric(args, FULL_METRIC, seed=settings.seed)
    with folder.claim(folder.settings(record(args, full, settings, inputs))):
        return attack_ladder(args, inputs, folder.path, full, settings)


def attack_ladder(args: argparse.Namespace, inputs: torch.Tensor, out: Path, full,
                  settings: AblationSettings) -> int:
    """Attack the rungs not done yet, then write the figure, ``results.json`` and ``table.md`` into ``out``."""
    images = inputs.to(full.device)
    source, target, anchor = images[0:1], images[1:2], images[2:3]
    entries, attacked = [], []
    for index, name in enumerate(LADDER):
        entry = _finished_rung(out, name, args.resume)
        if entry is None:
            metric = make_metric(args, name, seed=settings.seed)
            with progress_bar(f"a1 {name}", args.steps, unit="step") as bar:
                result = attack_rung(metric, full, source, target, anchor, settings,
                                     lambda step, value: bar.update(1))
            save_image(out / f"attacked-{name}.png", result.attacked)
            entry = _entry(result, metric, settings)
            write_json(out / f"rung-{name}.json", entry)
        print(f"rung {index + 1}/{len(LADDER)} {name}: pulled {entry['relative_pull']:.3f}", file=sys.stderr)
        entries.append(entry)
        attacked.append(load_image(out / entry["attacked_image"]))
    calibrated = full.calibrated
    title = "A1 against increasingly rich ensembles" + ("" if calibrated else
                                                       " - RANDOM BACKBONE (uncalibrated, not perceptual)")
    picture = ablation_figure(inputs[0:1], inputs[1:2], attacked, [entry["rung"] for entry in entries],
                              [f"pull {entry['relative_pull']:.3f}" for entry in entries], title)
    save_image(out / "figure.png", picture)
    results = {"experiment": KIND, "source": args.source, "target": args.target, "anchor": args.anchor,
               "crop": args.crop, "size": list(inputs.shape[-2:]), "settings": asdict(settings),
               "full_metric": weights_report(full), "calibrated": calibrated, "ladder": list(LADDER),
               "figure": "figure.png", "table": "table.md", "rungs": entries}
    write_json(out / "results.json", results)
    table = markdown_table(results)
    write_text(out / "table.md", table)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(table)
        print(f"wrote {out}/results.json, {out}/table.md, {out}/figure.png and {len(entries)} attacked images")
    return 0


def markdown_table(results: dict) -> str:
    """The per-rung numbers as a Markdown table (fresh-sample estimates with 95% half-widths)."""
    weights = "" if results["calibrated"] else " **Random backbone (uncalibrated): not perceptual distances.**"
    lines = [
        f"A1 ablation: {results['source']} -> {results['target']} (anchor {results['anchor']}), "
        f"{results['size'][0]}x{results['size'][1]} px, {results['settings']['steps']} steps x "
        f"{results['settings']['samples_per_step']} samples per rung, seed {results['settings']['seed']}.{weights}",
        "",
        "| rung | metric | pull ‖x−s‖/‖t−s‖ | E-LPIPS-VGG d(x,s) | E-LPIPS-VGG d(a,s) | E-LPIPS-VGG margin "
        "| own d(x,s) | own d(a,s) | own margin |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in results["rungs"]:
        full, own = entry["full"], entry["own"]
        cells = [entry["rung"], f"`{entry['metric']}`", f"{entry['relative_pull']:.3f}"]
        for report in (full, own):
            cells += [f"{report['distance']:.3g} ± {report['half_width']:.2g}",
                      f"{report['anchor_distance']:.3g} ± {report['anchor_half_width']:.2g}",
                      f"{report['margin']:+.3g} ± {report['margin_half_width']:.2g}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Distances are fresh-sample means with 95% half-widths (3 significant digits); margin = paired "
                  "d(x,s) − d(a,s) (≤ 0: the attack kept its constraint under that metric); pull 0 = the source, "
                  "1 = as far from it as the target."]
    return "\n".join(lines) + "\n"
