# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Iterable views and per-node shards of datasets and sources, for streaming and multi-GPU training."""

from __future__ import annotations

from datasets import Dataset, IterableDataset
from datasets.distributed import split_dataset_by_node

from .source_dataset import SourceDataset


def as_iterable(dataset: Dataset | IterableDataset, num_shards: int = 1) -> IterableDataset:
    """``IterableDataset`` view of a map-style dataset (``reset_format`` first, as datasets 5 requires)."""
    if isinstance(dataset, IterableDataset):
        return dataset
    dataset = dataset.with_format(None)
    dataset.reset_format()
    return dataset.to_iterable_dataset(num_shards=max(1, min(num_shards, len(dataset))))


def shard_for_node(
    dataset: Dataset | IterableDataset | SourceDataset, rank: int, world_size: int
) -> Dataset | IterableDataset | SourceDataset:
    """This rank's disjoint part, via ``datasets.distributed.split_dataset_by_node``.

    Streaming data is split by shards when ``n_shards % world_size == 0``, otherwise every
    node reads all rows and keeps every ``world_size``-th one.
    """
    if isinstance(dataset, SourceDataset):
        return dataset.with_dataset(split_dataset_by_node(dataset.dataset, rank=rank, world_size=world_size))
    return split_dataset_by_node(dataset, rank=rank, world_size=world_size)


__all__ = ["as_iterable", "shard_for_node"]
