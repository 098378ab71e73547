# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Map-style training samples from one source, reproducible whatever the number of DataLoader workers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .decoded_cache import DecodedRowCache
from .samples import Transform, make_sample, pick_transform
from .source_dataset import SourceDataset
from .vocabulary_mapping import VocabularyMapping


class LarvSegDataset(torch.utils.data.Dataset):
    """Map-style training samples (union ids) from one :class:`SourceDataset`.

    Augmentation is seeded by ``(seed, epoch, index)`` so a run is reproducible whatever the
    number of DataLoader workers; call :meth:`set_epoch` each epoch for fresh draws. With a ``cache``, rows
    are decoded once and kept in memory (see :class:`DecodedRowCache`); samples are the same.
    """

    def __init__(
        self,
        source: SourceDataset,
        mapping: VocabularyMapping,
        transform: Mapping[str, Transform] | Transform | None = None,
        *,
        seed: int = 0,
        cache: DecodedRowCache | None = None,
    ) -> None:
        if source.streaming:
            raise TypeError(f"source {source.name!r} is streaming; use build_streaming_dataset")
        self.source = source
        self.mapping = mapping
        self.kind = source.kind
        self.transform = pick_transform(transform, source.kind, mapping.ignore_index)
        self.seed = seed
        self.epoch = 0
        self.cache = cache

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def get_sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            return self.mapping.map_example(self.source.name, self.source.get_example(index))

        example = load() if self.cache is None else self.cache.get(self.source.name, index, load)
        return make_sample(
            example,
            self.kind,
            self.transform,
            rng,
            self.mapping.ignore_index,
            source=self.source.name,
            index=index,
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rows of {self.source.name!r}")
        return self.get_sample(index, np.random.default_rng([self.seed, self.epoch, index]))


__all__ = ["LarvSegDataset"]
