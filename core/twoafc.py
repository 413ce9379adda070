"""``elpips.twoafc``: 2AFC scoring, kept at this import path; the code lives in
:mod:`elpips.experiments.twoafc`."""

import sys

from .experiments import twoafc as _module

sys.modules[__name__] = _module
