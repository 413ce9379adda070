"""Who may import whom (docs/architecture.md): every module of every package, parsed with ``ast``.

Every ``import x`` and ``from x import y`` counts, wherever it stands (module level, inside functions, under
``TYPE_CHECKING``); relative imports are resolved against the package mapping of ``pyproject.toml``
(``package-dir``). Dynamic imports (``importlib``, ``runpy``, code in strings) are not seen; that ``import elpips``
loads the metric only is checked at run time in ``tests/scripts/test_cli_dispatch.py``.

The layers and what each may import:

* ``core`` (``elpips``, with ``elpips.backbones``): the metric and plumbing; nothing above it.
* ``solver`` (``elpips.solver``): ``core`` only.
* ``experiments`` (``elpips.experiments``): ``core`` only (not ``solver``).
* ``barycenters``, ``geodesics`` (the solvers): ``solver`` and ``core``; never each other, ``experiments``,
  ``scripts`` or ``benchmarks``.
* ``benchmarks``: ``core``, the solvers and ``experiments``; nothing of ``scripts`` (no command module, no rendering
  library).
* ``scripts`` (with ``scripts/render``): everything but ``benchmarks``, which only the ``bench`` command (and
  ``check-device``, for its paired timing) imports, inside a function (when it runs).

Exceptions, each with its reason in :data:`EXCEPTIONS`: ``elpips.__main__`` (``python -m elpips``) imports the
command line.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]

LAYERS = {
    "core": "elpips",
    "solver": "elpips.solver",
    "experiments": "elpips.experiments",
    "barycenters": "elpips.barycenters",
    "geodesics": "elpips.geodesics",
    "scripts": "elpips.scripts",
    "benchmarks": "elpips.benchmarks",
}
"""Layer -> its import prefix (a module belongs to the layer of its longest matching prefix)."""

MAY_IMPORT = {
    "core": set(),
    "solver": {"core"},
    "experiments": {"core", "solver"},
    "barycenters": {"core", "solver"},
    "geodesics": {"core", "solver"},
    "benchmarks": {"core", "solver", "experiments", "barycenters", "geodesics"},
    "scripts": {"core", "solver", "experiments", "barycenters", "geodesics"},
}
"""Layer -> the other layers its modules may import (its own layer always)."""

LAZY_ONLY = {("scripts", "benchmarks"): {"elpips.scripts.bench", "elpips.scripts.check_device"}}
"""(importer, imported) -> the modules allowed to make that import, and only inside a function."""

EXCEPTIONS = {
    ("elpips.__main__", "elpips.scripts.cli"):
        "`python -m elpips` is the command line's entry point; `import elpips` never loads it",
}
"""(module, imported module) -> why this import across the layers is allowed."""


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. elpips.benchmarks.suite
    target: str  # the imported module (or the module an imported name lives in)
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = " (inside a function)" if self.in_function else ""
        return f"{self.module} imports {self.target} (line {self.line}){where}"


def package_dirs() -> dict[str, str]:
    """``package-dir`` of pyproject.toml: package -> folder."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        return dict(tomllib.load(file)["tool"]["setuptools"]["package-dir"])


def module_files() -> dict[str, tuple[Path, bool]]:
    """Every module of every mapped package: dotted name -> (file, is a package ``__init__``)."""
    modules = {}
    for package, folder in package_dirs().items():
        for path in sorted((ROOT / folder).glob("*.py")):
            is_package = path.stem == "__init__"
            modules[package if is_package else f"{package}.{path.stem}"] = (path, is_package)
    return modules


def layer_of(name: str) -> str | None:
    """The layer of a dotted module name (``None``: not part of elpips)."""
    matches = [layer for layer, prefix in LAYERS.items() if name == prefix or name.startswith(prefix + ".")]
    return max(matches, key=lambda layer: len(LAYERS[layer]), default=None)


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module, self.known, self.depth = module, known, 0
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[Import] = []

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def _add(self, target: str, node: ast.stmt) -> None:
        self.found.append(Import(self.module, target, node.lineno, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            if node.level - 1 >= len(parts):
                raise AssertionError(f"{self.module}: relative import beyond the top package (line {node.lineno})")
            base = ".".join(parts[:len(parts) - (node.level - 1)])
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module
        for alias in node.names:  # `from elpips import solver` imports the module elpips.solver
            submodule = f"{source}.{alias.name}"
            self._add(submodule if submodule in self.known else source, node)


def all_imports() -> list[Import]:
    files = module_files()
    known = set(files)
    found = []
    for module, (path, is_package) in files.items():
        collector = _Collector(module, is_package, known)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found += collector.found
    return found


def violations() -> tuple[list[str], set[tuple[str, str]]]:
    """Every import that breaks a rule (one line each, with the rule), and the exceptions that were used."""
    problems, used = [], set()
    for item in all_imports():
        source, target = layer_of(item.module), layer_of(item.target)
        if target is None or target == source:
            continue
        if (item.module, item.target) in EXCEPTIONS:
            used.add((item.module, item.target))
            continue
        lazy = LAZY_ONLY.get((source, target))
        if lazy is not None:
            if item.module not in lazy:
                problems.append(f"{item}: only {', '.join(sorted(lazy))} may import {target}")
            elif not item.in_function:
                problems.append(f"{item}: {target} may be imported only inside a function (when the command runs)")
            continue
        if target not in MAY_IMPORT[source]:
            allowed = ", ".join([*sorted(MAY_IMPORT[source]), "itself"])
            problems.append(f"{item}: {source} may import {allowed}; not {target}")
    return problems, used


def test_every_module_keeps_to_its_layer():
    problems, _ = violations()
    assert not problems, "imports across the layers of docs/architecture.md:\n" + "\n".join(problems)


def test_every_exception_is_still_needed():
    _, used = violations()
    stale = set(EXCEPTIONS) - used
    assert not stale, f"exceptions no import needs any more (remove them from EXCEPTIONS): {sorted(stale)}"


def test_the_scan_sees_imports_in_every_form():
    imports = {(item.module, item.target): item for item in all_imports()}
    assert ("elpips.experiments.ablation", "elpips.experiments.robustness") in imports  # from .robustness import
    assert ("elpips", "elpips.spatial") in imports  # from . import spatial
    assert ("elpips.benchmarks.crop", "elpips.estimate") in imports  # from elpips.estimate import Z_95
    assert imports[("elpips.scripts.bench", "elpips.benchmarks.suite")].in_function
    assert not imports[("elpips.benchmarks.suite", "elpips.benchmarks.timing")].in_function


def test_every_package_belongs_to_a_layer_named_after_its_folder():
    for package, folder in package_dirs().items():
        assert layer_of(package) is not None, f"package {package} ({folder}) has no layer in tests/test_layering.py"
    for layer, prefix in LAYERS.items():
        assert Path(package_dirs()[prefix]).name == layer, (layer, prefix)
    mapped = {(ROOT / folder).resolve() for folder in package_dirs().values()}
    for top in {Path(folder).parts[0] for folder in package_dirs().values()}:
        for path in (ROOT / top).rglob("*.py"):
            assert path.parent.resolve() in mapped, f"{path.relative_to(ROOT)} is in no package of pyproject.toml"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end != -1 else None]


def test_architecture_doc_draws_the_same_packages():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawing = re.search(r"```\n(.*?)```", _section(doc, "## Who may import whom"), re.S).group(1)
    drawn = set(re.findall(r"[a-z_]+", re.sub(r"\([^)]*\)", "", drawing, flags=re.S)))
    assert drawn == set(LAYERS), f"drawing {sorted(drawn)} vs the test's layers {sorted(LAYERS)}"
    table = re.findall(r"^\| `([\w/]+)/` \|", _section(doc, "## Packages"), re.M)
    assert {Path(folder).name for folder in table} - {"tests"} == set(LAYERS), table

