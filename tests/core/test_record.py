"""A run's record: the metric's identity and the one comparison every resume makes."""

from __future__ import annotations

import elpips
import numpy as np
import torch
from elpips.record import differences, metric_identity, tensor_digest


def test_differences_name_every_nested_setting():
    old = {"seed": 1, "steps": 5, "metrics": [{"name": "a", "ensemble": {"flip": True, "keep": 0.99}}],
           "environment": {"device": "cpu"}}
    new = {"seed": 1, "steps": 9, "metrics": [{"name": "a", "ensemble": {"flip": False, "keep": 0.5}}],
           "environment": {"device": "cuda"}}
    found = differences(old, new, ignore=("steps", "environment"))
    assert found == ["metrics[0].ensemble.flip was True, now False", "metrics[0].ensemble.keep was 0.99, now 0.5"]
    assert differences(old, old) == []
    assert differences({"a": (1, 2)}, {"a": [1, 2]}) == []  # as read back from JSON
    assert differences({"a": [1]}, {"a": [1, 2]}) == ["a was [1], now [1, 2]"]
    assert differences({}, {"new": 1}) == ["new was None, now 1"]


def test_tensor_digest_sees_values_shapes_and_order():
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    assert tensor_digest([a, b]) == tensor_digest([a.double(), b])
    assert tensor_digest([a, b]) != tensor_digest([b, a])
    assert tensor_digest([a]) != tensor_digest([a.reshape(3, 2)])
    assert tensor_digest([a]) != tensor_digest([a + 1e-7])


def test_metric_identity_holds_what_changes_the_numbers(tmp_path):
    base = elpips.Metric("elpips-squeeze", backbone_weights="random", device="cpu")
    identity = base.identity()
    assert identity["name"] == "elpips-squeeze" and identity["backbone_weights"] == "random:0"
    assert identity["linear_weights"] == "elpips_squeeze" and identity["precision"] == "float32"
    assert identity["ensemble"] == base.ensemble.as_dict()
    other_seed = elpips.Metric("elpips-squeeze", backbone_weights="random:1", device="cpu").identity()
    assert other_seed["weights_sha256"] != identity["weights_sha256"]
    changed = elpips.Metric("elpips-squeeze", backbone_weights="random", device="cpu",
                            ensemble=base.ensemble.updated(flip=False)).identity()
    assert differences(identity, changed) == ["ensemble.flip was True, now False"]
    # a file of the same name with other values is told apart by the digest
    path = tmp_path / "lin.npz"
    for scale in (1.0, 2.0):
        np.savez(path, **{f"lin{i}": scale * w.numpy() for i, w in enumerate(base.linear_weights)})
        from_file = elpips.Metric("elpips-squeeze", backbone_weights="random", linear_weights=path,
                                  device="cpu").identity()
        assert from_file["linear_weights"] == str(path)
        if scale == 1.0:
            first = from_file
    assert [line.split(" was ")[0] for line in differences(first, from_file)] == ["weights_sha256"]
    assert first["weights_sha256"] == identity["weights_sha256"] != from_file["weights_sha256"]
    assert metric_identity(lambda x, y: x) == {"name": "<lambda>"}
