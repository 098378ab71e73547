# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""One training source (a ``datasets`` dataset and how to read it) and its per-row decoding in dataset ids.

A source reads its image columns undecoded (:attr:`SourceDataset.raw`) and decodes each row itself, so
that a corrupt file or a bad label id is reported with the dataset, the row and the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import datasets
import numpy as np
from datasets import Dataset, IterableDataset

from ..vocabulary import NameIndex
from .decoding import _value_path, decode_image, mask_to_array, to_rgb
from .errors import (
    ColumnNotFoundError,
    LabelOutOfRangeError,
    LarvSegDataError,
    SizeMismatchError,
    UnknownLabelError,
    _where,
)

Kind = Literal["mask", "image"]
LabelFormat = Literal["mask", "id", "ids", "name", "names", "auto"]


@dataclass
class SourceDataset:
    """One training source: a ``datasets`` dataset plus what is needed to read it.

    Attributes:
        dataset: the ``Dataset`` or ``IterableDataset`` (images decoded as ``datasets`` does).
        kind: ``"mask"`` (pixel labels) or ``"image"`` (image-level labels): how samples are built.
        class_names: the dataset's own names, indexed by its label ids (after ``reduce_labels``).
        label_format: how the label column is decoded: ``"mask"`` (a label map), ``"id"``, ``"ids"``,
            ``"name"``, ``"names"`` or ``"auto"`` (streaming without known features: decided per row).
            ``kind="image"`` with ``"mask"`` is a weak source (label maps read as image-level labels).
        reduce_labels: mask value 0 is unlabeled and every other id moves down by one.
        ignore_value: mask value meaning "unlabeled" in the stored maps (e.g. 255), or None.
    """

    dataset: Dataset | IterableDataset
    kind: Kind
    class_names: list[str]
    image_column: str
    label_column: str
    name: str
    label_format: LabelFormat = "mask"
    reduce_labels: bool = False
    ignore_value: int | None = None
    _names: NameIndex = field(init=False, repr=False)
    _raw: Dataset | IterableDataset | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind == "mask" and self.label_format != "mask":
            raise ValueError(
                f"dataset {self.name!r}: a kind='mask' source needs label_format='mask', "
                f"got {self.label_format!r}"
            )
        self._names = NameIndex(self.class_names, what=f"dataset {self.name!r}")

    @property
    def streaming(self) -> bool:
        return isinstance(self.dataset, IterableDataset)

    @property
    def has_label_maps(self) -> bool:
        """The label column holds label maps (mask and weak sources)."""
        return self.label_format == "mask"

    @property
    def is_weak(self) -> bool:
        """A segmentation dataset used as image-level data: label sets come from its cropped label maps."""
        return self.kind == "image" and self.label_format == "mask"

    def __len__(self) -> int:
        if self.streaming:
            raise TypeError(f"streaming source {self.name!r} has no length")
        return len(self.dataset)

    def __bool__(self) -> bool:  # a streaming source has no len() but is still truthy
        return True

    @property
    def raw(self) -> Dataset | IterableDataset:
        """The dataset with image columns left undecoded, so decoding errors can name the row/file."""
        if self._raw is None:
            ds = self.dataset
            features = ds.features
            if features is not None:
                columns = [self.image_column] + ([self.label_column] if self.has_label_maps else [])
                for col in columns:
                    if isinstance(features.get(col), datasets.Image) and features[col].decode:
                        ds = ds.cast_column(col, datasets.Image(decode=False))
            self._raw = ds
        return self._raw

    def with_dataset(self, dataset: Dataset | IterableDataset) -> SourceDataset:
        """Same source over another dataset object (a shard, a shuffled or repeated copy)."""
        return SourceDataset(
            dataset,
            self.kind,
            list(self.class_names),
            self.image_column,
            self.label_column,
            self.name,
            self.label_format,
            self.reduce_labels,
            self.ignore_value,
        )

    # -- per-row decoding (dataset ids; union mapping is VocabularyMapping's job)

    def check_columns(self, row: Mapping[str, Any], index: int | None = None) -> None:
        """Raise :class:`ColumnNotFoundError`, listing the row's columns, if it lacks the image or label column."""
        for col in (self.image_column, self.label_column):
            if col not in row:
                raise ColumnNotFoundError(
                    f"column {col!r} not found ({_where(self.name, index)}); available columns: {sorted(row)}"
                )

    def decode_row(self, row: Mapping[str, Any], index: int | None = None) -> dict[str, Any]:
        """Row -> ``{"image": uint8 HxWx3, "mask": int64 HxW | None, "label_ids": list[int] | None, "path"}``.

        Mask values are dataset class ids with unlabeled pixels set to -1; label ids are
        dataset class ids. Sources with label maps (mask and weak) give ``mask`` and no
        ``label_ids`` (a weak sample's labels are computed after cropping), the others the
        reverse. Every problem raises a :class:`LarvSegDataError` naming the row.
        """
        self.check_columns(row, index)
        image_value = row[self.image_column]
        path = _value_path(image_value)
        image = decode_image(image_value, what="image", dataset=self.name, index=index)
        rgb = np.asarray(to_rgb(image))
        if self.has_label_maps:
            mask = self.read_label_map(row[self.label_column], index, image.size, path)
            return {"image": rgb, "mask": mask, "label_ids": None, "path": path}
        return {
            "image": rgb,
            "mask": None,
            "label_ids": self.parse_image_labels(row[self.label_column], index),
            "path": path,
        }

    def read_label_map(
        self,
        label_value: Any,
        index: int | None,
        image_size: tuple[int, int],
        image_path: str | None = None,
    ) -> np.ndarray:
        """A row's label map in dataset class ids (-1 = unlabeled), checked against its image's (W, H);
        errors name the label-map file as well as the image."""
        label_path = _value_path(label_value)
        where = _where(self.name, index, label_path) + (f" (image {image_path})" if image_path else "")
        mask_img = decode_image(label_value, what="label map", dataset=self.name, index=index)
        if mask_img.size != tuple(image_size):
            raise SizeMismatchError(
                f"image is {image_size[0]}x{image_size[1]} but its label map is "
                f"{mask_img.size[0]}x{mask_img.size[1]} (WxH) ({where})"
            )
        return self._dataset_ids(
            mask_to_array(mask_img, dataset=self.name, index=index, path=label_path), where
        )

    def _dataset_ids(self, raw: np.ndarray, where: str) -> np.ndarray:
        ignored = np.zeros(raw.shape, dtype=bool)
        if self.ignore_value is not None:
            ignored |= raw == self.ignore_value
        ids = raw
        if self.reduce_labels:
            ignored |= raw == 0
            ids = raw - 1
        bad = ~ignored & ((ids < 0) | (ids >= len(self.class_names)))
        if bad.any():
            bad_values = np.unique(raw[bad])
            raise LabelOutOfRangeError(
                f"label map holds ids {bad_values[:10].tolist()}{' ...' if bad_values.size > 10 else ''} "
                f"outside the dataset's {len(self.class_names)} classes "
                f"(valid stored values: {'1' if self.reduce_labels else '0'}..{len(self.class_names) - (0 if self.reduce_labels else 1)}"
                f"{'' if self.ignore_value is None else f', ignore value {self.ignore_value}'}) "
                f"({where})"
            )
        return np.where(ignored, -1, ids)

    def parse_image_labels(self, value: Any, index: int | None = None) -> list[int]:
        """Image-level label cell (id, ids, name, names) -> dataset class ids."""
        items = list(value) if isinstance(value, list | tuple | np.ndarray) else [value]
        ids: list[int] = []
        for item in items:
            if isinstance(item, np.generic):
                item = item.item()
            if isinstance(item, str):
                try:
                    idx = self._names.index(item)
                except KeyError as err:
                    raise UnknownLabelError(f"{err.args[0]} ({_where(self.name, index)})") from None
            elif isinstance(item, int) and not isinstance(item, bool):
                idx = item
                if not 0 <= idx < len(self.class_names):
                    raise LabelOutOfRangeError(
                        f"label id {idx} is outside the dataset's {len(self.class_names)} classes "
                        f"(0..{len(self.class_names) - 1}) ({_where(self.name, index)})"
                    )
            else:
                raise LarvSegDataError(
                    f"unsupported image-level label {item!r} of type {type(item).__name__} ({_where(self.name, index)})"
                )
            if idx not in ids:
                ids.append(idx)
        return ids

    def get_example(self, index: int) -> dict[str, Any]:
        """Decoded row ``index`` of a map-style source (see :meth:`decode_row`)."""
        return self.decode_row(self.raw[int(index)], int(index))


__all__ = ["Kind", "LabelFormat", "SourceDataset"]
