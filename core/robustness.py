"""``elpips.robustness``: the adversarial attacks, kept at this import path; the code lives in
:mod:`elpips.experiments.robustness`."""

import sys

from .experiments import robustness as _module

sys.modules[__name__] = _module
