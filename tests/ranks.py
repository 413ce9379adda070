"""Helpers for tests that start several ranks on the local host (gloo over 127.0.0.1), as torchrun would."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def set_rank_environment(rank: int, world_size: int, port: int) -> None:
    """The variables torchrun sets for one rank (what ``elpips.distributed.process_group`` reads)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
