# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Streaming training samples: every source brought to one row schema, mixed with
``datasets.interleave_datasets`` and sharded by node."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Features, IterableDataset, List, Value, interleave_datasets
from datasets import Image as ImageFeature
from datasets.distributed import split_dataset_by_node

from .decoding import decode_image, to_rgb
from .samples import Transform, make_sample, pick_transform
from .sharding import as_iterable
from .source_dataset import SourceDataset
from .vocabulary_mapping import VocabularyMapping

#: Schema every source is mapped to before ``interleave_datasets`` (which needs equal features).
COMMON_FEATURES = Features(
    {
        "image": ImageFeature(decode=False),
        "mask": ImageFeature(decode=False),
        "label_ids": List(Value("int64")),
        "source": Value("string"),
        "index": Value("int64"),
    }
)


def to_common_rows(source: SourceDataset, mapping: VocabularyMapping, num_shards: int = 1) -> IterableDataset:
    """Streaming rows of ``source`` in :data:`COMMON_FEATURES` (images undecoded, image labels in union ids).

    Bringing every source to one schema is what lets ``datasets.interleave_datasets`` mix mask
    and image-level sources. ``num_shards`` applies to map-style sources only.
    """
    raw = source.raw
    if not isinstance(raw, IterableDataset):
        raw = raw.add_column("__row__", np.arange(len(raw), dtype=np.int64))
        raw = as_iterable(raw, num_shards)
    columns = raw.column_names
    name, label_maps = source.name, source.has_label_maps

    def convert(row: dict[str, Any], idx: int) -> dict[str, Any]:
        index = int(row.get("__row__", idx))
        if label_maps:  # mask and weak sources: the label map travels undecoded
            source.check_columns(row, index)
            mask, ids = row[source.label_column], []
        else:
            mask = None
            ids = mapping.map_label_ids(name, source.parse_image_labels(row[source.label_column], index))
        return {
            "image": row[source.image_column],
            "mask": mask,
            "label_ids": ids,
            "source": name,
            "index": index,
        }

    rows = raw.map(convert, with_indices=True, remove_columns=columns, features=COMMON_FEATURES)
    if columns is None:
        rows = rows.select_columns(list(COMMON_FEATURES))
    return rows


class LarvSegIterableDataset(torch.utils.data.IterableDataset):
    """Streaming training samples from common-schema rows (see :func:`build_streaming_dataset`).

    DataLoader workers each get a share of the shards (``datasets`` does this when iterated
    inside a worker); augmentation is seeded by ``(seed, epoch, rank, worker)``.
    """

    def __init__(
        self,
        rows: IterableDataset,
        sources: Sequence[SourceDataset],
        mapping: VocabularyMapping,
        transforms: Mapping[str, Transform] | Transform | None = None,
        *,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.rows = rows
        self.sources = {s.name: s for s in sources}
        self.mapping = mapping
        self.transforms = {s.kind: pick_transform(transforms, s.kind, mapping.ignore_index) for s in sources}
        self.seed = seed
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.rows.set_epoch(epoch)

    def sample_from_row(self, row: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        source = self.sources[row["source"]]
        index = row["index"]
        if source.has_label_maps:  # mask and weak sources; make_sample builds them by kind
            example = source.decode_row(
                {source.image_column: row["image"], source.label_column: row["mask"]}, index
            )
            example = self.mapping.map_example(source.name, example)
        else:
            image = decode_image(row["image"], dataset=source.name, index=index)
            example = {"image": np.asarray(to_rgb(image)), "mask": None, "label_ids": row["label_ids"]}
        return make_sample(
            example,
            source.kind,
            self.transforms[source.kind],
            rng,
            self.mapping.ignore_index,
            source=source.name,
            index=index,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        for row in self.rows:
            yield self.sample_from_row(row, rng)


def build_streaming_dataset(
    sources: Sequence[SourceDataset],
    mapping: VocabularyMapping,
    *,
    probabilities: Sequence[float] | None = None,
    transforms: Mapping[str, Transform] | Transform | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    infinite: bool = True,
    shuffle_buffer_size: int | None = None,
    stopping_strategy: str = "all_exhausted_without_replacement",
    num_shards: int = 1,
) -> LarvSegIterableDataset:
    """Mix sources with ``datasets.interleave_datasets(probabilities=...)`` and shard by node.

    ``infinite`` repeats every source forever (the interleave then never stops and the
    proportions hold for the whole run); otherwise ``stopping_strategy`` decides when the
    mix ends: the default visits every row exactly once ("all_exhausted" would restart the
    smaller sources, so the same row could land on two ranks). Sharding uses ``split_dataset_by_node(rank, world_size)`` so ranks see disjoint
    rows. Map-style sources are converted with ``to_iterable_dataset(num_shards)``.
    """
    rows = [to_common_rows(s, mapping, num_shards) for s in sources]
    if shuffle_buffer_size:
        rows = [r.shuffle(seed=seed, buffer_size=shuffle_buffer_size) for r in rows]
    if infinite:
        rows = [r.repeat(None) for r in rows]
    if len(rows) == 1:
        mixed = rows[0]
    else:
        probs = None if probabilities is None else [float(p) / sum(probabilities) for p in probabilities]
        mixed = interleave_datasets(
            rows,
            probabilities=probs,
            seed=seed,
            stopping_strategy="first_exhausted" if infinite else stopping_strategy,
        )
    if world_size > 1:
        mixed = split_dataset_by_node(mixed, rank=rank, world_size=world_size)
    return LarvSegIterableDataset(mixed, sources, mapping, transforms, seed=seed, rank=rank)


__all__ = ["COMMON_FEATURES", "LarvSegIterableDataset", "build_streaming_dataset", "to_common_rows"]
