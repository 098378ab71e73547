# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Inference helpers that keep large vocabularies affordable: an upsampled argmax that never builds
K x H x W logits, and sliding-window inference accumulated at feature resolution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .reductions_larvseg import any_true
from .resize_larvseg import bilinear_source_index, opmath_dtype

# upsampled_argmax upsamples the union of candidate channels with F.interpolate when it holds at most
# this many channels, and refines candidates per cell otherwise (_per_cell_argmax).
_EXACT_PATH_CHANNELS = 64
# (block, channel) pairs refined at once by the per-cell path (a few hundred bytes of temporaries each).
_PAIRS_PER_STEP = 1 << 18
# Blocks of output pixels are split _SPLIT x _SPLIT per refinement step until both their sides are at
# most _FINISH pixels; then every remaining channel is evaluated at every pixel.
_SPLIT = 2
_FINISH = 4
# One refinement of a pair costs about as much as this many F.interpolate output values (CPU: ~100 ns
# vs ~6.5 ns): the per-cell path gives up (and the exact path runs) once its work would exceed the
# exact path's.
_PAIR_COST = 16
# Pruning slack, in units of eps * max |logit|: a bilinear value computed in float is within a few eps
# of the exact one, so slack-less pruning could drop a channel that rounding makes the winner.
_SLACK_EPS = 16
# Channels per chunk when computing cell bounds: about this many logits, so temporaries stay in cache.
_CHUNK_ELEMENTS = 1 << 18


def _pairwise(values: torch.Tensor, dim: int, op, out: torch.Tensor | None = None) -> torch.Tensor:
    """op(values[index], values[min(index + 1, size - 1)]) along `dim` (the edge-replicated neighbour),
    into `out` when given (a buffer reused across chunks: fresh pages cost more than the op)."""
    out, size = torch.empty_like(values) if out is None else out, values.shape[dim]
    op(values.narrow(dim, 0, size - 1), values.narrow(dim, 1, size - 1), out=out.narrow(dim, 0, size - 1))
    # op(x, x) = x for min and max: the edge in the same strided kernel, which PyTorch's copy_ of a
    # one-wide strided slice takes several times as long over.
    edge = values.narrow(dim, size - 1, 1)
    op(edge, edge, out=out.narrow(dim, size - 1, 1))
    return out


def _corner_offsets(cell_i: torch.Tensor, cell_j: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(4, n) flat offsets in an (h, w) map of corners (i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1) of
    cells (cell_i, cell_j), edges clamped."""
    next_i, next_j = (cell_i + 1).clamp_max(h - 1), (cell_j + 1).clamp_max(w - 1)
    return torch.stack([cell_i * w + cell_j, cell_i * w + next_j, next_i * w + cell_j, next_i * w + next_j])


def _all_cells(h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column (h * w,) of every cell of an (h, w) map, row-major."""
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return rows.flatten(), cols.flatten()


def _cell_pixels(in_size: int, out_size: int, dtype: torch.dtype, device) -> tuple:
    """Along one axis: the weight of every output pixel, and the pixel range [start, end) of each input
    index (the pixels it is the lower source of)."""
    cell, weight = bilinear_source_index(in_size, out_size, dtype, device)
    index = torch.arange(in_size, device=device)
    return weight, torch.searchsorted(cell, index), torch.searchsorted(cell, index, right=True)


def _reference_floor(
    logits: torch.Tensor, size: tuple[int, int], references: torch.Tensor, cells: tuple, offsets: torch.Tensor
) -> torch.Tensor:
    """Per cell (h * w,), the smallest over its output pixels of the best upsampled value among a few
    reference channels (R, h * w), in _bilinear's arithmetic; inf for cells without output pixels.
    `cells`: every cell's (row, column) (_all_cells); `offsets`: their corners (_corner_offsets).

    The winner at a pixel reaches at least every reference's value there, so a channel whose cell maximum
    is below the floor cannot win in the cell. With the _REFERENCE_MAPS channels as references, the floor
    is well above the threshold where channels are many and their logits flat (random init at 21,841
    classes: about 2x fewer candidate pairs).
    """
    num_classes, h, w = logits.shape
    dtype, device = opmath_dtype(logits.dtype), logits.device
    axes = []
    for in_size, out_size in ((h, size[0]), (w, size[1])):
        weight, start, end = _cell_pixels(in_size, out_size, dtype, device)
        steps = torch.arange(int((end - start).max()), device=device)
        padded = torch.minimum(start[:, None] + steps, end[:, None] - 1).clamp_min(0)  # repeats its last
        axes.append((weight[padded].t(), end > start))
    (row_weight, row_valid), (col_weight, col_valid) = axes
    cell_i, cell_j = cells
    count = references.shape[0]
    corners = logits.reshape(-1).take(offsets[:, None] + references * (h * w)).to(dtype).view(4, -1)
    values = _bilinear(
        corners, row_weight[:, cell_i].repeat(1, count), col_weight[:, cell_j].repeat(1, count)
    )  # (rows, cols, R * cells): each cell's pixels, padded with repeats (the minimum is unchanged)
    floor = values.view(-1, count, h * w).amax(1).amin(0)
    return floor.masked_fill_(~(row_valid[cell_i] & col_valid[cell_j]), math.inf)


# The floor's references: per cell, channels that reach the largest value of a few maps over the channels,
# each the minimum over some of a cell's corners (0: (i, j), 1: (i, j + 1), 2: (i + 1, j), 3: (i + 1, j + 1)),
# and the corners whose cells they serve: the cell minimum's (the threshold's: its own cell), each pixel's
# (the winners at a cell's four corners), each horizontal pair's (a cell's top and bottom edges).
_REFERENCE_MAPS = (((0, 1, 2, 3), (0,)), ((0,), (0, 1, 2, 3)), ((0, 1), (0, 2)))


def _references(logits: torch.Tensor, chunks: torch.Tensor, step: int, offsets: torch.Tensor) -> torch.Tensor:
    """The floor's reference channels (R, h * w) per cell (_REFERENCE_MAPS), from the chunks of `step`
    channels (maps, h * w) that hold each map's largest value."""
    num_classes, h, w = logits.shape
    flat, references = logits.reshape(-1), []
    for (minimum_over, served), chunk in zip(_REFERENCE_MAPS, chunks, strict=True):
        channels = chunk + torch.arange(step, device=logits.device)[:, None]
        channels = channels.clamp_max_(num_classes - 1)  # (step, cells); the last chunk's repeat
        values = flat.take(offsets[list(minimum_over), None] + channels * (h * w)).amin(0)
        reached = channels.gather(0, values.argmax(0, keepdim=True))[0]
        references.append(reached.take(offsets[list(served)]))
    return torch.cat(references)


def _cell_bounds(logits: torch.Tensor, slack_eps: float = 0.0, size: tuple[int, int] | None = None) -> tuple:
    """Per-cell pruning of logits (K, h, w), computed in cache-sized chunks of channels.

    Cell (i, j) holds rows i, i + 1 and columns j, j + 1 of the edge-replicated map; every upsampled
    pixel is a convex combination of one cell's corners. The cell threshold is the largest per-channel
    minimum, which the cell's winner reaches everywhere in the cell; a channel whose cell maximum is
    below it cannot win there. With slack_eps and an output `size`, the threshold is raised to the
    reference floor (_reference_floor) of a few channels found on the way (_REFERENCE_MAPS).
    Returns (union (K,) bool: channels that pass in some cell, mask, counts, slack): with slack_eps,
    mask (K, h * w) bool says which channels pass in which cell with a slack of
    slack_eps * eps * max |logit| (plus the logits' own eps for float16 / bfloat16), the union is its
    any over cells, and counts (h * w,) sums it; without, both are None.
    """
    num_classes, h, w = logits.shape
    step = max(1, _CHUNK_ELEMENTS // (h * w))
    floored = bool(slack_eps) and size is not None and size[0] * size[1] > 0
    threshold = scale = best = chunks = None
    buffers = [
        torch.empty(min(step, num_classes), h, w, dtype=logits.dtype, device=logits.device) for _ in range(2)
    ]
    for start in range(0, num_classes, step):
        chunk = logits[start : start + step]
        along_w, along_h = (buffer[: chunk.shape[0]] for buffer in buffers)
        cell_min = _pairwise(_pairwise(chunk, 2, torch.minimum, along_w), 1, torch.minimum, along_h)
        cell_min = cell_min.amax(0)
        if floored:  # which chunk holds each _REFERENCE_MAPS map's largest value (max(0) with indices
            maps = torch.stack([cell_min, chunk.amax(0), along_w.amax(0)])  # takes several times as long)
            if best is None:
                best, chunks = maps, torch.zeros(maps.shape, dtype=torch.long, device=logits.device)
            else:
                chunks.masked_fill_(maps > best, start)
                best = torch.maximum(best, maps)
        threshold = cell_min if threshold is None else torch.maximum(threshold, cell_min)
        if slack_eps:
            low, high = torch.aminmax(chunk)
            scale = (
                torch.maximum(-low, high)
                if scale is None
                else torch.maximum(scale, torch.maximum(-low, high))
            )
    scale = float(scale) if slack_eps else 0.0  # one device sync
    dtype = opmath_dtype(logits.dtype)
    slack = slack_eps * torch.finfo(dtype).eps * scale
    if slack_eps and dtype != logits.dtype:  # PyTorch rounds upsampled values to the logits' dtype,
        slack += torch.finfo(logits.dtype).eps * scale  # which ties values closer than that rounding
    threshold = threshold.view(h, w).to(dtype)
    if floored and math.isfinite(slack):
        cells = _all_cells(h, w, logits.device)
        offsets = _corner_offsets(*cells, h, w)
        references = _references(logits, chunks.flatten(1), step, offsets)
        floor = _reference_floor(logits, size, references, cells, offsets)
        threshold = torch.maximum(threshold, floor.view(h, w))
    union = torch.empty(num_classes, dtype=torch.bool, device=logits.device)
    mask = counts = None
    if slack_eps:
        mask = torch.empty(num_classes, h * w, dtype=torch.bool, device=logits.device)
        counts = torch.zeros(h * w, dtype=torch.int32, device=logits.device)
    for start in range(0, num_classes, step):
        chunk = logits[start : start + step]
        along_w, along_h = (buffer[: chunk.shape[0]] for buffer in buffers)
        cell_max = _pairwise(_pairwise(chunk, 2, torch.maximum, along_w), 1, torch.maximum, along_h)
        if mask is None:
            union[start : start + step] = any_true((cell_max >= threshold).flatten(1), 1)
        else:  # the union with the same slack (a superset of the slack-less one: as exact)
            passes = mask[start : start + step]
            torch.ge(cell_max.view(-1, h * w), (threshold - slack).view(-1), out=passes)
            union[start : start + step] = any_true(passes, 1)
            counts += passes.sum(0, dtype=torch.int32)
    return union, mask, counts, slack


def candidate_classes(logits: torch.Tensor) -> torch.Tensor:
    """Channels that can win the argmax anywhere after bilinear upsampling of `logits` (K, h, w).

    Every upsampled pixel is a convex combination of one 2x2 cell of the (edge-clamped) map. In a cell,
    a channel whose maximum is below the largest per-channel minimum can never be the argmax there.
    Returns sorted channel indices, so ties resolve as in a full argmax.
    """
    return _cell_bounds(logits)[0].nonzero().flatten()


def _exact_argmax(
    logits: torch.Tensor, size: tuple[int, int], channels: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """argmax over `channels` (sorted ascending) of F.interpolate(logits), chunk_size channels at a time;
    ties go to the lowest channel, as in a full argmax."""
    best_value = best_index = None
    for start in range(0, channels.numel(), chunk_size):  # chunks of channels, not single classes
        chunk = channels[start : start + chunk_size]
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


def _bilinear(corners: torch.Tensor, row_weight: torch.Tensor, col_weight: torch.Tensor) -> torch.Tensor:
    """Values of n channels with cell corners (4, n) (rows i, i + 1 x columns j, j + 1) at row weights
    (R, n) x column weights (C, n) of their cell: (R, C, n). Along rows first, as PyTorch's kernel."""
    a, b, c, d = corners[:, None]
    top, bottom = torch.lerp(a, b, col_weight), torch.lerp(c, d, col_weight)
    return torch.lerp(top, bottom, row_weight[:, None])


def _parts(start: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split pixel ranges [start, end) (B,) into _SPLIT parts [bounds k, bounds k + 1) (some empty).

    Returns (bounds (_SPLIT + 1, B), points (_SPLIT + 1, B)): part k's pixels lie between pixels
    points k and k + 1 (its first pixel, and the next part's first or the range's last), in the range.
    """
    steps = torch.arange(_SPLIT + 1, device=start.device)[:, None]
    bounds = start + steps * (end - start) // _SPLIT
    return bounds, torch.minimum(bounds, end - 1)


def _refine(blocks, pairs, row_weight, col_weight, slack):
    """Split every block of output pixels (inside one cell) _SPLIT x _SPLIT; keep, per part, the channels
    that can still win in it.

    In a cell, a channel's upsampled value is bilinear in (row weight, column weight), so over a
    rectangle of pixels its maximum and minimum lie at the rectangle's corners. A channel whose maximum
    over a part is below the largest minimum over it (less `slack`) cannot win there. Parts' corners
    are the shared points of _parts, so a pair costs (_SPLIT + 1)^2 values.
    blocks: (r0, r1, c0, c1) pixel ranges, each (B,); pairs: (block (n,), channel (n,), corners (4, n)).
    """
    r0, r1, c0, c1 = blocks
    block, channel, corners = pairs
    n, num_parts = block.numel(), _SPLIT * _SPLIT
    row_bounds, row_points = _parts(r0, r1)
    col_bounds, col_points = _parts(c0, c1)
    values = _bilinear(
        corners, row_weight[row_points].index_select(1, block), col_weight[col_points].index_select(1, block)
    )
    high = torch.maximum(values[:-1], values[1:])
    high = torch.maximum(high[:, :-1], high[:, 1:]).reshape(num_parts, n)
    low = torch.minimum(values[:-1], values[1:])
    low = torch.minimum(low[:, :-1], low[:, 1:]).reshape(num_parts, n)
    threshold = low.new_full((num_parts, r0.numel()), -math.inf)
    threshold.scatter_reduce_(1, block.expand(num_parts, n), low, "amax")
    row_valid = row_bounds[1:] > row_bounds[:-1]
    col_valid = col_bounds[1:] > col_bounds[:-1]
    valid = (row_valid[:, None] & col_valid[None]).view(num_parts, -1)  # (part, block)
    threshold = (threshold - slack).masked_fill_(~valid, math.inf)
    kept = (high >= threshold.index_select(1, block)).view(-1).nonzero().squeeze(1)
    part, parent = kept // n, kept % n
    new_id = valid.view(-1).cumsum(0) - 1  # new blocks in (part, block) order
    new_blocks = tuple(
        bounds.expand(_SPLIT, _SPLIT, -1).reshape(num_parts, -1)[valid]
        for bounds in (
            row_bounds[:-1, None],
            row_bounds[1:, None],
            col_bounds[None, :-1],
            col_bounds[None, 1:],
        )
    )
    new_pairs = (
        new_id.take(part * r0.numel() + block.index_select(0, parent)),
        channel.index_select(0, parent),
        corners.index_select(1, parent),
    )
    return new_blocks, new_pairs


def _finish(blocks, pairs, row_weight, col_weight, result, num_classes, out_dtype):
    """Blocks of at most _FINISH x _FINISH pixels: evaluate every pair at every pixel of its block and
    write the argmax (ties to the lowest channel) into `result`. Values are rounded to `out_dtype`
    first, as F.interpolate's output is (float16 / bfloat16 logits: many exact ties)."""
    r0, r1, c0, c1 = blocks
    block, channel, corners = pairs
    n, num_pixels = block.numel(), _FINISH * _FINISH
    steps = torch.arange(_FINISH, device=r0.device)[:, None]
    rows, cols = r0 + steps, c0 + steps  # (_FINISH, B)
    valid = ((rows < r1)[:, None] & (cols < c1)[None]).view(num_pixels, -1)
    rows, cols = torch.minimum(rows, r1 - 1), torch.minimum(cols, c1 - 1)
    values = _bilinear(
        corners, row_weight[rows].index_select(1, block), col_weight[cols].index_select(1, block)
    )
    values = values.view(num_pixels, n)
    if out_dtype != values.dtype:
        values = values.to(out_dtype).to(values.dtype)
    index = block.expand(num_pixels, n)
    best = values.new_full((num_pixels, r0.numel()), -math.inf).scatter_reduce_(1, index, values, "amax")
    candidate = torch.where(values == best.index_select(1, block), channel, num_classes)
    winner = torch.full_like(best, num_classes, dtype=torch.long).scatter_reduce_(1, index, candidate, "amin")
    pixel_rows = rows[:, None].expand(_FINISH, _FINISH, -1).reshape(num_pixels, -1)[valid]
    pixel_cols = cols[None].expand(_FINISH, _FINISH, -1).reshape(num_pixels, -1)[valid]
    result[pixel_rows, pixel_cols] = winner[valid]


def _per_cell_argmax(
    logits: torch.Tensor,
    size: tuple[int, int],
    bounds: tuple | None = None,
    work_limit: float | None = None,
) -> torch.Tensor | None:
    """Argmax of the bilinearly upsampled logits (K, h, w) from per-cell candidates, refined coarse to fine.

    Each output pixel lies in one cell of the edge-replicated map (at its PyTorch source indices i0, j0).
    A cell's candidates are the channels whose cell maximum reaches the cell threshold, raised to the
    reference floor (_cell_bounds). The cell's output pixels are then split in _SPLIT x _SPLIT blocks,
    again and again, each keeping only the channels whose maximum over it reaches the largest minimum
    over it (_refine), until blocks are at most _FINISH x _FINISH pixels, where the channels left are
    evaluated pixel by pixel (_finish). For a random-init model with 21,841 classes and a 32 x 32 map
    upsampled to 512 x 512, a cell keeps ~870 channels (~1,800 without the floor), a 4 x 4 block ~15.
    (block, channel) pairs are processed in batches of about _PAIRS_PER_STEP, depth first, so
    temporaries stay bounded (~100 MiB).

    Values are computed with this function's own float arithmetic (lerp), which differs from PyTorch's
    upsampling kernel by a few eps: the result equals interpolate-then-argmax except at pixels whose
    top two upsampled values are within that rounding (~1e-6 for logits of order 1); ties go to the
    lowest channel. Pruning keeps a slack of _SLACK_EPS * eps * max |logit|, so it never drops the
    winner of this arithmetic. Returns None if the work would exceed `work_limit` pair refinements
    (masses of exact ties) or the logits are not finite.
    """
    num_classes, h, w = logits.shape
    height, width = size
    device = logits.device
    _, mask, counts, slack = bounds if bounds is not None else _cell_bounds(logits, _SLACK_EPS, size)
    if not math.isfinite(slack):
        return None
    dtype = opmath_dtype(logits.dtype)

    row_weight, row_start, row_end = _cell_pixels(h, height, dtype, device)
    col_weight, col_start, col_end = _cell_pixels(w, width, dtype, device)
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    cell_i, cell_j = torch.meshgrid(rows[row_end > row_start], cols[col_end > col_start], indexing="ij")
    cell_i, cell_j = cell_i.flatten(), cell_j.flatten()  # the cells that hold output pixels
    if cell_i.numel() < h * w:
        mask, counts = mask[:, cell_i * w + cell_j], counts[cell_i * w + cell_j]
    corner_offsets = _corner_offsets(cell_i, cell_j, h, w)
    flat = logits.reshape(-1)

    # Work items: runs of cells with ~_PAIRS_PER_STEP candidate pairs each, refined depth first.
    group = torch.div(counts.cumsum(0) - 1, _PAIRS_PER_STEP, rounding_mode="floor")
    ends = torch.unique_consecutive(group, return_counts=True)[1].cumsum(0).tolist()
    items = list(zip([0, *ends[:-1]], ends, strict=True))[::-1]

    result = torch.empty(height, width, dtype=torch.long, device=device)
    work = 0
    while items:
        item = items.pop()
        if isinstance(item[0], int):  # a run of cells: its candidate pairs
            start, end = item
            channel, cell = mask[:, start:end].nonzero(as_tuple=True)  # channel-major: reads along rows
            i, j = cell_i[start:end], cell_j[start:end]
            blocks = (row_start[i], row_end[i], col_start[j], col_end[j])
            corners = flat.take(corner_offsets[:, start:end].index_select(1, cell) + channel * (h * w)).to(
                dtype
            )
            pairs = (cell, channel, corners)
        else:
            blocks, pairs = item
        block, num_blocks = pairs[0], blocks[0].numel()
        if block.numel() > _PAIRS_PER_STEP and num_blocks > 1:  # halve the batch, by pairs
            cumulative = torch.bincount(block, minlength=num_blocks).cumsum(0)
            cut = min(max(int(torch.searchsorted(cumulative, block.numel() // 2)), 1), num_blocks - 1)
            first = block < cut
            second = (block[~first] - cut, pairs[1][~first], pairs[2][:, ~first])
            items.append((tuple(b[cut:] for b in blocks), second))
            items.append(
                (tuple(b[:cut] for b in blocks), (block[first], pairs[1][first], pairs[2][:, first]))
            )
            continue
        work += block.numel()
        if work_limit is not None and work > work_limit:
            return None
        if max(int((blocks[1] - blocks[0]).max()), int((blocks[3] - blocks[2]).max())) <= _FINISH:
            _finish(blocks, pairs, row_weight, col_weight, result, num_classes, logits.dtype)
        else:
            items.append(_refine(blocks, pairs, row_weight, col_weight, slack))
    return result


def upsampled_argmax(logits: torch.Tensor, size: tuple[int, int], chunk_size: int = 64) -> torch.Tensor:
    """argmax over channels of `interpolate(logits, size, bilinear)` for one image's (K, h, w) logits,
    without building the K x H x W upsampled logits.

    Channels that cannot win anywhere are pruned first (candidate_classes, raised to the reference floor
    of the output pixels: _cell_bounds). If at most _EXACT_PATH_CHANNELS remain (trained models: a few
    classes per image), they are upsampled with F.interpolate, chunk_size channels at a time (memory
    O(chunk_size x H x W)), bit-identical to the full argmax. Otherwise (large vocabularies, where
    nearly every class wins in some cell) candidates are refined per cell and per block of output
    pixels (_per_cell_argmax), at a cost of about H x W x (a few candidates) instead of H x W x (union).
    That path computes values with its own float arithmetic, a few eps from PyTorch's kernel, so it
    equals the full argmax except where the top two upsampled values are within float rounding (~1e-6
    for logits of order 1: rare, and a near-tie either way). Ties resolve to the lowest channel on both
    paths.
    """
    size = (int(size[0]), int(size[1]))
    bounds = _cell_bounds(logits, _SLACK_EPS, size)
    candidates = bounds[0].nonzero().flatten()
    if candidates.numel() > _EXACT_PATH_CHANNELS and size[0] * size[1] > 0:
        work_limit = candidates.numel() * size[0] * size[1] / _PAIR_COST
        result = _per_cell_argmax(logits, size, bounds=bounds, work_limit=work_limit)
        if result is not None:
            return result
    del bounds
    return _exact_argmax(logits, size, candidates, chunk_size)


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
