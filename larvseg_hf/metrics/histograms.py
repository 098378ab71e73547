"""Streaming per-class histograms in O(num_classes) memory, never N x N: per-class results (written by
metrics/reports.py) and cross-process sums. The scores themselves come from `larvseg_mean_iou`, the one
owner of the formulas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .larvseg_mean_iou import AREA_NAMES, mean_iou_from_areas, per_category_scores
from .rows import batch_row


@dataclass(frozen=True)
class PerClassResults:
    """Dense per-class arrays over the vocabulary: IoU and accuracy (NaN where undefined), pixel counts."""

    iou: np.ndarray
    accuracy: np.ndarray
    label_pixels: np.ndarray
    predicted_pixels: np.ndarray


@dataclass
class SegmentationMetrics:
    """Accumulates per-class intersection, prediction and label areas over many images."""

    num_classes: int
    ignore_index: int = -100
    intersection: torch.Tensor = field(init=False)
    predicted: torch.Tensor = field(init=False)
    labeled: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.intersection = torch.zeros(self.num_classes, dtype=torch.float64)
        self.predicted = torch.zeros(self.num_classes, dtype=torch.float64)
        self.labeled = torch.zeros(self.num_classes, dtype=torch.float64)

    def update(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch of (…, H, W) predicted and true ids; ignored pixels count nowhere."""
        self.add_row(batch_row(predictions, labels, self.num_classes, self.ignore_index))

    def add_row(self, row: dict[str, Sequence[int]]) -> None:
        """Add one sparse `larvseg_mean_iou` row (see `batch_row`)."""
        ids = torch.as_tensor(row["class_ids"], dtype=torch.long)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_classes):
            outside = ids[(ids < 0) | (ids >= self.num_classes)][:10].tolist()
            raise ValueError(f"class_ids hold ids outside the vocabulary [0, {self.num_classes}): {outside}")
        for histogram, name in zip(
            (self.intersection, self.predicted, self.labeled), AREA_NAMES, strict=True
        ):
            histogram.index_add_(0, ids, torch.as_tensor(row[name], dtype=torch.float64))

    def merge(self, other: SegmentationMetrics) -> None:
        self.intersection += other.intersection
        self.predicted += other.predicted
        self.labeled += other.labeled

    def state(self) -> torch.Tensor:
        """(3, N) tensor, for an all-reduce across processes."""
        return torch.stack([self.intersection, self.predicted, self.labeled])

    def load_state(self, state: torch.Tensor) -> None:
        self.intersection, self.predicted, self.labeled = (t.double().cpu() for t in state)

    def iou(self) -> torch.Tensor:
        """Per-class IoU; NaN for classes absent from both labels and predictions."""
        return torch.from_numpy(per_category_scores(*self._areas())[0])

    def accuracy(self) -> torch.Tensor:
        """Per-class accuracy (intersection / label area); NaN for classes never labelled."""
        return torch.from_numpy(per_category_scores(*self._areas())[1])

    def _areas(self) -> tuple:
        return self.intersection.numpy(), self.predicted.numpy(), self.labeled.numpy()

    def compute(
        self, base_ids: Sequence[int] | None = None, novel_ids: Sequence[int] | None = None
    ) -> dict[str, Any]:
        """evaluate's mean_iou keys plus base / novel mIoU and num_classes_present, by `larvseg_mean_iou`."""
        return mean_iou_from_areas(*self._areas(), base_ids=base_ids, novel_ids=novel_ids)

    def per_class(self) -> PerClassResults:
        """Per-class scores and pixel counts, for the reports (metrics/reports.py)."""
        iou, accuracy = per_category_scores(*self._areas())
        return PerClassResults(iou, accuracy, self.labeled.numpy().copy(), self.predicted.numpy().copy())


__all__ = ["PerClassResults", "SegmentationMetrics"]
