"""Sparse per-batch class histograms: the rows that `larvseg_mean_iou` stores, built from label maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .larvseg_mean_iou import FEATURE_NAMES

LabelMaps = torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]


def _flat_pixels(maps: LabelMaps) -> list[torch.Tensor]:
    if isinstance(maps, torch.Tensor | np.ndarray):
        return [torch.as_tensor(maps)]
    return [torch.as_tensor(m) for m in maps]


def batch_row(
    predictions: LabelMaps, labels: LabelMaps, num_labels: int, ignore_index: int = -100
) -> dict[str, list[int]]:
    """One row for `larvseg_mean_iou` from a batch's predicted and true label maps (one map or a list of maps
    of any sizes, paired in order): only the classes present in the labels or predictions, so a row stays
    O(classes present) however large the vocabulary. Pixels labelled `ignore_index` count nowhere."""
    preds, labs = _flat_pixels(predictions), _flat_pixels(labels)
    if len(preds) != len(labs):
        raise ValueError(f"{len(preds)} prediction maps for {len(labs)} label maps")
    for i, (p, t) in enumerate(zip(preds, labs, strict=True)):
        if p.shape != t.shape:
            raise ValueError(
                f"map {i}: predictions {tuple(p.shape)} and labels {tuple(t.shape)} differ in shape"
            )
    device = labs[0].device if labs else torch.device("cpu")
    pred = (
        torch.cat([p.reshape(-1).to(device, torch.long) for p in preds]) if preds else torch.zeros(0).long()
    )
    label = torch.cat([t.reshape(-1).to(device, torch.long) for t in labs]) if labs else torch.zeros(0).long()
    valid = label != ignore_index
    pred, label = pred[valid], label[valid]
    for name, values in (("labels", label), ("predictions", pred)):
        if values.numel() and (values.min() < 0 or values.max() >= num_labels):
            outside = values[(values < 0) | (values >= num_labels)].unique()[:10].tolist()
            raise ValueError(f"{name} hold ids outside the vocabulary [0, {num_labels}): {outside}")
    # Dense bincounts are O(pixels + vocabulary) time and a transient O(vocabulary); only the nonzero entries stay.
    area_label = torch.bincount(label, minlength=num_labels)
    area_pred = torch.bincount(pred, minlength=num_labels)
    area_intersect = torch.bincount(label[pred == label], minlength=num_labels)
    ids = torch.nonzero((area_label + area_pred) > 0).flatten()
    columns = (ids, area_intersect[ids], area_pred[ids], area_label[ids])
    return {name: values.tolist() for name, values in zip(FEATURE_NAMES, columns, strict=True)}


def empty_row() -> dict[str, list[int]]:
    """A row with no classes: what a batch without valid pixels contributes."""
    return {name: [] for name in FEATURE_NAMES}


def rows_to_columns(rows: Sequence[dict[str, Sequence[int]]]) -> dict[str, list[Sequence[int]]]:
    """Rows -> the column-wise keyword arguments of `metric.add_batch`."""
    return {name: [row[name] for row in rows] for name in FEATURE_NAMES}


__all__ = ["batch_row", "empty_row", "rows_to_columns"]
