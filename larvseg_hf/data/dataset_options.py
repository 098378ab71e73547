# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""How to read each training dataset: `--dataset_options TARGET={"key": value, ...}`.

Published datasets differ in more than their columns: ADE20K stores "other" as 0 (``reduce_labels``),
COCO-Stuff marks unlabelled pixels 255, ImageNet on the Hub gives one integer per image whose names live
elsewhere. A preset names these conventions once per dataset role, so that a user who swaps a Hub id for a
local copy (``--weak_datasets /data/ade:train``) keeps them: TARGET is a role (``mask_datasets``,
``image_datasets``, ``weak_datasets``, ``eval_dataset``: every dataset given to that flag) or one dataset
spec as given to those flags. Entries apply in order, role entries before dataset entries, a later value
winning key by key.

Keys (:data:`OPTION_KEYS`): ``image_column``, ``label_column``, ``class_names`` (a vocabulary file, a known
vocabulary's names such as ``ade20k-150``, ``wnids:imagenet-21k`` for its WordNet ids in class order, or
``coco-stuff-182`` for COCO-Stuff's raw ids), ``reduce_labels`` and ``ignore_value`` (label maps only),
``drop_unmapped_rows`` (image-level data only: rows none of whose labels is in the run's vocabulary are
skipped, so that ImageNet-21K can stand in for its 124-class subset) and ``load_kwargs`` (keyword arguments
of ``datasets.load_dataset`` for a Hub dataset: ``revision``, ``data_dir``, ``name``, ...; a local folder in
the role, a user's own copy, is read without them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..known_vocabularies import known_vocabulary

#: The flags whose datasets a role target names.
ROLES = ("mask_datasets", "image_datasets", "weak_datasets", "eval_dataset")
#: Option key -> the types its value may have.
OPTION_KEYS: dict[str, tuple[type, ...]] = {
    "image_column": (str,),
    "label_column": (str,),
    "class_names": (str, list),
    "reduce_labels": (bool,),
    "ignore_value": (int,),
    "drop_unmapped_rows": (bool,),
    "load_kwargs": (dict,),
}
LABEL_MAP_KEYS = ("reduce_labels", "ignore_value")
IMAGE_LEVEL_KEYS = ("drop_unmapped_rows",)
WNIDS_PREFIX = "wnids:"

#: COCO-Stuff-164k's raw label maps (stuffthingmaps_trainval2017): value = COCO category id - 1, 255 unlabelled.
#: These 11 of the 182 ids are COCO things that were never annotated; the other 171 are COCO-Stuff-171 in order.
COCO_UNUSED_RAW_IDS = {
    11: "street sign",
    25: "hat",
    28: "shoe",
    29: "eye glasses",
    44: "plate",
    65: "mirror",
    67: "window",
    68: "desk",
    70: "door",
    82: "blender",
    90: "hair brush",
}
COCO_RAW_ID_COUNT = 182


class DatasetOptionsError(ValueError):
    """A `--dataset_options` entry that cannot be read or names no dataset of the run."""


def parse_entry(entry: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """`TARGET={json object}` -> (TARGET, options), every key and value type checked."""
    if isinstance(entry, Mapping):  # a {TARGET: {...}} mapping of one item (YAML presets)
        if len(entry) != 1:
            raise DatasetOptionsError(
                f"a dataset-options mapping entry needs exactly one target, got {entry!r}"
            )
        target, options = next(iter(entry.items()))
    else:
        target, sep, rest = str(entry).partition("={")
        if not sep or not target:
            raise DatasetOptionsError(
                f"--dataset_options entry {entry!r} must be TARGET={{JSON object}}, e.g. "
                'weak_datasets={"reduce_labels": true}'
            )
        try:
            options = json.loads("{" + rest)
        except ValueError as error:
            raise DatasetOptionsError(
                f"--dataset_options entry {entry!r}: not a JSON object ({error})"
            ) from None
    if not isinstance(options, Mapping):
        raise DatasetOptionsError(f"--dataset_options {target}: options must be a mapping, got {options!r}")
    for key, value in options.items():
        if key not in OPTION_KEYS:
            raise DatasetOptionsError(
                f"--dataset_options {target}: unknown key {key!r}; known keys: {sorted(OPTION_KEYS)}"
            )
        types = OPTION_KEYS[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in types)
            raise DatasetOptionsError(f"--dataset_options {target}: {key} must be {names}, got {value!r}")
    return str(target), dict(options)


def as_entries(value: Any) -> list[str]:
    """A preset's or `--config` file's `dataset_options` (a {TARGET: options} mapping or a list of entries) as
    the command line's `TARGET={json}` strings, so that every layer adds to the same list."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [{target: options} for target, options in value.items()]
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise DatasetOptionsError(f"dataset_options must be a mapping or a list of entries, got {value!r}")
    entries = []
    for item in value:
        target, options = parse_entry(item)
        entries.append(f"{target}={json.dumps(options)}")
    return entries


def check_targets(entries: Iterable[str], specs_by_role: Mapping[str, Sequence[str]]) -> None:
    """Every entry's TARGET must be a role or a dataset of this run (a typo would silently do nothing)."""
    specs = {spec for specs in specs_by_role.values() for spec in specs}
    for entry in entries:
        target, _ = parse_entry(entry)
        if target not in ROLES and target not in specs:
            raise DatasetOptionsError(
                f"--dataset_options names {target!r}, which is neither a role {list(ROLES)} nor one of this run's "
                f"datasets {sorted(specs)}."
            )


def options_for(entries: Iterable[str], spec: str, role: str) -> dict[str, Any]:
    """The options of dataset `spec` given to flag `role`: role entries, then its own, later keys winning."""
    parsed = [parse_entry(entry) for entry in entries]
    merged: dict[str, Any] = {}
    for wanted in (role, spec):
        for target, options in parsed:
            if target == wanted:
                merged.update(options)
    return merged


def coco_stuff_raw_names() -> list[str]:
    """COCO-Stuff-164k's 182 raw ids as class names: COCO-Stuff-171's names in order at the annotated ids,
    "unused (NAME)" at the 11 never-annotated ones, so that no vocabulary takes them for a real class."""
    used = iter(known_vocabulary("coco-stuff-171").class_names)
    names = [
        f"unused ({COCO_UNUSED_RAW_IDS[i]})" if i in COCO_UNUSED_RAW_IDS else next(used)
        for i in range(COCO_RAW_ID_COUNT)
    ]
    if next(used, None) is not None:  # pragma: no cover - guards the table above
        raise AssertionError("COCO-Stuff-171 does not fill the 171 annotated raw ids")
    return names


#: Class-name tables that are no known vocabulary (name -> builder).
CLASS_NAME_TABLES = {"coco-stuff-182": coco_stuff_raw_names}


def class_names_from_option(value: str | Sequence[str]) -> list[str] | str:
    """A `class_names` option as loaders take it: a list of names, or a vocabulary file's path.

    A known vocabulary's name gives its class names in id order, ``wnids:NAME`` its synsets in class order (how
    Hub ImageNet copies number their classes), ``coco-stuff-182`` COCO-Stuff's raw ids; anything else must be an
    existing vocabulary file.
    """
    if not isinstance(value, str):
        return [str(name) for name in value]
    if value in CLASS_NAME_TABLES:
        return CLASS_NAME_TABLES[value]()
    if os.path.isfile(value):
        return value
    if value.startswith(WNIDS_PREFIX):
        vocabulary = known_vocabulary(value[len(WNIDS_PREFIX) :])
        if not vocabulary.wnids:
            raise DatasetOptionsError(f"class_names {value!r}: {vocabulary.name} has no WordNet ids")
        if len(vocabulary.wnids) != len(vocabulary):
            raise DatasetOptionsError(
                f"class_names {value!r}: {vocabulary.name} merges synsets ({len(vocabulary.wnids)} wnids, "
                f"{len(vocabulary)} classes), so its wnids are no dataset's class order"
            )
        return list(vocabulary.wnids)
    try:
        return list(known_vocabulary(value).class_names)
    except ValueError as error:
        raise DatasetOptionsError(
            f"class_names {value!r} is no vocabulary file, known vocabulary, 'wnids:NAME' or one of "
            f"{sorted(CLASS_NAME_TABLES)} ({error})"
        ) from None


__all__ = [
    "CLASS_NAME_TABLES",
    "COCO_UNUSED_RAW_IDS",
    "OPTION_KEYS",
    "ROLES",
    "DatasetOptionsError",
    "as_entries",
    "check_targets",
    "class_names_from_option",
    "coco_stuff_raw_names",
    "options_for",
    "parse_entry",
]
