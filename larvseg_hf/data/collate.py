# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Training samples in union ids, batch collation, and mixing of mask and image-level sources.

A sample is ``{"pixel_values": (3, H, W) float32, "labels": (H, W) int64, "image_label_ids":
list[int], "pixel_mask", "kind", "source", "index"}``: mask samples carry pixel labels and no image
labels; image-level samples carry all-``ignore_index`` labels and their image labels (union ids). A weak
source's image labels are the classes of its label map that are still in view after the training crop.

Batches. The model needs one H, W per batch, but METHOD.md crops mask data at 512 and
image-level data at 320. :class:`LarvSegCollator` therefore returns

* a flat batch ``{"pixel_values", "labels", "image_labels"}`` when all samples share a size
  (the usual case; use equal crop sizes to feed ``Trainer`` directly), or
* ``{"groups": [batch, batch, ...]}``, one flat batch per size in order of first appearance,
  when sizes differ. A training loop then runs the model once per group and adds the losses
  (the paper trains each dataset on its own GPU, which is the same thing).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Features, IterableDataset, List, Value, interleave_datasets
from datasets import Image as ImageFeature
from datasets.distributed import split_dataset_by_node

from .loading import (
    ColumnNotFoundError,
    SourceDataset,
    VocabularyMapping,
    as_iterable,
    build_union_vocabulary,
    decode_image,
    to_rgb,
)
from .transforms import TrainTransform

Transform = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]

#: Crop sizes of METHOD.md per source kind.
DEFAULT_CROP_SIZES = {"mask": 512, "image": 320}

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


def default_transforms(
    ignore_index: int = -100, crop_sizes: Mapping[str, int] | None = None
) -> dict[str, TrainTransform]:
    """METHOD.md training transforms: 512 crops for mask data, 320 for image-level data."""
    sizes = {**DEFAULT_CROP_SIZES, **(crop_sizes or {})}
    return {kind: TrainTransform(crop_size=size, ignore_index=ignore_index) for kind, size in sizes.items()}


def _pick_transform(
    transforms: Mapping[str, Transform] | Transform | None, kind: str, ignore_index: int
) -> Transform:
    if transforms is None:
        return default_transforms(ignore_index)[kind]
    transform = transforms[kind] if isinstance(transforms, Mapping) else transforms
    own = getattr(transform, "ignore_index", ignore_index)
    if own != ignore_index:
        raise ValueError(f"transform pads masks with ignore_index={own} but the mapping uses {ignore_index}")
    return transform


def unlabelled_value(ignore_index: int) -> int:
    """Stand-in for unlabelled pixels of an image-level sample's map: negative (never a class id) and
    different from ``ignore_index``, which the transform pads with, so padding, unlabelled pixels and
    classes stay three distinct things through the crop."""
    return -1 if ignore_index != -1 else -2


def make_sample(
    example: Mapping[str, Any],
    kind: str,
    transform: Transform,
    rng: np.random.Generator,
    ignore_index: int = -100,
    **extra: Any,
) -> dict[str, Any]:
    """Union-id example (``{"image", "mask", "label_ids"}``) -> transformed training sample.

    Image-level samples carry a ``pixel_mask`` of the image's own pixels: a stand-in map goes through the
    same random geometry, so the padding it comes back with is exactly the image's. For a weak example
    (``kind="image"`` with a ``mask``: a label map used as image-level data) the stand-in is the label map
    itself, unlabelled pixels set to :func:`unlabelled_value`, and the image labels are the sorted class
    ids left in its real pixels after the crop; its pixel labels stay all ``ignore_index``.
    """
    if kind == "mask":
        pixel_values, labels = transform(example["image"], example["mask"], rng)
        pixel_mask = torch.ones(tuple(pixel_values.shape[-2:]), dtype=torch.bool)
        label_ids: list[int] = []
    else:
        unlabelled = unlabelled_value(ignore_index)
        label_map = example.get("mask")
        if label_map is None:  # arrays and PIL images alike
            stand_in = np.full(np.shape(example["image"])[:2], unlabelled, dtype=np.int64)
        else:
            label_map = np.asarray(label_map, dtype=np.int64)
            stand_in = np.where(label_map == ignore_index, unlabelled, label_map)
        pixel_values, extent = transform(example["image"], stand_in, rng)
        extent = torch.as_tensor(extent)
        pixel_mask = extent != ignore_index
        labels = torch.full(tuple(pixel_values.shape[-2:]), ignore_index, dtype=torch.int64)
        if label_map is None:
            label_ids = list(example["label_ids"] or [])
        else:
            present = extent[pixel_mask]
            label_ids = torch.unique(present[present >= 0]).tolist()
    return {
        "pixel_values": pixel_values,
        "labels": labels,
        "pixel_mask": pixel_mask,
        "image_label_ids": label_ids,
        "kind": kind,
        **extra,
    }


class LarvSegDataset(torch.utils.data.Dataset):
    """Map-style training samples (union ids) from one :class:`SourceDataset`.

    Augmentation is seeded by ``(seed, epoch, index)`` so a run is reproducible whatever the
    number of DataLoader workers; call :meth:`set_epoch` each epoch for fresh draws.
    """

    def __init__(
        self,
        source: SourceDataset,
        mapping: VocabularyMapping,
        transform: Mapping[str, Transform] | Transform | None = None,
        *,
        seed: int = 0,
    ) -> None:
        if source.streaming:
            raise TypeError(f"source {source.name!r} is streaming; use build_streaming_dataset")
        self.source = source
        self.mapping = mapping
        self.kind = source.kind
        self.transform = _pick_transform(transform, source.kind, mapping.ignore_index)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def get_sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        example = self.mapping.map_example(self.source.name, self.source.get_example(index))
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


class LarvSegCollator:
    """Stack samples into model inputs; group by size when crops differ (see module docstring).

    Output per (group) batch: ``pixel_values`` (B, 3, H, W) float32, ``labels`` (B, H, W)
    int64, ``image_labels`` (B, num_labels) float32 multi-hot (zero rows for mask samples),
    ``pixel_mask`` (B, H, W) bool, False on padding (all True for samples that carry none).
    With ``source_names`` also ``source_index`` (B,) int64, the position of each sample's
    ``source`` in ``source_names``: the model then draws each sample's classifier columns from
    its own source's vocabulary (every dataset has its own label space, as in the reference).
    """

    def __init__(
        self, num_labels: int, ignore_index: int = -100, source_names: Sequence[str] | None = None
    ) -> None:
        self.num_labels = int(num_labels)
        self.ignore_index = ignore_index
        self.source_names = None if source_names is None else [str(n) for n in source_names]
        self._source_position: dict[str, int] | None = None
        if self.source_names is not None:
            repeated = sorted({n for n in self.source_names if self.source_names.count(n) > 1})
            if repeated:
                raise ValueError(f"source_names must be distinct; repeated: {repeated}")
            self._source_position = {n: i for i, n in enumerate(self.source_names)}

    def _source_index(self, samples: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        positions = []
        for sample in samples:
            source = sample.get("source")
            if source not in self._source_position:
                raise ValueError(
                    f"sample source {source!r} (index {sample.get('index')}) is not one of the collator's "
                    f"source_names {self.source_names}"
                )
            positions.append(self._source_position[source])
        return torch.as_tensor(positions, dtype=torch.int64)

    def _stack(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        image_labels = torch.zeros(len(samples), self.num_labels, dtype=torch.float32)
        for row, sample in enumerate(samples):
            ids = list(sample.get("image_label_ids") or [])
            bad = [i for i in ids if not 0 <= int(i) < self.num_labels]
            if bad:
                raise ValueError(
                    f"image label ids {bad} outside 0..{self.num_labels - 1} "
                    f"(source {sample.get('source')!r}, index {sample.get('index')})"
                )
            if ids:
                image_labels[row, torch.as_tensor(ids, dtype=torch.long)] = 1.0
        batch = {
            "pixel_values": torch.stack(
                [torch.as_tensor(s["pixel_values"], dtype=torch.float32) for s in samples]
            ),
            "labels": torch.stack([torch.as_tensor(s["labels"], dtype=torch.int64) for s in samples]),
            "image_labels": image_labels,
            "pixel_mask": torch.stack(
                [
                    torch.as_tensor(s["pixel_mask"], dtype=torch.bool)
                    if s.get("pixel_mask") is not None
                    else torch.ones(tuple(s["pixel_values"].shape[-2:]), dtype=torch.bool)
                    for s in samples
                ]
            ),
        }
        if self._source_position is not None:
            batch["source_index"] = self._source_index(samples)
        return batch

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        groups: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
        for sample in samples:
            hw = tuple(sample["pixel_values"].shape[-2:])
            if tuple(sample["labels"].shape[-2:]) != hw:
                raise ValueError(
                    f"labels {tuple(sample['labels'].shape)} do not match pixel_values {tuple(sample['pixel_values'].shape)} "
                    f"(source {sample.get('source')!r}, index {sample.get('index')})"
                )
            groups.setdefault(hw, []).append(sample)
        if len(groups) == 1:
            return self._stack(samples)
        return {"groups": [self._stack(g) for g in groups.values()]}


# --------------------------------------------------------------------------- map-style mixing


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


# --------------------------------------------------------------------------- streaming mixing


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
            for col in (source.image_column, source.label_column):
                if col not in row:
                    raise ColumnNotFoundError(
                        f"column {col!r} not found (dataset {name!r}, row {index}); available columns: {sorted(row)}"
                    )
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
        self.transforms = {s.kind: _pick_transform(transforms, s.kind, mapping.ignore_index) for s in sources}
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


# --------------------------------------------------------------------------- one entry point


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
) -> MixedDataset | LarvSegIterableDataset:
    """Training dataset mixing mask and image-level sources in set proportions.

    Map-style sources give a :class:`MixedDataset` (length ``length``, default the total
    number of rows; leave rank sharding to the sampler / Accelerate). If any source is
    streaming, all are streamed through :func:`build_streaming_dataset` (sharded by
    ``rank``/``world_size``). ``mapping`` defaults to :func:`build_union_vocabulary` over
    ``sources``. The result has ``.mapping`` for the vocabulary and ``num_labels``.
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
        parts = [LarvSegDataset(s, mapping, transforms, seed=seed) for s in sources]
        dataset = MixedDataset(parts, w, length=length, seed=seed)
    dataset.mapping = mapping
    return dataset


__all__ = [
    "COMMON_FEATURES",
    "DEFAULT_CROP_SIZES",
    "LarvSegCollator",
    "LarvSegDataset",
    "LarvSegIterableDataset",
    "MixedDataset",
    "build_mixed_dataset",
    "build_streaming_dataset",
    "default_transforms",
    "make_sample",
    "mixing_weights",
    "to_common_rows",
    "unlabelled_value",
]
