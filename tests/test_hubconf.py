"""``hubconf.py``: torch.hub entry points from a local checkout, installed or not."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import elpips
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("entry,name", [("elpips_vgg", "elpips-vgg"), ("lpips_alex", "lpips-alex")])
def test_hub_load_local(entry, name):
    metric = torch.hub.load(str(ROOT), entry, source="local", backbone_weights="random", device="cpu")
    assert isinstance(metric, elpips.Metric) and metric.name == name


def test_hub_entry_points_are_the_named_metrics():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = {name for name, value in vars(hubconf).items() if inspect.isfunction(value) and name[0] != "_"}
    assert entries == {"elpips_vgg", "elpips_squeeze", "lpips_vgg", "lpips_squeeze", "lpips_alex"}
    assert all(entry.replace("_", "-") in elpips.METRIC_NAMES for entry in entries)


NOT_INSTALLED = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "elpips":
            raise ModuleNotFoundError("No module named 'elpips'")
sys.meta_path.insert(0, Refuse())
import torch
metric = torch.hub.load(sys.argv[1], "lpips_squeeze", source="local", backbone_weights="random", device="cpu")
import elpips
x = torch.rand(1, 3, 32, 32)
print(elpips.__file__, metric.name, float(metric(x, x)))
"""


def test_hub_load_from_a_checkout_without_install():
    result = subprocess.run([sys.executable, "-c", NOT_INSTALLED, str(ROOT)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    path, name, distance = result.stdout.split()
    assert Path(path) == ROOT / "core" / "__init__.py" and name == "lpips-squeeze" and float(distance) == 0.0
