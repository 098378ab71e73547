"""Streaming segmentation metrics: per-class histograms in O(num_classes) memory, never N x N."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch


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
        if predictions.shape != labels.shape:
            raise ValueError(
                f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape"
            )
        valid = labels != self.ignore_index
        predictions, labels = predictions[valid].long().cpu(), labels[valid].long().cpu()
        for name, values in (("labels", labels), ("predictions", predictions)):
            if values.numel() and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(
                    f"{name} hold ids outside [0, {self.num_classes}): {values.unique()[:10].tolist()}"
                )
        hits = predictions[predictions == labels]
        self.intersection += torch.bincount(hits, minlength=self.num_classes).double()
        self.predicted += torch.bincount(predictions, minlength=self.num_classes).double()
        self.labeled += torch.bincount(labels, minlength=self.num_classes).double()

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
        union = self.predicted + self.labeled - self.intersection
        return torch.where(
            union > 0, self.intersection / union.clamp(min=1), torch.full_like(union, float("nan"))
        )

    def compute(
        self, base_ids: Sequence[int] | None = None, novel_ids: Sequence[int] | None = None
    ) -> dict[str, float]:
        """mIoU over classes that appear in the labels (as mmseg), overall and on base / novel subsets."""
        iou = self.iou()
        present = self.labeled > 0
        results = {
            "mean_iou": _nanmean(iou[present]),
            "pixel_accuracy": float(self.intersection.sum() / self.labeled.sum().clamp(min=1)),
            "num_classes_present": int(present.sum()),
        }
        for name, ids in (("base", base_ids), ("novel", novel_ids)):
            if ids is not None:
                index = torch.as_tensor(list(ids), dtype=torch.long)
                index = index[present[index]] if index.numel() else index
                results[f"{name}_mean_iou"] = _nanmean(iou[index])
        return results

    def write_csv(self, path: str | Path, class_names: Sequence[str], base_ids: Sequence[int] = ()) -> None:
        base = set(base_ids)
        iou = self.iou()
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "name", "split", "iou", "label_pixels", "predicted_pixels"])
            for i in torch.nonzero((self.labeled > 0) | (self.predicted > 0)).flatten().tolist():
                writer.writerow(
                    [
                        i,
                        class_names[i],
                        "base" if i in base else "novel",
                        f"{float(iou[i]):.6f}",
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


def _nanmean(values: torch.Tensor) -> float:
    values = values[~torch.isnan(values)]
    return float(values.mean()) if values.numel() else float("nan")


__all__ = ["SegmentationMetrics"]
