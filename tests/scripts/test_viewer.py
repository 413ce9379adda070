"""The viewer's layout: the comparison strip scaled to the page width (click to enlarge), the animations enlarged
like the frame view and pixelated, the 2x2 tiled preview of the current frame with its seam statistic. Checked in
the HTML always and, where Chromium is installed, measured in a headless browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from elpips.scripts.render.frames import ExportSettings
from elpips.scripts.render.run import render_run
from elpips.scripts.render.viewer import render_index, write_index

HEIGHT, WIDTH = 24, 200
WINDOW_WIDTH = 1100
SEAMS = [1.0, 2.5, float("inf"), 1.25]


def wide_run(tmp_path):
    """A rendered run of 4 wide frames compared under two more metrics: its comparison strip is wider than the
    browser window."""
    frames = np.random.default_rng(0).integers(0, 256, (4, HEIGHT, WIDTH, 3), dtype=np.uint8)
    weights = {"metric": "elpips-vgg", "calibrated": True}

    def log(name):
        return {"weights": {**weights, "metric": name}, "size": [HEIGHT, WIDTH], "keyframes": ["a", "b"],
                "result": {"energy": 1.0, "distances": [0.1] * 3, "seam_statistic": SEAMS}}

    main = {**log("elpips-vgg"), "compare": [{"metric": m, "dir": f"compare/{m}"} for m in ("lpips-vgg", "l2")]}
    compared = [(log("lpips-vgg"), frames), (log("l2"), frames)]
    render_run(tmp_path, main, frames, ExportSettings(scale=4), compared)
    (tmp_path / "log.json").write_text(json.dumps(main))
    return main


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_comparison_strip_fits_and_animations_are_enlarged_pixelated_in_the_html(tmp_path):
    log = wide_run(tmp_path)
    page = render_index(log, has_comparison=True)
    parser = Tags()
    parser.feed(page)
    by_src = {attributes.get("src"): (tag, attributes) for tag, attributes in parser.tags}
    frame_width = next(attributes for _, attributes in parser.tags if attributes.get("id") == "frame")["width"]
    for name in ("animation.gif", "animation.mp4"):
        tag, attributes = by_src[name]
        assert "pixel" in attributes["class"].split() and attributes["width"] == frame_width, name
    assert "fit" in by_src["comparison.png"][1]["class"].split()
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert re.search(r"img\.pixel, video\.pixel \{[^}]*image-rendering: pixelated", style)
    assert re.search(r"\.fit \{[^}]*max-width: 100%", style) and re.search(r"\.fit\.enlarged \{[^}]*none", style)
    assert "classList.toggle('enlarged')" in page


def test_tiled_preview_of_the_current_frame_and_its_seam_statistic_in_the_html(tmp_path):
    log = wide_run(tmp_path)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    parser = Tags()
    parser.feed(page)
    preview = next(attributes for tag, attributes in parser.tags if attributes.get("id") == "tiled")
    frame = next(attributes for tag, attributes in parser.tags if attributes.get("id") == "frame")
    assert preview["data-src"] == frame["src"] == "frames/frame_000.png"  # its source: the current frame
    assert 'url("frames/frame_000.png")' in preview["style"]
    width = int(frame["width"])
    assert f"width: {2 * width}px" in preview["style"] and f"background-size: {width}px" in preview["style"]
    seams = json.loads(re.search(r'<script id="seam-list" type="application/json">(.*?)</script>', page).group(1))
    assert seams == [1.0, 2.5, "infinite", 1.25]
    assert "tiled.style.backgroundImage" in page  # the slider and the player move the preview along
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert title.startswith(f"{tmp_path.name}: geodesic a → b") and "/" not in title
    assert "/" not in render_index({**log, "keyframes": ["/abs/dir/a.png", "/abs/b.png"]}).split("</title>")[0]


MEASURE = """
<script>
window.addEventListener('load', () => {
  const size = element => Math.round(element.getBoundingClientRect().width);
  const strip = document.getElementById('comparison');
  const before = size(strip), scroll = document.documentElement.scrollWidth;
  strip.click();
  const enlarged = size(strip);
  const gif = document.querySelector('img[src="animation.gif"]');
  const tiled = document.getElementById('tiled');
  tiled.scrollIntoView();
  const box = tiled.getBoundingClientRect();
  const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
  const frameBox = document.getElementById('frame').getBoundingClientRect();
  const scan = document.getElementById('scanline').getBoundingClientRect();
  const video = document.getElementById('side-by-side').getBoundingClientRect();
  const film = [...document.querySelectorAll('#filmstrip img')]
    .map(img => Math.round(img.getBoundingClientRect().height));
  let smallest = 1000;
  document.querySelectorAll('body *').forEach(element => {
    const visible = [...element.childNodes].some(node => node.nodeType === 3 && node.textContent.trim());
    if (visible && element.getBoundingClientRect().width > 0)
      smallest = Math.min(smallest, parseFloat(getComputedStyle(element).fontSize));
  });
  show(2);
  const result = {scan: [Math.round(scan.width), Math.round(scan.height)], video: Math.round(video.width),
                  film: film, smallestFont: smallest, title: document.title,
                  page: document.documentElement.clientWidth, strip: before, enlarged: enlarged,
                  tiled: [Math.round(box.width), Math.round(box.height)], tiledVisible: hit === tiled,
                  frameBox: [Math.round(frameBox.width), Math.round(frameBox.height)],
                  tiledAfter: tiled.style.backgroundImage, seamAfter: document.getElementById('seam').textContent,
                  natural: strip.naturalWidth, frame: size(document.getElementById('frame')), gif: size(gif),
                  rendering: getComputedStyle(gif).imageRendering, scroll: scroll};
  document.body.setAttribute('data-measured', JSON.stringify(result));
});
</script>
"""


@pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("CI"),
                    reason="Chromium is not installed (.ci/run installs it, and there the test never skips)")
def test_layout_measured_in_headless_chromium(tmp_path):
    assert shutil.which("chromium"), "Chromium is missing: .ci/run installs it with apt-get"
    wide_run(tmp_path)
    log = json.loads((tmp_path / "log.json").read_text())  # shown as an interpolation's side-by-side video
    log["files"].update(comparison_mp4="animation.mp4", scanline_comparison="scanline.png")
    write_index(tmp_path, log, has_comparison=True)
    page = (tmp_path / "index.html").read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>")
    (tmp_path / "measure.html").write_text(page, encoding="utf-8")
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WINDOW_WIDTH},2000",
               "--virtual-time-budget=3000", "--allow-file-access-from-files"]
    dom = subprocess.run([*browser, "--dump-dom", (tmp_path / "measure.html").as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    found = re.search(r"data-measured=\"([^\"]*)\"", dom)
    assert found, dom[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"'))
    assert measured["natural"] > measured["page"]  # the strip is wider than the page ...
    assert measured["strip"] <= measured["page"]  # ... and shown scaled down to fit
    assert measured["scroll"] == measured["page"]  # before the click, nothing is wider than the page
    assert abs(measured["enlarged"] - measured["natural"]) <= 2  # a click shows it at full size (+ border)
    assert measured["gif"] == measured["frame"] > WIDTH and measured["rendering"] == "pixelated"
    frame_w, frame_h = measured["frameBox"]  # the frame view, border included
    assert measured["tiledVisible"] and measured["tiled"] == [2 * (frame_w - 2) + 2, 2 * (frame_h - 2) + 2]
    assert measured["scan"][1] >= 160 and measured["scan"][0] >= WIDTH  # not a thin strip
    assert measured["video"] >= 480  # the side-by-side video is not squeezed by its neighbours
    assert len(measured["film"]) == 4 and min(measured["film"]) >= 64  # the filmstrip: every frame, 64 px tall
    assert measured["smallestFont"] >= 12 and "/" not in measured["title"]
    assert "frame_002.png" in measured["tiledAfter"] and measured["seamAfter"].endswith("frame 2: infinite")
