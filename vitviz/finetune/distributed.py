"""The trainer's view of the processes it runs in: one, or several under torchrun with DDP."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["SINGLE_PROCESS", "DistributedContext", "init_from_environment", "shutdown"]


@dataclass(frozen=True)
class DistributedContext:
    """Rank and world size, and the few collective operations the trainer needs.

    With one process every operation is the identity, so the trainer has a single code path.
    """

    rank: int = 0  # this process, from 0
    world_size: int = 1  # processes in the run, over every machine
    local_rank: int = 0  # this process on its machine (picks its GPU)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes the run folder and reports progress."""
        return self.rank == 0

    def shard(self, indices: list[int]) -> list[int]:
        """This process's share of `indices`: every world_size-th one, from its rank."""
        return indices[self.rank :: self.world_size]

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over every process (in place, and returned)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process when `flag` is true on any one (a stop request reaches all ranks)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order, on every process."""
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def all_gather_rows(self, rows: torch.Tensor, order: list[int], total: int) -> torch.Tensor:
        """Puts each process's rows back at their global positions.

        Args:
            rows: (n_local, D) rows this process computed.
            order: global position of each local row.
            total: number of rows over all processes.

        Returns:
            (total, D) rows, the same on every process.
        """
        if not self.enabled:
            full = torch.empty((total, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
            full[torch.tensor(order, dtype=torch.long, device=rows.device)] = rows
            return full
        sizes = self.gather_objects(rows.shape[0])
        padded = torch.zeros((max(sizes), *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        padded[: rows.shape[0]] = rows
        pieces = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(pieces, padded)  # all_gather wants equal shapes: shards differ by one row
        orders = self.gather_objects(order)
        full = torch.empty((total, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        for piece, size, positions in zip(pieces, sizes, orders, strict=True):
            full[torch.tensor(positions, dtype=torch.long, device=rows.device)] = piece[:size]
        return full

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """The module wrapped in DistributedDataParallel when there are several processes."""
        if not self.enabled:
            return module
        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)


SINGLE_PROCESS = DistributedContext()


def init_from_environment(device: str | None) -> tuple[DistributedContext, str | None]:
    """Joins the process group that torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK.

    NCCL on GPUs, gloo on CPUs. Without torchrun (no WORLD_SIZE, or 1) nothing is initialised.

    Args:
        device: the device asked for, or None for the best available.

    Returns:
        The context, and the device this process should use (its own GPU under torchrun).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS, device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if wants_cuda:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    elif device is None:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
    return DistributedContext(rank, world_size, local_rank), device


def shutdown(context: DistributedContext) -> None:
    """Leaves the process group, if one was joined."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
