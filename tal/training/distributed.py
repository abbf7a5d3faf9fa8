"""Data / architecture parallelism with ``torchrun``: gloo on CPU, NCCL on GPU.

Each rank trains on its share of the meta-batch; gradients are averaged with one all-reduce of
a flat buffer per step (no DDP wrapper: a step runs several forward passes of one hypernetwork).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Joins the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        target = torch.device("cuda", local)
    else:
        target = torch.device("cpu")
    return DistInfo(rank, world, target)


def average_gradients(parameters: list[nn.Parameter], info: DistInfo) -> None:
    """Sums gradients across ranks (each rank already divided by the global meta-batch)."""
    if info.world_size == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for param, grad in zip(parameters, grads, strict=True):
        numel = grad.numel()
        param.grad = flat[offset : offset + numel].view_as(param).clone()
        offset += numel


def all_sum(value: float, info: DistInfo) -> float:
    if info.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return float(tensor)


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()
