"""The public import paths of the packages."""

from __future__ import annotations


def test_public_import_paths():
    import elpips.barycenters
    import elpips.experiments.robustness
    import elpips.experiments.twoafc
    import elpips.geodesics

    assert elpips.Metric is elpips.metric.Metric
    assert callable(elpips.barycenters.solve) and callable(elpips.geodesics.solve)
