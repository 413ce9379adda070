"""The ``lpips`` package's model on the same backbone weights as an ``elpips.Metric`` (equivalence tests)."""

from __future__ import annotations

import elpips
import lpips

LPIPS_SLICES = {
    "vgg": [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)],
    "squeeze": [(0, 2), (2, 5), (5, 8), (8, 10), (10, 11), (11, 12), (12, 13)],
    "alex": [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)],
}


def lpips_peer(net: str, metric: elpips.Metric) -> lpips.LPIPS:
    """The ``lpips`` package's model with the same backbone weights as ``metric``."""
    peer = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    state = {}
    for key, value in metric.backbone.state_dict().items():
        _, index, rest = key.split(".", 2)
        slice_number = next(n for n, (lo, hi) in enumerate(LPIPS_SLICES[net]) if lo <= int(index) < hi)
        state[f"slice{slice_number + 1}.{index}.{rest}"] = value
    peer.net.load_state_dict(state, strict=True)
    return peer.eval()
