# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Training samples in union ids: one decoded example through its transform, for mask and image-level data.

A sample is ``{"pixel_values": (3, H, W) float32, "labels": (H, W) int64, "image_label_ids":
list[int], "pixel_mask", "kind", "source", "index"}``: mask samples carry pixel labels and no image
labels; image-level samples carry all-``ignore_index`` labels and their image labels (union ids). A weak
source's image labels are the classes of its label map that are still in view after the training crop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from .transforms import TrainTransform

Transform = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]

#: Crop sizes of METHOD.md per source kind.
DEFAULT_CROP_SIZES = {"mask": 512, "image": 320}


def default_transforms(
    ignore_index: int = -100, crop_sizes: Mapping[str, int] | None = None
) -> dict[str, TrainTransform]:
    """METHOD.md training transforms: 512 crops for mask data, 320 for image-level data."""
    sizes = {**DEFAULT_CROP_SIZES, **(crop_sizes or {})}
    return {kind: TrainTransform(crop_size=size, ignore_index=ignore_index) for kind, size in sizes.items()}


def pick_transform(
    transforms: Mapping[str, Transform] | Transform | None, kind: str, ignore_index: int
) -> Transform:
    """The transform for samples of ``kind``; refuses one that pads masks with another ``ignore_index``."""
    if transforms is None:
        return default_transforms(ignore_index)[kind]
    transform = transforms[kind] if isinstance(transforms, Mapping) else transforms
    own = getattr(transform, "ignore_index", ignore_index)
    if own != ignore_index:
        raise ValueError(f"transform pads masks with ignore_index={own} but the mapping uses {ignore_index}")
    return transform


def unlabelled_value(ignore_index: int) -> int:
    """Stand-in for unlabelled pixels of an image-level sample's map: negative (never a class id) and
    different from ``ignore_index``, which the transform pads with, so padding, unlabelled pixels and
    classes stay three distinct things through the crop."""
    return -1 if ignore_index != -1 else -2


def make_sample(
    example: Mapping[str, Any],
    kind: str,
    transform: Transform,
    rng: np.random.Generator,
    ignore_index: int = -100,
    **extra: Any,
) -> dict[str, Any]:
    """Union-id example (``{"image", "mask", "label_ids"}``) -> transformed training sample.

    Image-level samples carry a ``pixel_mask`` of the image's own pixels: a stand-in map goes through the
    same random geometry, so the padding it comes back with is exactly the image's. For a weak example
    (``kind="image"`` with a ``mask``: a label map used as image-level data) the stand-in is the label map
    itself, unlabelled pixels set to :func:`unlabelled_value`, and the image labels are the sorted class
    ids left in its real pixels after the crop; its pixel labels stay all ``ignore_index``.
    """
    if kind == "mask":
        pixel_values, labels = transform(example["image"], example["mask"], rng)
        pixel_mask = torch.ones(tuple(pixel_values.shape[-2:]), dtype=torch.bool)
        label_ids: list[int] = []
    else:
        unlabelled = unlabelled_value(ignore_index)
        label_map = example.get("mask")
        if label_map is None:  # arrays and PIL images alike
            stand_in = np.full(np.shape(example["image"])[:2], unlabelled, dtype=np.int64)
        else:
            label_map = np.asarray(label_map, dtype=np.int64)
            stand_in = np.where(label_map == ignore_index, unlabelled, label_map)
        pixel_values, extent = transform(example["image"], stand_in, rng)
        extent = torch.as_tensor(extent)
        pixel_mask = extent != ignore_index
        labels = torch.full(tuple(pixel_values.shape[-2:]), ignore_index, dtype=torch.int64)
        if label_map is None:
            label_ids = list(example["label_ids"] or [])
        else:
            present = extent[pixel_mask]
            label_ids = torch.unique(present[present >= 0]).tolist()
    return {
        "pixel_values": pixel_values,
        "labels": labels,
        "pixel_mask": pixel_mask,
        "image_label_ids": label_ids,
        "kind": kind,
        **extra,
    }


__all__ = [
    "DEFAULT_CROP_SIZES",
    "Transform",
    "default_transforms",
    "make_sample",
    "pick_transform",
    "unlabelled_value",
]
