# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""The built-in benchmark's distribution-shift split (``eval_shift``): eval scenes on photographs the
training scenes never use, with every emoji redrawn by an artwork transform the training data never applies.

It measures how much of the in-distribution score survives a change of background and drawing style, as a
user's own picture or another emoji artwork would bring. Evaluation only: nothing trains or tunes on it.
Composition (which emoji, how many, sizes, placement) follows ``eval`` with a seed of its own; the
vocabulary, ids and label-map format are ``eval``'s, so anything that reads ``eval`` reads this split.

Photographs (none of them is a training background, checked by a test):

* matplotlib's sample data: ``grace_hopper.jpg`` (U.S. Navy photograph, public domain);
* scikit-image's ``clock``, ``cell``, ``retina`` and ``page`` (scikit-image data, see its
  ``skimage/data/README.txt`` for each image's licence);
* when gradio is installed, the photographs in its ``media_assets/images`` (``cheetah.jpg``, ``lion.jpg``,
  ``tower.jpg``, ``groot.jpeg``), shipped with gradio under its Apache-2.0 licence.

Artwork transforms (one drawn per pasted emoji; the mask is the transformed alpha, as for training). They
keep each emoji's colours where they are, since many emoji are named by their colour (red / blue heart):
``pixelate`` (blocks of 3-5 px, alpha too), ``dither`` (ordered 4x4 Bayer dithering to two levels per
channel), ``watercolour`` (median-flattened, bled colours with a paper grain), ``ink_lines`` (dark ink
along the inner edges), ``emboss`` (relief shading over the colours).
"""

from __future__ import annotations

import importlib.util
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from . import emoji_scenes as es
from .appearance import premultiplied, straight_colours

#: Part of the split's completion marker: bump when the output for the same benchmark changes.
SHIFT_VERSION = "emoji-shift-3"
SHIFT_SPLIT = "eval_shift"
#: The split composes scenes like this benchmark split (and uses its vocabulary).
COMPOSED_LIKE = "eval"
_SHIFT_CODE = 0x5348  # seeds the scenes: a stream no benchmark split uses
_MARKER = "_COMPLETE"

ArtworkTransform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


# --------------------------------------------------------------------------- photographs


def shift_photo_names() -> list[str]:
    """The shift split's photographs, as ``package:name`` (gradio's only when it is installed)."""
    names = ["matplotlib:grace_hopper.jpg", "skimage:clock", "skimage:cell", "skimage:retina", "skimage:page"]
    if importlib.util.find_spec("gradio") is not None:
        names += [f"gradio:{n}" for n in ("cheetah.jpg", "lion.jpg", "tower.jpg", "groot.jpeg")]
    return names


# --------------------------------------------------------------------------- artwork transforms


def pixelate(sprite: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blocks of 3-5 px (colours and alpha averaged per block): pixel-art emoji."""
    block = int(rng.integers(3, 6))
    h, w = sprite.shape[:2]
    small = Image.fromarray(sprite, "RGBa").resize(
        (max(1, w // block), max(1, h // block)), Image.Resampling.BOX
    )
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST))


_BAYER = np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]], np.float32) / 16.0 + 1 / 32


def dither(sprite: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ordered (Bayer 4x4) dithering of each channel to two levels: the look of a 1-bit-per-channel print."""
    rgb, alpha = straight_colours(sprite)
    h, w = rgb.shape[:2]
    offset = rng.integers(0, 4, size=2)
    threshold = np.roll(np.tile(_BAYER, (h // 4 + 1, w // 4 + 1)), tuple(offset), axis=(0, 1))[:h, :w]
    return premultiplied((rgb / 255.0 > threshold[..., None]) * 255.0, alpha)


def watercolour(sprite: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flattened, bled colours (a median filter, then a soft blur of the colours inside the outline) with a
    paper grain: a painted look that keeps each colour where it was."""
    rgb, alpha = straight_colours(sprite)
    image = Image.fromarray(np.rint(rgb).astype(np.uint8)).filter(ImageFilter.MedianFilter(5))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 1.6))))
    grain = rng.uniform(0.9, 1.05, size=rgb.shape[:2] + (1,)).astype(np.float32)
    return premultiplied(np.asarray(image, dtype=np.float32) * grain, alpha)


def ink_lines(sprite: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark ink along the drawing's inner edges (colour boundaries), colours kept: a line-art style."""
    rgb, alpha = straight_colours(sprite)
    grey = Image.fromarray(np.rint(rgb @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8))
    edges = np.asarray(grey.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(3)), np.float32)
    ink = np.clip(edges / float(rng.uniform(40.0, 80.0)), 0.0, 1.0)[..., None]
    return premultiplied(rgb * (1.0 - ink) + float(rng.uniform(0.0, 40.0)) * ink, alpha)


def emboss(sprite: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Relief shading (PIL's emboss kernel) blended over the colours: a moulded, 3-D look."""
    rgb, alpha = straight_colours(sprite)
    relief = np.asarray(
        Image.fromarray(np.rint(rgb).astype(np.uint8)).convert("L").filter(ImageFilter.EMBOSS)
    )
    strength = float(rng.uniform(0.5, 0.8))
    shaded = rgb * (1.0 - strength) + relief[..., None].astype(np.float32) * strength
    return premultiplied(shaded, alpha)


SHIFT_TRANSFORMS: dict[str, ArtworkTransform] = {
    "pixelate": pixelate,
    "dither": dither,
    "watercolour": watercolour,
    "ink_lines": ink_lines,
    "emboss": emboss,
}


# --------------------------------------------------------------------------- rendering and writing


class ShiftSceneRenderer(es.SceneRenderer):
    """`SceneRenderer` on the shift photographs, each emoji restyled by one of `SHIFT_TRANSFORMS`."""

    def __init__(self, emoji, image_size: int, photo_names: list[str] | None = None) -> None:
        super().__init__(emoji, image_size, background_names=photo_names or shift_photo_names())
        self.transforms = list(SHIFT_TRANSFORMS.values())

    def sprite(self, class_id: int, rng: np.random.Generator, size: int) -> np.ndarray:
        drawn = super().sprite(class_id, rng, size)
        return self.transforms[int(rng.integers(len(self.transforms)))](drawn, rng)


def shift_params(bench: es.EmojiBenchmark, num_scenes: int | None = None) -> dict:
    """What the split's content depends on: the benchmark's parameters, this module's version, the
    photographs, the transforms and the number of scenes (default: as many as ``eval``)."""
    params = dict(bench.vocabulary["params"])
    return {
        "shift_version": SHIFT_VERSION,
        "benchmark": params,
        "photos": shift_photo_names(),
        "transforms": list(SHIFT_TRANSFORMS),
        "num_scenes": int(num_scenes if num_scenes is not None else params["num_eval_scenes"]),
    }


def build_shift_split(
    bench: es.EmojiBenchmark,
    num_scenes: int | None = None,
    *,
    force: bool = False,
    show_progress: bool = True,
) -> Path:
    """Write (or reuse) ``<benchmark>/eval_shift`` and return its folder, an imagefolder read like ``eval``.

    The folder is complete when its ``_COMPLETE`` marker holds these parameters (`shift_params`); it is
    built under a temporary name and renamed, so an interrupted build is never taken for a finished one."""
    params = shift_params(bench, num_scenes)
    out = bench.root / SHIFT_SPLIT
    marker = out / _MARKER
    if not force and marker.is_file() and json.loads(marker.read_text("utf-8")) == params:
        return out
    benchmark = params["benchmark"]
    infos, base_ids, novel_ids = es.select_vocabulary(
        benchmark["num_categories"], benchmark["novel_fraction"], benchmark["seed"]
    )
    names = [es.BACKGROUND] + [e.name for e in infos]
    if names != bench.class_names:
        raise RuntimeError(f"{bench.root}: its vocabulary.json does not match its own parameters")
    renderer = ShiftSceneRenderer(infos, benchmark["image_size"], params["photos"])
    tmp = bench.root / f".{SHIFT_SPLIT}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    es._write_split(
        tmp,
        COMPOSED_LIKE,
        params["num_scenes"],
        renderer,
        base_ids,
        novel_ids,
        names,
        benchmark["seed"],
        show_progress,
        folder_name=SHIFT_SPLIT,
        code=_SHIFT_CODE,
    )
    (tmp / SHIFT_SPLIT / _MARKER).write_text(json.dumps(params, indent=1), encoding="utf-8")
    es._publish(tmp / SHIFT_SPLIT, out, force=True)
    tmp.rmdir()
    return out


__all__ = [
    "SHIFT_SPLIT",
    "SHIFT_TRANSFORMS",
    "ShiftSceneRenderer",
    "build_shift_split",
    "shift_params",
    "shift_photo_names",
]
