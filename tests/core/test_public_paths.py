"""The import paths users already have keep working after the layout changes."""

from __future__ import annotations

import elpips


def test_public_import_paths():
    import elpips.barycenters
    import elpips.experiments.robustness
    import elpips.experiments.twoafc
    import elpips.geodesics
    import elpips.robustness
    import elpips.twoafc
    from elpips.robustness import attack_a2
    from elpips.twoafc import evaluate_2afc

    assert elpips.Metric is elpips.metric.Metric
    assert callable(elpips.barycenters.solve) and callable(elpips.geodesics.solve)
    assert elpips.robustness is elpips.experiments.robustness and attack_a2 is elpips.experiments.robustness.attack_a2
    assert elpips.twoafc is elpips.experiments.twoafc and evaluate_2afc is elpips.experiments.twoafc.evaluate_2afc
