"""Segmentation metrics.

- `load_mean_iou()`: the `larvseg_mean_iou` evaluate module (evaluate's mean_iou keys plus base / novel),
  loaded offline from the installed package; feed it one sparse row per batch (`batch_row`).
- `SegmentationMetrics`: dense per-class histograms in O(vocabulary) memory; `per_class()` gives the
  `PerClassResults` that `reports.write_per_class_csv` / `reports.plot_per_class_iou` write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .histograms import PerClassResults, SegmentationMetrics
from .larvseg_mean_iou import SCALAR_KEYS, LarvsegMeanIou, mean_iou_from_areas
from .rows import batch_row, empty_row, rows_to_columns

MEAN_IOU_MODULE = Path(__file__).resolve().with_name("larvseg_mean_iou.py")


def load_mean_iou(**kwargs: Any) -> Any:
    """`evaluate.load` of the installed `larvseg_mean_iou.py` with keep_in_memory=True: a local file, so the Hub
    is never asked (evaluate's own "mean_iou" cannot load offline), and rows stay in memory rather than in Arrow
    files and locks under evaluate's metrics cache. evaluate still copies the script into its module cache
    (HF_MODULES_CACHE), as it does for every module. Each process loads its own instance (num_process=1):
    gather rows across processes before `add_batch` rather than use evaluate's file-lock rendezvous."""
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(MEAN_IOU_MODULE), **kwargs)


def scalar_results(results: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a results dict (what Trainer logs and JSON summaries hold), in SCALAR_KEYS order."""
    return {key: results[key] for key in SCALAR_KEYS if key in results}


__all__ = [
    "MEAN_IOU_MODULE",
    "SCALAR_KEYS",
    "LarvsegMeanIou",
    "PerClassResults",
    "SegmentationMetrics",
    "batch_row",
    "empty_row",
    "load_mean_iou",
    "mean_iou_from_areas",
    "rows_to_columns",
    "scalar_results",
]
