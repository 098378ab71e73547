"""Analysis tools on labelled scenes.

One-point oracle propagation (METHOD.md): do features trained on masks already group categories they
never saw? Each ground-truth category gets one random seed pixel; every pixel takes the category of its
most similar seed (cosine of normalised features); mIoU is then split into base and novel.

Attention localisation: does the CA-Cls attention point at a class's pixels better than the classifier's
own score does? If not, multiplying logits by it cannot focus the image-level loss on the object.

Pooling dilution: the image-level loss pools logits over the whole image. For a class covering a small
part of it, how much higher is that loss than with the logits pooled over the class's own pixels?"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from .image_processing_larvseg import LarvSegImageProcessor
from .image_utils_larvseg import resize_labels_nearest, to_label_array
from .losses_larvseg import attentive_scores, likely_present
from .metrics import SegmentationMetrics


def propagate_from_seeds(
    features: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, ignore_index: int = -100
) -> torch.Tensor:
    """features (d, h, w) normalised, labels (h, w) at the same resolution -> predicted (h, w).

    One seed per category present; pixels labelled `ignore_index` are never seeds.
    """
    flat_labels = labels.flatten()
    valid = flat_labels != ignore_index
    categories = flat_labels[valid].unique()
    if categories.numel() == 0:
        return torch.full_like(labels, ignore_index)
    # A random pixel of each category: the argmax of random keys restricted to that category.
    keys = torch.rand(flat_labels.shape, generator=generator)
    member = (flat_labels[None, :] == categories[:, None]) & valid[None, :]  # (C, X)
    seeds = torch.where(member, keys[None, :], torch.full_like(keys, -1.0)[None, :]).argmax(1)
    flat_features = features.flatten(1)  # (d, X)
    similarity = flat_features[:, seeds].T @ flat_features  # (C, X)
    return categories[similarity.argmax(0)].view_as(labels)


@torch.no_grad()
def oracle_propagation_miou(
    model: torch.nn.Module,
    processor: LarvSegImageProcessor,
    rows: Iterable[dict],
    *,
    num_classes: int,
    base_ids: Sequence[int],
    novel_ids: Sequence[int],
    seed: int = 0,
    ignore_index: int = -100,
) -> dict[str, Any]:
    """Propagation mIoU (overall / base / novel), measured at feature resolution, where seeds live; the keys of
    `SegmentationMetrics.compute` (evaluate's mean_iou keys, per-category arrays included)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    metrics = SegmentationMetrics(num_classes, ignore_index)
    device = next(model.parameters()).device
    for row in rows:  # one image at a time: seeds are per image
        pixel_values = processor(row["image"])["pixel_values"].to(device)
        features = model.pixel_features(pixel_values)[0].cpu()
        labels = to_label_array(row["label"])
        small = torch.from_numpy(resize_labels_nearest(labels, tuple(features.shape[-2:])))
        prediction = propagate_from_seeds(features, small, generator, ignore_index)
        metrics.update(prediction, small)
    return metrics.compute(base_ids, novel_ids)


def precision_at_area(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(P, X) maps and boolean masks -> (P,) fraction of each map's top-|mask| pixels inside its mask.
    Chance level is the mask's area fraction."""
    order = maps.argsort(dim=1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(maps.shape[1], device=maps.device).expand_as(order))
    area = masks.sum(1)
    return ((ranks < area[:, None]) & masks).sum(1) / area.clamp(min=1)


@torch.no_grad()
def attention_localization(
    model: torch.nn.Module,
    processor: LarvSegImageProcessor,
    rows: Iterable[dict],
    *,
    class_ids: Sequence[int],
    ignore_index: int = -100,
) -> dict[str, float]:
    """For every (image, class in `class_ids` present with a usable bank): precision at the class's area of
    its raw score, of its CA-Cls attention with the image's other labels as background (the multi-label
    route), and with the score threshold as background (the single-label route and coseg inference).
    Also how well the threshold route finds the classes present: precision and recall of the flags."""
    model.eval()
    config = model.config
    device = next(model.parameters()).device
    columns = torch.arange(config.num_labels, device=device)
    usable = model.memory_bank.usable(columns)
    means = model.memory_bank.class_means(columns)
    wanted = torch.zeros(config.num_labels, dtype=torch.bool, device=device)
    wanted[list(class_ids)] = True
    settings = {
        "background_topk": config.background_topk,
        "background_threshold": config.background_score_threshold,
        "synonym_mse_threshold": config.synonym_mse_threshold,
        "background_suppression": config.background_suppression,
    }
    sums = {"score": 0.0, "attention_labels": 0.0, "attention_threshold": 0.0, "chance": 0.0}
    pairs = flagged = flagged_present = present_total = 0
    for row in rows:
        output = model(processor(row["image"])["pixel_values"].to(device))
        features, scores = output.features, output.scores
        labels = to_label_array(row["label"])
        small = torch.from_numpy(resize_labels_nearest(labels, tuple(scores.shape[-2:]))).to(device).flatten()
        present = torch.zeros(config.num_labels, dtype=torch.bool, device=device)
        present[small[small != ignore_index]] = True
        flags = likely_present(scores, config.background_topk, config.background_score_threshold)[0]
        flagged += int(flags.sum())
        flagged_present += int((flags & present).sum())
        present_total += int(present.sum())
        pair_column = (present & wanted & usable).nonzero().flatten()
        if pair_column.numel() == 0:
            continue
        pair_image = torch.zeros_like(pair_column)
        masks = small[None, :] == pair_column[:, None]
        by_labels = attentive_scores(
            features, scores, means, usable, pair_image, pair_column, present[None].float(), **settings
        )
        by_threshold = attentive_scores(features, scores, means, usable, pair_image, pair_column, **settings)
        sums["score"] += float(precision_at_area(scores[0, pair_column].flatten(1), masks).sum())
        sums["attention_labels"] += float(precision_at_area(by_labels.flatten(1), masks).sum())
        sums["attention_threshold"] += float(precision_at_area(by_threshold.flatten(1), masks).sum())
        sums["chance"] += float(masks.float().mean(1).sum())
        pairs += pair_column.numel()
    results = {f"precision_{name}": value / max(pairs, 1) for name, value in sums.items()}
    results.update(
        pairs=float(pairs),
        usable_classes=float(usable.sum()),
        threshold_flag_precision=flagged_present / max(flagged, 1),
        threshold_flag_recall=flagged_present / max(present_total, 1),
    )
    return results


def pooled_cross_entropies(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> dict:
    """logits (K, h, w), labels (h, w) at the same resolution -> for each class present: its area fraction
    and the cross-entropy of the image-level loss's softmax (the image's other present classes' columns
    dropped, as on the labels route) with the logits mean-pooled over the whole image and over the
    class's own pixels."""
    flat = logits.flatten(1)  # (K, X)
    if flat.element_size() < 4:
        flat = flat.float()  # sums of half-precision logits lose too much
    flat_labels = labels.flatten().to(flat.device)
    classes = flat_labels[flat_labels != ignore_index].unique()
    member = (flat_labels[None, :] == classes[:, None]).to(flat.dtype)  # (P, X)
    own = member @ flat.T / member.sum(1, keepdim=True)  # (P, K): pooled over each class's pixels
    whole = flat.mean(1).expand_as(own)
    others = torch.zeros_like(own, dtype=torch.bool)
    others[:, classes] = True
    rows = torch.arange(classes.numel(), device=flat.device)
    others[rows, classes] = False

    def cross_entropy(pooled: torch.Tensor) -> torch.Tensor:
        pooled = pooled.masked_fill(others, float("-inf"))
        return pooled.logsumexp(1) - pooled[rows, classes]

    return {
        "classes": classes,
        "area": member.sum(1) / flat_labels.numel(),
        "whole_image": cross_entropy(whole),
        "own_mask": cross_entropy(own),
    }


@torch.no_grad()
def pooling_dilution(
    model: torch.nn.Module,
    processor: LarvSegImageProcessor,
    rows: Iterable[dict],
    *,
    groups: dict[str, Sequence[int]],
    area_bins: Sequence[float] = (0.0, 0.05, 0.15, 0.4, 1.0),
    ignore_index: int = -100,
) -> list[dict[str, Any]]:
    """Mean whole-image and own-mask pooled cross-entropy (pooled_cross_entropies) of every (image, class
    present) pair, by class group (e.g. base / novel / background) and area-fraction bin, at the
    resolution of the model's logits."""
    model.eval()
    device = next(model.parameters()).device
    group_of = {int(c): name for name, ids in groups.items() for c in ids}
    pairs: list[tuple[str, float, float, float]] = []
    for row in rows:
        logits = model(processor(row["image"])["pixel_values"].to(device)).logits[0]
        labels = to_label_array(row["label"])
        small = torch.from_numpy(resize_labels_nearest(labels, tuple(logits.shape[-2:])))
        out = pooled_cross_entropies(logits, small, ignore_index)
        for c, area, whole, own in zip(*(out[k].tolist() for k in out), strict=True):
            if c in group_of:
                pairs.append((group_of[c], area, whole, own))

    def bin_of(area: float) -> int:  # the last bin includes its upper edge
        return min(bisect.bisect_right(area_bins, area), len(area_bins) - 1) - 1

    table = []
    for name in groups:
        for index, (low, high) in enumerate(zip(area_bins[:-1], area_bins[1:], strict=True)):
            chosen = [p for p in pairs if p[0] == name and bin_of(p[1]) == index]
            if chosen:
                table.append(
                    {
                        "group": name,
                        "area": [low, high],
                        "pairs": len(chosen),
                        "whole_image": sum(p[2] for p in chosen) / len(chosen),
                        "own_mask": sum(p[3] for p in chosen) / len(chosen),
                    }
                )
    return table


__all__ = [
    "attention_localization",
    "oracle_propagation_miou",
    "pooled_cross_entropies",
    "pooling_dilution",
    "precision_at_area",
    "propagate_from_seeds",
]
