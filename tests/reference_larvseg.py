"""A deliberately simple, loop-based reference of the LarvSeg losses, written from METHOD.md and
REFERENCE_IMPL.md (the facts about the authors' code, where this package follows them).

Nothing here is vectorised on purpose: every quantity is computed with explicit loops over images,
labels, classes and pixels, on Python floats (or float64 tensors for feature dot products), so that
it shares no code path with `larvseg_hf.losses_larvseg`. The memory bank is the FULL published
layout: per class a FIFO (deque, maxlen M) of slots, each slot holding the K raw normalised features
of one image's top-K pixels.

Conventions (METHOD.md and the package docstring): a standardised map is
(x - mean) / sqrt(population variance + 1e-5) over its pixels; logits are (B, K, H, W) over K
columns; `class_mask[b][k]` says whether image b may use column k (None = all columns);
`image_source[b]` names image b's data source (None = one average over the batch).

Rules taken from the specs (not from the package):
- Per-source averaging (REFERENCE_IMPL "differs" 3): each GPU of the authors holds one dataset and averages
  a loss over its own pixels / (image, label) pairs; the gradient is then averaged over GPUs. With all the
  sources in one batch: each term's mean within each source, combined in proportion to the number of that
  source's images that contribute items (`ref_source_average`).
- Synonym filter (REFERENCE_IMPL "differs" 1): on the score-threshold route only (an image without other
  labels); "both" also filters an image's other labels (the package's option, METHOD.md's wording).
- Warm-up (METHOD.md "wrapped at least W times; W = 1", REFERENCE_IMPL "no CA-Cls loss until the ring is
  full"): W = 1 means the ring of M slots is full. W > 1 (writes >= W * M) and W = 0 (any write) are this
  package's extensions; the reference reads them the same literal way.
- Class sampling (METHOD.md "Class sampling", REFERENCE_IMPL "differs" 2): per step and source, every class
  present in that source's samples plus random negatives from the source's OWN vocabulary, up to
  `num_sampled_classes` (the whole pool when it is smaller); one draw per source (`ref_column_violations`).
"""

from __future__ import annotations

import math
from collections import deque

import torch

EPS = 1e-5


# ----------------------------------------------------------------------------------------- helpers


def _as_lists(tensor: torch.Tensor) -> list:
    return tensor.detach().double().tolist()


def _allowed(class_mask, b: int, k: int) -> bool:
    return class_mask is None or bool(class_mask[b][k])


def standardize_values(values: list[float], eps: float = EPS) -> list[float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n
    return [(v - mean) / math.sqrt(var + eps) for v in values]


def population_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def cross_entropy(values: list[float], target: int, allowed: list[int]) -> float:
    """-log softmax(values restricted to `allowed`)[target]."""
    top = max(values[k] for k in allowed)
    lse = top + math.log(sum(math.exp(values[k] - top) for k in allowed))
    return lse - values[target]


def ref_source_average(items: list[tuple[int, float]], image_source=None) -> float:
    """Average of per-item losses `(image, loss)` (pixels or pairs); 0 without items.

    image_source None: one mean over all items. Otherwise the mean within each source, the sources' means
    weighted by how many of that source's images have at least one item (the authors' per-GPU means,
    averaged over GPUs that each hold a fixed number of images)."""
    if not items:
        return 0.0
    if image_source is None:
        return sum(loss for _, loss in items) / len(items)
    by_source: dict[int, list[tuple[int, float]]] = {}
    for b, loss in items:
        by_source.setdefault(int(image_source[b]), []).append((b, loss))
    total, weight = 0.0, 0
    for source_items in by_source.values():
        mean = sum(loss for _, loss in source_items) / len(source_items)
        images = len({b for b, _ in source_items})
        total += images * mean
        weight += images
    return total / weight


def bilinear(grid: list[list[float]], out_h: int, out_w: int) -> list[list[float]]:
    """Bilinear resize with half-pixel centres (align_corners=False), source clamped at 0."""
    in_h, in_w = len(grid), len(grid[0])

    def source(index: int, in_size: int, out_size: int) -> tuple[int, int, float]:
        position = max((index + 0.5) * in_size / out_size - 0.5, 0.0)
        low = min(int(math.floor(position)), in_size - 1)
        high = min(low + 1, in_size - 1)
        return low, high, position - low

    out = []
    for i in range(out_h):
        i0, i1, wy = source(i, in_h, out_h)
        row = []
        for j in range(out_w):
            j0, j1, wx = source(j, in_w, out_w)
            top = (1 - wx) * grid[i0][j0] + wx * grid[i0][j1]
            bottom = (1 - wx) * grid[i1][j0] + wx * grid[i1][j1]
            row.append((1 - wy) * top + wy * bottom)
        out.append(row)
    return out


# ----------------------------------------------------------------------------------------- mask norm


def ref_mask_norm(scores: torch.Tensor, gamma: float, beta: float, class_mask=None, eps: float = EPS):
    """Per pixel: standardise the scores across the columns in use, then gamma * . + beta (every column)."""
    s = _as_lists(scores)
    batch, columns, height, width = scores.shape
    out = torch.zeros(scores.shape, dtype=torch.float64)
    for b in range(batch):
        used = [k for k in range(columns) if _allowed(class_mask, b, k)]
        for i in range(height):
            for j in range(width):
                mean = sum(s[b][k][i][j] for k in used) / len(used)
                var = sum((s[b][k][i][j] - mean) ** 2 for k in used) / len(used)
                for k in range(columns):
                    out[b, k, i, j] = gamma * (s[b][k][i][j] - mean) / math.sqrt(var + eps) + beta
    return out


# ----------------------------------------------------------------------------------------- losses 1 and 2


def ref_supervised_loss(
    logits: torch.Tensor, labels: torch.Tensor, class_mask=None, ignore_index=-100, image_source=None
):
    """Mean over labelled pixels of the per-pixel cross-entropy over the image's allowed columns
    (per source with `image_source`: images with labelled pixels count)."""
    z = _as_lists(logits)
    y = labels.tolist()
    batch, columns, height, width = logits.shape
    items = []
    for b in range(batch):
        allowed = [k for k in range(columns) if _allowed(class_mask, b, k)]
        for i in range(height):
            for j in range(width):
                if y[b][i][j] == ignore_index:
                    continue
                items.append((b, cross_entropy([z[b][k][i][j] for k in range(columns)], y[b][i][j], allowed)))
    return ref_source_average(items, image_source)


def pair_loss(pooled: list[float], label: int, image_labels: list[int], b: int, class_mask=None) -> float:
    """CE of pooled logits against `label`, with the image's OTHER labels and disallowed columns dropped."""
    allowed = [
        k for k in range(len(pooled)) if _allowed(class_mask, b, k) and (k == label or k not in image_labels)
    ]
    return cross_entropy(pooled, label, allowed)


def _real(real, b: int, i: int, j: int) -> bool:
    return real is None or bool(real[b][i][j])


def ref_image_level_loss(
    logits: torch.Tensor, labels: list[list[int]], class_mask=None, real=None, image_source=None
) -> float:
    """Average over (image, label) pairs (per source with `image_source`) of the CE of the logits mean-pooled
    over the image's real pixels (`real` (B, H, W) bool, None for all); 0 when there is no pair."""
    z = _as_lists(logits)
    batch, columns, height, width = logits.shape
    items = []
    for b in range(batch):
        for label in labels[b]:
            pooled = []
            for k in range(columns):
                acc, n = 0.0, 0
                for i in range(height):
                    for j in range(width):
                        if _real(real, b, i, j):
                            acc += z[b][k][i][j]
                            n += 1
                pooled.append(acc / n)
            items.append((b, pair_loss(pooled, label, labels[b], b, class_mask)))
    return ref_source_average(items, image_source)


# ----------------------------------------------------------------------------------------- memory bank


class FullMemoryBank:
    """The published bank: per class a FIFO of M slots, each slot the (K, d) raw features of one image."""

    def __init__(self, num_classes: int, size: int, warmup: int = 1):
        self.size = size
        self.warmup = warmup
        self.slots = [deque(maxlen=size) for _ in range(num_classes)]
        self.writes = [0] * num_classes

    def enqueue(self, class_id: int, features: torch.Tensor) -> None:
        """Push one slot: the (K, d) normalised features of one image's top-K pixels for this class."""
        self.slots[int(class_id)].append(features.detach().double().clone())
        self.writes[int(class_id)] += 1

    def stored(self, class_id: int) -> list[torch.Tensor]:
        """Every stored feature vector of a class, oldest slot first."""
        return [feature for slot in self.slots[class_id] for feature in slot]

    def usable(self, class_id: int) -> bool:
        """Warm-up. W = 1 (published): the ring is full, all M slots hold a write (REFERENCE_IMPL H:460-461).
        W > 1: additionally W * M writes ("wrapped W times"); W = 0: any write. Both are package extensions."""
        ring = self.slots[class_id]
        if self.warmup <= 0:
            return len(ring) > 0
        return len(ring) == self.size and self.writes[class_id] >= self.warmup * self.size

    def mean_cosine(self, class_id: int, query: torch.Tensor) -> float:
        """Mean over every stored feature of its dot product with `query` (a normalised pixel feature)."""
        stored = self.stored(class_id)
        total = 0.0
        for feature in stored:
            total += float(torch.dot(feature, query.double()))
        return total / len(stored)

    def copy(self) -> FullMemoryBank:
        other = FullMemoryBank(len(self.slots), self.size, self.warmup)
        other.slots = [deque([s.clone() for s in q], maxlen=self.size) for q in self.slots]
        other.writes = list(self.writes)
        return other


def ref_topk_pixel_features(
    features: torch.Tensor, class_scores: torch.Tensor, k: int, real=None
) -> torch.Tensor:
    """One image: features (d, h, w), raw scores of one class (h, w) -> (k, d) features of the top-k
    pixels among the real ones (`real` (h, w) bool, None for all)."""
    _, height, width = features.shape
    ranked = [
        (float(class_scores[i, j]), i, j)
        for i in range(height)
        for j in range(width)
        if real is None or bool(real[i][j])
    ]
    ranked.sort(key=lambda t: -t[0])
    return torch.stack([features[:, i, j].double() for _, i, j in ranked[:k]])


def ref_mask_slot_features(
    features: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, k: int, ignore_index: int = -100
) -> list[tuple[int, torch.Tensor]]:
    """(column, slot) for every (image, class in its mask), image by image and classes in increasing order:
    the mean feature of the class's k best-scoring pixels among those labelled with it."""
    batch, _, height, width = features.shape
    slots = []
    for b in range(batch):
        for c in sorted({int(v) for v in labels[b].flatten().tolist()} - {ignore_index}):
            ranked = [
                (float(scores[b, c, i, j]), i, j)
                for i in range(height)
                for j in range(width)
                if int(labels[b, i, j]) == c
            ]
            ranked.sort(key=lambda t: -t[0])
            picked = [features[b, :, i, j].double() for _, i, j in ranked[:k]]
            slots.append((c, torch.stack(picked).mean(0)))
    return slots


# ----------------------------------------------------------------------------------------- CA-Cls


def ref_attention_map(
    features: torch.Tensor,
    scores: torch.Tensor,
    bank: FullMemoryBank,
    column_classes: list[int],
    label: int,
    image_labels: list[int] | None,
    *,
    background_topk: int = 5,
    background_threshold: float = 0.35,
    synonym_mse_threshold: float = 2.0,
    synonym_filter_routes: str = "threshold",
    background_suppression: bool = True,
    real=None,
    allowed=None,
) -> tuple[list[list[float]], dict]:
    """One image and label column: the standardised combined score (h, w), before the sigmoid.

    features (d, h, w) normalised, scores (K, h, w) raw; `column_classes[k]` is the bank class of column k;
    `real` (h, w) bool: the image's own pixels, the only ones every statistic uses (None for all); the
    map is 0 elsewhere. `allowed` (K,) bool: the columns this image's source sees (its class_mask row, None
    for all): the threshold route looks for background only among them, the classes of its forward pass.
    `synonym_filter_routes`: "threshold" (the authors, REFERENCE_IMPL "differs" 1) drops near-copies of the
    foreground only among threshold-route candidates; "both" also among the image's other labels.
    Returns the map and the details (route, candidates, kept, dropped as synonyms, unusable, mse).
    """
    if synonym_filter_routes not in ("threshold", "both"):
        raise ValueError(
            f"synonym_filter_routes must be 'threshold' or 'both', got {synonym_filter_routes!r}"
        )
    _, height, width = features.shape
    columns = scores.shape[0]
    pixels = [(i, j) for i in range(height) for j in range(width) if real is None or bool(real[i][j])]
    raw = _as_lists(scores)

    def class_map(column: int) -> list[float]:
        return [bank.mean_cosine(column_classes[column], features[:, i, j]) for i, j in pixels]

    foreground = class_map(label)
    others = [k for k in (image_labels or []) if k != label]
    if others:
        route, candidates = "labels", others
    else:
        route, candidates = "threshold", []
        for k in range(columns):
            if k == label or (allowed is not None and not bool(allowed[k])):
                continue
            values = sorted((raw[k][i][j] for i, j in pixels), reverse=True)[:background_topk]
            if sum(values) / len(values) > background_threshold:
                candidates.append(k)
    if not background_suppression:
        candidates = []

    # The synonym test compares the two maps standardised with the POPULATION variance + 1e-5 (METHOD.md's
    # convention, as the package). The authors' `mse` helper (REFERENCE_IMPL, H:25-28) divides by the
    # UNBIASED std instead: a listed difference, not tested here.
    filter_synonyms = route == "threshold" or synonym_filter_routes == "both"
    foreground_std = standardize_values(foreground)
    kept, kept_maps, synonyms, unusable, mses = [], [], [], [], {}
    for k in candidates:
        if not bank.usable(column_classes[k]):
            unusable.append(k)
            continue
        background = class_map(k)
        background_std = standardize_values(background)
        mse = sum((a - f) ** 2 for a, f in zip(background_std, foreground_std, strict=True)) / len(pixels)
        mses[k] = mse
        if filter_synonyms and mse <= synonym_mse_threshold:
            synonyms.append(k)
            continue
        kept.append(k)
        kept_maps.append(background)

    combined = []
    for x in range(len(pixels)):
        if kept_maps:
            combined.append(foreground[x] - sum(m[x] for m in kept_maps) / len(kept_maps))
        else:
            combined.append(foreground[x] - (1.0 - foreground[x]))
    values = dict(zip(pixels, standardize_values(combined), strict=True))
    grid = [[values.get((i, j), 0.0) for j in range(width)] for i in range(height)]
    details = {
        "route": route,
        "candidates": candidates,
        "kept": kept,
        "synonyms": synonyms,
        "unusable": unusable,
        "mse": mses,
        "combined_std": population_std(combined),
    }
    return grid, details


def ref_attentive_loss(
    logits: torch.Tensor,
    features: torch.Tensor,
    scores: torch.Tensor,
    bank: FullMemoryBank,
    column_classes: list[int],
    labels: list[list[int]],
    class_mask=None,
    real_features=None,
    real=None,
    image_source=None,
    **attention_kwargs,
) -> tuple[float, list[dict]]:
    """CA-Cls loss: for each (image, label) pair whose class is usable, attention = sigmoid(bilinear
    upsample of the standardised combined map to the logits' size); attentive logits = logits * a at every
    column; then the image-level loss (mean pool, other labels dropped, CE), averaged over those pairs (per
    source with `image_source`: images with a usable pair count).
    `real_features` (B, h, w) / `real` (B, H, W): the image's own pixels at feature / logits resolution."""
    z = _as_lists(logits)
    batch, columns, height, width = logits.shape
    items, records = [], []
    for b in range(batch):
        for label in labels[b]:
            if not bank.usable(column_classes[label]):
                records.append({"image": b, "label": label, "used": False})
                continue
            grid, details = ref_attention_map(
                features[b],
                scores[b],
                bank,
                column_classes,
                label,
                labels[b],
                real=None if real_features is None else real_features[b],
                allowed=None if class_mask is None else [bool(v) for v in class_mask[b]],
                **attention_kwargs,
            )
            if (len(grid), len(grid[0])) != (height, width):
                grid = bilinear(grid, height, width)
            attention = [[1.0 / (1.0 + math.exp(-v)) for v in row] for row in grid]
            pooled = []
            for k in range(columns):
                acc, n = 0.0, 0
                for i in range(height):
                    for j in range(width):
                        if _real(real, b, i, j):
                            acc += z[b][k][i][j] * attention[i][j]
                            n += 1
                pooled.append(acc / n)
            loss = pair_loss(pooled, label, labels[b], b, class_mask)
            items.append((b, loss))
            records.append({"image": b, "label": label, "used": True, "loss": loss, **details})
    return ref_source_average(items, image_source), records


# ----------------------------------------------------------------------------------------- coseg inference


def ref_coseg_logits(
    logits: torch.Tensor,
    features: torch.Tensor,
    scores: torch.Tensor,
    bank: FullMemoryBank,
    column_classes: list[int],
    *,
    unusable_scale: float,
    **attention_kwargs,
) -> tuple[torch.Tensor, list[dict]]:
    """METHOD.md "coseg inference": each class's logit map (B, K, h, w, feature resolution) times its CA-Cls
    attention from the banks, sigmoid of the standardised combined map. There are no image labels at
    inference, so background always comes from the score threshold (with its synonym filter).

    Neither METHOD.md nor REFERENCE_IMPL says what a class without a usable bank gets (the authors' coseg
    indexes None for it and crashes, a listed bug): `unusable_scale` is the caller's choice, given
    explicitly (the package uses sigmoid(0) = 0.5). Returns the logits and, per (image, usable column), the
    attention map's details."""
    z = _as_lists(logits)
    batch, columns, height, width = logits.shape
    out = torch.zeros(logits.shape, dtype=torch.float64)
    records = []
    for b in range(batch):
        for k in range(columns):
            if bank.usable(column_classes[k]):
                grid, details = ref_attention_map(
                    features[b], scores[b], bank, column_classes, k, None, **attention_kwargs
                )
                attention = [[1.0 / (1.0 + math.exp(-v)) for v in row] for row in grid]
                records.append({"image": b, "label": k, **details})
            else:
                attention = [[unusable_scale] * width for _ in range(height)]
            for i in range(height):
                for j in range(width):
                    out[b, k, i, j] = z[b][k][i][j] * attention[i][j]
    return out, records


# ----------------------------------------------------------------------------------------- class sampling


def ref_column_violations(
    class_ids: list[int],
    class_mask,
    source_index: list[int],
    source_vocabularies: list[list[int]],
    present: list[set[int]],
    num_sampled: int,
) -> list[str]:
    """Every way a training forward's columns break the per-source sampling rule; [] when none.

    class_ids (K,) vocabulary id of each column; class_mask (B, K) bool; source_index (B,); the sources'
    vocabularies in vocabulary ids; present[b] the classes in sample b's mask or image labels. For each
    source s with samples in the batch, with P_s the union of its samples' present classes and V_s its
    vocabulary, the columns C_s its samples use must be: the same for all of them (one draw per source),
    contain P_s, take every other class from V_s, and number |P_s| + min(max(n - |P_s|, 0), |V_s - P_s|).
    The union of the C_s is the set of columns (each column used by some sample)."""
    problems = []
    if len(set(class_ids)) != len(class_ids):
        problems.append(f"class_ids repeat: {class_ids}")
    used_by_any = set()
    for s in sorted(set(source_index)):
        rows = [b for b, src in enumerate(source_index) if src == s]
        sets = [{class_ids[k] for k in range(len(class_ids)) if bool(class_mask[b][k])} for b in rows]
        if any(cols != sets[0] for cols in sets):
            problems.append(f"source {s}: its samples use different columns {sets}")
        columns = sets[0]
        used_by_any |= columns
        pool = set(source_vocabularies[s])
        wanted_present = set().union(*(present[b] for b in rows))
        if not wanted_present <= columns:
            problems.append(f"source {s}: present {sorted(wanted_present - columns)} missing")
        negatives = columns - wanted_present
        if not negatives <= pool:
            problems.append(f"source {s}: negatives {sorted(negatives - pool)} outside its vocabulary")
        size = len(wanted_present) + min(
            max(num_sampled - len(wanted_present), 0), len(pool - wanted_present)
        )
        if len(columns) != size:
            problems.append(f"source {s}: {len(columns)} columns, expected {size}")
    if used_by_any != set(class_ids):
        problems.append(f"columns {sorted(set(class_ids) - used_by_any)} used by no sample")
    return problems
