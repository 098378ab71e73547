"""Evaluation loop: evaluate's mean_iou keys plus base / novel mIoU from the `larvseg_mean_iou` evaluate
module (one sparse class histogram per batch), plain or sliding-window, optionally attentive (coseg)
inference, sharded across processes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .image_processing_larvseg import LarvSegImageProcessor
from .image_utils_larvseg import to_label_array
from .inference_larvseg import sliding_window_logits, upsampled_argmax
from .metrics import SegmentationMetrics, batch_row, empty_row, load_mean_iou, rows_to_columns


def _batches(rows: Iterable[dict], batch_size: int) -> Iterable[list[dict]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def predict_label_maps(
    model: torch.nn.Module,
    processor: LarvSegImageProcessor,
    images: Sequence[Any],
    target_sizes: Sequence[tuple[int, int]],
    *,
    class_ids: Sequence[int | str] | None = None,
    coseg: bool = False,
    sliding_window: int | None = None,
    sliding_stride: int | None = None,
) -> list[torch.Tensor]:
    """Vocabulary-id label maps for images of one processed size."""
    device = next(model.parameters()).device
    pixel_values = processor(list(images))["pixel_values"].to(device)
    kwargs = {"class_ids": class_ids, "coseg": coseg}
    if sliding_window:
        logits, columns = sliding_window_logits(model, pixel_values, sliding_window, sliding_stride, **kwargs)
    else:
        output = model(pixel_values, **kwargs)
        logits, columns = output.logits, output.class_ids
    return [columns[upsampled_argmax(logits[i], size)].cpu() for i, size in enumerate(target_sizes)]


def evaluate_segmentation(
    model: torch.nn.Module,
    processor: LarvSegImageProcessor,
    rows: Iterable[dict],
    *,
    num_classes: int,
    base_ids: Sequence[int] | None = None,
    novel_ids: Sequence[int] | None = None,
    label_mapper: Callable[[np.ndarray], np.ndarray] | None = None,
    ignore_index: int = -100,
    batch_size: int = 8,
    coseg: bool = False,
    sliding_window: int | None = None,
    sliding_stride: int | None = None,
    total: int | None = None,
    show_progress: bool = True,
    gather: Callable[[list[dict]], list[dict]] | None = None,
) -> tuple[dict[str, Any], SegmentationMetrics]:
    """Run the model over rows with `image` and `label`; return (results, per-class histograms).

    Results are the `larvseg_mean_iou` evaluate module's: mean_iou, mean_accuracy, overall_accuracy,
    per_category_iou, per_category_accuracy (arrays over the vocabulary), base_mean_iou / novel_mean_iou
    (when ids are given) and num_classes_present. The histograms (for the per-class CSV and plot) are summed
    from the same rows. `label_mapper` turns a dataset's label ids into vocabulary ids (ignore_index kept).
    `gather` collects every process's rows on every process (e.g. accelerate's `gather_object`), so each
    process may score a shard and all of them return the results of the whole set.
    """
    was_training = model.training
    model.eval()
    batch_rows: list[dict] = []
    progress = tqdm(total=total, desc="evaluating", unit="img", disable=not show_progress)
    for batch in _batches(rows, batch_size):
        labels = [to_label_array(row["label"], i) for i, row in enumerate(batch)]
        if label_mapper is not None:
            labels = [label_mapper(label) for label in labels]
        predictions = predict_label_maps(
            model,
            processor,
            [row["image"] for row in batch],
            [label.shape for label in labels],
            coseg=coseg,
            sliding_window=sliding_window,
            sliding_stride=sliding_stride,
        )
        batch_rows.append(
            batch_row(predictions, [torch.from_numpy(label) for label in labels], num_classes, ignore_index)
        )
        progress.update(len(batch))
    progress.close()
    model.train(was_training)
    if gather is not None:
        batch_rows = list(gather(batch_rows))
    batch_rows = batch_rows or [empty_row()]  # no rows at all: NaN results rather than an evaluate error
    metric = load_mean_iou()
    metric.add_batch(**rows_to_columns(batch_rows))
    results = metric.compute(num_labels=num_classes, base_ids=base_ids, novel_ids=novel_ids)
    histograms = SegmentationMetrics(num_classes, ignore_index)
    for row in batch_rows:
        histograms.add_row(row)
    return results, histograms


__all__ = ["evaluate_segmentation", "predict_label_maps"]
