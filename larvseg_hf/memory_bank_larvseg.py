# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Compact per-category memory bank for the category-wise attentive classifier (CA-Cls).

The published bank stores N x M x K x d features; every use of it is a mean cosine similarity
between a normalised query and the stored features, which equals one dot product with the mean
of those features. So each slot keeps the mean of its features and how many there were (fewer than
K when an image has fewer pixels): N x M x d values, which at 21,841 classes, M=20, d=768 is 0.67 GB
in float16 instead of 26.8 GB, and the class mean weighs each slot by its count, as a mean over
every stored feature does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class LarvSegMemoryBank(nn.Module):
    """A FIFO ring of `size` slot means per class, in persistent buffers so checkpoints carry it."""

    def __init__(self, num_classes: int, dim: int, size: int = 20, warmup: int = 1, dtype: str = "float16"):
        super().__init__()
        if size < 1:
            raise ValueError(f"memory bank size must be >= 1, got {size}")
        self.size = size
        self.warmup = warmup
        self.register_buffer("slots", torch.zeros(num_classes, size, dim, dtype=_DTYPES[dtype]))
        # Features averaged into each slot. Ones until written: a checkpoint saved before counts existed
        # loads with equal slot weights, as it was scored then.
        self.register_buffer("slot_counts", torch.ones(num_classes, size, dtype=torch.int32))
        self.register_buffer("num_writes", torch.zeros(num_classes, dtype=torch.long))

    @property
    def num_classes(self) -> int:
        return self.slots.shape[0]

    def usable(self, class_ids: torch.Tensor) -> torch.Tensor:
        """A class is used once its ring has wrapped `warmup` times (at least one write when warmup is 0)."""
        needed = max(self.warmup * self.size, 1)
        return self.num_writes[class_ids] >= needed

    def class_means(self, class_ids: torch.Tensor) -> torch.Tensor:
        """Mean of every stored feature of each class (float32, zeros for an empty class): the slots'
        means weighted by how many features each holds."""
        # index_select, not advanced indexing: on CPU the latter gathers float16 rows ~10x slower. The ring
        # fills from slot 0.
        positions = torch.arange(self.size, device=class_ids.device)
        written = positions[None, :] < self.num_writes.index_select(0, class_ids)[:, None]
        weights = self.slot_counts.index_select(0, class_ids).to(torch.float32) * written
        slots = self.slots.index_select(0, class_ids).to(torch.float32)
        summed = torch.einsum("cm,cmd->cd", weights, slots)
        return summed / weights.sum(1, keepdim=True).clamp(min=1)

    @torch.no_grad()
    def enqueue(
        self, class_ids: torch.Tensor, slot_means: torch.Tensor, slot_counts: torch.Tensor | None = None
    ) -> None:
        """Write one slot per row (the mean of `slot_counts` features; 1 when not given), oldest first
        out. Under torch.distributed every process must call this each step (possibly with no rows):
        rows are gathered so all banks stay identical."""
        if slot_counts is None:
            slot_counts = torch.ones(class_ids.numel(), device=slot_means.device)
        rows = torch.cat([slot_means.detach().float(), slot_counts.detach().float()[:, None]], 1)
        class_ids, rows = _gather_across_processes(class_ids.long(), rows)
        slot_means, slot_counts = rows[:, :-1], rows[:, -1].round().to(torch.int32)
        if class_ids.numel() == 0:
            return
        order = torch.sort(class_ids, stable=True).indices
        class_ids, slot_means, slot_counts = class_ids[order], slot_means[order], slot_counts[order]
        unique, counts = torch.unique_consecutive(class_ids, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(class_ids.numel(), device=class_ids.device) - torch.repeat_interleave(
            starts, counts
        )
        total = torch.repeat_interleave(counts, counts)
        # Several writes to one class in a step land in consecutive slots; only the last `size` survive.
        keep = rank >= total - self.size
        position = (self.num_writes[class_ids] + rank) % self.size
        self.slots[class_ids[keep], position[keep]] = slot_means[keep].to(self.slots.dtype)
        self.slot_counts[class_ids[keep], position[keep]] = slot_counts[keep]
        self.num_writes.index_add_(0, unique, counts)

    def extra_repr(self) -> str:
        n, m, d = self.slots.shape
        return f"num_classes={n}, size={m}, dim={d}, warmup={self.warmup}, dtype={self.slots.dtype}"


def _gather_across_processes(
    class_ids: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return class_ids, rows
    world = dist.get_world_size()
    count = torch.tensor([class_ids.numel()], device=class_ids.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded_ids = class_ids.new_full((longest,), -1)
    padded_ids[: class_ids.numel()] = class_ids
    padded_rows = rows.new_zeros((longest, rows.shape[-1]))
    padded_rows[: rows.shape[0]] = rows
    all_ids = [torch.empty_like(padded_ids) for _ in range(world)]
    all_rows = [torch.empty_like(padded_rows) for _ in range(world)]
    dist.all_gather(all_ids, padded_ids)
    dist.all_gather(all_rows, padded_rows)
    ids, rows = torch.cat(all_ids), torch.cat(all_rows)
    valid = ids >= 0
    return ids[valid], rows[valid]


__all__ = ["LarvSegMemoryBank"]
