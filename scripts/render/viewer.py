"""``index.html`` beside a run's exports: a frame slider with play/pause, the animations, the scanline plots, the
per-segment distances, and (when metrics were compared) the comparison figure with links to each run; for an
interpolated clip, the video against the linear cross-fade. Frames and animations are shown enlarged with
``image-rendering: pixelated``; the comparison strip is scaled down to the page width (as are the scanline plots)
and enlarged by a click. Beside the frame view, a 2x2 tiled preview of the current frame (a CSS background repeated
twice in each direction, drawn at the frame view's enlargement) with the frame's seam statistic
(``result.seam_statistic`` in ``log.json``, see :func:`elpips.textures.seam_statistic`) shows whether the texture
repeats without a seam. It is shown for every run, tileable or not: whether a path's frames tile is exactly what a
user checks, and a plain run's seams are the comparison that makes a tileable run's absence of seams visible.

Self-contained: inline CSS and JavaScript, only relative links to files of the run, no network access.
The frame list is embedded as JSON in ``<script id="frame-list" type="application/json">``.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

from elpips.io import write_text

from ..common import UNCALIBRATED, samples_text
from .frames import NO_ENCODER

INDEX = "index.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
img.pixel, video.pixel { image-rendering: pixelated; border: 1px solid #ccc; }
.fit { max-width: 100%; height: auto; box-sizing: border-box; cursor: zoom-in; }
.fit.enlarged { max-width: none; cursor: zoom-out; }
figure.strip { margin: 0; overflow-x: auto; }
.warn { background: #fff3cd; border: 1px solid #e0c36a; padding: 0.4em 0.8em; display: inline-block; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
section { margin: 1.5em 0; }
.tiled { image-rendering: pixelated; border: 1px solid #ccc; background-repeat: repeat; box-sizing: content-box; }
.seam { font-size: 14px; }
img.scan { max-width: 100%; } video.side { flex: none; max-width: 100%; min-width: 480px; }
.filmstrip { display: flex; gap: 4px; overflow-x: auto; padding-bottom: 4px; }
.filmstrip figure { margin: 0; flex: none; text-align: center; font-size: 12px; cursor: pointer; }
.filmstrip img { height: 64px; width: auto; } .filmstrip figure.current img { outline: 3px solid #d00; }
.row { display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }
"""

_SCRIPT = """
const frames = JSON.parse(document.getElementById('frame-list').textContent);
const fps = Number(document.body.dataset.fps);
const image = document.getElementById('frame');
const slider = document.getElementById('slider');
const label = document.getElementById('frame-label');
const button = document.getElementById('play');
const tiled = document.getElementById('tiled');
const seams = JSON.parse(document.getElementById('seam-list').textContent);
const seamLabel = document.getElementById('seam');
frames.forEach(src => { const preload = new Image(); preload.src = src; });
function show(i) {
  slider.value = i; image.src = frames[i]; label.textContent = `frame ${i} / ${frames.length - 1}`;
  tiled.style.backgroundImage = `url("${frames[i]}")`;
  tiled.dataset.frame = i;
  document.querySelectorAll('.filmstrip figure').forEach(cell =>
    cell.classList.toggle('current', Number(cell.dataset.frame) === i));
  const seam = seams[i];
  seamLabel.textContent = (seam === undefined || seam === null) ? 'seam statistic: not recorded'
    : `seam statistic of frame ${i}: ${typeof seam === 'string' ? seam : Number(seam).toPrecision(3)}`;
}
slider.addEventListener('input', () => show(Number(slider.value)));
let timer = null, direction = 1;
button.addEventListener('click', () => {
  if (timer) { clearInterval(timer); timer = null; button.textContent = 'Play'; return; }
  button.textContent = 'Pause';
  timer = setInterval(() => {
    let i = Number(slider.value) + direction;
    if (i >= frames.length || i < 0) { direction = -direction; i += 2 * direction; }
    show(Math.max(0, Math.min(frames.length - 1, i)));
  }, 1000 / fps);
});
show(0);
document.querySelectorAll('.filmstrip figure').forEach(cell => {
  cell.addEventListener('click', () => show(Number(cell.dataset.frame)));
});
document.querySelectorAll('img.fit').forEach(strip => {
  strip.addEventListener('click', () => strip.classList.toggle('enlarged'));
});
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _distance_table(result: dict) -> str:
    distances = result.get("distances", [])
    half_widths = result.get("half_widths", [0.0] * len(distances))
    rows = "".join(f"<tr><td>{k} → {k + 1}</td><td>{d:.5g}</td><td>± {h:.2g}</td></tr>"
                   for k, (d, h) in enumerate(zip(distances, half_widths, strict=False)))
    return f"<table><tr><th>pair</th><th>distance</th><th>95% CI</th></tr>{rows}</table>"


def _maps_section(maps: dict, info: dict, width: int) -> str:
    """Per-segment distance maps in a row, labelled ``k → k+1``, with their shared colour bar."""
    means = info.get("means", [])
    cells = "".join(
        f"<figure style=\"margin: 0\"><img class=\"pixel\" src=\"{_esc(src)}\" alt=\"map {k} to {k + 1}\" "
        f"width=\"{max(64, width // 3)}\"><figcaption>{k} → {k + 1}"
        + (f" (mean {means[k]:.3g})" if k < len(means) else "") + "</figcaption></figure>"
        for k, src in enumerate(maps.get("segments", [])))
    bar = f"<img src=\"{_esc(maps['colorbar'])}\" alt=\"colour bar\">" if "colorbar" in maps else ""
    note = (f"{samples_text(info['samples'])} per map; one colour range 0 .. "
            f"{info.get('color_limit', info['max']):.3g} "
            f"(largest value {info['max']:.3g}) for all segments; "
            "each map's mean is the segment's distance at those samples.") if "samples" in info else ""
    return (f"<section><h2>Where consecutive frames change</h2><p>{_esc(note)}</p>"
            f"<div class=\"row\">{cells}{bar}</div></section>")


def page_title(log: dict, name: str | None = None) -> str:
    """The page's title: the run folder's ``name``, then what the run is, with file names only (no directories)."""
    metric = log["weights"]["metric"]
    if log.get("title"):
        what = str(log["title"])
    else:
        keyframes = " → ".join(Path(str(keyframe)).name for keyframe in log.get("keyframes", []))
        what = f"geodesic {keyframes} ({metric})"
    return f"{name}: {what}" if name else what


def _tiled_section(log: dict, first: str, width: int, height: int, zoom: int) -> str:
    """The 2x2 tiled preview of the current frame (updated by the script) and its seam statistic."""
    tile_w, tile_h = width * zoom, height * zoom
    ensemble = log["weights"].get("ensemble")
    tileable = bool(log.get("options", {}).get("tileable")
                    or (isinstance(ensemble, dict) and ensemble.get("tileable")))
    note = ("a tileable run: its frames are meant to repeat without a seam." if tileable else
            "not a tileable run (--tileable): seams at the tile borders are expected.")
    return ("<section><h2>Tiled 2x2 preview</h2>"
            f"<div id=\"tiled\" class=\"tiled\" role=\"img\" aria-label=\"current frame tiled 2x2\" data-frame=\"0\" "
            f"data-src=\"{_esc(first)}\" style=\"width: {2 * tile_w}px; height: {2 * tile_h}px; "
            f"background-image: url(&quot;{_esc(first)}&quot;); background-size: {tile_w}px {tile_h}px\"></div>"
            f"<p class=\"seam\"><span id=\"seam\"></span> (about 1: seamless; far above 1: a visible seam). "
            f"{_esc(note)}</p></section>")


FILMSTRIP_FRAMES = 16
SCANLINE_MIN_HEIGHT = 160
"""The scanline evolution is shown at least this many CSS pixels tall (a path of few frames is a thin strip)."""


def _filmstrip(frames: list[str], keyframes: list[int]) -> str:
    """Up to 16 evenly spaced frames in a row, 64 px tall, each a link to that frame in the frame view; then the
    path's ends A | B side by side."""
    count = len(frames)
    picks = sorted({round(k * (count - 1) / max(1, min(count, FILMSTRIP_FRAMES) - 1))
                    for k in range(min(count, FILMSTRIP_FRAMES))})
    keys = set(keyframes)
    cells = "".join(
        f"<figure data-frame=\"{i}\"><img class=\"pixel\" src=\"{_esc(frames[i])}\" alt=\"frame {i}\">"
        f"<figcaption>{i}{' (key)' if i in keys else ''}</figcaption></figure>" for i in picks)
    return ("<section><h2>Filmstrip</h2><p>Click a frame to show it above.</p>"
            f"<div id=\"filmstrip\" class=\"filmstrip\">{cells}</div></section>")


def render_index(log: dict, has_comparison: bool = False, name: str | None = None) -> str:
    """The HTML of ``index.html`` for a run described by its ``log.json`` content.

    Args:
        log: needs ``files`` (from :func:`~elpips.scripts.exports.export_path`), ``weights``, ``export``;
            uses ``keyframes``, ``result``, ``compare`` when present.
        has_comparison: show ``comparison.png``.
        name: the run folder's name, first in the title.
    """
    files, weights, export = log["files"], log["weights"], log["export"]
    width = log.get("size", [0, 0])[1]
    zoom = max(1, 480 // max(1, width)) if width else 1
    title = page_title(log, name)
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_esc(title)}</title>",
             f"<style>{_STYLE}</style></head>",
             f"<body data-fps=\"{float(export['fps'])}\"><h1>{_esc(title)}</h1>"]
    if not weights.get("calibrated", True):
        parts.append(f"<p class=\"warn\">{_esc(weights.get('backbone_weights_description', UNCALIBRATED))}. "
                     "Distances and paths are not perceptual.</p>")
    result = log.get("result", {})
    if result:
        linear = result.get("linear_energy")
        parts.append(f"<p>Path energy Σ d² = {result['energy']:.5g}"
                     + (f" (linear blend: {linear:.5g})" if linear is not None else "")
                     + f", {samples_text(result.get('samples', 1))} per distance; {log.get('steps', '?')} steps.</p>")
    first = files["frames"][0]
    parts.append(
        "<section><h2>Frames</h2>"
        f"<img id=\"frame\" class=\"pixel\" src=\"{_esc(first)}\" alt=\"frame\" width=\"{width * zoom or ''}\"><br>"
        f"<input id=\"slider\" type=\"range\" min=\"0\" max=\"{len(files['frames']) - 1}\" value=\"0\" "
        "style=\"width: 30em\"> <button id=\"play\">Play</button> <span id=\"frame-label\"></span></section>")
    parts.append(_tiled_section(log, first, width, log.get("size", [0, 0])[0], zoom))
    parts.append(_filmstrip(files["frames"], log.get("keyframe_indices") or [0, len(files["frames"]) - 1]))
    shown_width = f" width=\"{width * zoom}\"" if width else ""  # enlarged like the frame view
    animation = ([f"<img class=\"pixel\" src=\"{_esc(files['gif'])}\" alt=\"GIF animation\"{shown_width}>"]
                 if "gif" in files else [])
    if "mp4" in files:
        animation.append(f"<video class=\"pixel\" src=\"{_esc(files['mp4'])}\"{shown_width} controls loop muted>"
                         "</video>")
    else:  # imageio-ffmpeg was missing when the run was exported
        animation.append(f"<p class=\"warn\">{NO_ENCODER}</p>")
    parts.append(f"<section><h2>Animation ({export['fps']:g} fps)</h2><div class=\"row\">{''.join(animation)}"
                 "</div></section>")
    scan_height = max(SCANLINE_MIN_HEIGHT, min(len(files["frames"]) * zoom, 2400))
    parts.append(
        f"<section><h2>Scanline evolution (row {export['row']}, time runs down)</h2><div class=\"row\">"
        f"<img class=\"pixel scan\" src=\"{_esc(files['scanline_marked'])}\" alt=\"middle frame, row marked\""
        f"{shown_width}>"
        f"<img id=\"scanline\" class=\"pixel scan\" src=\"{_esc(files['scanline'])}\" alt=\"scanline evolution\""
        f"{shown_width} height=\"{scan_height}\"></div></section>")
    if "scanline_comparison" in files:  # an interpolated clip: the same clip as a linear cross-fade
        video = (f"<video id=\"side-by-side\" class=\"pixel side\" src=\"{_esc(files['comparison_mp4'])}\" controls "
                 "loop muted></video>"
                 if "comparison_mp4" in files else f"<p class=\"warn\">{NO_ENCODER}</p>")
        parts.append("<section><h2>Against the linear cross-fade</h2><div class=\"row\">"
                     f"{video}<img class=\"pixel fit\" src=\"{_esc(files['scanline_comparison'])}\" "
                     "alt=\"scanline evolution: geodesic and cross-fade, keyframes marked red\"></div></section>")
    if result.get("distances"):
        parts.append(f"<section><h2>Distances between adjacent frames</h2>{_distance_table(result)}</section>")
    if "maps" in files:
        parts.append(_maps_section(files["maps"], log.get("maps", {}), width * zoom))
    if has_comparison:
        links = "".join(f"<li><a href=\"{_esc(entry['dir'])}/index.html\">{_esc(entry['metric'])}</a></li>"
                        for entry in log.get("compare", []))
        parts.append("<section><h2>Comparison</h2><figure class=\"strip\">"
                     "<img id=\"comparison\" class=\"pixel fit\" src=\"comparison.png\" alt=\"comparison of metrics\" "
                     "title=\"click to enlarge\"><figcaption>Scaled to the page width: click to enlarge, click "
                     "again to fit.</figcaption></figure>"
                     f"<ul>{links}</ul></section>")
    parts.append("<p><a href=\"log.json\">log.json</a></p>")
    parts.append(f"<script id=\"frame-list\" type=\"application/json\">{json.dumps(files['frames'])}</script>")
    seams = [value if value is None or math.isfinite(value) else "infinite"
             for value in result.get("seam_statistic", [])]
    parts.append(f"<script id=\"seam-list\" type=\"application/json\">{json.dumps(seams)}</script>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def write_index(run_dir: str | os.PathLike, log: dict, has_comparison: bool = False) -> Path:
    """Write ``run_dir/index.html`` atomically (titled with the folder's name)."""
    return write_text(Path(run_dir) / INDEX, render_index(log, has_comparison, Path(run_dir).resolve().name))
