# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Mixing mask and image-level sources in set proportions: by index for map-style sources, through
``datasets.interleave_datasets`` (:mod:`.streaming`) when any source streams."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .decoded_cache import DecodedRowCache
from .map_dataset import LarvSegDataset
from .samples import Transform
from .source_dataset import SourceDataset
from .streaming import LarvSegIterableDataset, build_streaming_dataset
from .vocabulary_mapping import VocabularyMapping, build_union_vocabulary


class MixedDataset(torch.utils.data.Dataset):
    """Deterministic interleave of several sample datasets by index, with fixed proportions.

    Positions are cut in blocks of ``block_size``; each block holds exactly the rounded share
    of every dataset, shuffled, so any window of a few blocks matches ``weights`` closely.
    Each dataset is walked through a fresh permutation per pass (small ones repeat, large ones
    are subsampled). ``__getitem__`` works for any index >= 0 (an infinite stream usable with
    any sampler); ``len()`` is ``length``; :meth:`set_epoch` moves to the next ``length``
    positions. Augmentation is seeded by the stream position, not the source row, so a row
    drawn twice is augmented differently.
    """

    def __init__(
        self,
        datasets: Sequence[torch.utils.data.Dataset],
        weights: Sequence[float],
        *,
        length: int | None = None,
        seed: int = 0,
        block_size: int | None = None,
        shuffle: bool = True,
    ) -> None:
        if len(datasets) != len(weights) or not datasets:
            raise ValueError("need one weight per dataset and at least one dataset")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
        self.datasets = list(datasets)
        self.sizes = [len(d) for d in self.datasets]
        for d, n, wt in zip(self.datasets, self.sizes, w, strict=True):
            if wt > 0 and n == 0:
                raise ValueError(f"dataset {getattr(getattr(d, 'source', None), 'name', d)!r} is empty")
        self.weights = w / w.sum()
        positive = self.weights[self.weights > 0]
        self.block_size = block_size or max(100, math.ceil(4 / positive.min()))
        raw = self.weights * self.block_size
        counts = np.floor(raw).astype(np.int64)
        for k in np.argsort(-(raw - counts), kind="stable")[: self.block_size - counts.sum()]:
            counts[k] += 1
        self.counts = counts
        self._block_labels = np.repeat(np.arange(len(counts)), counts)
        self.length = int(length) if length is not None else int(sum(self.sizes))
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    @functools.lru_cache(maxsize=8)  # noqa: B019 - bounded; one instance per run
    def _block(self, block: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 1, block]).permutation(self._block_labels)

    @functools.lru_cache(maxsize=16)  # noqa: B019
    def _perm(self, k: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 2, k, epoch]).permutation(self.sizes[k])

    def locate(self, position: int) -> tuple[int, int]:
        """Stream position -> (dataset number, row in that dataset)."""
        block, offset = divmod(int(position), self.block_size)
        labels = self._block(block)
        k = int(labels[offset])
        nth = block * int(self.counts[k]) + int(np.count_nonzero(labels[:offset] == k))
        epoch, pos = divmod(nth, self.sizes[k])
        return k, int(self._perm(k, epoch)[pos]) if self.shuffle else pos

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            raise IndexError("MixedDataset indices must be >= 0")
        position = self.epoch * self.length + int(index)
        k, row = self.locate(position)
        dataset = self.datasets[k]
        if hasattr(dataset, "get_sample"):
            return dataset.get_sample(row, np.random.default_rng([self.seed, 3, position]))
        return dataset[row]


def mixing_weights(
    sources: Sequence[SourceDataset], mask_fraction: float = 0.5, weights: Sequence[float] | None = None
) -> list[float]:
    """Per-source weights: ``mask_fraction`` shared equally by mask sources, the rest by image ones."""
    if weights is not None:
        if len(weights) != len(sources):
            raise ValueError(f"{len(weights)} weights for {len(sources)} sources")
        return [float(x) for x in weights]
    if not 0.0 <= mask_fraction <= 1.0:
        raise ValueError(f"mask_fraction must be in [0, 1], got {mask_fraction}")
    n_mask = sum(s.kind == "mask" for s in sources)
    n_image = len(sources) - n_mask
    if n_mask == 0 or n_image == 0:
        return [1.0 / len(sources)] * len(sources)
    return [mask_fraction / n_mask if s.kind == "mask" else (1.0 - mask_fraction) / n_image for s in sources]


def build_mixed_dataset(
    sources: Sequence[SourceDataset],
    mapping: VocabularyMapping | None = None,
    *,
    mask_fraction: float = 0.5,
    weights: Sequence[float] | None = None,
    transforms: Mapping[str, Transform] | Transform | None = None,
    length: int | None = None,
    seed: int = 0,
    synonyms: Any = None,
    rank: int = 0,
    world_size: int = 1,
    infinite: bool = True,
    decoded_cache_bytes: int = 0,
) -> MixedDataset | LarvSegIterableDataset:
    """Training dataset mixing mask and image-level sources in set proportions.

    Map-style sources give a :class:`MixedDataset` (length ``length``, default the total
    number of rows; leave rank sharding to the sampler / Accelerate). If any source is
    streaming, all are streamed through :func:`build_streaming_dataset` (sharded by
    ``rank``/``world_size``). ``mapping`` defaults to :func:`build_union_vocabulary` over
    ``sources``. The result has ``.mapping`` for the vocabulary and ``num_labels``. ``decoded_cache_bytes``
    keeps up to that many bytes of decoded map-style rows in memory, shared by the sources (per worker).
    """
    if mapping is None:
        mapping = build_union_vocabulary(sources, synonyms)
    w = mixing_weights(sources, mask_fraction, weights)
    if any(s.streaming for s in sources):
        dataset: Any = build_streaming_dataset(
            sources,
            mapping,
            probabilities=w,
            transforms=transforms,
            seed=seed,
            rank=rank,
            world_size=world_size,
            infinite=infinite,
        )
    else:
        cache = DecodedRowCache(decoded_cache_bytes) if decoded_cache_bytes else None
        parts = [LarvSegDataset(s, mapping, transforms, seed=seed, cache=cache) for s in sources]
        dataset = MixedDataset(parts, w, length=length, seed=seed)
    dataset.mapping = mapping
    return dataset


__all__ = ["MixedDataset", "build_mixed_dataset", "mixing_weights"]
