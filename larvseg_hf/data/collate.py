# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Batch collation of training samples (:mod:`.samples`) into model inputs.

The model needs one H, W per batch, but METHOD.md crops mask data at 512 and
image-level data at 320. :class:`LarvSegCollator` therefore returns

* a flat batch ``{"pixel_values", "labels", "image_labels"}`` when all samples share a size
  (the usual case; use equal crop sizes to feed ``Trainer`` directly), or
* ``{"groups": [batch, batch, ...]}``, one flat batch per size in order of first appearance,
  when sizes differ. A training loop then runs the model once per group and adds the losses
  (the paper trains each dataset on its own GPU, which is the same thing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


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


__all__ = ["LarvSegCollator"]
