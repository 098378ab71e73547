# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""The union vocabulary: one id space for the categories of every training dataset.

LarvSeg trains one classifier over the union of the mask datasets' and the image-level
datasets' category names. Names are merged after normalisation and synonym resolution, in
first-seen order, so the same inputs always give the same ids. Pure Python on purpose: the
vocabulary is needed by configs, scripts and demos that should not pay for a torch import.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .known_vocabularies import KnownVocabulary

logger = logging.getLogger(__name__)

#: Index returned by :meth:`UnionVocabulary.index_map` for a name the vocabulary lacks.
UNMAPPED = -1

_SEPARATORS = re.compile(r"[\s_\-]+")


def normalize_name(name: str) -> str:
    """Canonical spelling used for matching: NFKC, lowercase, ``_``/``-``/runs of spaces -> one space.

    Datasets spell the same category differently ("Potted_Plant", "potted-plant",
    "potted plant "); matching on this form merges them without a synonym entry.
    """
    if not isinstance(name, str):
        raise TypeError(f"category names must be strings, got {type(name).__name__}: {name!r}")
    name = unicodedata.normalize("NFKC", name).lower()
    return _SEPARATORS.sub(" ", name).strip()


def closest_names(name: str, vocabulary: Iterable[str], n: int = 5) -> list[str]:
    """Up to ``n`` entries of ``vocabulary`` that look like ``name`` (difflib), for error messages."""
    vocabulary = list(vocabulary)
    by_norm: dict[str, str] = {}
    for entry in vocabulary:
        by_norm.setdefault(normalize_name(entry), entry)
    query = normalize_name(name)
    matches = difflib.get_close_matches(query, list(by_norm), n=n, cutoff=0.5)
    if len(matches) < n:  # substrings catch "dog" -> "hot dog" that difflib scores low
        matches += [k for k in by_norm if (query in k or k in query) and k not in matches][: n - len(matches)]
    return [by_norm[m] for m in matches]


class NameIndex:
    """Name -> id lookup that matches names the way training merges them (:func:`normalize_name`).

    A name spelled as stored wins; otherwise its normalised spelling must match exactly one entry
    ("High-heeled shoe" finds "high heeled shoe"). A normalised spelling shared by several entries
    is ambiguous and raises, listing them, rather than picking one.
    """

    def __init__(self, names: Sequence[str], what: str = "vocabulary") -> None:
        self.names = [str(n) for n in names]
        self.what = what
        self._exact: dict[str, int] = {}
        self._normal: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            self._exact.setdefault(name, i)
            self._normal.setdefault(normalize_name(name), []).append(i)

    def candidates(self, name: str) -> list[int]:
        """Ids that `name` can mean: its exact entry, else every entry with its normalised spelling."""
        if name in self._exact:
            return [self._exact[name]]
        return list(self._normal.get(normalize_name(name), ()))

    def index(self, name: str) -> int:
        """Id of `name`; KeyError naming the closest names when absent, or the candidates when ambiguous."""
        if not isinstance(name, str):
            raise TypeError(f"class names must be strings, got {type(name).__name__}: {name!r}")
        found = self.candidates(name)
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(f"{self.names[i]!r} (id {i})" for i in found)
            raise KeyError(
                f"class name {name!r} is ambiguous in the {self.what} of {len(self)} classes: it matches {listed} after "
                "normalisation (case, '-', '_' and spaces); use the exact name or the id."
            )
        close = closest_names(name, self.names)
        hint = f" Closest names: {close}." if close else ""
        raise KeyError(
            f"unknown class name {name!r}: it is not in the {self.what} of {len(self)} classes.{hint}"
        )

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.candidates(name))

    def __len__(self) -> int:
        return len(self.names)


def load_synonyms(path_or_dict: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, str]:
    """Read a synonym map into ``{normalised alias: normalised canonical}``.

    Accepts a mapping or a ``.json``/``.yaml``/``.yml`` file holding either
    ``{"alias": "canonical"}`` or ``{"canonical": ["alias", ...]}`` (both may be mixed).
    Chains (a -> b -> c) are resolved to the final name; cycles raise ``ValueError``.
    """
    if path_or_dict is None:
        return {}
    if isinstance(path_or_dict, Mapping):
        raw: Mapping[str, Any] = path_or_dict
        where = "synonym map"
    else:
        path = os.fspath(path_or_dict)
        where = f"synonym file {path}"
        with open(path, encoding="utf-8") as f:
            if path.lower().endswith((".yaml", ".yml")):
                import yaml

                raw = yaml.safe_load(f) or {}
            else:
                raw = json.load(f)
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where} must hold a mapping, got {type(raw).__name__}")
    pairs: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            pairs[normalize_name(str(key))] = normalize_name(value)
        elif isinstance(value, Sequence):
            canonical = normalize_name(str(key))
            for alias in value:
                pairs[normalize_name(str(alias))] = canonical
        else:
            raise ValueError(f"{where}: value for {key!r} must be a name or a list of aliases, got {value!r}")
    resolved: dict[str, str] = {}
    for alias in pairs:
        seen = [alias]
        target = pairs[alias]
        while target in pairs and pairs[target] != target:
            if target in seen:
                raise ValueError(f"{where}: synonym cycle {' -> '.join([*seen, target])}")
            seen.append(target)
            target = pairs[target]
        if target != alias:
            resolved[alias] = target
    return resolved


class UnionVocabulary:
    """Ordered, de-duplicated category names with dataset-to-union index maps.

    Args:
        names: initial names (normalised, synonyms resolved, duplicates merged, order kept).
        synonyms: ``{"alias": "canonical"}`` mapping or a json/yaml file (see :func:`load_synonyms`).
        frozen: if True, :meth:`add` refuses new names; used when training must target a fixed
            (e.g. evaluation) vocabulary and everything else is reported as unmapped.
    """

    def __init__(
        self,
        names: Iterable[str] = (),
        synonyms: str | os.PathLike | Mapping[str, Any] | None = None,
        *,
        frozen: bool = False,
    ) -> None:
        self.synonyms: dict[str, str] = load_synonyms(synonyms)
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        #: dataset name -> names of that dataset that :meth:`index_map` could not place.
        self.unmapped: dict[str, list[str]] = {}
        self.frozen = False
        for name in names:
            self.add(name)
        self.frozen = frozen

    @classmethod
    def from_datasets(
        cls,
        name_lists: Mapping[str, Sequence[str]] | Sequence[Sequence[str]],
        synonyms: str | os.PathLike | Mapping[str, Any] | None = None,
    ) -> UnionVocabulary:
        """Union of several datasets' class-name lists, in dataset order then class order."""
        lists = name_lists.values() if isinstance(name_lists, Mapping) else name_lists
        vocab = cls(synonyms=synonyms)
        for names in lists:
            vocab.add_names(names)
        return vocab

    def canonical(self, name: str) -> str:
        """Normalised name with synonyms resolved: the key names are merged on."""
        norm = normalize_name(name)
        return self.synonyms.get(norm, norm)

    def add(self, name: str) -> int:
        """Id of ``name``, appending it if new (``ValueError`` if the vocabulary is frozen)."""
        key = self.canonical(name)
        if key in self._index:
            return self._index[key]
        if self.frozen:
            raise ValueError(
                f"{name!r} is not in the frozen vocabulary; closest: {closest_names(name, self.names)}"
            )
        self._index[key] = len(self.names)
        self.names.append(key)
        return self._index[key]

    def add_names(self, names: Iterable[str]) -> list[int]:
        return [self.add(n) for n in names]

    def get(self, name: str, default: int = UNMAPPED) -> int:
        return self._index.get(self.canonical(name), default)

    def index_of(self, name: str) -> int:
        """Union id of ``name``; ``KeyError`` naming the closest known names when absent."""
        idx = self._index.get(self.canonical(name))
        if idx is None:
            raise KeyError(
                f"unknown category {name!r} (canonical {self.canonical(name)!r}); "
                f"closest names in the vocabulary: {closest_names(name, self.names)}"
            )
        return idx

    def index_map(self, dataset_names: Sequence[str], dataset: str | None = None) -> list[int]:
        """Dataset label id -> union id (``UNMAPPED`` = -1 where the name is missing).

        Missing names are recorded in ``unmapped[dataset]`` (when ``dataset`` is given) so a
        caller can report them once instead of failing on the first pixel that uses them.
        """
        ids = [self.get(n) for n in dataset_names]
        missing = [n for n, i in zip(dataset_names, ids, strict=True) if i == UNMAPPED]
        if dataset is not None:
            if missing:
                self.unmapped[dataset] = missing
            else:
                self.unmapped.pop(dataset, None)
        return ids

    def unmapped_names(self, dataset_names: Iterable[str]) -> list[str]:
        """Names of ``dataset_names`` with no union id (no side effects)."""
        return [n for n in dataset_names if self.get(n) == UNMAPPED]

    @property
    def id2label(self) -> dict[int, str]:
        """For ``LarvSegConfig(id2label=...)``."""
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "synonyms": dict(self.synonyms)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, frozen: bool = False) -> UnionVocabulary:
        return cls(data["names"], synonyms=data.get("synonyms") or None, frozen=frozen)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1, ensure_ascii=False)

    @classmethod
    def load(cls, path: str | os.PathLike, *, frozen: bool = False) -> UnionVocabulary:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f), frozen=frozen)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) in self._index

    def __repr__(self) -> str:
        head = ", ".join(self.names[:5]) + (", ..." if len(self.names) > 5 else "")
        return (
            f"UnionVocabulary({len(self)} names: {head}; {len(self.synonyms)} synonyms, frozen={self.frozen})"
        )


def known_vocabulary(name: str) -> KnownVocabulary:
    """The vocabulary called `name`: "ade20k-150", "imagenet-21k", "coco171+ade150", ... (see
    :func:`larvseg_hf.known_vocabularies.known_vocabulary`; imported on first call, as it imports this module)."""
    from .known_vocabularies import known_vocabulary as load

    return load(name)


def list_known_vocabularies() -> list[str]:
    """Names that :func:`known_vocabulary` takes; any "+" of them is a union too."""
    from .known_vocabularies import list_known_vocabularies as names

    return names()


__all__ = [
    "UNMAPPED",
    "NameIndex",
    "UnionVocabulary",
    "closest_names",
    "known_vocabulary",
    "list_known_vocabularies",
    "load_synonyms",
    "normalize_name",
]
