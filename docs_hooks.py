"""MkDocs hook: lay the package out as it is installed, for mkdocstrings.

pyproject.toml maps ``elpips`` -> ``core/``, ``elpips.barycenters`` -> ``barycenters/`` and so on, which griffe
cannot follow on its own (it finds ``elpips`` through the editable install, but not the sub-packages that live
elsewhere). Before the build, this hook mirrors the mapping as a tree of symbolic links in ``.docs-src/``, the
``paths`` of the python handler in mkdocs.yml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent
TREE = ROOT / ".docs-src"


def build_tree() -> Path:
    """Mirror pyproject's package-dir mapping under ``.docs-src/`` with symbolic links; return the folder."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    if TREE.exists():
        shutil.rmtree(TREE)
    for package, folder in sorted(mapping.items()):
        target = TREE.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in (ROOT / folder).iterdir():
            if entry.name == "__pycache__" or (target / entry.name).exists():
                continue
            if entry.is_dir() and f"{package}.{entry.name}" in mapping:
                continue  # a mapped sub-package: mirrored on its own
            (target / entry.name).symlink_to(entry)
    return TREE


def on_startup(command, dirty):  # noqa: ARG001 - MkDocs' hook signature
    build_tree()


def on_config(config):
    build_tree()
    return config
