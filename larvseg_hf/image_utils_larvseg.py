# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""The image path shared by training and inference: decoding to RGB, label maps, resizing, normalising.

Training (``larvseg_hf.data``) and inference (``LarvSegImageProcessor``) both call these functions, so a
model sees the same pixels whichever path prepared them. This file travels with saved checkpoints
(``image_processing_larvseg.py`` imports it, so ``save_pretrained`` copies it for ``trust_remote_code``): it
may import only numpy, PIL, torch, transformers and other ``*_larvseg.py`` files.

How every kind of image becomes 8-bit RGB (:func:`to_rgb_array`):

* 8-bit pixels (PIL ``L``, ``RGB``, ``P``, ``CMYK``, ``1``, ...; ``uint8`` arrays) are used as they are, through
  PIL's own conversion for the PIL modes;
* 16-bit pixels (PIL ``I;16*`` and ``I``, as a 16-bit PNG decodes; ``uint16`` arrays and tensors) are on the
  16-bit scale: ``round(v / 257)`` maps 0..65535 onto 0..255, values outside are clipped;
* other integer arrays and tensors (``int16``, ``int32``, ``int64``, ...; what ``np.array(image, dtype=int)``
  gives) hold 8-bit values: 0..255 is required, anything else is an error asking for ``uint16`` (16-bit data)
  or ``uint8``, never a guess;
* floats (PIL ``F``, float arrays and tensors) are in [0, 1] when their maximum is at most 1, else in
  [0, 255]; NaN becomes 0, values are clipped;
* transparency (an alpha channel, ``LA``, ``PA``, premultiplied modes, or a ``transparency`` entry such as a
  palette's) is composited over white, so the colour hidden under transparent pixels never leaks in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

#: PIL modes holding one integer or float value per pixel: read as numbers, not through PIL's conversion
#: (which clips ``I;16`` / ``I`` at 255).
_NUMERIC_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: Label-map modes whose pixel values are the class ids (``P``: palette indices, never colours).
_ID_MODES = ("1", "L", "P", *_NUMERIC_MODES)


class InvalidImageError(ValueError):
    """An image that cannot be read as RGB (unsupported shape, dtype or mode)."""


class InvalidLabelMapError(ValueError):
    """A label map that cannot be read as class ids (colours, non-integer values, not 2-D)."""


def _where(name: int | str | None, kind: str) -> str:
    """` (image 3)` for an index in a batch, ` (x.png)` for a name, nothing otherwise."""
    if name is None:
        return ""
    return f" ({kind} {name})" if isinstance(name, int) else f" ({name})"


def _numpy(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


# --------------------------------------------------------------------------- RGB


def _scaled_to_uint8(array: np.ndarray, where: str, sixteen_bit: bool = False) -> np.ndarray:
    """Pixels of any numeric dtype -> uint8 by the rules of the module docstring; `sixteen_bit` for the
    integer PIL modes, whose scale is a fact of the file."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "f":
        values = np.nan_to_num(array.astype(np.float64), nan=0.0)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        return np.rint(np.clip(values * scale, 0, 255)).astype(np.uint8)
    if array.dtype.kind in "iu":
        if sixteen_bit or array.dtype == np.uint16:
            return np.rint(np.clip(array.astype(np.float64) / 257.0, 0, 255)).astype(np.uint8)
        low, high = int(array.min(initial=0)), int(array.max(initial=0))
        if low < 0 or high > 255:
            raise InvalidImageError(
                f"Integer pixels of dtype {array.dtype} range over {low}..{high}{where}; 8-bit values (0..255) are "
                "expected: pass uint16 for 16-bit images, or uint8."
            )
        return array.astype(np.uint8)
    raise InvalidImageError(f"Unsupported pixel dtype {array.dtype}{where}: pass integer or float pixels.")


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4) -> (H, W, 3): alpha-composited over white, rounded to the nearest integer."""
    alpha = rgba[..., 3:].astype(np.uint32)
    return ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _hwc(array: np.ndarray, where: str) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4 -> (H, W, C)."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InvalidImageError(
            f"Expected an image of shape (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4{where}, got {array.shape}."
        )
    return array


def _channels_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:
        return _over_white(array)
    return array


def to_rgb_array(image, name: int | str | None = None) -> np.ndarray:
    """Any PIL image, (H, W) / (H, W, C) / (C, H, W) array or tensor -> uint8 (H, W, 3), by the module's rules.

    `name` goes into error messages: an int is the image's index in a batch, a string names it (a file)."""
    where = _where(name, "image")
    image = _numpy(image)
    if isinstance(image, PIL.Image.Image):
        mode = image.mode
        if mode in _NUMERIC_MODES:
            return _channels_to_rgb(_scaled_to_uint8(np.asarray(image)[:, :, None], where, sixteen_bit=True))
        if mode in _ALPHA_MODES or "transparency" in image.info:
            return _over_white(np.asarray(image.convert("RGBA")))
        if mode == "RGB":
            return np.asarray(image)
        try:
            return np.asarray(image.convert("RGB"))
        except ValueError as err:  # PIL has no conversion for this mode
            raise InvalidImageError(f"Cannot convert a mode {mode!r} image to RGB{where}: {err}") from err
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"Unsupported image type {type(image).__name__}{where}: pass a PIL image, numpy array or tensor."
        )
    return _channels_to_rgb(_scaled_to_uint8(_hwc(image, where), where))


# --------------------------------------------------------------------------- label maps


def to_label_array(label_map, name: int | str | None = None) -> np.ndarray:
    """A label map -> int64 (H, W) class ids, whatever its storage.

    PIL ``P`` gives palette indices (never colours); ``L``, ``I;16``, ``I`` and integer-valued ``F`` their
    values, ids above 255 included; grey ``RGB`` / ``RGBA`` and ``LA`` / ``PA`` their first channel (alpha is
    ignored). Colour images, arrays that are not 2-D and non-integer values raise
    :class:`InvalidLabelMapError`. `name` as for :func:`to_rgb_array`.
    """
    subject = "Label map" if name is None else f"Label map {name}"
    label_map = _numpy(label_map)
    if isinstance(label_map, PIL.Image.Image):
        mode = label_map.mode
        if mode in ("RGB", "RGBA", "LA", "PA"):
            channels = np.asarray(label_map)
            if mode in ("RGB", "RGBA") and not (
                np.array_equal(channels[..., 0], channels[..., 1])
                and np.array_equal(channels[..., 0], channels[..., 2])
            ):
                raise InvalidLabelMapError(
                    f"{subject} has mode {mode!r} with colours: expected class ids (a P, L, I;16 or I image, or a "
                    "grey one), not a colour image."
                )
            label_map = channels[..., 0]
        elif mode not in _ID_MODES:
            raise InvalidLabelMapError(
                f"{subject} has mode {mode!r}: expected class ids (a P, L, I;16 or I image), not a colour image."
            )
    array = np.asarray(label_map)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:2])
    if array.ndim != 2:
        raise InvalidLabelMapError(f"{subject} must be 2-D (height, width), got shape {array.shape}.")
    if array.dtype.kind == "f" and not (np.all(np.isfinite(array)) and np.all(array == np.round(array))):
        raise InvalidLabelMapError(f"{subject} holds non-integer values.")
    if array.dtype.kind not in "biuf":
        raise InvalidLabelMapError(f"{subject} has dtype {array.dtype}; expected integer class ids.")
    return array.astype(np.int64)


def resize_labels_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to `size` = (H, W) by index arithmetic: ids are copied, never interpolated,
    so any integer id survives (PIL cannot resize ids above 255). Each output pixel takes the source pixel
    under its centre, the geometry of :func:`resize_image`, so image and labels stay aligned."""
    height, width = labels.shape[:2]
    if (height, width) == tuple(size):
        return labels
    rows = np.minimum(((np.arange(size[0]) + 0.5) * (height / size[0])).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * (width / size[1])).astype(np.int64), width - 1)
    return labels[rows[:, None], cols[None, :]]


# --------------------------------------------------------------------------- pixels


def _tensor_hwc(image: np.ndarray) -> torch.Tensor:
    """A torch view of an (H, W, C) array (a copy only when torch cannot view it)."""
    if not image.flags.writeable or any(stride < 0 for stride in image.strides):
        image = image.copy()
    return torch.from_numpy(image)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (H, W, C) pixels to `size` = (H, W), antialiased when shrinking (torch's
    ``interpolate``, ``align_corners=False``); float32 out, not rounded. An image already at `size` is
    returned as it is."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    tensor = _tensor_hwc(image).permute(2, 0, 1)[None].float()
    resized = F.interpolate(tensor, tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return resized[0].permute(1, 2, 0).numpy()


def round_to_divisor(height: float, width: float, divisor: int) -> tuple[int, int]:
    """Sides rounded to the nearest multiple of `divisor` (at least `divisor`): the backbone's stride, so
    the feature grid covers the image exactly."""
    return max(divisor, round(height / divisor) * divisor), max(divisor, round(width / divisor) * divisor)


def normalize_image(
    image: np.ndarray,
    rescale_factor: float | None,
    image_mean: Sequence[float] | None,
    image_std: Sequence[float] | None,
) -> torch.Tensor:
    """(H, W, 3) pixels in [0, 255] -> (3, H, W) float32 ``(x * rescale_factor - mean) / std``; a None
    `rescale_factor` or `image_mean` skips that step."""
    tensor = _tensor_hwc(image).permute(2, 0, 1).float()
    if rescale_factor is not None:
        tensor = tensor * rescale_factor
    if image_mean is not None:
        mean = torch.tensor(list(image_mean), dtype=torch.float32)[:, None, None]
        std = torch.tensor(list(image_std), dtype=torch.float32)[:, None, None]
        tensor = (tensor - mean) / std
    return tensor.contiguous()


__all__ = [
    "InvalidImageError",
    "InvalidLabelMapError",
    "normalize_image",
    "resize_image",
    "resize_labels_nearest",
    "round_to_divisor",
    "to_label_array",
    "to_rgb_array",
]
