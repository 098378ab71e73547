# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Data errors: each names the dataset and, where known, the row and the file, so a bad row among
millions can be found and fixed."""

from __future__ import annotations


class LarvSegDataError(ValueError):
    """Base class of the data errors below; all name the dataset and, where known, row and file."""


class ColumnNotFoundError(LarvSegDataError):
    pass


class LabelOutOfRangeError(LarvSegDataError):
    pass


class UnknownLabelError(LarvSegDataError):
    pass


class SizeMismatchError(LarvSegDataError):
    pass


class CorruptImageError(LarvSegDataError):
    pass


def _where(dataset: str | None, index: int | None = None, path: str | None = None) -> str:
    parts = [f"dataset {dataset!r}" if dataset else "dataset"]
    if index is not None:
        parts.append(f"row {index}")
    if path:
        parts.append(f"file {path}")
    return ", ".join(parts)


__all__ = [
    "ColumnNotFoundError",
    "CorruptImageError",
    "LabelOutOfRangeError",
    "LarvSegDataError",
    "SizeMismatchError",
    "UnknownLabelError",
]
