# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Checks of `LarvSegForSemanticSegmentation.forward`'s inputs: types, shapes and label ranges."""

from __future__ import annotations

import torch

from .configuration_larvseg import LarvSegConfig
from .reductions_larvseg import any_true


def check_inputs(
    config: LarvSegConfig,
    dtype: torch.dtype,
    pixel_values: torch.Tensor,
    labels: torch.Tensor | None = None,
    image_labels: torch.Tensor | None = None,
    pixel_mask: torch.Tensor | None = None,
) -> None:
    """Errors that say what to fix for inputs the model's forward would otherwise fail on deep inside."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(
            f"pixel_values must be a torch.Tensor, got {type(pixel_values).__module__}.{type(pixel_values).__name__}; "
            "prepare images with LarvSegImageProcessor (return_tensors='pt'), or torch.from_numpy(...)."
        )
    if pixel_values.dtype != dtype:
        hint = (
            "normalised float pixels come from LarvSegImageProcessor"
            if not pixel_values.dtype.is_floating_point
            else f"cast with pixel_values.to({dtype})"
        )
        raise TypeError(
            f"pixel_values has dtype {pixel_values.dtype} but the model's weights are {dtype}; {hint}."
        )
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        raise ValueError(
            f"pixel_values must be (batch, 3, height, width), got shape {tuple(pixel_values.shape)}; "
            "use LarvSegImageProcessor to prepare RGB images."
        )
    batch, _, height, width = pixel_values.shape
    if labels is not None:
        if labels.shape != (batch, height, width):
            raise ValueError(
                f"labels must be (batch, height, width) = {(batch, height, width)}, got {tuple(labels.shape)}"
            )
        # Elementwise tests and one any(): this runs on every training step's full-resolution labels.
        outside = ((labels < 0) | (labels >= config.num_labels)) & (labels != config.ignore_index)
        if any_true(outside):
            bad = labels[outside]
            raise ValueError(
                f"labels hold ids {bad.unique().tolist()[:10]} outside the vocabulary [0, {config.num_labels}) "
                f"that are not ignore_index={config.ignore_index}."
            )
    if pixel_mask is not None and tuple(pixel_mask.shape) != (batch, height, width):
        raise ValueError(
            f"pixel_mask must be (batch, height, width) = {(batch, height, width)}, got {tuple(pixel_mask.shape)}"
        )
    if image_labels is not None and tuple(image_labels.shape) != (batch, config.num_labels):
        raise ValueError(
            f"image_labels must be multi-hot of shape (batch, num_labels) = {(batch, config.num_labels)}, "
            f"got {tuple(image_labels.shape)}."
        )


__all__ = ["check_inputs"]
