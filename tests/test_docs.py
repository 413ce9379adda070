"""The documentation's examples run, so they cannot drift from the code.

- Every ```python block of README.md and docs/ runs (the blocks of one file in one namespace, in order), on the
  seeded random backbone: ``elpips.Metric`` (and the adapters' and ``hubconf.py``'s metrics) is replaced by a
  subclass whose backbone weights are always ``"random"``, built once per distinct arguments and handed out as
  copies; ``lpips.LPIPS`` gets a random backbone and ``torch.hub.load`` this checkout. Images from
  ``elpips.io.load_image(s)`` are cut to 32x32 px; step counts are cut to 1, ensemble samples (``n=``, the
  solvers' ``eval_samples``, ``max_samples``) to 2-4 and frames to 3. Blocks that build on names the page explains
  but does not define see small tensors ``x, y, ref, a, b, images, preds, target`` and a ``metric``. A block
  preceded by a line ``<!-- not-run: REASON -->`` is skipped.
- The ``>>>`` examples in the docstrings of the public modules run as doctests (imported as ``elpips.*``: the
  package maps those names onto core/, barycenters/, geodesics/ ...).
- The README's tour runs, shrunk: ``--backbone-weights random``, 32 px, one step, two samples, one thread, a
  temporary folder.
"""

from __future__ import annotations

import copy
import doctest
import functools
import importlib
import re
import shlex
from pathlib import Path

import elpips
import elpips.adapters
import elpips.barycenters
import elpips.geodesics
import elpips.io
import lpips
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKIP_MARK = "<!-- not-run"
SIZE = 32


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown file as (line number, code), without those marked not-run."""
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            marked = any(lines[k].strip().startswith(SKIP_MARK) for k in range(max(0, i - 2), i))
            if not marked:
                blocks.append((start + 1, "\n".join(lines[start:end])))
            i = end
        i += 1
    return blocks


def shrink_python(code: str) -> str:
    """Fewer steps, samples and frames: the examples' numbers are for real runs."""
    code = re.sub(r"\bsteps=\d+", "steps=1", code)
    code = re.sub(r"\bn=\d+", "n=2", code)
    code = re.sub(r"\bframes=\d+", "frames=3", code)
    code = re.sub(r"\bmax_samples=\d+", "max_samples=4", code)
    code = re.sub(r"\.estimate\((\w+), (\w+)\)", r".estimate(\1, \2, max_samples=4)", code)
    return re.sub(r"\brange\((\d+)\)", lambda m: f"range({min(int(m.group(1)), 2)})", code)


BUILT: dict[tuple, elpips.Metric] = {}
"""One pristine metric per distinct constructor arguments, for the whole run."""


class BuiltOnce(type):
    """Builds each distinct metric once (a random VGG16 takes about a second on a busy machine) and hands out deep
    copies of that unused metric, which behave exactly as a newly built one (same weights, same generator state)."""

    def __call__(cls, name: str = "elpips-vgg", backbone_weights: str = "random", *args, **kwargs):
        kwargs.setdefault("seed", 0)
        key = (cls, name, repr(args), repr(sorted(kwargs.items())))
        if key not in BUILT:
            BUILT[key] = super().__call__(name, "random", *args, **kwargs)
        return copy.deepcopy(BUILT[key])


class RandomBackboneMetric(elpips.Metric, metaclass=BuiltOnce):
    """``elpips.Metric`` on the seeded random backbone, whatever the example asks for (no downloads here)."""


def few_eval_samples(solve):
    """A solver whose many-sample evaluations use 2 samples unless the example says otherwise."""

    @functools.wraps(solve)
    def shrunk(*args, **kwargs):
        kwargs.setdefault("eval_samples", 2)
        return solve(*args, **kwargs)

    return shrunk


def hub_load_here(load):
    """``torch.hub.load`` of any repository loads this checkout instead (nothing is downloaded)."""

    def local(repo_or_dir, model, *args, source="github", **kwargs):  # noqa: ARG001 - the repository is replaced
        return load(str(ROOT), model, *args, source="local", **kwargs)

    return local


@pytest.fixture
def docs_env(monkeypatch, tmp_path):
    load_image, load_images = elpips.io.load_image, elpips.io.load_images
    monkeypatch.setattr(elpips, "Metric", RandomBackboneMetric)
    monkeypatch.setattr(elpips.adapters, "Metric", RandomBackboneMetric)
    monkeypatch.setattr(lpips, "LPIPS", functools.partial(lpips.LPIPS, pnet_rand=True, verbose=False))
    monkeypatch.setattr(torch.hub, "load", hub_load_here(torch.hub.load))
    for package in (elpips.geodesics, elpips.barycenters):
        monkeypatch.setattr(package, "solve", few_eval_samples(package.solve))
    monkeypatch.setattr(elpips.io, "load_image", lambda *a, **k: load_image(*a, **k)[..., :SIZE, :SIZE])
    monkeypatch.setattr(elpips.io, "load_images", lambda *a, **k: load_images(*a, **k)[..., :SIZE, :SIZE])
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    return tmp_path


def page_namespace() -> dict:
    pictures = torch.rand(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    x, y, ref, a, b = (pictures[i : i + 1] for i in range(5))
    return {"torch": torch, "elpips": elpips, "metric": elpips.Metric("elpips-vgg"),
            "x": x, "y": y, "ref": ref, "a": a, "b": b, "images": pictures[:3],
            "preds": x * 2 - 1, "target": y * 2 - 1}  # the torchmetrics adapter's [-1, 1] inputs


PAGES = [path for path in DOC_FILES if python_blocks(path)]


def test_the_pages_have_examples():
    assert ROOT / "README.md" in PAGES and len(PAGES) >= 5


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path, docs_env):
    namespace = page_namespace()
    for line, code in python_blocks(path):
        try:
            exec(compile(shrink_python(code), f"{path.name}:{line}", "exec"), namespace)
        except Exception as error:  # noqa: BLE001 - name the block that failed
            raise AssertionError(f"{path.relative_to(ROOT)}, the python block at line {line}: {error!r}") from error


PUBLIC_MODULES = [
    "elpips", "elpips.metric", "elpips.spatial", "elpips.estimate", "elpips.io", "elpips.ensemble",
    "elpips.transforms", "elpips.barycenters", "elpips.barycenters.solver", "elpips.geodesics",
    "elpips.geodesics.solver", "elpips.solver", "elpips.experiments", "elpips.experiments.robustness",
    "elpips.experiments.ablation", "elpips.experiments.twoafc", "elpips.experiments.weight_training",
    "elpips.adapters", "elpips.textures", "elpips.precision", "elpips.record",
]


def test_docstring_examples_run(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(elpips, "Metric", RandomBackboneMetric)  # the examples ask for the random backbone anyway
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    examples = 0
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for test in finder.find(module, name, globs={}):
            if test.examples and getattr(test, "filename", None):
                examples += len(test.examples)
                runner.run(test)
    assert examples >= 20
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed (printed above)"


def tour_commands() -> list[str]:
    """The ``elpips ...`` lines of the README's tour."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    tour = text.split("## A tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in tour.strip().split("\n") if line.startswith("elpips ")]


SHRINK = {"--steps": "1", "--frames": "3", "--count": "2", "--size": str(SIZE), "--samples": "2", "--threads": "1"}


def shrink_command(argv: list[str]) -> list[str]:
    argv = [SHRINK.get(argv[i - 1], arg) if i else arg for i, arg in enumerate(argv)]
    command = argv[0]
    if command != "examples":
        argv += ["--backbone-weights", "random", "--seed", "0"] if "--seed" not in argv else [
            "--backbone-weights", "random"]
        argv += ["--threads", "1"] if "--threads" not in argv else []
    if command in {"barycenter", "geodesic"}:
        argv += ["--resize", f"{SIZE}x{SIZE}", "--eval-samples" if command == "barycenter" else "--samples", "2"]
    if command in {"distance", "interpolate"}:
        argv += ["--samples", "2"]
    if command == "train-example":
        argv += ["--crop", "16", "--batch", "2"]
    return argv


def test_readme_tour_runs(monkeypatch, tmp_path, capsys):
    from elpips.scripts.cli import main

    commands = tour_commands()
    assert [shlex.split(c)[1] for c in commands] == [
        "distance", "barycenter", "geodesic", "examples", "interpolate", "train-example"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()  # as in a checkout, where the commands run from
    for command in commands:
        argv = shrink_command(shlex.split(command)[1:])
        assert main(argv) == 0, f"{command!r} (run as elpips {' '.join(argv)}): {capsys.readouterr().err}"
    assert (tmp_path / "outputs" / "map.png").exists()
    assert (tmp_path / "outputs" / "geodesic" / "index.html").exists()
    assert len(list((tmp_path / "outputs" / "pan-x4" / "frames").glob("*.png"))) == 9
