# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""LarvSeg loss terms: pure tensor code, no I/O, no Python loop over pairs or pixels.

Conventions shared by every function here:
- `logits` are (B, K, H, W) over K "columns", a subset of the vocabulary chosen for this step.
- `class_mask` (B, K) bool says which columns a sample may use (its dataset's sampled classes);
  None means all. Columns outside it are excluded from the softmax.
- Image-level targets are multi-hot (B, K) over the same columns; each True entry is one
  (image, label) pair. Pairs are listed in row-major order by `image_label_pairs`.
- A standardised map is (x - mean) / sqrt(var + eps) over its pixels, population variance.
- `pixel_mask` (B, H, W) bool marks the image's own pixels (False on the padding a crop smaller than the
  batch gets); None means every pixel is real. Image-level pooling, attention and bank writes use the
  real pixels only: padding is not part of the image its labels describe.
- `image_source` (B,) int64 names each image's data source. With it, a loss is averaged over each
  source's pixels or pairs separately and the sources' means are combined in proportion to their images
  (`per_source_mean`), as the reference averages per GPU (one dataset each) and then across GPUs;
  None averages over the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .reductions_larvseg import any_true
from .resize_larvseg import bilinear_resize_transposed, channels_last

STANDARDIZE_EPS = 1e-5


def per_source_mean(
    values: torch.Tensor, item_image: torch.Tensor, image_source: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of per-item losses (pixels or pairs): over all items, or with `image_source` the mean within
    each source weighted by the number of that source's images that have items."""
    if image_source is None:
        return values.mean()
    return ItemLosses.of_items(values, item_image, image_source.shape[0]).mean(image_source)


@dataclass
class ItemLosses:
    """A loss term before its mean, as each image's sum of item losses (pixels or pairs) and item count.
    Terms computed on parts of a batch (each group of samples on its own classifier columns) are
    concatenated and reduced once, so the mean is the one a single pass over the whole batch takes; per
    image, not per item, so a pixel loss map is summed in place rather than indexed pixel by pixel."""

    sums: torch.Tensor  # (b,) per image of the part it was computed on
    counts: torch.Tensor  # (b,) items per image, in the sums' dtype
    zero: torch.Tensor  # a 0 connected to the part's logits, for a term with no items anywhere

    @classmethod
    def empty(cls, logits: torch.Tensor) -> ItemLosses:
        none = logits.new_zeros(logits.shape[0])
        return cls(none, none, _zero_loss(logits))

    @classmethod
    def of_items(cls, values: torch.Tensor, item_image: torch.Tensor, batch: int) -> ItemLosses:
        """From one loss per item and the image each belongs to (few items: pairs)."""
        sums = values.new_zeros(batch).index_add_(0, item_image, values)
        counts = torch.bincount(item_image, minlength=batch).to(values.dtype)
        return cls(sums, counts, values.sum() * 0.0)

    def mean(self, image_source: torch.Tensor | None = None) -> torch.Tensor:
        """The mean over all items, or with `image_source` (b,) the mean within each source weighted by
        the number of the source's images that have items."""
        if image_source is None:
            total = self.counts.sum()
            return self.sums.sum() / total if total > 0 else self.zero
        num_sources = int(image_source.max()) + 1
        sums = self.sums.new_zeros(num_sources).index_add_(0, image_source, self.sums)
        counts = self.counts.new_zeros(num_sources).index_add_(0, image_source, self.counts)
        weights = self.counts.new_zeros(num_sources).index_add_(
            0, image_source, (self.counts > 0).to(sums.dtype)
        )
        if not weights.any():
            return self.zero
        return (sums / counts.clamp(min=1) * weights).sum() / weights.sum()

    @staticmethod
    def reduce(
        parts: list[tuple[ItemLosses, torch.Tensor]], image_source: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The term's mean over `parts`, (per-image losses, batch index of each of the part's images), as
        `per_source_mean` over the whole batch takes it."""
        whole = ItemLosses(
            torch.cat([items.sums for items, _ in parts]),
            torch.cat([items.counts for items, _ in parts]),
            sum(items.zero for items, _ in parts),
        )
        if image_source is None:
            return whole.mean()
        return whole.mean(image_source[torch.cat([batch_index for _, batch_index in parts])])


def _reduced(
    values: torch.Tensor,
    item_image: torch.Tensor,
    image_source: torch.Tensor | None,
    reduce: bool,
    batch: int,
) -> torch.Tensor | ItemLosses:
    if reduce:
        return per_source_mean(values, item_image, image_source)
    return ItemLosses.of_items(values, item_image, batch)


def _excluded(logits: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(exclude, float("-inf"))


def _zero_loss(logits: torch.Tensor) -> torch.Tensor:
    # Keeps the graph connected (DDP expects every step to touch the same parameters).
    return logits.sum() * 0.0


def supervised_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    image_source: torch.Tensor | None = None,
    reduce: bool = True,
) -> torch.Tensor | ItemLosses:
    """Per-pixel cross-entropy; `labels` (B, H, W) hold column indices or `ignore_index`. `reduce=False`
    returns each image's loss sum and pixel count instead of the mean (see `ItemLosses`)."""
    if logits.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in size")
    valid = labels != ignore_index
    if not any_true(valid):
        return _zero_loss(logits) if reduce else ItemLosses.empty(logits)
    if class_mask is not None:
        logits = _excluded(logits, ~class_mask[:, :, None, None])
    if channels_last(logits):
        # (pixels, K) rows for the softmax, a view of channels-last logits: PyTorch's cross-entropy over
        # the class axis of a channels-last (B, K, H, W) map takes ~2x as long as over contiguous rows.
        logits, labels = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1]), labels.reshape(-1)
    if image_source is None and reduce:
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)
    losses = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")  # 0 where ignored
    per_image = losses.view(valid.shape[0], -1).sum(1)
    items = ItemLosses(per_image, valid.flatten(1).sum(1).to(losses.dtype), _zero_loss(logits))
    return items.mean(image_source) if reduce else items


def image_label_pairs(image_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image index, column, rank of the pair within its image) for every True entry, row-major."""
    pair_image, pair_column = image_targets.bool().nonzero(as_tuple=True)
    counts = torch.bincount(pair_image, minlength=image_targets.shape[0])
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(pair_image.numel(), device=pair_image.device) - starts[pair_image]
    return pair_image, pair_column, rank


def pooled_pair_cross_entropy(
    pooled: torch.Tensor,
    pair_image: torch.Tensor,
    pair_column: torch.Tensor,
    image_targets: torch.Tensor,
    class_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of each pair's pooled logits (P, K) against its label, with the image's OTHER
    labelled columns dropped so that co-occurring classes are not pushed down. Returns (P,)."""
    others = image_targets.bool()[pair_image]
    others[torch.arange(pair_image.numel(), device=pooled.device), pair_column] = False
    exclude = others if class_mask is None else others | ~class_mask.bool()[pair_image]
    log_probs = torch.log_softmax(_excluded(pooled, exclude), dim=1)
    return -log_probs.gather(1, pair_column[:, None]).squeeze(1)


def masked_mean_pool(logits: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K, h, w) -> (B, K): the mean over each image's real pixels. A `pixel_mask` (B, H, W) larger than the
    logits pools the logits bilinearly upsampled to its size, computed without upsampling them (the mask is
    brought down by the resize's transpose: pooling is linear)."""
    if pixel_mask is None:
        return logits.mean((2, 3))
    weights = pixel_mask.to(logits.dtype)
    count = weights.sum((1, 2)).clamp(min=1)
    weights = bilinear_resize_transposed(weights, logits.shape[-2:])
    return torch.einsum("bkhw,bhw->bk", logits, weights) / count[:, None]


def image_level_loss(
    logits: torch.Tensor,
    image_targets: torch.Tensor,
    class_mask: torch.Tensor | None = None,
    pixel_mask: torch.Tensor | None = None,
    image_source: torch.Tensor | None = None,
    reduce: bool = True,
    pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor | ItemLosses:
    """Baseline image-level loss: mean-pooled logits, one cross-entropy per (image, label) pair,
    averaged over the pairs (per source with `image_source`); `reduce=False`: the pairs' losses.
    `pairs`: `image_label_pairs(image_targets)` when the caller has them already."""
    pair_image, pair_column, _ = image_label_pairs(image_targets) if pairs is None else pairs
    if pair_image.numel() == 0:
        return _zero_loss(logits) if reduce else ItemLosses.empty(logits)
    pooled = masked_mean_pool(logits, pixel_mask)[pair_image]
    losses = pooled_pair_cross_entropy(pooled, pair_image, pair_column, image_targets, class_mask)
    return _reduced(losses, pair_image, image_source, reduce, logits.shape[0])


def standardize(
    maps: torch.Tensor, eps: float = STANDARDIZE_EPS, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Standardise over the last dimension (flattened pixels); with `valid` (broadcastable bool), over
    the valid pixels only, and 0 elsewhere."""
    if valid is None:
        # A layer norm without affine parameters is exactly this, in one fused pass (torch.var's Welford
        # pass on CPU takes several times as long).
        return F.layer_norm(maps, maps.shape[-1:], eps=eps)
    weights = valid.to(maps.dtype)
    count = weights.sum(-1, keepdim=True).clamp(min=1)
    mean = (maps * weights).sum(-1, keepdim=True) / count
    var = (((maps - mean) * weights) ** 2).sum(-1, keepdim=True) / count
    return (maps - mean) / torch.sqrt(var + eps) * weights


def topk_slot_features(
    features: torch.Tensor,
    scores: torch.Tensor,
    pair_image: torch.Tensor,
    pair_column: torch.Tensor,
    k: int = 20,
    pixel_mask: torch.Tensor | None = None,
    return_counts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mean normalised feature of the top-k real pixels of each pair's image by its class's raw score:
    the one slot that pair enqueues. features (B, d, h, w), scores (B, K, h, w) -> (P, d); with
    `return_counts` also (P,) the number of pixels averaged (fewer than k on small images)."""
    flat_scores = scores.detach().flatten(2)[pair_image, pair_column]  # (P, X)
    if pixel_mask is not None:
        flat_scores = flat_scores.masked_fill(~pixel_mask.flatten(1)[pair_image], float("-inf"))
    means, counts = _mean_of_top(features, flat_scores, pair_image, k)
    return (means, counts) if return_counts else means


def _mean_of_top(
    features: torch.Tensor, flat_scores: torch.Tensor, pair_image: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature of each row's k highest finite scores (fewer when fewer are finite), and how many."""
    top = flat_scores.topk(min(k, flat_scores.shape[-1]), dim=-1)
    weights = torch.isfinite(top.values).to(features.dtype)  # (P, k)
    flat_features = features.detach().flatten(2).transpose(1, 2)  # (B, X, d)
    picked = flat_features[pair_image[:, None], top.indices]  # (P, k, d)
    counts = weights.sum(1)
    return (picked * weights[..., None]).sum(1) / counts.clamp(min=1)[:, None], counts


def mask_slot_features(
    features: torch.Tensor,
    scores: torch.Tensor,
    column_labels: torch.Tensor,
    k: int = 20,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One slot per (mask image, class present): the mean normalised feature of the class's top-k pixels
    by its raw score, among the pixels its mask gives it (all of them when fewer than k).

    features (B, d, h, w), scores (B, K, h, w), column_labels (B, h, w) column ids or ignore_index.
    Returns (pair column (P,), slot means (P, d), pixels averaged per slot (P,)).
    """
    batch, num_columns = scores.shape[:2]
    flat_labels = column_labels.flatten(1)  # (B, X)
    valid = flat_labels != ignore_index
    present = torch.zeros(batch, num_columns, dtype=torch.bool, device=scores.device)
    rows = torch.arange(batch, device=scores.device)[:, None].expand_as(flat_labels)
    present[rows[valid], flat_labels[valid]] = True
    pair_image, pair_column = present.nonzero(as_tuple=True)
    inside = flat_labels[pair_image] == pair_column[:, None]  # (P, X)
    flat_scores = scores.detach().flatten(2)[pair_image, pair_column].masked_fill(~inside, float("-inf"))
    return (pair_column, *_mean_of_top(features, flat_scores, pair_image, k))


def likely_present(
    scores: torch.Tensor, topk: int = 5, threshold: float = 0.35, pixel_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K) bool: columns whose mean of the top-k raw scores over the image's real pixels exceeds
    `threshold`, the background test of CA-Cls when an image has no other labels."""
    flat_scores = scores.detach().flatten(2)
    if pixel_mask is not None:
        flat_scores = flat_scores.masked_fill(~pixel_mask.flatten(1)[:, None, :], float("-inf"))
    return flat_scores.topk(min(topk, flat_scores.shape[-1]), dim=-1).values.mean(-1) > threshold


def attentive_scores(
    features: torch.Tensor,
    scores: torch.Tensor,
    bank_means: torch.Tensor,
    bank_usable: torch.Tensor,
    pair_image: torch.Tensor,
    pair_column: torch.Tensor,
    image_targets: torch.Tensor | None = None,
    *,
    background_topk: int = 5,
    background_threshold: float = 0.35,
    synonym_mse_threshold: float = 2.0,
    background_suppression: bool = True,
    class_mask: torch.Tensor | None = None,
    pixel_mask: torch.Tensor | None = None,
    synonym_filter_routes: str = "threshold",
    pair_rank: torch.Tensor | None = None,
) -> torch.Tensor:
    """CA-Cls attention logits (before the sigmoid), standardised over each image's pixels.

    Args:
        features: (B, d, h, w) normalised pixel features (detached inside).
        scores: (B, K, h, w) raw cosine scores, used to find likely-present background classes.
        bank_means: (K, d) mean stored feature of each column's class; bank_usable: (K,) bool.
        pair_image, pair_column: (P,) the (image, label) pairs to attend for.
        image_targets: (B, K) other labels of each image, the background classes when present;
            None (inference) always uses the score threshold.
        background_suppression: False keeps the foreground score alone (an ablation).
        class_mask: (B, K) columns each image's dataset sampled; background classes come only from these.
        pixel_mask: (B, h, w) real pixels; statistics, top-k and standardisation use only these.
        synonym_filter_routes: "threshold" drops likely synonyms (standardised maps within
            `synonym_mse_threshold` in mean squared difference of the foreground) only among background
            classes found by the score threshold, as the reference; "both" also among an image's other labels.
        pair_rank: (P,) each pair's position among its image's pairs, when the caller has it
            (`image_label_pairs`); computed otherwise.
    Returns:
        (P, h, w): standardise(foreground - mean(background)), or standardise(2 * foreground - 1)
        where no background class survives; 0 on padding. A pair whose class is not usable is the
        caller's to drop.
    """
    batch, _, height, width = features.shape
    num_columns = scores.shape[1]
    if pair_image.numel() == 0:
        return features.new_zeros(0, height, width)
    flat_features = features.detach().flatten(2)  # (B, d, X)
    bank_maps = torch.matmul(bank_means.to(flat_features.dtype), flat_features)  # (B, K, X), contiguous
    foreground = bank_maps[pair_image, pair_column]  # (P, X)

    valid = None if pixel_mask is None else pixel_mask.flatten(1)  # (B, X)
    count = torch.full((batch, 1), float(height * width), device=features.device)
    if valid is not None:
        count = valid.sum(1, keepdim=True).clamp(min=1).to(count.dtype)

    own = F.one_hot(pair_column, num_columns).bool()
    if image_targets is None:
        threshold_route = torch.ones_like(pair_image, dtype=torch.bool)[:, None]
    else:
        others = image_targets.bool()[pair_image] & ~own
        threshold_route = ~others.any(1, keepdim=True)
    if any_true(threshold_route):  # the score test, only when a pair's image has no other label to use
        present = likely_present(scores, background_topk, background_threshold, pixel_mask)[pair_image] & ~own
        candidates = present if image_targets is None else torch.where(threshold_route, present, others)
    else:
        candidates = others
    candidates = candidates & bank_usable[None, :] & background_suppression
    if class_mask is not None:
        candidates = candidates & class_mask.bool()[pair_image]

    # Per-pair work runs on a (B, L, ...) layout (L = most pairs in one image), so no (P, K, X) copy
    # of the maps is ever made: one einsum per image gives every pair's cross terms.
    pair_rank = _rank_within_image(pair_image, batch) if pair_rank is None else pair_rank
    slots = int(pair_rank.max()) + 1
    standardized = standardize(bank_maps, valid=None if valid is None else valid[:, None, :])  # (B, K, X)
    standardized_fg = standardized[pair_image, pair_column]  # (P, X)
    padded_fg = standardized.new_zeros(batch, slots, standardized.shape[-1])
    padded_fg[pair_image, pair_rank] = standardized_fg
    # Means over real pixels: standardised maps are 0 on padding, so sums / count.
    pair_count = count[pair_image]  # (P, 1)
    cross = torch.einsum("blx,bkx->blk", padded_fg, standardized)[pair_image, pair_rank] / pair_count
    squares = (standardized**2).sum(-1) / count  # (B, K)
    mse = (standardized_fg**2).sum(-1, keepdim=True) / pair_count + squares[pair_image] - 2 * cross  # (P, K)
    filtered = threshold_route if synonym_filter_routes == "threshold" else torch.ones_like(threshold_route)
    keep = candidates & ((mse > synonym_mse_threshold) | ~filtered)

    num_kept = keep.sum(1, keepdim=True)
    weights = bank_maps.new_zeros(batch, slots, num_columns)
    weights[pair_image, pair_rank] = keep.to(bank_maps.dtype) / num_kept.clamp(min=1)
    background = torch.einsum("blk,bkx->blx", weights, bank_maps)[pair_image, pair_rank]  # (P, X)
    combined = torch.where(num_kept > 0, foreground - background, 2 * foreground - 1)
    return standardize(combined, valid=None if valid is None else valid[pair_image]).view(-1, height, width)


def _rank_within_image(pair_image: torch.Tensor, batch: int) -> torch.Tensor:
    """Position of each pair among its image's pairs (pairs need not be sorted)."""
    order = torch.sort(pair_image, stable=True).indices
    counts = torch.bincount(pair_image, minlength=batch)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(pair_image)
    rank[order] = torch.arange(pair_image.numel(), device=pair_image.device) - starts[pair_image[order]]
    return rank


def attentive_image_level_loss(
    logits: torch.Tensor,
    attention: torch.Tensor,
    pair_image: torch.Tensor,
    pair_column: torch.Tensor,
    pair_rank: torch.Tensor,
    image_targets: torch.Tensor,
    class_mask: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    pixel_mask: torch.Tensor | None = None,
    image_source: torch.Tensor | None = None,
    reduce: bool = True,
) -> torch.Tensor | ItemLosses:
    """The image-level loss on attentive logits (logits of every column times the pair's attention).

    `attention` (P, H, W) in (0, 1); `valid` (P,) drops pairs whose class has no usable bank yet;
    `pixel_mask` (B, H, W) pools over real pixels only. Logits smaller than the attention (B, K, h, w) are
    pooled as if bilinearly upsampled to (H, W), without upsampling them: each pair's pixel weights are
    brought down by the resize's transpose instead (pooling is linear). The pooled attentive logits of
    all pairs come from one einsum over a per-image padded layout, so logits are never copied per pair.
    """
    if valid is not None:
        pair_image, pair_column, pair_rank, attention = (
            pair_image[valid],
            pair_column[valid],
            pair_rank[valid],
            attention[valid],
        )
    if pair_image.numel() == 0:
        return _zero_loss(logits) if reduce else ItemLosses.empty(logits)
    batch, _, height, width = logits.shape
    weights = attention.to(logits.dtype)
    count = torch.full((batch,), float(attention.shape[-2] * attention.shape[-1]), device=logits.device)
    if pixel_mask is not None:
        real = pixel_mask.to(logits.dtype)
        weights = weights * real[pair_image]
        count = real.sum((1, 2)).clamp(min=1)
    weights = bilinear_resize_transposed(weights, (height, width))
    slots = int(pair_rank.max()) + 1
    padded = weights.new_zeros(batch, slots, height * width)
    padded[pair_image, pair_rank] = weights.flatten(1)
    pooled = torch.einsum("bkx,blx->blk", logits.flatten(2), padded) / count[:, None, None]
    pooled = pooled[pair_image, pair_rank]  # (P, K)
    losses = pooled_pair_cross_entropy(pooled, pair_image, pair_column, image_targets, class_mask)
    return _reduced(losses, pair_image, image_source, reduce, logits.shape[0])


__all__ = [
    "attentive_image_level_loss",
    "attentive_scores",
    "image_label_pairs",
    "ItemLosses",
    "image_level_loss",
    "likely_present",
    "mask_slot_features",
    "masked_mean_pool",
    "per_source_mean",
    "pooled_pair_cross_entropy",
    "standardize",
    "supervised_loss",
    "topk_slot_features",
]
