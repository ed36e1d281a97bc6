"""How classes are split across Ray Train workers, and how shards are put back together.

Each worker keeps a full-size synthetic tensor but only its own rows are meaningful; summing the
tensors with the other rows zeroed (one all-reduce) reassembles the whole set on every worker.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def shard_classes(num_classes: int, workers: int) -> list[list[int]]:
    """Contiguous, near-equal class ranges: worker r owns shard_classes(...)[r]."""
    if workers < 1 or workers > num_classes:
        raise ValueError(f"workers must be in 1..{num_classes}, got {workers}")
    base, extra = divmod(num_classes, workers)
    shards, start = [], 0
    for r in range(workers):
        size = base + (1 if r < extra else 0)
        shards.append(list(range(start, start + size)))
        start += size
    return shards


def rows_only(tensor: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``tensor`` with every row but ``rows`` zeroed: one worker's share of a sum."""
    full = torch.zeros_like(tensor.detach())
    full[rows] = tensor.detach()[rows]
    return full


def assemble(tensor: torch.Tensor, own_rows: torch.Tensor) -> torch.Tensor:
    """Every worker's own rows combined into one full tensor (identity with one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor.detach().clone()
    full = rows_only(tensor, own_rows)
    dist.all_reduce(full, op=dist.ReduceOp.SUM)
    return full


def sum_across_workers(value: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value.detach().clone()
    out = value.detach().clone().float()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
