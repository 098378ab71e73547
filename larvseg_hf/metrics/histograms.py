"""Streaming per-class histograms in O(num_classes) memory, never N x N: the per-class CSV and plot, and
cross-process sums. The scores themselves come from `larvseg_mean_iou`, the one owner of the formulas."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .larvseg_mean_iou import AREA_NAMES, mean_iou_from_areas, per_category_scores
from .rows import batch_row


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

    def write_csv(self, path: str | Path, class_names: Sequence[str], base_ids: Sequence[int] = ()) -> None:
        base = set(base_ids)
        iou, accuracy = self.iou(), self.accuracy()
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "name", "split", "iou", "accuracy", "label_pixels", "predicted_pixels"])
            for i in torch.nonzero((self.labeled > 0) | (self.predicted > 0)).flatten().tolist():
                writer.writerow(
                    [
                        i,
                        class_names[i],
                        "base" if i in base else "novel",
                        f"{float(iou[i]):.6f}",
                        f"{float(accuracy[i]):.6f}",
                        int(self.labeled[i]),
                        int(self.predicted[i]),
                    ]
                )

    def plot(
        self,
        path: str | Path,
        class_names: Sequence[str],
        base_ids: Sequence[int] = (),
        max_classes: int = 60,
    ) -> None:
        """Bar plot of per-class IoU (worst classes first when there are too many to show)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        iou = self.iou()
        ids = torch.nonzero(self.labeled > 0).flatten()
        ids = ids[torch.argsort(iou[ids])][:max_classes].tolist()
        base = set(base_ids)
        colors = ["tab:blue" if i in base else "tab:orange" for i in ids]
        fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(ids)), 4))
        ax.bar(range(len(ids)), [float(iou[i]) for i in ids], color=colors)
        ax.set_xticks(range(len(ids)), [class_names[i][:18] for i in ids], rotation=90, fontsize=7)
        ax.set_ylabel("IoU")
        ax.set_ylim(0, 1)
        ax.set_title("Per-class IoU (blue: base, orange: novel)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


__all__ = ["SegmentationMetrics"]
