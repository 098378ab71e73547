# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Inference helpers that keep large vocabularies affordable: an exact upsampled argmax that never
builds N x H x W logits, and sliding-window inference accumulated at feature resolution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def candidate_classes(logits: torch.Tensor) -> torch.Tensor:
    """Channels that can win the argmax anywhere after bilinear upsampling of `logits` (K, h, w).

    Every upsampled pixel is a convex combination of one 2x2 cell of the (edge-clamped) map. In a cell,
    a channel whose maximum is below the largest per-channel minimum can never be the argmax there.
    Returns sorted channel indices, so ties resolve as in a full argmax.
    """
    padded = F.pad(logits[None], (0, 1, 0, 1), mode="replicate")
    cell_max = F.max_pool2d(padded, 2, stride=1)[0]
    cell_min = -F.max_pool2d(-padded, 2, stride=1)[0]
    threshold = cell_min.max(0).values
    return (cell_max >= threshold[None]).flatten(1).any(1).nonzero().flatten()


def upsampled_argmax(logits: torch.Tensor, size: tuple[int, int], chunk_size: int = 64) -> torch.Tensor:
    """argmax over channels of `interpolate(logits, size, bilinear)` for one image's (K, h, w) logits,
    computed on the candidate channels only and in chunks, so memory stays O(chunk_size x H x W)."""
    size = (int(size[0]), int(size[1]))
    candidates = candidate_classes(logits)
    best_value = best_index = None
    for start in range(0, candidates.numel(), chunk_size):  # chunks of channels, not single classes
        chunk = candidates[start : start + chunk_size]
        resized = F.interpolate(logits[chunk][None], size, mode="bilinear", align_corners=False)[0]
        value, index = resized.max(0)
        index = chunk[index]
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value > best_value
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index, best_index)
    return best_index


@torch.no_grad()
def sliding_window_logits(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    window_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    **forward_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the model's logits over overlapping windows (mmseg "slide" mode), at feature resolution.

    Returns (logits (B, K, H / s, W / s), class_ids), s being the model's output stride. Image and
    window sides must be multiples of s so that windows align with the feature grid.
    """
    window_h, window_w = (window_size, window_size) if isinstance(window_size, int) else window_size
    stride = stride if stride is not None else (window_h, window_w)
    stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
    batch, _, height, width = pixel_values.shape
    window_h, window_w = min(window_h, height), min(window_w, width)

    def windows(total: int, window: int, step: int) -> list[int]:
        count = max(math.ceil((total - window) / step), 0) + 1
        return sorted({min(i * step, total - window) for i in range(count)})

    tops, lefts = windows(height, window_h, stride_h), windows(width, window_w, stride_w)
    summed = counts = class_ids = None
    out_stride = None
    for top in tops:
        for left in lefts:
            crop = pixel_values[:, :, top : top + window_h, left : left + window_w]
            output = model(crop, **forward_kwargs)
            logits = output.logits
            if summed is None:
                out_stride = window_h // logits.shape[-2]
                for side, name in (
                    (height, "height"),
                    (width, "width"),
                    (window_h, "window height"),
                    (window_w, "window width"),
                ):
                    if side % out_stride:
                        raise ValueError(
                            f"image {name} {side} is not a multiple of the model's output stride {out_stride}; "
                            "resize or pad the image (LarvSegImageProcessor does) before sliding-window inference."
                        )
                # Windows start at multiples of the sliding stride; any other offset would be pasted
                # misaligned on the feature grid (top // out_stride rounds it).
                for offsets, name in ((tops, "height"), (lefts, "width")):
                    if any(offset % out_stride for offset in offsets):
                        raise ValueError(
                            f"sliding stride along the {name} puts windows at {offsets}, not all multiples of the "
                            f"model's output stride {out_stride}; use a stride that is a multiple of {out_stride}."
                        )
                summed = logits.new_zeros(batch, logits.shape[1], height // out_stride, width // out_stride)
                counts = logits.new_zeros(1, 1, height // out_stride, width // out_stride)
                class_ids = output.class_ids
            y, x = top // out_stride, left // out_stride
            summed[:, :, y : y + logits.shape[-2], x : x + logits.shape[-1]] += logits
            counts[:, :, y : y + logits.shape[-2], x : x + logits.shape[-1]] += 1
    return summed / counts, class_ids


__all__ = ["candidate_classes", "sliding_window_logits", "upsampled_argmax"]
