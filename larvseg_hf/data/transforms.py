# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Training and evaluation transforms (METHOD.md: random rescale 0.5-2.0, crop, flip, photometric).

The random geometry and colour are numpy; the pixel steps shared with inference (RGB decoding, bilinear
resize, nearest label resize, rescale and normalisation) are ``image_utils_larvseg``'s, and their settings
(mean, std, rescale, size divisor) are the run's ``LarvSegImageProcessor``'s (:meth:`TrainTransform.from_processor`),
so a model is trained on the pixels it will be given at inference: a backbone pre-trained with 0.5 / 0.5
is trained with 0.5 / 0.5. Label maps hold union ids far past 255 (21K categories); they are resized by
nearest-neighbour index gathering, so ids are copied, never interpolated. The order follows mmseg's
pipeline (rescale, crop, flip, photometric distortion, normalise, pad) so padding is 0 in normalised space
and ``ignore_index`` in the mask. Every random draw comes from a ``numpy.random.Generator``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from ..image_processing_larvseg import LarvSegImageProcessor
from ..image_utils_larvseg import (
    normalize_image,
    resize_image,
    resize_labels_nearest,
    round_to_divisor,
    to_rgb_array,
)

SizeLike = int | Sequence[int]


def _hw(size: SizeLike) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


@functools.cache
def _default_processor() -> LarvSegImageProcessor:
    return LarvSegImageProcessor()


def _pixel_settings(processor: LarvSegImageProcessor) -> dict:
    """A processor's rescale and normalisation as transform fields (a step it skips is an identity)."""
    return {
        "rescale_factor": processor.rescale_factor if processor.do_rescale else 1.0,
        "mean": tuple(processor.image_mean) if processor.do_normalize else (0.0, 0.0, 0.0),
        "std": tuple(processor.image_std) if processor.do_normalize else (1.0, 1.0, 1.0),
    }


# --------------------------------------------------------------------------- geometry


def rescaled_size(
    height: int, width: int, ratio: float, scale: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Output (H, W) for a rescale by ``ratio``.

    With ``scale=(long, short)`` (mmseg's ``img_scale``, e.g. (2048, 512)) the image is fitted,
    aspect kept, inside ``long*ratio`` x ``short*ratio``; without it, its own size is scaled.
    """
    if scale is None:
        factor = ratio
    else:
        long_edge, short_edge = max(scale) * ratio, min(scale) * ratio
        factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def random_rescale(
    image: np.ndarray,
    mask: np.ndarray | None,
    rng: np.random.Generator,
    ratio_range: tuple[float, float] = (0.5, 2.0),
    scale: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rescale image (bilinear, float32 out) and mask (nearest) by a ratio drawn uniformly from ``ratio_range``."""
    ratio = float(rng.uniform(*ratio_range))
    size = rescaled_size(image.shape[0], image.shape[1], ratio, scale)
    return resize_image(image, size), (None if mask is None else resize_labels_nearest(mask, size))


def random_crop(
    image: np.ndarray,
    mask: np.ndarray | None,
    crop_size: SizeLike,
    rng: np.random.Generator,
    *,
    ignore_index: int = -100,
    cat_max_ratio: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Random crop of at most ``crop_size`` (smaller images keep their size; pad later).

    ``cat_max_ratio`` (mmseg, 0.75 for ADE20K) retries up to 10 times while one class covers
    more than that fraction of the labelled pixels of the crop (negative values, e.g. the unlabelled
    stand-in of image-level samples, are not classes).
    """
    ch, cw = _hw(crop_size)
    h, w = image.shape[:2]

    def draw() -> tuple[int, int]:
        return int(rng.integers(0, max(h - ch, 0) + 1)), int(rng.integers(0, max(w - cw, 0) + 1))

    top, left = draw()
    if cat_max_ratio is not None and cat_max_ratio < 1.0 and mask is not None:
        for _ in range(10):
            crop = mask[top : top + ch, left : left + cw]
            _, counts = np.unique(crop[(crop != ignore_index) & (crop >= 0)], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            top, left = draw()
    image = image[top : top + ch, left : left + cw]
    return image, (None if mask is None else mask[top : top + ch, left : left + cw])


def random_flip(
    image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, prob: float = 0.5
) -> tuple[np.ndarray, np.ndarray | None]:
    """Horizontal flip of image and mask together with probability ``prob``."""
    if rng.random() < prob:
        return image[:, ::-1], (None if mask is None else mask[:, ::-1])
    return image, mask


# --------------------------------------------------------------------------- colour


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """Vectorised RGB -> HSV, all channels in [0, 1] (input float in [0, 1])."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Elementwise max/min of the three planes: a reduction over a length-3 last axis is ~5x slower.
    maxc = np.maximum(np.maximum(r, g), b)
    minc = np.minimum(np.minimum(r, g), b)
    delta = maxc - minc
    safe = np.where(delta > 0, delta, 1.0)
    s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1.0), 0.0)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return np.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Vectorised inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    i = i.astype(np.int64) % 6
    conds = [i == k for k in range(6)]
    r = np.select(conds, [v, q, p, p, t, v])
    g = np.select(conds, [t, v, v, q, p, p])
    b = np.select(conds, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def photometric_distortion(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness_delta: float = 32.0,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: float = 36.0,
) -> np.ndarray:
    """mmseg's PhotoMetricDistortion; returns float32 HxWx3 in [0, 255].

    Each of brightness, contrast, saturation and hue is applied with probability 0.5;
    contrast goes before or after the HSV steps at random. ``hue_delta`` is in degrees
    (36 = mmseg's 18 in OpenCV's 0-180 hue units).
    """
    img = image.astype(np.float32)
    if rng.integers(2):
        img = np.clip(img + rng.uniform(-brightness_delta, brightness_delta), 0, 255)
    contrast_first = bool(rng.integers(2))
    contrast = float(rng.uniform(*contrast_range)) if rng.integers(2) else None
    if contrast_first and contrast is not None:
        img = np.clip(img * contrast, 0, 255)
    saturation = float(rng.uniform(*saturation_range)) if rng.integers(2) else None
    hue = float(rng.uniform(-hue_delta, hue_delta)) / 360.0 if rng.integers(2) else None
    if saturation is not None or hue is not None:
        hsv = rgb_to_hsv(img / 255.0)
        if saturation is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0.0, 1.0)
        if hue is not None:
            hsv[..., 0] = (hsv[..., 0] + hue) % 1.0
        img = (hsv_to_rgb(hsv) * 255.0).astype(np.float32)
    if not contrast_first and contrast is not None:
        img = np.clip(img * contrast, 0, 255)
    return img


def normalize(
    image: np.ndarray, mean: Sequence[float], std: Sequence[float], rescale_factor: float = 1 / 255
) -> torch.Tensor:
    """HxWx3 image in [0, 255] -> 3xHxW float32 tensor ``(x * rescale_factor - mean) / std``, the
    processor's arithmetic (``image_utils_larvseg.normalize_image``)."""
    return normalize_image(image, rescale_factor, mean, std)


def pad_to(
    pixel_values: torch.Tensor,
    labels: torch.Tensor | None,
    size: SizeLike,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pad bottom/right to ``size``: 0 for pixels (the mean colour once normalised), ignore for labels."""
    h, w = _hw(size)
    ph, pw = h - pixel_values.shape[-2], w - pixel_values.shape[-1]
    if ph <= 0 and pw <= 0:
        return pixel_values, labels
    ph, pw = max(ph, 0), max(pw, 0)
    pixel_values = torch.nn.functional.pad(pixel_values, (0, pw, 0, ph), value=0.0)
    if labels is not None:
        labels = torch.nn.functional.pad(labels, (0, pw, 0, ph), value=ignore_index)
    return pixel_values, labels


def _labels_tensor(mask: np.ndarray | None) -> torch.Tensor | None:
    if mask is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))


# --------------------------------------------------------------------------- pipelines


@dataclass(kw_only=True)
class PixelSettings:
    """The rescale, mean, std and size divisor a transform shares with the model's image processor; unset
    ones are a default processor's, so the defaults have one owner."""

    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    rescale_factor: float | None = None
    size_divisor: int = 1

    def __post_init__(self) -> None:
        defaults = _pixel_settings(_default_processor())
        for name in ("rescale_factor", "mean", "std"):
            if getattr(self, name) is None:
                setattr(self, name, defaults[name])
        if int(self.size_divisor) < 1:
            raise ValueError(f"size_divisor must be >= 1, got {self.size_divisor!r}")


@dataclass
class TrainTransform(PixelSettings):
    """Random rescale -> random crop -> flip -> photometric distortion -> normalise -> pad.

    ``__call__(image, mask=None, rng=None)`` returns ``(pixel_values (3, ch, cw) float32,
    labels (ch, cw) int64 or None)``; pass ``mask=None`` for image-level samples. Output is
    always ``crop_size``, each side padded up to a multiple of ``size_divisor``. METHOD.md uses 512
    for mask data and 320 for image data.

    ``rescale_factor``, ``mean`` and ``std`` (None: those of a default ``LarvSegImageProcessor``) and
    ``size_divisor`` are the processor's: build it with :meth:`from_processor`.
    """

    crop_size: SizeLike = 512
    ratio_range: tuple[float, float] = (0.5, 2.0)
    scale: tuple[int, int] | None = None
    flip_prob: float = 0.5
    photometric: bool = True
    cat_max_ratio: float | None = None
    ignore_index: int = -100

    @classmethod
    def from_processor(cls, processor: LarvSegImageProcessor, **kwargs) -> TrainTransform:
        """The transform for a run whose model is saved with `processor`: its rescale, mean, std and
        size divisor; `kwargs` are the other fields (``crop_size=...``)."""
        return cls(**{**_pixel_settings(processor), "size_divisor": int(processor.size_divisor), **kwargs})

    @property
    def padded_size(self) -> tuple[int, int]:
        """``crop_size`` with each side rounded up to a multiple of ``size_divisor``."""
        height, width = _hw(self.crop_size)
        divisor = self.size_divisor
        return -(-height // divisor) * divisor, -(-width // divisor) * divisor

    def __call__(
        self,
        image: np.ndarray | PIL.Image.Image,
        mask: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        rng = rng if rng is not None else np.random.default_rng()
        image = to_rgb_array(image)
        if mask is not None and mask.shape[:2] != image.shape[:2]:
            raise ValueError(f"image is {image.shape[:2]} but mask is {mask.shape[:2]} (H, W)")
        image, mask = random_rescale(image, mask, rng, self.ratio_range, self.scale)
        image, mask = random_crop(
            image, mask, self.crop_size, rng, ignore_index=self.ignore_index, cat_max_ratio=self.cat_max_ratio
        )
        image, mask = random_flip(image, mask, rng, self.flip_prob)
        pixels = photometric_distortion(image, rng) if self.photometric else image
        pixel_values = normalize(pixels, self.mean, self.std, self.rescale_factor)
        return pad_to(pixel_values, _labels_tensor(mask), self.padded_size, self.ignore_index)


@dataclass
class EvalTransform(PixelSettings):
    """Deterministic resize + normalise for evaluation, as ``LarvSegImageProcessor`` prepares images.

    ``short_side`` resizes so the short side has that length (aspect kept, as the published
    evaluation's short side 512); ``size`` = (H, W) resizes to a fixed size; either way the sides are
    rounded to a multiple of ``size_divisor``. Neither keeps the image as is. The mask stays at its
    original resolution (metrics compare at full size) unless ``resize_mask`` resizes it (nearest) with
    the image. Pixel settings as for :class:`TrainTransform`; build it with :meth:`from_processor`.
    """

    short_side: int | None = None
    size: SizeLike | None = None
    resize_mask: bool = False

    @classmethod
    def from_processor(cls, processor: LarvSegImageProcessor, **kwargs) -> EvalTransform:
        """The processor's resize (its ``size``, unless ``do_resize`` is off), pixel settings and size
        divisor; `kwargs` override fields."""
        size = processor.size
        fields: dict = {**_pixel_settings(processor), "size_divisor": int(processor.size_divisor)}
        if processor.do_resize and "shortest_edge" in size:
            fields["short_side"] = size["shortest_edge"]
        elif processor.do_resize:
            fields["size"] = (size["height"], size["width"])
        return cls(**{**fields, **kwargs})

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self.size is not None:
            return round_to_divisor(*_hw(self.size), self.size_divisor)
        if self.short_side is not None:
            f = self.short_side / min(height, width)
            return round_to_divisor(height * f, width * f, self.size_divisor)
        return height, width

    def __call__(
        self, image: np.ndarray | PIL.Image.Image, mask: np.ndarray | None = None, rng: object = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = to_rgb_array(image)
        size = self.output_size(*image.shape[:2])
        pixel_values = normalize(resize_image(image, size), self.mean, self.std, self.rescale_factor)
        if mask is not None and self.resize_mask:
            mask = resize_labels_nearest(mask, size)
        return pixel_values, _labels_tensor(mask)


__all__ = [
    "EvalTransform",
    "PixelSettings",
    "TrainTransform",
    "hsv_to_rgb",
    "normalize",
    "pad_to",
    "photometric_distortion",
    "random_crop",
    "random_flip",
    "random_rescale",
    "rescaled_size",
    "rgb_to_hsv",
]
