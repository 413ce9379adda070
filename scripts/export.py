"""``elpips export RUN_DIR``: re-render the exports of a saved geodesic run (frames + ``log.json``).

The rendering itself is :func:`elpips.scripts.render.run.render_run`, which ``elpips geodesic`` uses too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from elpips.io import write_json

from .common import add_export_options, settings_from
from .render.frames import ExportSettings
from .render.run import LOG, load_frames, load_log, render_run
from .run_folder import RunFolder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        description="Re-render frames, scanline plots, animations, comparison figure and index.html of a run "
                    "directory written by 'elpips geodesic', optionally with another row, scale or frame rate.",
    )
    parser.add_argument("run_dir", help="run directory (contains log.json and frames/)")
    add_export_options(parser, defaults_from_log=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    folder = RunFolder(run_dir, "export", kind="geodesic", resume=True, resumable=False)
    folder.check_kind()  # an interpolation (or any other run) has exports of its own
    log = load_log(run_dir)
    settings = settings_from(args, ExportSettings(**log.get("export", {})))
    compared = []
    for entry in log.get("compare", []):
        sub_dir = run_dir / entry["dir"]
        sub_log = load_log(sub_dir)
        compared.append((sub_log, load_frames(sub_dir, sub_log)))
    frames = load_frames(run_dir, log)
    with folder.claim():  # no run may write it meanwhile
        render_run(run_dir, log, frames, settings, compared)
        write_json(run_dir / LOG, log)
    written = ", ".join(["frames/", *[name for key, name in log["files"].items() if key not in ("frames", "maps")],
                         *(["maps/"] if "maps" in log["files"] else []), "index.html"])
    print(f"re-rendered {run_dir}: {written} (row {log['export']['row']}, scale {log['export']['scale']}, "
          f"{log['export']['fps']:g} fps)")
    return 0
