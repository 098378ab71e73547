# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Image processor for LarvSeg: resize, rescale, normalise; label maps keep ids above 255."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .inference_larvseg import upsampled_argmax


def to_rgb_array(image, index: int | None = None) -> np.ndarray:
    """Any PIL image (L, LA, P, RGBA, CMYK, I;16, I, F) or HWC / CHW / HW array -> uint8 (H, W, 3)."""
    where = "" if index is None else f" (image {index})"
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            array = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
            image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8))
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"Unsupported image type {type(image).__name__}{where}: pass a PIL image, numpy array or tensor."
        )
    array = image
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Expected an image of shape (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4{where}, got {array.shape}."
        )
    if array.dtype.kind == "f":
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        top = 65535.0 if array.max() > 255 else 255.0
        array = np.clip(array.astype(np.float64) / top * 255.0, 0, 255).round().astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[:, :, :3]


def to_label_array(label_map, index: int | None = None) -> np.ndarray:
    """A label map as int64 ids, whatever its storage: P (palette indices, not colours), L, I;16, I, arrays."""
    where = "" if index is None else f" (label map {index})"
    if isinstance(label_map, torch.Tensor):
        label_map = label_map.detach().cpu().numpy()
    if isinstance(label_map, Image.Image):
        if label_map.mode not in ("P", "L", "I;16", "I;16B", "I;16L", "I"):
            raise ValueError(
                f"Label map{where} has mode {label_map.mode!r}; expected a single-channel id map (P, L, I;16 or I), "
                "not a colour image."
            )
        label_map = np.asarray(label_map)
    array = np.asarray(label_map)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:2])
    if array.ndim != 2:
        raise ValueError(f"Label map{where} must be 2-D (height, width), got shape {array.shape}.")
    if array.dtype.kind == "f" and not np.all(array == np.round(array)):
        raise ValueError(f"Label map{where} holds non-integer values.")
    return array.astype(np.int64)


def resize_labels_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize by index arithmetic: exact for any integer id."""
    height, width = labels.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64), width - 1)
    return labels[rows[:, None], cols[None, :]]


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
        return max(divisor, round(height / divisor) * divisor), max(divisor, round(width / divisor) * divisor)

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
        tensor = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).float()
        if tuple(tensor.shape[-2:]) != size:
            tensor = F.interpolate(tensor[None], size, mode="bilinear", align_corners=False, antialias=True)[
                0
            ]
        if settings["do_rescale"]:
            tensor = tensor * settings["rescale_factor"]
        if settings["do_normalize"]:
            mean = torch.tensor(settings["image_mean"])[:, None, None]
            std = torch.tensor(settings["image_std"])[:, None, None]
            tensor = (tensor - mean) / std
        return tensor

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
