# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Decoded training rows kept in memory up to a byte budget, so a small dataset is read and decoded once.

On the built-in benchmark every row is drawn about ten times in a run; reading and decoding its PNGs each
time costs about a third of the data pipeline on 2 cores. The cache holds the union-id example exactly as
``VocabularyMapping.map_example`` returned it, except that label maps are stored in the narrowest integer
type that holds their values (every consumer converts them to int64 after the random geometry, so the
samples are the same). Cached arrays are read-only: a transform that wrote into its input would fail
loudly instead of corrupting later draws. Each DataLoader worker holds its own cache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def _compact_labels(mask: np.ndarray) -> np.ndarray:
    """`mask` in int16 or int32 when its values fit (ids and the negative ignore values alike)."""
    if mask.size:
        low, high = int(mask.min()), int(mask.max())
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return mask.astype(dtype)
    return mask.copy()


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


class DecodedRowCache:
    """Union-id examples by (source name, row), until ``max_bytes`` of arrays are held; later rows are
    decoded on every draw. ``max_bytes=0`` turns it off."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"the decoded-row cache budget must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._rows: dict[tuple[str, int], dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, source: str, row: int, load: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        """The cached example of `row`, or `load()`'s, kept when the budget allows."""
        key = (source, row)
        cached = self._rows.get(key)
        if cached is not None:
            return dict(cached)
        example = dict(load())
        if self.max_bytes == 0:
            return example
        stored = dict(example)
        stored["image"] = _frozen(np.asarray(example["image"]))
        if example.get("mask") is not None:
            stored["mask"] = _frozen(_compact_labels(np.asarray(example["mask"])))
        size = stored["image"].nbytes + (stored["mask"].nbytes if stored.get("mask") is not None else 0)
        if self.bytes + size > self.max_bytes:
            return example
        self._rows[key] = stored
        self.bytes += size
        return dict(stored)


__all__ = ["DecodedRowCache"]
