# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Finding a dataset's class names: given, in a vocabulary file next to the data, or shipped with its Hub repo."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence

#: Files searched (in the data folder, its parent and the split folder) for class names.
VOCABULARY_FILES = ("vocabulary.json", "id2label.json", "class_names.json", "classes.json", "classes.txt")
#: Hub datasets whose class names live elsewhere: (repo, file, names are for reduce_labels=True).
KNOWN_LABEL_FILES = {"scene_parse_150": ("huggingface/label-files", "ade20k-id2label.json", True)}


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


def hub_class_names(repo: str, reduce_labels: bool) -> list[str] | None:
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


def resolve_class_names(
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
        return hub_class_names(hub_repo, reduce_labels)
    return None


__all__ = [
    "KNOWN_LABEL_FILES",
    "VOCABULARY_FILES",
    "hub_class_names",
    "read_class_names",
    "resolve_class_names",
]
