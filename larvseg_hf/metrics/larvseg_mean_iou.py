"""larvseg_mean_iou: evaluate's `mean_iou`, fed with sparse per-batch class histograms instead of pixels.

Why not evaluate's own `mean_iou`: it takes label maps and writes every predicted and reference pixel to
Arrow, O(pixels) per image; a dense per-batch histogram would be O(vocabulary) per batch, 21,841 entries per
column for ImageNet-21K. Each row here is one evaluation batch listing only the classes present in that
batch's labels or predictions, so a row stores O(classes present) entries; rows from any number of batches
or processes add up.

Inputs, one row per batch (`larvseg_hf.metrics.batch_row` builds one from label maps; ignore_index pixels are
already left out, and their predictions with them, as evaluate's mean_iou does):
    class_ids      (list of int64): vocabulary ids; an id repeated in a row adds up.
    area_intersect (list of int64): pixels of that class in both the labels and the predictions.
    area_pred      (list of int64): pixels predicted as that class.
    area_label     (list of int64): pixels labelled as that class.

Results: the keys and semantics of evaluate's `mean_iou` (NaN where a denominator is 0):
    per_category_iou[c]      = intersect / (pred + label - intersect)  (NaN: c neither labelled nor predicted)
    per_category_accuracy[c] = intersect / label                       (NaN: c never labelled)
    mean_iou                 = nanmean(per_category_iou): a class predicted but never labelled counts as 0
    mean_accuracy            = nanmean(per_category_accuracy)
    overall_accuracy         = sum(intersect) / sum(label)
plus
    base_mean_iou, novel_mean_iou: nanmean of per_category_iou over `base_ids` / `novel_ids`, i.e. the
        mean_iou convention on a subset, so that all / base / novel agree: a novel class predicted where none
        is labelled counts as 0 in novel_mean_iou, a class absent from both is left out.
    num_classes_present: classes with labelled pixels.
`nan_to_num`, as in evaluate, replaces NaN in every result after averaging.

`evaluate.load(<path of this file>)` copies this file alone into evaluate's module cache, so it imports
installed packages only (no relative imports); the package imports the same file as
`larvseg_hf.metrics.larvseg_mean_iou`, so these formulas have one owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

FEATURE_NAMES = ("class_ids", "area_intersect", "area_pred", "area_label")
AREA_NAMES = FEATURE_NAMES[1:]
SCALAR_KEYS = (
    "mean_iou",
    "mean_accuracy",
    "overall_accuracy",
    "base_mean_iou",
    "novel_mean_iou",
    "num_classes_present",
)

_CITATION = """\
@software{MMSegmentation_Contributors_OpenMMLab_Semantic_Segmentation_2020,
  author = {{MMSegmentation Contributors}},
  license = {Apache-2.0},
  month = {7},
  title = {{OpenMMLab Semantic Segmentation Toolbox and Benchmark}},
  url = {https://github.com/open-mmlab/mmsegmentation},
  year = {2020}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    class_ids, area_intersect, area_pred, area_label: one list per row (batch), of equal lengths per row.
    num_labels (`int`): vocabulary size; every class id must lie in [0, num_labels).
    base_ids, novel_ids (`list[int]`, optional): ids whose IoUs give base_mean_iou / novel_mean_iou.
    nan_to_num (`float`, optional): replaces NaN in every result.
Returns:
    mean_iou, mean_accuracy, overall_accuracy (float), per_category_iou, per_category_accuracy
    (np.ndarray of num_labels), base_mean_iou / novel_mean_iou (float, when ids are given),
    num_classes_present (int).
"""


def _nanmean(values: np.ndarray) -> float:
    """np.nanmean without the empty-slice warning: NaN when every value is NaN (or there are none)."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (evaluate's 0/0), without warnings."""
    out = np.full(np.shape(denominator), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_category_scores(
    area_intersect: np.ndarray, area_pred: np.ndarray, area_label: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Dense per-class (IoU, accuracy) from dense areas; NaN where the union / the label area is 0."""
    area_intersect, area_pred, area_label = (
        np.asarray(a, dtype=np.float64) for a in (area_intersect, area_pred, area_label)
    )
    union = area_pred + area_label - area_intersect
    return _divide(area_intersect, union), _divide(area_intersect, area_label)


def _subset(name: str, ids: Sequence[int], num_labels: int) -> np.ndarray:
    index = np.asarray(list(ids), dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= num_labels):
        bad = index[(index < 0) | (index >= num_labels)]
        raise ValueError(f"{name} hold ids outside [0, {num_labels}): {bad[:10].tolist()}")
    return index


def mean_iou_from_areas(
    area_intersect: np.ndarray,
    area_pred: np.ndarray,
    area_label: np.ndarray,
    *,
    base_ids: Sequence[int] | None = None,
    novel_ids: Sequence[int] | None = None,
    nan_to_num: float | None = None,
) -> dict[str, Any]:
    """evaluate's mean_iou results, plus base / novel, from dense per-class areas (see module docstring)."""
    area_intersect, area_pred, area_label = (
        np.asarray(a, dtype=np.float64) for a in (area_intersect, area_pred, area_label)
    )
    num_labels = area_label.shape[0]
    iou, accuracy = per_category_scores(area_intersect, area_pred, area_label)
    total_label = area_label.sum()
    results: dict[str, Any] = {
        "mean_iou": _nanmean(iou),
        "mean_accuracy": _nanmean(accuracy),
        "overall_accuracy": float(area_intersect.sum() / total_label) if total_label > 0 else float("nan"),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }
    for name, ids in (("base", base_ids), ("novel", novel_ids)):
        if ids is not None:
            results[f"{name}_mean_iou"] = _nanmean(iou[_subset(f"{name}_ids", ids, num_labels)])
    if nan_to_num is not None:
        for key, value in results.items():
            results[key] = (
                np.nan_to_num(value, nan=nan_to_num)
                if isinstance(value, np.ndarray)
                else (float(nan_to_num) if np.isnan(value) else value)
            )
    results["num_classes_present"] = int((area_label > 0).sum())
    return results


def _flatten(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """A column of per-row lists -> (all values concatenated, each row's length). evaluate hands columns over
    as Python lists (its `format` option only takes scalar features); the loop is over rows, one per batch."""
    rows = [np.asarray(row).reshape(-1) for row in column]
    values = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    return values, np.asarray([row.size for row in rows], dtype=np.int64)


def densify(
    class_ids: Any, area_intersect: Any, area_pred: Any, area_label: Any, num_labels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum sparse rows into dense (num_labels,) areas, checking that they are well formed."""
    ids, id_lengths = _flatten(class_ids)
    ids = ids.astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() >= num_labels):
        bad = np.unique(ids[(ids < 0) | (ids >= num_labels)])
        raise ValueError(f"class_ids hold ids outside the vocabulary [0, {num_labels}): {bad[:10].tolist()}")
    dense = []
    for name, column in zip(AREA_NAMES, (area_intersect, area_pred, area_label), strict=True):
        values, lengths = _flatten(column)
        if not np.array_equal(lengths, id_lengths):
            raise ValueError(
                f"{name} and class_ids differ in length in some row: {lengths[:10]} vs {id_lengths[:10]}"
            )
        if values.size and values.min() < 0:
            raise ValueError(f"{name} holds negative pixel counts")
        dense.append(np.bincount(ids, weights=values.astype(np.float64), minlength=num_labels))
    intersect, pred, label = dense
    if (intersect > np.minimum(pred, label)).any():
        raise ValueError("area_intersect exceeds area_pred or area_label for some class (columns swapped?)")
    return intersect, pred, label


class LarvsegMeanIou(evaluate.Metric):
    """evaluate's mean_iou over sparse per-batch class histograms; `name` is "larvseg_mean_iou"."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {name: datasets.List(datasets.Value("int64")) for name in FEATURE_NAMES}
            ),
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/mean_iou"],
        )

    def _compute(
        self,
        class_ids: Any,
        area_intersect: Any,
        area_pred: Any,
        area_label: Any,
        num_labels: int,
        base_ids: Sequence[int] | None = None,
        novel_ids: Sequence[int] | None = None,
        nan_to_num: float | None = None,
    ) -> dict[str, Any]:
        dense = densify(class_ids, area_intersect, area_pred, area_label, int(num_labels))
        return mean_iou_from_areas(*dense, base_ids=base_ids, novel_ids=novel_ids, nan_to_num=nan_to_num)
