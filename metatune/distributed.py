"""Meta-training across processes on torch.distributed (launched by `torchrun`): who this process is, which
tasks of a meta-batch it adapts, the all-reduce of the meta-gradient, and the one process that writes.

Every rank draws the same meta-batch (the same sampler, the same seed) and adapts the tasks i with
i % world == rank; the meta-gradient is summed over ranks, so every rank takes the same optimizer step and
holds the same meta-parameters, and N processes compute what one process does (to float summation order).
Rank 0 alone writes logs and checkpoints. Without a process group everything here is the one-process case.
Importing this module imports no torch (the file layer and the CLI ask `is_main()` and `launched()`).
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor


def _group() -> Any:
    """torch.distributed when a process group is initialised, else None (never importing torch for it: a group
    exists only once torch.distributed has been imported)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, (0, 1) without one."""
    dist = _group()
    return (dist.get_rank(), dist.get_world_size()) if dist is not None else (0, 1)


def is_main() -> bool:
    """True on the process that writes files: rank 0 of the process group, or before one exists rank 0 of the
    launcher's RANK, or the only process."""
    dist = _group()
    return dist.get_rank() == 0 if dist is not None else os.environ.get("RANK", "0") == "0"


def launched() -> bool:
    """Started by torchrun (or another launcher) as one of several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group the launcher describes (RANK, WORLD_SIZE, MASTER_ADDR in the environment):
    gloo for CPU, nccl for CUDA devices. Returns whether this is a multi-process run."""
    if not launched():
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:  # one GPU per process: the launcher's LOCAL_RANK picks it
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return True


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int) -> range:
    """The indices of an n-task meta-batch this rank adapts."""
    rank, world = rank_world()
    return range(rank, n, world)


def all_reduce_sum(tensors: list[Tensor]) -> None:
    """Sum `tensors` over ranks in place (one flat buffer, one collective call)."""
    rank, world = rank_world()
    if world == 1 or not tensors:
        return
    import torch
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    dist = _group()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()
