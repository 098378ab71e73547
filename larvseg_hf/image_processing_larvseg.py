# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Image processor for LarvSeg: resize, rescale, normalise; label maps keep ids above 255.

The pixel rules (decoding any image to RGB, the bilinear and nearest resizes, normalisation) are
``image_utils_larvseg``'s, which the training transforms call too."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoConfig
from transformers.image_processing_base import ImageProcessingMixin
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.utils import logging

from .image_utils_larvseg import (
    normalize_image,
    resize_image,
    resize_labels_nearest,
    round_to_divisor,
    to_label_array,
    to_rgb_array,
)
from .inference_larvseg import upsampled_argmax

logger = logging.get_logger(__name__)


#: Settings `preprocess` takes per call, as SegFormer's image processor does; anything else is rejected.
CALL_SETTINGS = (
    "do_resize",
    "size",
    "size_divisor",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
)


def _size_dict(size: int | dict[str, int]) -> dict[str, int]:
    """`size` as SegFormer takes it: an int (square), {"height", "width"} or {"shortest_edge"}."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return {"height": size, "width": size}
    if isinstance(size, dict):
        keys = set(size)
        if keys in ({"height", "width"}, {"shortest_edge"}) and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size.values()
        ):
            return {k: int(v) for k, v in size.items()}
    raise ValueError(
        f'size must be an int, {{"height": H, "width": W}} or {{"shortest_edge": S}} with positive ints, got {size!r}.'
    )


def _channel_values(name: str, value: float | Sequence[float]) -> list[float]:
    values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"{name} needs one value or three (R, G, B), got {value!r}.")
    if name == "image_std" and any(v <= 0 for v in values):
        raise ValueError(f"image_std must be positive, got {value!r}.")
    return values


#: What a backbone checkpoint's own image processor decides about pixel values (not sizes: LarvSeg's own).
BACKBONE_SETTINGS = ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")


def _backbone_preprocessing(backbone_name_or_path: str | os.PathLike) -> dict | None:
    """The backbone checkpoint's pixel settings from its preprocessor_config.json, or None if it has none.
    A corrupt file in a local folder raises; a Hub id that cannot be reached counts as none."""
    path = os.fspath(backbone_name_or_path)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        return None
    try:
        found, _ = ImageProcessingMixin.get_image_processor_dict(path)
    except OSError:
        if os.path.isdir(path):
            raise
        return None
    return {key: found[key] for key in BACKBONE_SETTINGS if key in found}


def _patch_size(backbone_name_or_path: str | os.PathLike) -> int | None:
    """A plain ViT's patch size (its feature stride); None for hierarchical backbones (their stride depends
    on the stages used) or when the config cannot be read."""
    try:
        config = AutoConfig.from_pretrained(backbone_name_or_path)
    except (OSError, ValueError, KeyError):
        return None
    patch_size = getattr(config, "patch_size", None)
    if isinstance(patch_size, int) and patch_size > 0 and getattr(config, "depths", None) is None:
        return patch_size
    return None


class LarvSegImageProcessor(BaseImageProcessor):
    r"""
    Prepares images (and optional label maps) for [`LarvSegForSemanticSegmentation`].

    Args:
        do_resize (`bool`, defaults to `True`): resize to `size`.
        size (`int` or `dict`, defaults to `{"height": 512, "width": 512}`): either `height`/`width`, or
            `shortest_edge` (aspect kept; both sides then rounded to a multiple of `size_divisor`).
        size_divisor (`int`, defaults to 16): output sides are multiples of this (the backbone's stride).
        do_rescale (`bool`), rescale_factor (`float`), do_normalize (`bool`), image_mean, image_std: as usual.
        ignore_index (`int`, defaults to -100): value of unlabeled pixels in returned `labels`.

    Every setting but `ignore_index` can also be given to `preprocess` / `__call__` for one call.
    [`~LarvSegImageProcessor.from_backbone`] takes the pixel settings from a backbone checkpoint's own processor.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size: int | dict[str, int] | None = None,
        size_divisor: int = 16,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        ignore_index: int = -100,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.do_resize = do_resize
        self.size = _size_dict(size) if size is not None else {"height": 512, "width": 512}
        self.size_divisor = size_divisor
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = _channel_values(
            "image_mean", IMAGENET_DEFAULT_MEAN if image_mean is None else image_mean
        )
        self.image_std = _channel_values(
            "image_std", IMAGENET_DEFAULT_STD if image_std is None else image_std
        )
        self.ignore_index = ignore_index

    @classmethod
    def from_backbone(cls, backbone_name_or_path: str | os.PathLike, **kwargs) -> LarvSegImageProcessor:
        """A processor whose pixels are those the backbone was pre-trained on.

        `do_rescale`, `rescale_factor`, `do_normalize`, `image_mean` and `image_std` come from the backbone
        checkpoint's own preprocessor_config.json (a Hub id, offline from the cache, or a folder): a ViT
        in21k checkpoint normalises with 0.5 / 0.5, not ImageNet's mean and std. A checkpoint without one gets
        ImageNet's, with a warning. `size_divisor` is a plain ViT's patch size (hierarchical backbones keep
        the default; pass their stride). `kwargs` (any `__init__` argument) override all of these.
        """
        settings = _backbone_preprocessing(backbone_name_or_path)
        if settings is None:
            settings = {}
            if not {"image_mean", "image_std"} <= set(kwargs):
                logger.warning(
                    "%s has no preprocessor_config.json (or it cannot be reached offline): normalising with "
                    "ImageNet's mean and std. Pass image_mean= and image_std= if the backbone was pre-trained "
                    "with others.",
                    backbone_name_or_path,
                )
        patch_size = _patch_size(backbone_name_or_path)
        if patch_size is not None:
            settings["size_divisor"] = patch_size
        return cls(**{**settings, **kwargs})

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self._output_size(height, width, self._settings({}))

    def _settings(self, overrides: dict) -> dict:
        """This processor's settings with one call's overrides, checked (None means "as configured")."""
        unknown = sorted(set(overrides) - set(CALL_SETTINGS))
        if unknown:
            raise TypeError(
                f"LarvSegImageProcessor got unknown argument(s) {unknown}; it accepts images, segmentation_maps, "
                f"return_tensors and {', '.join(CALL_SETTINGS)}."
            )
        settings = {name: getattr(self, name) for name in CALL_SETTINGS}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        settings["size"] = _size_dict(settings["size"])
        settings["image_mean"] = _channel_values("image_mean", settings["image_mean"])
        settings["image_std"] = _channel_values("image_std", settings["image_std"])
        if int(settings["size_divisor"]) < 1:
            raise ValueError(f"size_divisor must be >= 1, got {settings['size_divisor']!r}.")
        return settings

    @staticmethod
    def _output_size(height: int, width: int, settings: dict) -> tuple[int, int]:
        if not settings["do_resize"]:
            return height, width
        divisor, size = int(settings["size_divisor"]), settings["size"]
        if "shortest_edge" in size:
            scale = size["shortest_edge"] / min(height, width)
            height, width = height * scale, width * scale
        else:
            height, width = size["height"], size["width"]
        return round_to_divisor(height, width, divisor)

    def __call__(self, images, segmentation_maps=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, segmentation_maps=segmentation_maps, **kwargs)

    def preprocess(
        self, images, segmentation_maps=None, return_tensors: str | None = "pt", **kwargs
    ) -> BatchFeature:
        """Images -> `pixel_values` (B, 3, H, W); label maps -> `labels` (B, H, W) int64, resized exactly.

        Keyword arguments override this processor's settings for this call (see `CALL_SETTINGS`)."""
        settings = self._settings(kwargs)
        single = not isinstance(images, list | tuple)
        images = [images] if single else list(images)
        if not images:
            raise ValueError("No images given.")
        arrays = [to_rgb_array(image, i) for i, image in enumerate(images)]
        sizes = [self._output_size(*a.shape[:2], settings) for a in arrays]
        if len(set(sizes)) > 1:
            raise ValueError(
                f"Images resize to different sizes {sorted(set(sizes))}; process them one at a time or use a fixed "
                "height/width size."
            )
        pixel_values = torch.stack(
            [self._image_tensor(a, s, settings) for a, s in zip(arrays, sizes, strict=True)]
        )
        data = {"pixel_values": pixel_values}
        if segmentation_maps is not None:
            maps = [segmentation_maps] if single else list(segmentation_maps)
            if len(maps) != len(arrays):
                raise ValueError(f"Got {len(arrays)} images but {len(maps)} segmentation maps.")
            labels = []
            for i, (label_map, array, size) in enumerate(zip(maps, arrays, sizes, strict=True)):
                label = to_label_array(label_map, i)
                if label.shape != array.shape[:2]:
                    raise ValueError(
                        f"Label map {i} is {label.shape} but its image is {array.shape[:2]} (height, width)."
                    )
                labels.append(torch.from_numpy(resize_labels_nearest(label, size)))
            data["labels"] = torch.stack(labels)
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _image_tensor(array: np.ndarray, size: tuple[int, int], settings: dict) -> torch.Tensor:
        return normalize_image(
            resize_image(array, size),
            settings["rescale_factor"] if settings["do_rescale"] else None,
            settings["image_mean"] if settings["do_normalize"] else None,
            settings["image_std"],
        )

    def post_process_semantic_segmentation(
        self, outputs, target_sizes: list[tuple[int, int]] | None = None
    ) -> list[torch.Tensor]:
        """Label maps (H, W) of vocabulary ids, as for SegFormer. Upsampling + argmax runs only on the
        classes that can win (see `upsampled_argmax`), so a 21K vocabulary never builds 21K x H x W logits."""
        # Post-processing is inference: outputs of a forward run with gradients enabled work as well.
        logits = outputs.logits.detach()
        class_ids = getattr(outputs, "class_ids", None)
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise ValueError(
                "Make sure that you pass in as many target sizes as the batch dimension of the logits"
            )
        if isinstance(target_sizes, torch.Tensor):
            target_sizes = target_sizes.tolist()
        results = []
        for i in range(len(logits)):  # images, not pixels or classes
            if target_sizes is None:
                columns = logits[i].argmax(0)
            else:
                columns = upsampled_argmax(logits[i], tuple(target_sizes[i]))
            results.append(class_ids.to(columns.device)[columns] if class_ids is not None else columns)
        return results


__all__ = ["LarvSegImageProcessor"]
