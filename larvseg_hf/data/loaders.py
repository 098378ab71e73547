# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Load mask, weak and image-level datasets (Hub name, local imagefolder or ``Dataset``) as sources.

LarvSeg mixes two kinds of sources (METHOD.md, "Training data and batches"):

* ``kind="mask"``: image + label map (pixel values are the dataset's class ids);
* ``kind="image"``: image + one or several image-level labels (ids or names);
* ``kind="image"`` with ``label_format="mask"`` ("weak", the paper's weak ADE20K): a segmentation
  dataset used as image-level data. Its label maps are never pixel supervision: after the training
  crop, the sample's image-level labels are the classes present in the cropped map
  (:func:`load_weak_dataset`, ``larvseg_hf.data.samples.make_sample``).

Every source keeps its own class names; ``larvseg_hf.data.vocabulary_mapping.build_union_vocabulary``
merges them (with a synonym map) and gives each source a lookup table into the union ids.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset, IterableDatasetDict, Value

from ..vocabulary import normalize_name
from .class_names import VOCABULARY_FILES, hub_class_names, resolve_class_names
from .errors import ColumnNotFoundError, LarvSegDataError, _where
from .sharding import as_iterable
from .source_dataset import Kind, LabelFormat, SourceDataset

MASK_LABEL_COLUMNS = ("label", "annotation", "semantic_map", "mask")
IMAGE_LABEL_COLUMNS = ("label", "labels")


def _columns(ds: Dataset | IterableDataset) -> list[str] | None:
    return list(ds.column_names) if ds.column_names is not None else None


def _require_column(ds: Dataset | IterableDataset, column: str, name: str, role: str) -> None:
    cols = _columns(ds)
    if cols is not None and column not in cols:
        raise ColumnNotFoundError(
            f"{role} column {column!r} not found in dataset {name!r}; available columns: {cols}; "
            f"name the right one with --{role}_column {name}=COLUMN (larvseg-train) or {role}_column=... (Python)"
        )


def _pick_label_column(
    ds: Dataset | IterableDataset, label_column: str | None, candidates: Sequence[str], name: str, what: str
) -> str:
    """The given label column, or the first known one present; errors list the available columns."""
    cols = _columns(ds)
    if label_column is None:
        if cols is None:
            label_column = "label"
        else:
            found = [c for c in candidates if c in cols]
            if not found:
                raise ColumnNotFoundError(
                    f"no {what} column in dataset {name!r} (looked for {list(candidates)}); "
                    f"available columns: {cols}; name it with --label_column {name}=COLUMN (larvseg-train) "
                    "or label_column=... (Python)"
                )
            label_column = found[0]
    _require_column(ds, label_column, name, "label")
    return label_column


def _open_dataset(
    name_or_path: str | os.PathLike | Dataset | IterableDataset,
    split: str,
    streaming: bool,
    load_kwargs: Mapping[str, Any],
) -> tuple[Dataset | IterableDataset, str, list[str]]:
    """Dataset object, display name and folders to search for a vocabulary file."""
    if isinstance(name_or_path, Dataset | IterableDataset):
        ds = name_or_path
        if streaming and isinstance(ds, Dataset):
            ds = as_iterable(ds)
        return ds, getattr(ds.info, "dataset_name", None) or "dataset", []
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        split_dir = os.path.join(path, split)
        if os.path.isdir(split_dir):
            data_dir, single, folders = split_dir, True, [split_dir, path]
        elif any(
            os.path.isfile(os.path.join(path, f"metadata.{ext}")) for ext in ("jsonl", "csv", "parquet")
        ):
            data_dir, single, folders = path, True, [path, os.path.dirname(os.path.abspath(path))]
        else:
            data_dir, single, folders = path, False, [path]
        builder = "webdataset" if _holds_tar_shards(data_dir) else "imagefolder"
        loaded = datasets.load_dataset(
            builder, **_folder_files(data_dir, single), streaming=streaming, **load_kwargs
        )
        if single and len(loaded) == 1:
            ds = next(iter(loaded.values()))
        elif split in loaded:
            ds = loaded[split]
        else:
            raise ValueError(f"split {split!r} not found in {path}; available splits: {list(loaded)}")
        return ds, f"{path}:{split}", folders
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise FileNotFoundError(f"no dataset folder at {path!r} (and it does not look like a Hub name)")
    loaded = datasets.load_dataset(path, split=split, streaming=streaming, **load_kwargs)
    if isinstance(loaded, DatasetDict | IterableDatasetDict):  # pragma: no cover - split=... returns one
        loaded = loaded[split]
    return loaded, f"{path}:{split}", []


def _folder_files(data_dir: str, single: bool) -> dict[str, Any]:
    """How `datasets` should find a folder's files. A single split stored flat (a metadata file and images,
    no subfolders) is one ``data_files`` glob: `data_dir` makes `datasets` try every split-name pattern over
    every file, several seconds per thousand images; any other folder keeps `data_dir`."""
    if single:
        with os.scandir(data_dir) as entries:
            if not any(entry.is_dir() for entry in entries):
                return {"data_files": {"train": os.path.join(glob.escape(data_dir), "*")}}
    return {"data_dir": data_dir}


def _holds_tar_shards(folder: str) -> bool:
    """A folder of WebDataset shards (a local copy of e.g. timm/imagenet-22k-wds), read with datasets' webdataset
    builder; every other folder is an imagefolder."""
    names = os.listdir(folder)
    return any(n.endswith(".tar") for n in names) and not any(n.startswith("metadata.") for n in names)


def _hub_repo(name_or_path: Any) -> str | None:
    if isinstance(name_or_path, str) and not os.path.exists(name_or_path):
        return name_or_path
    return None


def load_segmentation_dataset(
    name_or_path: str | os.PathLike | Dataset | IterableDataset,
    split: str = "train",
    *,
    image_column: str = "image",
    label_column: str | None = None,
    class_names: Sequence[str] | str | os.PathLike | None = None,
    streaming: bool = False,
    reduce_labels: bool = False,
    ignore_value: int | None = None,
    dataset_name: str | None = None,
    **load_kwargs: Any,
) -> SourceDataset:
    """Load a mask dataset (Hub name, local imagefolder, or a ``Dataset`` object) as a ``kind="mask"`` source.

    ``label_column`` defaults to the first of ``MASK_LABEL_COLUMNS`` present. Class names come
    from ``class_names`` (list or file), else a vocabulary file next to the data
    (``VOCABULARY_FILES``), else the Hub repo (or a known label file, e.g. ADE20K's for
    ``scene_parse_150``). ``reduce_labels`` treats stored 0 as unlabeled and shifts ids down by
    one; ``ignore_value`` is a stored value meaning unlabeled (e.g. 255). Extra keyword
    arguments go to ``datasets.load_dataset``.
    """
    return _load_label_map_dataset(
        "mask",
        name_or_path,
        split,
        load_kwargs,
        image_column=image_column,
        label_column=label_column,
        class_names=class_names,
        streaming=streaming,
        reduce_labels=reduce_labels,
        ignore_value=ignore_value,
        dataset_name=dataset_name,
    )


def load_weak_dataset(
    name_or_path: str | os.PathLike | Dataset | IterableDataset,
    split: str = "train",
    *,
    image_column: str = "image",
    label_column: str | None = None,
    class_names: Sequence[str] | str | os.PathLike | None = None,
    streaming: bool = False,
    reduce_labels: bool = False,
    ignore_value: int | None = None,
    dataset_name: str | None = None,
    **load_kwargs: Any,
) -> SourceDataset:
    """Load a segmentation dataset as image-level data: the paper's "weak" ADE20K.

    Read exactly like :func:`load_segmentation_dataset` (same columns, class names, ``reduce_labels``,
    ``ignore_value``), but returned as ``kind="image"`` with ``label_format="mask"``: its label maps are
    never pixel supervision. Each training sample's image-level labels are the classes present in the
    real, labelled pixels of its label map after the random rescale / crop / flip (the reference recomputes
    them from the cropped map), so every class in view is named, background and stuff included.
    """
    return _load_label_map_dataset(
        "image",
        name_or_path,
        split,
        load_kwargs,
        image_column=image_column,
        label_column=label_column,
        class_names=class_names,
        streaming=streaming,
        reduce_labels=reduce_labels,
        ignore_value=ignore_value,
        dataset_name=dataset_name,
    )


def _load_label_map_dataset(
    kind: Kind,
    name_or_path: str | os.PathLike | Dataset | IterableDataset,
    split: str,
    load_kwargs: Mapping[str, Any],
    *,
    image_column: str,
    label_column: str | None,
    class_names: Sequence[str] | str | os.PathLike | None,
    streaming: bool,
    reduce_labels: bool,
    ignore_value: int | None,
    dataset_name: str | None,
) -> SourceDataset:
    """Shared body of the mask and weak loaders (they differ only in ``kind``)."""
    ds, default_name, folders = _open_dataset(name_or_path, split, streaming, load_kwargs)
    name = dataset_name or default_name
    _require_column(ds, image_column, name, "image")
    label_column = _pick_label_column(ds, label_column, MASK_LABEL_COLUMNS, name, "label-map")
    names = resolve_class_names(class_names, folders, _hub_repo(name_or_path), reduce_labels)
    if names is None:
        raise ValueError(
            f"no class names for dataset {name!r}: pass class_names=[...] or put one of "
            f"{list(VOCABULARY_FILES)} next to the data"
        )
    return SourceDataset(
        ds, kind, names, image_column, label_column, name, "mask", reduce_labels, ignore_value
    )


def _label_format(feature: Any, dataset: str | None = None) -> tuple[LabelFormat, list[str] | None]:
    """Label format and (for ClassLabel features) class names, from a column's feature."""
    inner = None
    if isinstance(feature, list) and len(feature) == 1:
        inner = feature[0]
    elif hasattr(feature, "feature") and not isinstance(feature, ClassLabel | Value):
        inner = feature.feature
    if inner is not None:
        if isinstance(inner, ClassLabel):
            return "ids", list(inner.names)
        if isinstance(inner, Value) and inner.dtype == "string":
            return "names", None
        if isinstance(inner, Value) and "int" in inner.dtype:
            return "ids", None
    if isinstance(feature, ClassLabel):
        return "id", list(feature.names)
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return "name", None
    if isinstance(feature, Value) and "int" in feature.dtype:
        return "id", None
    if feature is None:
        return "auto", None
    if isinstance(feature, datasets.Image):
        raise LarvSegDataError(
            f"the image-level label column of {_where(dataset)} holds images ({feature!r}); to use a "
            "segmentation dataset's label maps as image-level labels, load it with load_weak_dataset "
            "(larvseg-train: --weak_datasets)"
        )
    raise LarvSegDataError(f"unsupported image-level label feature {feature!r} ({_where(dataset)})")


def _names_in_column(ds: Dataset, column: str, fmt: LabelFormat) -> list[str]:
    seen: dict[str, None] = {}
    for cell in ds.select_columns([column])[column]:
        for n in cell if fmt == "names" else [cell]:
            seen.setdefault(n, None)
    return sorted(seen, key=normalize_name)


def load_classification_dataset(
    name_or_path: str | os.PathLike | Dataset | IterableDataset,
    split: str = "train",
    *,
    image_column: str = "image",
    label_column: str | None = None,
    class_names: Sequence[str] | str | os.PathLike | None = None,
    streaming: bool = False,
    dataset_name: str | None = None,
    **load_kwargs: Any,
) -> SourceDataset:
    """Load an image-level dataset as a ``kind="image"`` source.

    Labels may be a ClassLabel id, a list of ClassLabel ids (multi-label), a name, or a list
    of names. Names come from ``class_names``, the ClassLabel feature, a vocabulary file next
    to the data, or (map-style name labels only) the sorted set of names in the column.
    """
    ds, default_name, folders = _open_dataset(name_or_path, split, streaming, load_kwargs)
    name = dataset_name or default_name
    _require_column(ds, image_column, name, "image")
    label_column = _pick_label_column(ds, label_column, IMAGE_LABEL_COLUMNS, name, "image-level label")
    feature = ds.features.get(label_column) if ds.features is not None else None
    fmt, feature_names = _label_format(feature, name)
    names = resolve_class_names(class_names, folders, None, False)
    if names is not None and feature_names is not None and len(names) != len(feature_names):
        raise ValueError(
            f"class_names has {len(names)} entries but dataset {name!r}'s ClassLabel has {len(feature_names)}"
        )
    names = names or feature_names
    if names is None and fmt in ("name", "names") and isinstance(ds, Dataset):
        names = _names_in_column(ds, label_column, fmt)
    if names is None and _hub_repo(name_or_path) is not None:
        names = hub_class_names(str(name_or_path), False)
    if names is None:
        raise ValueError(
            f"no class names for dataset {name!r} (label column {label_column!r} is {feature!r}): pass "
            f"class_names=[...] or put one of {list(VOCABULARY_FILES)} next to the data"
        )
    return SourceDataset(ds, "image", names, image_column, label_column, name, fmt)


__all__ = [
    "IMAGE_LABEL_COLUMNS",
    "MASK_LABEL_COLUMNS",
    "load_classification_dataset",
    "load_segmentation_dataset",
    "load_weak_dataset",
]
