"""torch.distributed plumbing shared by the sharded commands (``elpips batch``, ``2afc``, ``geodesic``).

Nothing here is home-made cluster code: processes are started by ``torchrun`` (which sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) or by a test's
``torch.multiprocessing`` spawn, and talk through a ``torch.distributed`` process group: gloo on CPU, nccl on
CUDA, chosen automatically. Every helper degrades to the single-process answer when no group is running, so
the same code serves ``elpips geodesic`` and ``torchrun ... -m elpips geodesic``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT = timedelta(hours=24)
"""Collective timeout: a rank may wait this long at a barrier while others finish long jobs."""

_local_depth = 0
"""How many :func:`local_scope` blocks are open in this process (> 0: act as a single process)."""


@contextlib.contextmanager
def local_scope() -> Iterator[None]:
    """Inside the block this process acts as if it were alone, whatever the launch: :func:`launched_by_torchrun`
    and :func:`is_distributed` are ``False``, :func:`rank_and_world` is ``(0, 1)``, collectives are no-ops and
    :func:`process_group` joins nothing. For work one rank does by itself (a job of ``elpips batch``), so that
    code written to shard (``elpips geodesic``) runs whole on this rank instead. The group stays initialised."""
    global _local_depth
    _local_depth += 1
    try:
        yield
    finally:
        _local_depth -= 1


def in_local_scope() -> bool:
    """``True`` inside :func:`local_scope`."""
    return _local_depth > 0


def launched_by_torchrun() -> bool:
    """``True`` when the environment describes a multi-process launch (``WORLD_SIZE`` > 1), outside
    :func:`local_scope`."""
    return not in_local_scope() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """``True`` inside an initialised process group with more than one rank (and outside :func:`local_scope`)."""
    return (not in_local_scope() and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group or inside :func:`local_scope`."""
    if not in_local_scope() and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return rank_and_world()[0] == 0


def local_device(requested: str | torch.device | None = None) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is available (and nothing else was asked for),
    else ``requested`` or the CPU."""
    if requested is not None and str(requested) not in ("auto", "cuda"):
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if requested == "cuda":
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device("cpu")


def backend_for(device: torch.device) -> str:
    """nccl for CUDA devices, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(device: str | torch.device | None = None,
                  timeout: timedelta = DEFAULT_TIMEOUT, backend: str | None = None) -> Iterator[torch.device]:
    """Join the launch's process group for the duration of a ``with`` block; yields this rank's device.

    Without a multi-process launch it does nothing (yields the single process's device). A group that is
    already initialised (by a caller or a test) is used as it is and left running. ``backend`` overrides the
    automatic choice: ``"gloo"`` for commands whose ranks only exchange a few small objects (``elpips batch``),
    so no NCCL collective waits on the GPU while the other ranks work.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        yield local_device(device) if launched_by_torchrun() else _single_device(device)
        return
    if not dist.is_available():
        raise ValueError("this PyTorch build has no torch.distributed: run without torchrun")
    chosen = local_device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    dist.init_process_group(backend=backend or backend_for(chosen), timeout=timeout)
    try:
        yield chosen
    finally:
        dist.destroy_process_group()


def _single_device(device: str | torch.device | None) -> torch.device:
    from .devices import resolve_device

    return resolve_device(device)


def communication_device() -> torch.device:
    """Where collective tensors must live: CUDA for nccl, CPU for gloo."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def contiguous_block(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s share of ``count`` items in contiguous blocks (earlier ranks take
    the remainder): ``contiguous_block(10, r, 3)`` -> ``(0, 4), (4, 7), (7, 10)``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def round_robin(items: list, rank: int, world_size: int) -> list:
    """Items ``rank, rank + world_size, ...`` (balanced when items have similar costs)."""
    return items[rank::world_size]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise sum over ranks (a new tensor on ``tensor``'s device; ``tensor`` itself without a group)."""
    if not is_distributed():
        return tensor
    buffer = tensor.detach().to(communication_device()).clone()
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.to(tensor.device)


def broadcast_object(value: Any, source: int = 0) -> Any:
    """``value`` as rank ``source`` has it, on every rank (picklable objects)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=source, device=communication_device())
    return holder[0]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def raise_on_every_rank(failure: Exception | None) -> None:
    """Collective: re-raise ``failure`` on the rank that had it, and on every other rank a ``ValueError`` naming
    the first rank that failed, so that no rank waits for a collective the others never reach."""
    reports = gather_objects(None if failure is None else str(failure))
    if failure is not None:
        raise failure
    failed = [(rank, message) for rank, message in enumerate(reports) if message is not None]
    if failed:
        raise ValueError(f"rank {failed[0][0]} failed: {failed[0][1]}")


def barrier() -> None:
    """Wait for every rank (no-op without a group)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def exchange_with_neighbours(send_left: torch.Tensor | None, receive_from_right: torch.Tensor | None) -> None:
    """Point-to-point along the rank chain: rank ``r`` sends ``send_left`` to ``r - 1`` and fills
    ``receive_from_right`` (a preallocated buffer) from ``r + 1``. Pass ``None`` where there is no neighbour.
    Both directions are posted before waiting, so the chain cannot deadlock."""
    _exchange(send_left, -1, receive_from_right, +1)


def exchange_backwards(send_right: torch.Tensor | None, receive_from_left: torch.Tensor | None) -> None:
    """The reverse of :func:`exchange_with_neighbours`: send to ``r + 1``, receive from ``r - 1``."""
    _exchange(send_right, +1, receive_from_left, -1)


def _exchange(outgoing: torch.Tensor | None, to_offset: int, incoming: torch.Tensor | None, from_offset: int) -> None:
    if not is_distributed():
        if outgoing is not None or incoming is not None:
            raise ValueError("a neighbour exchange needs a process group with more than one rank")
        return
    rank = dist.get_rank()
    device = communication_device()
    operations = []
    send_buffer = receive_buffer = None
    if outgoing is not None:
        send_buffer = outgoing.detach().to(device).contiguous()
        operations.append(dist.P2POp(dist.isend, send_buffer, rank + to_offset))
    if incoming is not None:
        receive_buffer = torch.empty_like(incoming, device=device)
        operations.append(dist.P2POp(dist.irecv, receive_buffer, rank + from_offset))
    if operations:
        for request in dist.batch_isend_irecv(operations):
            request.wait()
    if incoming is not None and receive_buffer is not None:  # the buffer exists exactly when incoming does
        incoming.copy_(receive_buffer)

