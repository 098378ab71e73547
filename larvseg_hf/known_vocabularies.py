# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""The paper's vocabularies by name, offline: ``known_vocabulary("coco171+ade150")``.

A vocabulary of tens of thousands of names should not be retyped or fetched for every run, and
the paper's unions are only comparable to the paper's numbers when they are the paper's names.

Sources (facts only, no code; each data file names its source in its ``"source"`` field):

- ADE20K-150, ADE20K-847, COCO-Stuff-171 and the ImageNet subsets IN-124, IN-585, IN-11K come from
  the authors' repository, GitHub HaojunYu1998/LarvSeg at commit 35c2e57:
  ``mmseg/datasets/ade.py`` (ADE20KDataset.CLASSES, ADE20KFULLDataset.CLASSES),
  ``mmseg/datasets/coco_stuff.py`` (COCOStuffDataset.CLASSES, and ProcessedC171Dataset.CLASSES cut at
  the first "-", the names COCO classes take in a union: "wall-brick" -> "wall", "tv" ->
  "television receiver"), ``mmseg/datasets/imagenet.py`` (ImageNet124 / ImageNet585 IMAGE_IDS and
  CLASSES) and ``notebook/IN11K_IMAGE_IDS_to_CLASSES_dict.json``; ``scripts/extract_reference_vocabularies.py``
  wrote ``larvseg_hf/vocabularies/*.json`` from them.
- ImageNet-1K and ImageNet-21K (fall11, 21,841 synsets, timm's "imagenet-22k" list; Google's 21,843
  as "imagenet-21k-goog") with their WordNet lemmas come from the data files of timm's ``ImageNetInfo``
  (``timm/data/_info``), an optional extra (``pip install "larvseg-hf[vocab]"``), or from a data-only copy
  of timm where no torchvision matches the installed torch (:data:`TIMM_DATA_ONLY_DIR`); timm is never
  imported. Lemmas that several synsets share are disambiguated by :func:`name_synsets`.

Unions join names with "+" in the order the ids should follow (mask dataset first, as the paper's
names do): the parts' class lists are merged by :class:`~larvseg_hf.vocabulary.UnionVocabulary` by
name and COCO's union renames (see :func:`union_synonyms`); the parts' synonyms come along to map
dataset labels (wnids, other lemmas) into the union. The reference merges names as exact strings, this
package after :func:`~larvseg_hf.vocabulary.normalize_name`, so ``coco171+ade150`` has the
reference's 247 names and ``coco171+ade847`` 909 of its 913 (the other 4 are spelling twins such as
"parking-meter" / "parking meter"). See :data:`PAPER_UNIONS`.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from types import MappingProxyType

from .vocabulary import UnionVocabulary, closest_names, normalize_name

logger = logging.getLogger(__name__)

#: Canonical name -> (short name used in union names, other accepted names).
BASE_VOCABULARIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ade20k-150": ("ade150", ("a150", "ade20k")),
    "ade20k-847": ("ade847", ("a847", "ade20k-full")),
    "coco-stuff-171": ("coco171", ("c171", "coco-stuff", "cocostuff")),
    "imagenet-1k": ("in1k", ()),
    "imagenet-21k": ("in21k", ()),
    "imagenet-21k-goog": ("in21k-goog", ()),
    "imagenet-124": ("in124", ()),
    "imagenet-585": ("in585", ()),
    "imagenet-11k": ("in11k", ()),
}

#: The unions the reference's configs train with -> (the reference's file of union names, its size).
#: Sizes here differ where the reference's files count spelling twins twice or predate its COCO renames
#: (they keep "wine glass", "tv", "dirt", "window"); tests/test_known_vocabularies.py checks every difference.
PAPER_UNIONS: dict[str, tuple[str, int]] = {
    "coco171+ade150": ("file/ade150ucoco.json", 247),
    "coco171+ade150+in124": ("file/ade150ucoco.json", 247),
    "coco171+in124": ("notebook/ade124ucoco.json", 228),
    "coco171+ade847": ("file/ade847ucoco.json", 913),
    "coco171+ade847+in585": ("file/ade847ucoco.json", 913),
    "coco171+in585": ("notebook/ade585ucoco.json", 663),
    "coco171+in11k": ("notebook/in11kucoco.json", 10524),
    "coco171+ade847+in11k": ("notebook/ade847ucocouin11k.json", 10751),
}

#: timm's synset lists (timm/data/_info) for the vocabularies read from timm.
#: "imagenet-21k" is fall11's 21,841 synsets (timm: "imagenet-22k"); Google's list (timm: "imagenet-21k")
#: adds n03931044 and n09859684, the latter in the paper's IN-585 / IN-11K. Neither holds n04399382
#: (teddy bear) of ImageNet-1K.
TIMM_SYNSET_FILES = {
    "imagenet-1k": "imagenet_synsets.txt",
    "imagenet-21k": "imagenet22k_synsets.txt",
    "imagenet-21k-goog": "imagenet21k_goog_synsets.txt",
}
TIMM_LEMMA_FILE = "imagenet_synset_to_lemma.txt"
#: Where a data-only copy of timm may lie, under the environment's prefix: ``pip install --no-deps --target
#: PREFIX/share/larvseg-hf/timm timm``. Python never imports from there, for machines without a torchvision that
#: matches their torch: timm needs torchvision, and accelerate's CLI imports timm whenever it is importable
#: (accelerate/commands/estimate.py), so a timm installed without torchvision stops `accelerate launch`.
TIMM_DATA_ONLY_DIR = Path("share", "larvseg-hf", "timm")


_KEY = re.compile(r"[\s_\-]+")
_DATA_DIR = Path(__file__).parent / "vocabularies"


@dataclass(frozen=True)
class KnownVocabulary:
    """A named class list with its synonyms and, for ImageNet, each synset's class.

    Attributes:
        name: canonical name ("ade20k-150", or the short names joined by "+" for a union).
        class_names: the classes in id order; a single dataset's as its source spells them, a union's
            as :class:`UnionVocabulary` stores them (normalised).
        synonyms: normalised alias -> its entry of ``class_names`` (other WordNet lemmas, wnids).
        wnids: WordNet id -> its entry of ``class_names`` (empty for non-ImageNet vocabularies; several
            wnids share one class where the source merges them, as IN-11K does).
        source: where the names come from (credit).
        union_synonyms: renames that apply only when this vocabulary is merged with others (COCO's).
        parts: the canonical names of a union's parts (empty for a single vocabulary).
    """

    name: str
    class_names: tuple[str, ...]
    synonyms: Mapping[str, str] = field(default_factory=dict)
    wnids: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    union_synonyms: Mapping[str, str] = field(default_factory=dict)
    parts: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.class_names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.class_names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._lookup(name) is not None

    @functools.cached_property
    def _by_normal(self) -> dict[str, str]:
        return {normalize_name(n): n for n in self.class_names}

    def _lookup(self, name: str) -> str | None:
        norm = normalize_name(name)
        if norm in self._by_normal:
            return self._by_normal[norm]
        target = self.synonyms.get(norm)
        return None if target is None else self._by_normal.get(normalize_name(target))

    def resolve(self, name: str) -> str:
        """The entry of ``class_names`` that ``name`` means: a class in any spelling, a synonym or a wnid."""
        found = self._lookup(name)
        if found is None:
            prefix = normalize_name(name) + " ("  # a lemma that several synsets share names none of them
            senses = [n for n in self.class_names if normalize_name(n).startswith(prefix)]
            if senses:
                raise KeyError(
                    f"{name!r} is ambiguous in {self.name}: it names {senses}; use one of them or a wnid"
                )
            close = closest_names(name, self.class_names)
            raise KeyError(
                f"{name!r} is not a class or synonym of {self.name} ({len(self)} classes); closest: {close}"
            )
        return found

    def wnids_of(self, class_name: str) -> list[str]:
        """The synsets whose images carry ``class_name`` (one, or several where the source merges them)."""
        entry = self.resolve(class_name)
        return [wnid for wnid, name in self.wnids.items() if name == entry]

    def to_union_vocabulary(self, *, frozen: bool = False) -> UnionVocabulary:
        """The training vocabulary: same classes, same ids, and the synonyms that map datasets into it.

        ``frozen=True`` is what a fixed target vocabulary needs (dataset names it lacks are reported).
        """
        return UnionVocabulary(self.class_names, synonyms=dict(self.synonyms), frozen=frozen)

    def __repr__(self) -> str:
        head = ", ".join(self.class_names[:4])
        return f"KnownVocabulary({self.name!r}: {len(self)} classes ({head}, ...), {len(self.synonyms)} synonyms)"


def _key(text: str) -> str:
    return _KEY.sub("", text.strip().lower())


_ACCEPTED: dict[str, str] = {}
for _name, (_short, _others) in BASE_VOCABULARIES.items():
    for _alias in (_name, _short, *_others):
        _ACCEPTED[_key(_alias)] = _name
_SHORT = {name: short for name, (short, _) in BASE_VOCABULARIES.items()}


def list_known_vocabularies() -> list[str]:
    """Names :func:`known_vocabulary` takes: every single vocabulary and the paper's unions.

    Any other "+" of known names is a union too (e.g. "coco171+in21k").
    """
    return [*BASE_VOCABULARIES, *PAPER_UNIONS]


def known_vocabulary(name: str) -> KnownVocabulary:
    """The vocabulary called ``name`` (case, spaces, "-" and "_" do not matter; "+" joins a union).

    ``ValueError`` lists the known names for an unknown one; ``ImportError`` names the pip command when
    ImageNet-1K / -21K are asked for without timm.
    """
    if not isinstance(name, str):
        raise TypeError(f"a vocabulary name must be a string, got {type(name).__name__}: {name!r}")
    parts = []
    for part in name.split("+"):
        canonical = _ACCEPTED.get(_key(part))
        if canonical is None:
            close = difflib.get_close_matches(_key(part), list(_ACCEPTED), n=3, cutoff=0.5)
            hint = f" Closest: {sorted({_ACCEPTED[c] for c in close})}." if close else ""
            raise ValueError(
                f"unknown vocabulary {part.strip()!r}{f' in {name!r}' if '+' in name else ''}.{hint} Known: "
                f"{list_known_vocabularies()}; join names with '+' for a union (e.g. 'coco171+ade150')."
            )
        parts.append(canonical)
    if len(set(parts)) < len(parts):
        raise ValueError(f"{name!r} names a vocabulary twice: {parts}")
    return _load(parts[0]) if len(parts) == 1 else _union(tuple(parts))


# ---------------------------------------------------------------------------------------------- singles


@functools.cache
def _load(name: str) -> KnownVocabulary:
    if name in TIMM_SYNSET_FILES:
        return _timm_imagenet(name)
    data = json.loads((_DATA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    if "synsets" in data:
        return _synset_table(name, data["synsets"], data["source"])
    return KnownVocabulary(
        name,
        tuple(data["class_names"]),
        source=data["source"],
        union_synonyms=MappingProxyType(dict(data.get("union_synonyms", {}))),
    )


def _synset_table(name: str, table: Mapping[str, str], source: str) -> KnownVocabulary:
    """A reference wnid -> name table: synsets named alike are one class, as the reference trains them.

    The reference matches names as exact strings; here names match after normalisation, so spellings
    it keeps apart ("Cardigan" the corgi, "cardigan" the sweater in IN-11K) would merge. The first
    spelling (table order) keeps its name; each later one becomes "spelling (wnid of its first synset)",
    so the vocabulary keeps every class of the reference.
    """
    first_wnid: dict[str, str] = {}
    for wnid, spelling in table.items():
        first_wnid.setdefault(spelling, wnid)
    owner: dict[str, str] = {}  # normalised name -> the spelling that holds it
    renamed: dict[str, str] = {}
    for spelling, wnid in first_wnid.items():
        norm = normalize_name(spelling)
        if norm in owner:
            renamed[spelling] = f"{spelling} ({wnid})"
        else:
            owner[norm] = spelling
    wnids = {wnid: renamed.get(spelling, spelling) for wnid, spelling in table.items()}
    class_names = tuple(dict.fromkeys(wnids.values()))
    synonyms = {normalize_name(wnid): entry for wnid, entry in wnids.items()}
    return KnownVocabulary(
        name, class_names, MappingProxyType(synonyms), MappingProxyType(wnids), source=source
    )


def name_synsets(lemmas: Mapping[str, Sequence[str]]) -> tuple[dict[str, str], dict[str, str]]:
    """(wnid -> class name, normalised alias -> class name) for synsets given as their WordNet lemmas.

    WordNet repeats lemmas across synsets (two "crane"s in ImageNet-1K: the bird and the machine).
    The rule is deterministic and does not depend on the synsets' order:

    1. A synset whose first lemma (normalised) is no other synset's first lemma is named by it.
    2. Otherwise it is "first lemma (L)", L its first other lemma that no other synset has at all
       ("plant (flora)", "cell (electric cell)"), else "first lemma (wnid)" ("crane (n03126707)").

    Aliases: each lemma, the whole comma-joined lemma string (as Hub ImageNet datasets name classes)
    and the wnid, where exactly one synset has it and it is no class's name; the bare "crane" is
    therefore no alias at all.
    """
    lemmas = {wnid: [str(lemma) for lemma in ls] for wnid, ls in lemmas.items()}
    empty = [wnid for wnid, ls in lemmas.items() if not ls]
    if empty:
        raise ValueError(f"synsets without lemmas: {empty[:5]}")
    normal = {wnid: [normalize_name(lemma) for lemma in ls] for wnid, ls in lemmas.items()}
    firsts = Counter(ns[0] for ns in normal.values())
    holders: dict[str, set[str]] = defaultdict(set)
    for wnid, ns in normal.items():
        for norm in ns:
            holders[norm].add(wnid)
    names: dict[str, str] = {}
    for wnid, ls in lemmas.items():
        head = ls[0]
        if firsts[normal[wnid][0]] == 1:
            names[wnid] = head
            continue
        own = next(
            (lemma for lemma, norm in zip(ls[1:], normal[wnid][1:], strict=True) if holders[norm] == {wnid}),
            None,
        )
        names[wnid] = f"{head} ({own or wnid})"
    repeated = [n for n, count in Counter(normalize_name(n) for n in names.values()).items() if count > 1]
    if repeated:  # cannot happen with WordNet's lemmas (none has parentheses); a guard for other tables
        raise ValueError(f"synset names repeat after disambiguation: {repeated[:5]}")
    taken = {normalize_name(n) for n in names.values()}
    claims: dict[str, set[str]] = defaultdict(set)
    for wnid, ls in lemmas.items():
        for alias in {*normal[wnid], normalize_name(", ".join(ls)), normalize_name(wnid)}:
            claims[alias].add(wnid)
    synonyms = {
        alias: names[next(iter(wnids))]
        for alias, wnids in claims.items()
        if len(wnids) == 1 and alias not in taken
    }
    return names, synonyms


def _timm_install_hint() -> str:
    """How to get timm's ImageNet files here: the extra, or a data-only copy where torchvision cannot be had."""
    target = Path(sys.prefix) / TIMM_DATA_ONLY_DIR
    return (
        'pip install "larvseg-hf[vocab]" (timm, with the torchvision that matches your torch), or, where no '
        f'such torchvision can be installed, a data-only copy: pip install --no-deps --target {target} "timm>=1.0" '
        "(never install timm --no-deps into the environment itself: accelerate's CLI imports timm and would fail "
        "without torchvision)"
    )


def _timm_info_dirs() -> list[Path]:
    """Folders that may hold timm's ``data/_info``: the importable timm's (the ``vocab`` extra), then the
    data-only copy's (:data:`TIMM_DATA_ONLY_DIR`). ``find_spec`` locates a top-level package without importing it;
    timm's import would take torch, torchvision and seconds for a few text files."""
    spec = find_spec("timm")
    dirs = [Path(location) for location in (spec.submodule_search_locations or ())] if spec else []
    if dirs and find_spec("torchvision") is None:
        logger.warning(
            "timm is installed without torchvision: accelerate's CLI imports timm and fails. %s",
            _timm_install_hint(),
        )
    return [*dirs, Path(sys.prefix) / TIMM_DATA_ONLY_DIR / "timm"]


def _timm_info_files(*filenames: str) -> list[str]:
    """Data files of timm's ImageNetInfo (``timm/data/_info``), read from the first folder that has them all."""
    folders = [folder / "data" / "_info" for folder in _timm_info_dirs()]
    for folder in folders:
        if all((folder / filename).is_file() for filename in filenames):
            return [(folder / filename).read_text(encoding="utf-8") for filename in filenames]
    raise ImportError(
        f"ImageNet-1K / ImageNet-21K vocabularies need timm's {', '.join(filenames)} (timm>=1.0 has them); "
        f"searched {', '.join(map(str, folders))}. {_timm_install_hint()}"
    )


def _timm_imagenet(name: str) -> KnownVocabulary:
    synset_text, lemma_text = _timm_info_files(TIMM_SYNSET_FILES[name], TIMM_LEMMA_FILE)
    synsets = synset_text.split()
    table = dict(line.split("\t", 1) for line in lemma_text.splitlines() if "\t" in line)
    missing = [wnid for wnid in synsets if wnid not in table]
    if missing:
        raise ValueError(f"timm's {TIMM_LEMMA_FILE} lacks {len(missing)} synsets of {name}: {missing[:5]}")
    names, synonyms = name_synsets({wnid: table[wnid].split(", ") for wnid in synsets})
    return KnownVocabulary(
        name,
        tuple(names[wnid] for wnid in synsets),
        MappingProxyType(synonyms),
        MappingProxyType(names),
        source=f"WordNet synsets and lemmas of timm's ImageNetInfo (timm/data/_info/{TIMM_SYNSET_FILES[name]}, "
        f"{TIMM_LEMMA_FILE}); repeated lemmas disambiguated by larvseg_hf.known_vocabularies.name_synsets",
    )


# ---------------------------------------------------------------------------------------------- unions


def _leads_to(synonyms: Mapping[str, str], start: str, goal: str) -> bool:
    name = start
    for _ in range(len(synonyms) + 1):
        if name == goal:
            return True
        if name not in synonyms:
            return False
        name = synonyms[name]
    return True


def union_synonyms(vocabularies: Sequence[KnownVocabulary]) -> dict[str, str]:
    """The synonym map of a union: the parts' union renames (COCO's), then their own synonyms.

    Parts merge by name and renames only: a part's synonym that is another part's class name is left
    out, so WordNet's lemmas never pull a dataset's class into another sense ("napkin" is also a
    lemma of ImageNet-21K's diaper). An alias already mapped keeps its first target; one that would
    close a cycle is left out.
    """
    merged: dict[str, str] = {}
    class_names = {normalize_name(n) for vocab in vocabularies for n in vocab.class_names}

    def add(alias: str, target: str, *, rename: bool) -> None:
        alias, target = normalize_name(alias), normalize_name(target)
        if alias == target or alias in merged or (not rename and alias in class_names):
            return
        if not _leads_to(merged, target, alias):
            merged[alias] = target

    for vocab in vocabularies:
        for alias, target in vocab.union_synonyms.items():
            add(alias, target, rename=True)
    for vocab in vocabularies:
        for alias, target in vocab.synonyms.items():
            add(alias, target, rename=False)
    return merged


@functools.cache
def _union(parts: tuple[str, ...]) -> KnownVocabulary:
    vocabularies = [_load(part) for part in parts]
    union = UnionVocabulary.from_datasets(
        [vocab.class_names for vocab in vocabularies], synonyms=union_synonyms(vocabularies)
    )
    names = set(union.names)
    wnids: dict[str, str] = {}
    for vocab in vocabularies:
        for wnid, entry in vocab.wnids.items():
            wnids.setdefault(wnid, union.canonical(entry))
    return KnownVocabulary(
        "+".join(_SHORT[part] for part in parts),
        tuple(union.names),
        MappingProxyType({alias: t for alias, t in union.synonyms.items() if t in names}),
        MappingProxyType(wnids),
        source="; ".join(f"{part}: {vocab.source}" for part, vocab in zip(parts, vocabularies, strict=True)),
        parts=parts,
    )


__all__ = [
    "BASE_VOCABULARIES",
    "PAPER_UNIONS",
    "TIMM_DATA_ONLY_DIR",
    "KnownVocabulary",
    "known_vocabulary",
    "list_known_vocabularies",
    "name_synsets",
    "union_synonyms",
]
