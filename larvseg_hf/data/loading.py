# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Load mask and image-level datasets (Hub or local imagefolder) and map them into one vocabulary.

LarvSeg mixes two kinds of sources (METHOD.md, "Training data and batches"):

* ``kind="mask"``: image + label map (pixel values are the dataset's class ids);
* ``kind="image"``: image + one or several image-level labels (ids or names);
* ``kind="image"`` with ``label_format="mask"`` ("weak", the paper's weak ADE20K): a segmentation
  dataset used as image-level data. Its label maps are never pixel supervision: after the training
  crop, the sample's image-level labels are the classes present in the cropped map
  (:func:`load_weak_dataset`, ``larvseg_hf.data.collate.make_sample``).

Every source keeps its own class names; :func:`build_union_vocabulary` merges them (with a
synonym map) and gives each source a lookup table into the union ids. Images and masks are
decoded here, not by ``datasets``, so that a corrupt file or a bad label is reported with
the dataset, the row and the file, and so that mask modes (P, I;16, I) are read as ids.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Literal

import datasets
import numpy as np
import PIL.Image
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset, IterableDatasetDict, Value

from ..vocabulary import UNMAPPED, NameIndex, UnionVocabulary, closest_names, load_synonyms, normalize_name

logger = logging.getLogger(__name__)

MASK_LABEL_COLUMNS = ("label", "annotation", "semantic_map", "mask")
IMAGE_LABEL_COLUMNS = ("label", "labels")
#: Files searched (in the data folder, its parent and the split folder) for class names.
VOCABULARY_FILES = ("vocabulary.json", "id2label.json", "class_names.json", "classes.json", "classes.txt")
#: Hub datasets whose class names live elsewhere: (repo, file, names are for reduce_labels=True).
KNOWN_LABEL_FILES = {"scene_parse_150": ("huggingface/label-files", "ade20k-id2label.json", True)}

Kind = Literal["mask", "image"]
LabelFormat = Literal["mask", "id", "ids", "name", "names", "auto"]


class LarvSegDataError(ValueError):
    """Base class of the data errors below; all name the dataset and, where known, row and file."""


class ColumnNotFoundError(LarvSegDataError):
    pass


class LabelOutOfRangeError(LarvSegDataError):
    pass


class UnknownLabelError(LarvSegDataError):
    pass


class SizeMismatchError(LarvSegDataError):
    pass


class CorruptImageError(LarvSegDataError):
    pass


def _where(dataset: str | None, index: int | None = None, path: str | None = None) -> str:
    parts = [f"dataset {dataset!r}" if dataset else "dataset"]
    if index is not None:
        parts.append(f"row {index}")
    if path:
        parts.append(f"file {path}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- decoding


def _value_path(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return value.get("path")
    if isinstance(value, str | os.PathLike):
        return os.fspath(value)
    return getattr(value, "filename", None) or None


def decode_image(
    value: Any, *, what: str = "image", dataset: str | None = None, index: int | None = None
) -> PIL.Image.Image:
    """Open an image cell (PIL image, ``{"bytes", "path"}`` dict, path, bytes or array).

    Uses ``datasets.Image().decode_example`` for dicts so Hub paths and EXIF orientation
    behave as in ``datasets``; any PIL failure becomes a :class:`CorruptImageError` naming
    the dataset, row and file.
    """
    path = _value_path(value)
    try:
        if isinstance(value, PIL.Image.Image):
            value.load()
            return value
        if isinstance(value, np.ndarray):
            return PIL.Image.fromarray(value)
        if isinstance(value, bytes):
            image = PIL.Image.open(BytesIO(value))
            image.load()
            return image
        if isinstance(value, str | os.PathLike):
            value = {"path": os.fspath(value), "bytes": None}
        if isinstance(value, Mapping):
            return datasets.Image().decode_example(dict(value))
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise CorruptImageError(
            f"cannot decode {what} ({_where(dataset, index, path)}): {type(err).__name__}: {err}"
        ) from err
    if value is None:
        raise LarvSegDataError(f"{what} is missing ({_where(dataset, index)})")
    raise LarvSegDataError(
        f"unsupported {what} value of type {type(value).__name__} ({_where(dataset, index)})"
    )


def image_size(
    value: Any, *, what: str = "image", dataset: str | None = None, index: int | None = None
) -> tuple[int, int]:
    """(W, H) of an image cell from its header, without decoding the pixels (for checks over whole datasets)."""
    if isinstance(value, PIL.Image.Image):
        return value.size
    if isinstance(value, np.ndarray):
        return (value.shape[1], value.shape[0])
    data = value.get("bytes") if isinstance(value, Mapping) else value if isinstance(value, bytes) else None
    path = _value_path(value)
    try:
        if data is not None:
            with PIL.Image.open(BytesIO(data)) as image:
                return image.size
        if path is not None:
            with PIL.Image.open(path) as image:
                return image.size
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise CorruptImageError(
            f"cannot read {what} ({_where(dataset, index, path)}): {type(err).__name__}: {err}"
        ) from err
    return decode_image(value, what=what, dataset=dataset, index=index).size


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """8-bit RGB view of any PIL mode, scaling 16/32-bit intensities instead of clipping.

    PIL's own ``convert("RGB")`` clips ``I;16``/``I`` values at 255 (white images); alpha is
    composited over black so the hidden colour of transparent pixels does not leak in.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image)
        if mode == "F":
            arr = arr.astype(np.float64)
            scale = 255.0 if np.nanmax(arr, initial=0) <= 1.0 else 1.0
            gray = np.clip(np.nan_to_num(arr) * scale, 0, 255)
        elif mode == "I" and (arr.min(initial=0) < 0 or arr.max(initial=0) > 65535):
            arr = arr.astype(np.float64)
            lo, hi = arr.min(), arr.max()
            gray = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        else:  # 16-bit range: 65535 -> 255
            gray = arr.astype(np.float64) / 257.0
        gray = np.rint(gray).astype(np.uint8)
        return PIL.Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = PIL.Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return PIL.Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def mask_to_array(
    image: PIL.Image.Image,
    *,
    dataset: str | None = None,
    index: int | None = None,
    path: str | None = None,
) -> np.ndarray:
    """Label map -> int64 ids. P gives palette indices (never colours); I;16 / I keep ids > 255."""
    mode = image.mode
    path = path or _value_path(image)
    if mode in ("RGB", "RGBA"):
        arr = np.asarray(image)
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise LarvSegDataError(
                f"label map is a colour {mode} image ({_where(dataset, index, path)}); "
                "expected class ids in an L, P, I;16 or I image"
            )
        return arr[..., 0].astype(np.int64)
    if mode in ("LA", "PA"):
        return np.asarray(image)[..., 0].astype(np.int64)
    arr = np.asarray(image)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise LarvSegDataError(f"label map has non-integer values ({_where(dataset, index, path)})")
    return arr.astype(np.int64)


# --------------------------------------------------------------------------- class names


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a vocabulary file.

    Accepts a JSON list, ``{"names"|"classes"|"labels": [...]}``, ``{"id2label": {...}}``,
    ``{"0": "name", ...}`` (ids must be 0..n-1), or a text file with one name per line.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        if not path.endswith(".json"):
            return [line.strip() for line in f if line.strip()]
        data = json.load(f)
    if isinstance(data, Mapping):
        for key in ("names", "classes", "labels", "class_names", "id2label"):
            if key in data:
                data = data[key]
                break
    if isinstance(data, list):
        return [str(n) for n in data]
    if isinstance(data, Mapping):
        try:
            by_id = {int(k): str(v) for k, v in data.items()}
        except ValueError:
            raise ValueError(f"{path}: expected a list of names or an id -> name mapping") from None
        if sorted(by_id) != list(range(len(by_id))):
            missing = sorted(set(range(max(by_id) + 1)) - set(by_id))[:10]
            raise ValueError(f"{path}: class ids must be 0..{len(by_id) - 1} without gaps; missing {missing}")
        return [by_id[i] for i in range(len(by_id))]
    raise ValueError(f"{path}: expected a list of names or an id -> name mapping, got {type(data).__name__}")


def _find_vocabulary_file(folders: Iterable[str]) -> str | None:
    for folder in folders:
        for fname in VOCABULARY_FILES:
            candidate = os.path.join(folder, fname)
            if os.path.isfile(candidate):
                return candidate
    return None


def _hub_class_names(repo: str, reduce_labels: bool) -> list[str] | None:
    """Class names shipped with a Hub dataset (a vocabulary file in the repo, or a known label file)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover
        return None
    for fname in VOCABULARY_FILES:
        try:
            return read_class_names(hf_hub_download(repo, fname, repo_type="dataset"))
        except Exception:  # noqa: BLE001 - absent file, offline, gated: try the next source
            continue
    if repo in KNOWN_LABEL_FILES:
        label_repo, fname, for_reduced = KNOWN_LABEL_FILES[repo]
        try:
            names = read_class_names(hf_hub_download(label_repo, fname, repo_type="dataset"))
        except Exception:  # noqa: BLE001
            return None
        # ADE20K: id 0 is "other objects"; reduce_labels drops it, otherwise keep it as background.
        return names if reduce_labels == for_reduced else ["background", *names]
    return None


# --------------------------------------------------------------------------- sources


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

    def decode_row(self, row: Mapping[str, Any], index: int | None = None) -> dict[str, Any]:
        """Row -> ``{"image": uint8 HxWx3, "mask": int64 HxW | None, "label_ids": list[int] | None, "path"}``.

        Mask values are dataset class ids with unlabeled pixels set to -1; label ids are
        dataset class ids. Sources with label maps (mask and weak) give ``mask`` and no
        ``label_ids`` (a weak sample's labels are computed after cropping), the others the
        reverse. Every problem raises a :class:`LarvSegDataError` naming the row.
        """
        for col in (self.image_column, self.label_column):
            if col not in row:
                raise ColumnNotFoundError(
                    f"column {col!r} not found ({_where(self.name, index)}); available columns: {sorted(row)}"
                )
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
        loaded = datasets.load_dataset("imagefolder", data_dir=data_dir, streaming=streaming, **load_kwargs)
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


def _resolve_class_names(
    class_names: Sequence[str] | str | os.PathLike | None,
    folders: Sequence[str],
    hub_repo: str | None,
    reduce_labels: bool,
) -> list[str] | None:
    if class_names is not None:
        if isinstance(class_names, str | os.PathLike):
            return read_class_names(class_names)
        return [str(n) for n in class_names]
    found = _find_vocabulary_file(folders)
    if found is not None:
        return read_class_names(found)
    if hub_repo is not None:
        return _hub_class_names(hub_repo, reduce_labels)
    return None


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
    names = _resolve_class_names(class_names, folders, _hub_repo(name_or_path), reduce_labels)
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
    names = _resolve_class_names(class_names, folders, None, False)
    if names is not None and feature_names is not None and len(names) != len(feature_names):
        raise ValueError(
            f"class_names has {len(names)} entries but dataset {name!r}'s ClassLabel has {len(feature_names)}"
        )
    names = names or feature_names
    if names is None and fmt in ("name", "names") and isinstance(ds, Dataset):
        names = _names_in_column(ds, label_column, fmt)
    if names is None and _hub_repo(name_or_path) is not None:
        names = _hub_class_names(str(name_or_path), False)
    if names is None:
        raise ValueError(
            f"no class names for dataset {name!r} (label column {label_column!r} is {feature!r}): pass "
            f"class_names=[...] or put one of {list(VOCABULARY_FILES)} next to the data"
        )
    return SourceDataset(ds, "image", names, image_column, label_column, name, fmt)


# --------------------------------------------------------------------------- union vocabulary


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


# --------------------------------------------------------------------------- streaming helpers


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
    from datasets.distributed import split_dataset_by_node

    if isinstance(dataset, SourceDataset):
        return dataset.with_dataset(split_dataset_by_node(dataset.dataset, rank=rank, world_size=world_size))
    return split_dataset_by_node(dataset, rank=rank, world_size=world_size)


__all__ = [
    "IMAGE_LABEL_COLUMNS",
    "MASK_LABEL_COLUMNS",
    "VOCABULARY_FILES",
    "ColumnNotFoundError",
    "CorruptImageError",
    "LabelOutOfRangeError",
    "LarvSegDataError",
    "SizeMismatchError",
    "SourceDataset",
    "UnknownLabelError",
    "VocabularyMapping",
    "as_iterable",
    "build_union_vocabulary",
    "decode_image",
    "image_size",
    "load_classification_dataset",
    "load_segmentation_dataset",
    "load_weak_dataset",
    "mask_to_array",
    "read_class_names",
    "shard_for_node",
    "to_rgb",
]
