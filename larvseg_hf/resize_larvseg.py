# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""PyTorch's bilinear resampling convention (`F.interpolate(mode="bilinear", align_corners=False)`, no scale
factor), owned once: the source indices the large-vocabulary argmax refines with, and bilinear resizing as two
small matrix products, which training uses to bring logits to the loss resolution. On CPU, PyTorch's
upsampling kernel and its backward take several times as long as the two matmuls (see bench_step_share.py)."""

from __future__ import annotations

import torch


def bilinear_source_index(
    in_size: int, out_size: int, dtype: torch.dtype, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each output index, the lower input index i0 and the weight of input index min(i0 + 1, in_size - 1)."""
    scale = torch.tensor(float(in_size), dtype=dtype, device=device) / out_size
    source = (scale * (torch.arange(out_size, dtype=dtype, device=device) + 0.5) - 0.5).clamp_min(0)
    index = source.long().clamp_max(in_size - 1)  # truncation is floor: source >= 0
    return index, source - index


def nearest_resize(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`F.interpolate(values, size, mode="nearest")` for (..., H, W) values of any dtype (ids, masks) by index:
    output pixel (i, j) copies source pixel (floor(i * H / h), floor(j * W / w)), in PyTorch's float32."""
    height, width = values.shape[-2:]
    if (height, width) == (int(size[0]), int(size[1])):
        return values
    if height % int(size[0]) == 0 and width % int(size[1]) == 0:  # integer factors: every f-th pixel, a view
        return values[..., :: height // int(size[0]), :: width // int(size[1])]
    rows = nearest_source_index(height, int(size[0]), values.device)
    cols = nearest_source_index(width, int(size[1]), values.device)
    return values[..., rows[:, None], cols[None, :]]


_NEAREST: dict[tuple, torch.Tensor] = {}


def nearest_source_index(
    in_size: int, out_size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """(out_size,) int64 source index of each output index under nearest resizing. Cached: a training run
    resizes between the same few sizes at every step."""
    key = (in_size, out_size, torch.device(device) if device is not None else torch.device("cpu"))
    index = _NEAREST.get(key)
    if index is None:
        scale = torch.tensor(float(in_size), device=key[2]) / out_size  # float32, as PyTorch computes it
        index = (torch.arange(out_size, device=key[2]) * scale).floor().long().clamp_max(in_size - 1)
        index = _NEAREST.setdefault(key, index)
    return index


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The float type PyTorch's resampling kernels compute in: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


_MATRICES: dict[tuple, torch.Tensor] = {}


def bilinear_matrix(
    in_size: int, out_size: int, dtype: torch.dtype, device: torch.device | str | None = None
) -> torch.Tensor:
    """(out_size, in_size) matrix whose product with a signal along one axis is its bilinear resize.
    Cached: a training run asks for the same few sizes at every step."""
    key = (in_size, out_size, dtype, torch.device(device) if device is not None else torch.device("cpu"))
    matrix = _MATRICES.get(key)
    if matrix is None:
        compute = opmath_dtype(dtype)  # the weights in PyTorch's own arithmetic
        index, weight = bilinear_source_index(in_size, out_size, compute, key[3])
        rows = torch.arange(out_size, device=key[3])
        matrix = torch.zeros(out_size, in_size, dtype=compute, device=key[3])
        matrix.index_put_((rows, index), 1 - weight, accumulate=True)
        matrix.index_put_((rows, (index + 1).clamp_max(in_size - 1)), weight, accumulate=True)
        matrix = _MATRICES.setdefault(key, matrix.to(dtype))
    return matrix


def bilinear_resize(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`F.interpolate(values, size, mode="bilinear", align_corners=False)` for (..., h, w) values, as
    (H, h) @ values @ (w, W): the same weights, summed in another order (a few eps apart). float16 and
    bfloat16 are resized in float32 and rounded once, as PyTorch's kernel does."""
    return _separable(values, tuple(values.shape[-2:]), (int(size[0]), int(size[1])), transposed=False)


def bilinear_resize_transposed(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The transpose of `bilinear_resize` from `size` = (h, w) to values' (H, W): (h, H) @ values @ (W, w).
    Pooling is linear, so a weighted sum of upsampled maps is the sum of the maps weighted by the weights
    brought down this way: one weight map per image instead of K upsampled maps."""
    return _separable(values, (int(size[0]), int(size[1])), tuple(values.shape[-2:]), transposed=True)


def _separable(
    values: torch.Tensor, small: tuple[int, int], large: tuple[int, int], transposed: bool
) -> torch.Tensor:
    """values @ the (h -> H, w -> W) bilinear matrices along the last two axes, or their transposes."""
    if small == large:
        return values
    dtype = values.dtype
    compute = opmath_dtype(dtype)
    values = values.to(compute)
    (h, w), (height, width) = small, large
    if not transposed and values.ndim == 4 and channels_last(values):
        return _resize_channels_last(values, (height, width)).to(dtype)
    if w != width:
        columns = bilinear_matrix(w, width, compute, values.device)  # (W, w)
        values = torch.matmul(values, columns if transposed else columns.T)
    if h != height:
        rows = bilinear_matrix(h, height, compute, values.device)  # (H, h)
        values = torch.matmul(rows.T if transposed else rows, values)
    return values.to(dtype)


def channels_last(values: torch.Tensor) -> bool:
    """(B, K, h, w) stored as (B, h, w, K) rows, as the classifier writes its scores and logits."""
    return values.shape[1] > 1 and values.permute(0, 2, 3, 1).is_contiguous()


def _resize_channels_last(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resizing of channels-last (B, K, h, w) maps, kept channels-last: the products run over
    contiguous (w x K) and K rows, with no layout copy before or after."""
    batch, channels, h, w = values.shape
    height, width = size
    rows = values.permute(0, 2, 3, 1)  # (B, h, w, K), contiguous
    if h != height:
        matrix = bilinear_matrix(h, height, values.dtype, values.device)  # (H, h)
        rows = torch.matmul(matrix, rows.reshape(batch, h, w * channels)).view(batch, height, w, channels)
    if w != width:
        matrix = bilinear_matrix(w, width, values.dtype, values.device)  # (W, w)
        rows = torch.matmul(matrix, rows.reshape(batch * height, w, channels))
    return rows.view(batch, height, width, channels).permute(0, 3, 1, 2)


__all__ = [
    "channels_last",
    "nearest_resize",
    "nearest_source_index",
    "bilinear_matrix",
    "bilinear_resize",
    "bilinear_resize_transposed",
    "bilinear_source_index",
    "opmath_dtype",
]
