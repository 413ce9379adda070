"""The package metadata of ``pyproject.toml``: an SPDX licence with its files, the MP4 encoder as a dependency."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_licence_is_an_spdx_string_with_existing_files_and_a_setuptools_that_reads_it():
    project = PYPROJECT["project"]
    assert project["license"] == "BSD-2-Clause"  # a TOML table is deprecated by setuptools
    assert project["license-files"] and all((ROOT / name).is_file() for name in project["license-files"])
    assert "BSD 2-Clause" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "setuptools>=77" in PYPROJECT["build-system"]["requires"]


def test_the_mp4_encoder_is_a_base_dependency():
    assert any(dependency.startswith("imageio-ffmpeg") for dependency in PYPROJECT["project"]["dependencies"])
