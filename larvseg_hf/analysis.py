"""One-point oracle propagation (METHOD.md): do features trained on masks already group categories
they never saw? Each ground-truth category gets one random seed pixel; every pixel takes the category
of its most similar seed (cosine of normalised features); mIoU is then split into base and novel."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .image_processing_larvseg import LarvSegImageProcessor, resize_labels_nearest, to_label_array
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
) -> dict[str, float]:
    """Propagation mIoU (overall / base / novel), measured at feature resolution, where seeds live."""
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


__all__ = ["oracle_propagation_miou", "propagate_from_seeds"]
