# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Per-class evaluation reports (CSV table, IoU bar plot) from computed per-class results.

Kept apart from the metrics, so that computing scores never needs matplotlib or a file system.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .histograms import PerClassResults

#: File names of the per-class reports that larvseg-evaluate and larvseg-train write.
PER_CLASS_CSV = "per_class_iou.csv"
PER_CLASS_PNG = "per_class_iou.png"


def _split(class_id: int, base: set[int]) -> str:
    return "base" if class_id in base else "novel"


def write_per_class_csv(
    path: str | Path, results: PerClassResults, class_names: Sequence[str], base_ids: Sequence[int] = ()
) -> Path:
    """One row per class labelled or predicted: id, name, base / novel split, IoU, accuracy, pixel counts."""
    base = set(base_ids)
    shown = np.flatnonzero((results.label_pixels > 0) | (results.predicted_pixels > 0)).tolist()
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "split", "iou", "accuracy", "label_pixels", "predicted_pixels"])
        for i in shown:
            writer.writerow(
                [
                    i,
                    class_names[i],
                    _split(i, base),
                    f"{float(results.iou[i]):.6f}",
                    f"{float(results.accuracy[i]):.6f}",
                    int(results.label_pixels[i]),
                    int(results.predicted_pixels[i]),
                ]
            )
    return Path(path)


def plot_per_class_iou(
    path: str | Path,
    results: PerClassResults,
    class_names: Sequence[str],
    base_ids: Sequence[int] = (),
    max_classes: int = 60,
) -> Path:
    """Bar plot of per-class IoU over labelled classes (worst first when there are too many to show)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = np.flatnonzero(results.label_pixels > 0)
    ids = ids[np.argsort(results.iou[ids], kind="stable")][:max_classes].tolist()
    base = set(base_ids)
    colors = ["tab:blue" if _split(i, base) == "base" else "tab:orange" for i in ids]
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(ids)), 4))
    ax.bar(range(len(ids)), [float(results.iou[i]) for i in ids], color=colors)
    ax.set_xticks(range(len(ids)), [class_names[i][:18] for i in ids], rotation=90, fontsize=7)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.set_title("Per-class IoU (blue: base, orange: novel)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


__all__ = ["PER_CLASS_CSV", "PER_CLASS_PNG", "plot_per_class_iou", "write_per_class_csv"]
