# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""The union vocabulary of several sources and each source's table from its own ids into it."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..vocabulary import UNMAPPED, UnionVocabulary, closest_names, load_synonyms
from .source_dataset import SourceDataset

logger = logging.getLogger(__name__)


@dataclass
class VocabularyMapping:
    """A union vocabulary and, per source name, its dataset-id -> union-id table (-1 = unmapped)."""

    vocabulary: UnionVocabulary
    index_maps: dict[str, np.ndarray]
    unmapped: dict[str, list[str]]
    ignore_index: int = -100

    @property
    def num_labels(self) -> int:
        return len(self.vocabulary)

    def map_mask(self, source: str, mask: np.ndarray) -> np.ndarray:
        """Dataset-id mask (-1 = unlabeled) -> union ids, ``ignore_index`` where unlabeled or unmapped."""
        lut = self.index_maps[source]
        union = lut[np.clip(mask, 0, None)] if lut.size else np.full(mask.shape, UNMAPPED, np.int64)
        return np.where((mask < 0) | (union == UNMAPPED), self.ignore_index, union).astype(np.int64)

    def map_label_ids(self, source: str, ids: Iterable[int]) -> list[int]:
        """Dataset label ids -> union ids, dropping unmapped ones."""
        lut = self.index_maps[source]
        out: list[int] = []
        for i in ids:
            u = int(lut[i])
            if u != UNMAPPED and u not in out:
                out.append(u)
        return out

    def map_example(self, source: str, example: Mapping[str, Any]) -> dict[str, Any]:
        """``SourceDataset.decode_row`` output -> same dict in union ids (``mask`` / ``label_ids``)."""
        out = dict(example)
        if example.get("mask") is not None:
            out["mask"] = self.map_mask(source, example["mask"])
        if example.get("label_ids") is not None:
            out["label_ids"] = self.map_label_ids(source, example["label_ids"])
        return out


def build_union_vocabulary(
    sources: Sequence[SourceDataset],
    synonyms: str | os.PathLike | Mapping[str, Any] | None = None,
    target_vocabulary: UnionVocabulary | Sequence[str] | None = None,
    *,
    ignore_index: int = -100,
) -> VocabularyMapping:
    """Union of the sources' class names and each source's index map into it.

    Without ``target_vocabulary`` every name gets an id (first-seen order over ``sources``).
    With one, the vocabulary is fixed: names it lacks are logged with ``logging.warning``,
    returned in ``unmapped`` (source name -> names) and ignored in training (mask pixels
    become ``ignore_index``, image labels are dropped).
    """
    names_seen = [s.name for s in sources]
    dupes = {n for n in names_seen if names_seen.count(n) > 1}
    if dupes:
        raise ValueError(f"source names must be unique (pass dataset_name=...); repeated: {sorted(dupes)}")
    if target_vocabulary is None:
        vocab = UnionVocabulary.from_datasets([s.class_names for s in sources], synonyms=synonyms)
    elif isinstance(target_vocabulary, UnionVocabulary):
        vocab = UnionVocabulary(
            target_vocabulary.names,
            synonyms={**target_vocabulary.synonyms, **load_synonyms(synonyms)},
            frozen=True,
        )
    else:
        vocab = UnionVocabulary(target_vocabulary, synonyms=synonyms, frozen=True)
    index_maps: dict[str, np.ndarray] = {}
    for source in sources:
        index_maps[source.name] = np.asarray(vocab.index_map(source.class_names, source.name), dtype=np.int64)
    unmapped = {k: list(v) for k, v in vocab.unmapped.items()}
    for src, missing in unmapped.items():
        logger.warning(
            "%d of the classes of %r are not in the target vocabulary and will be ignored: %s",
            len(missing),
            src,
            ", ".join(f"{m!r} (closest: {closest_names(m, vocab.names, 3)})" for m in missing[:20])
            + (" ..." if len(missing) > 20 else ""),
        )
    return VocabularyMapping(vocab, index_maps, unmapped, ignore_index)


__all__ = ["VocabularyMapping", "build_union_vocabulary"]
