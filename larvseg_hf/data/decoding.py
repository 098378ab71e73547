# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Decoding image and label-map cells (PIL images, ``{"bytes", "path"}`` dicts, paths, bytes, arrays).

Images and masks are decoded here, not by ``datasets``, so that a corrupt file or a bad label is
reported with the dataset, the row and the file, and so that mask modes (P, I;16, I) are read as ids.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from io import BytesIO
from typing import Any

import datasets
import numpy as np
import PIL.Image

from ..image_utils_larvseg import InvalidImageError, InvalidLabelMapError, to_label_array, to_rgb_array
from .errors import CorruptImageError, LarvSegDataError, _where


def _value_path(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return value.get("path")
    if isinstance(value, str | os.PathLike):
        return os.fspath(value)
    return getattr(value, "filename", None) or None


def decode_image(
    value: Any, *, what: str = "image", dataset: str | None = None, index: int | None = None
) -> PIL.Image.Image:
    """Open an image cell (PIL image, ``{"bytes", "path"}`` dict, path, bytes or array).

    Uses ``datasets.Image().decode_example`` for dicts so Hub paths and EXIF orientation
    behave as in ``datasets``; any PIL failure becomes a :class:`CorruptImageError` naming
    the dataset, row and file.
    """
    path = _value_path(value)
    try:
        if isinstance(value, PIL.Image.Image):
            value.load()
            return value
        if isinstance(value, np.ndarray):
            return PIL.Image.fromarray(value)
        if isinstance(value, bytes):
            image = PIL.Image.open(BytesIO(value))
            image.load()
            return image
        if isinstance(value, str | os.PathLike):
            value = {"path": os.fspath(value), "bytes": None}
        if isinstance(value, Mapping):
            return datasets.Image().decode_example(dict(value))
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise CorruptImageError(
            f"cannot decode {what} ({_where(dataset, index, path)}): {type(err).__name__}: {err}"
        ) from err
    if value is None:
        raise LarvSegDataError(f"{what} is missing ({_where(dataset, index)})")
    raise LarvSegDataError(
        f"unsupported {what} value of type {type(value).__name__} ({_where(dataset, index)})"
    )


def image_size(
    value: Any, *, what: str = "image", dataset: str | None = None, index: int | None = None
) -> tuple[int, int]:
    """(W, H) of an image cell from its header, without decoding the pixels (for checks over whole datasets)."""
    if isinstance(value, PIL.Image.Image):
        return value.size
    if isinstance(value, np.ndarray):
        return (value.shape[1], value.shape[0])
    data = value.get("bytes") if isinstance(value, Mapping) else value if isinstance(value, bytes) else None
    path = _value_path(value)
    try:
        if data is not None:
            with PIL.Image.open(BytesIO(data)) as image:
                return image.size
        if path is not None:
            with PIL.Image.open(path) as image:
                return image.size
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise CorruptImageError(
            f"cannot read {what} ({_where(dataset, index, path)}): {type(err).__name__}: {err}"
        ) from err
    return decode_image(value, what=what, dataset=dataset, index=index).size


def to_rgb(
    image: PIL.Image.Image | np.ndarray,
    *,
    dataset: str | None = None,
    index: int | None = None,
    path: str | None = None,
) -> np.ndarray:
    """uint8 (H, W, 3) pixels of a decoded image, by the one rule training and inference share
    (``image_utils_larvseg.to_rgb_array``: 16-bit scaled, not clipped; alpha over white). A mode that has no
    RGB conversion is a :class:`CorruptImageError` naming the dataset, row and file."""
    try:
        return to_rgb_array(image)
    except InvalidImageError as err:
        where = _where(dataset, index, path or _value_path(image))
        raise CorruptImageError(f"{str(err).rstrip('.')} ({where})") from err


def mask_to_array(
    image: PIL.Image.Image,
    *,
    dataset: str | None = None,
    index: int | None = None,
    path: str | None = None,
) -> np.ndarray:
    """Label map -> int64 ids (``image_utils_larvseg.to_label_array``: P gives palette indices, never
    colours; I;16 / I keep ids > 255); a colour or non-integer map is a :class:`LarvSegDataError` naming the
    dataset, row and file."""
    try:
        return to_label_array(image)
    except InvalidLabelMapError as err:
        where = _where(dataset, index, path or _value_path(image))
        raise LarvSegDataError(f"{str(err).rstrip('.')} ({where})") from err


__all__ = ["decode_image", "image_size", "mask_to_array", "to_rgb"]
