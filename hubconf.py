"""torch.hub entry points: ``torch.hub.load("<repo or checkout>", "elpips_vgg", backbone_weights="random")``.

Every entry point returns an :class:`elpips.Metric`; its keywords are the Metric's (``backbone_weights``,
``device``, ``seed``, ``reduction`` ...). The code is this repository's: an ``elpips`` already imported is used;
else the installed one if it is this checkout (an editable install); else this checkout's ``core/`` folder is
imported as ``elpips`` (what ``torch.hub`` downloads is a bare checkout, never installed).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

dependencies = ["torch", "torchvision", "numpy", "scipy", "imageio", "lpips"]

_CORE = Path(__file__).resolve().parent / "core"


def _elpips():
    """The ``elpips`` package of this checkout (see the module's docstring)."""
    if "elpips" in sys.modules:
        return sys.modules["elpips"]
    try:
        spec = importlib.util.find_spec("elpips")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None or Path(spec.origin).resolve().parent != _CORE:
        spec = importlib.util.spec_from_file_location("elpips", _CORE / "__init__.py",
                                                      submodule_search_locations=[str(_CORE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["elpips"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["elpips"]
        raise
    return module


def _entry(name: str):
    def load(**kwargs):
        return _elpips().Metric(name, **kwargs)

    load.__name__ = name.replace("-", "_")
    load.__doc__ = (f"``elpips.Metric({name!r}, **kwargs)``: keywords as the Metric's; ``backbone_weights=\"random\"`` "
                    "for a smoke run without the ImageNet weights.")
    return load


elpips_vgg = _entry("elpips-vgg")
elpips_squeeze = _entry("elpips-squeeze")
lpips_vgg = _entry("lpips-vgg")
lpips_squeeze = _entry("lpips-squeeze")
lpips_alex = _entry("lpips-alex")
