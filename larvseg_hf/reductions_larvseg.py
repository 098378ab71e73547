# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Boolean reductions as byte reductions: on CPU, PyTorch's bool any() / all() take 5-15x as long as the
max / min of the same bytes, and the training step and the large-vocabulary argmax run them on every
step's full-resolution masks and on 21K-class candidate tables."""

from __future__ import annotations

import torch


def any_true(mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """`mask.any()` (or along `dim`) of a bool tensor."""
    if mask.numel() == 0:  # amax has no identity to return
        return mask.any() if dim is None else mask.any(dim)
    data = mask.view(torch.uint8)
    return (data.amax() if dim is None else data.amax(dim)).bool()


def all_true(mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """`mask.all()` (or along `dim`) of a bool tensor."""
    if mask.numel() == 0:
        return mask.all() if dim is None else mask.all(dim)
    data = mask.view(torch.uint8)
    return (data.amin() if dim is None else data.amin(dim)).bool()


__all__ = ["all_true", "any_true"]
