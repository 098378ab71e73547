"""Tiny on-disk datasets for the training tests: 64x64 PNG scenes of coloured rectangles.

Layout written by :func:`build_tiny_datasets` (the layout `scripts/train.py` reads as local imagefolders)::

    root/mask/vocabulary.json          {"names": BASE_NAMES}   (only the mask data's own classes)
    root/mask/train/metadata.jsonl     {"file_name", "label_file_name"} rows, 16-bit label PNGs
    root/mask/eval/vocabulary.json     {"names": ALL_NAMES}    (eval scenes hold base and novel classes)
    root/mask/eval/metadata.jsonl
    root/cls/train/metadata.jsonl      {"file_name", "labels": [novel names]}

So `--mask_datasets root/mask:train --image_datasets root/cls:train --eval_dataset root/mask:eval`
gives a 20-class vocabulary: 12 base classes (with masks) and 8 novel ones (image-level labels only).

:func:`build_weak_dataset` writes a "weak" dataset (the paper's weak ADE20K role) for `--weak_datasets`:
label maps in its OWN id order (`WEAK_NAMES`: novel and base names and background, shuffled), scenes
mixing novel and base classes on background::

    root/weak/vocabulary.json          {"names": WEAK_NAMES}
    root/weak/train/metadata.jsonl     {"file_name", "label_file_name"} rows, 16-bit PNGs of WEAK_NAMES ids
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64
BASE_NAMES = ["background", *(f"base_{i:02d}" for i in range(1, 12))]
NOVEL_NAMES = [f"novel_{i:02d}" for i in range(8)]
ALL_NAMES = BASE_NAMES + NOVEL_NAMES
#: The weak dataset's own label space: all novel names, background and five base names, in another order.
WEAK_NAMES = [*NOVEL_NAMES[::-1][:4], "background", *BASE_NAMES[1:6], *NOVEL_NAMES[::-1][4:]]


def _colour(class_index: int) -> tuple[int, int, int]:
    """A fixed, distinct colour per class of ALL_NAMES (background is dark grey)."""
    if class_index == 0:
        return (30, 30, 30)
    rng = np.random.default_rng(1000 + class_index)
    return tuple(int(v) for v in rng.integers(60, 256, 3))


def _scene(rng: np.random.Generator, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """RGB scene and label map (ids into ALL_NAMES) with one rectangle per class on noise."""
    image = np.clip(rng.normal(30, 8, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    label = np.zeros((SIZE, SIZE), dtype=np.uint16)
    for cls in classes:
        h, w = rng.integers(16, 40, 2)
        y, x = rng.integers(0, SIZE - h), rng.integers(0, SIZE - w)
        image[y : y + h, x : x + w] = _colour(cls)
        label[y : y + h, x : x + w] = cls
    return image, label


def write_mask_split(
    folder: Path,
    num_images: int,
    class_pool: list[int],
    seed: int,
    *,
    vocabulary: list[str] | None = None,
    bad_label_value: int | None = None,
    bad_row: int = 0,
) -> Path:
    """Mask imagefolder: x{i}.png + x{i}_label.png (16-bit ids) + metadata.jsonl.

    `bad_label_value` writes that id into row `bad_row`'s label map (to provoke a data error).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_images):
        classes = [int(c) for c in rng.choice(class_pool, size=min(3, len(class_pool)), replace=False)]
        image, label = _scene(rng, classes)
        if bad_label_value is not None and i == bad_row:
            label[:8, :8] = bad_label_value
        Image.fromarray(image).save(folder / f"x{i}.png")
        Image.fromarray(label).save(folder / f"x{i}_label.png")  # uint16 -> 16-bit PNG (I;16)
        rows.append({"file_name": f"x{i}.png", "label_file_name": f"x{i}_label.png"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if vocabulary is not None:
        (folder / "vocabulary.json").write_text(json.dumps({"names": vocabulary}))
    return folder


def write_classification_split(folder: Path, num_images: int, class_pool: list[int], seed: int) -> Path:
    """Image-level imagefolder: y{i}.png + metadata.jsonl rows {"file_name", "labels": [names]}.

    Every class of the pool is used (round robin), one or two per image."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_images):
        first = class_pool[i % len(class_pool)]
        classes = [first]
        if i % 3 == 2:
            classes.append(int(rng.choice([c for c in class_pool if c != first])))
        image, _ = _scene(rng, classes)
        Image.fromarray(image).save(folder / f"y{i}.png")
        rows.append({"file_name": f"y{i}.png", "labels": [ALL_NAMES[c] for c in classes]})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def build_tiny_datasets(root: Path, *, num_mask: int = 24, num_cls: int = 24, num_eval: int = 6) -> Path:
    """Write the mask (train/eval) and classification datasets described in the module docstring."""
    base_ids = list(range(len(BASE_NAMES)))
    novel_ids = list(range(len(BASE_NAMES), len(ALL_NAMES)))
    mask = root / "mask"
    write_mask_split(mask / "train", num_mask, base_ids[1:], seed=1)
    (mask / "vocabulary.json").write_text(json.dumps({"names": BASE_NAMES}))
    write_mask_split(mask / "eval", num_eval, base_ids[1:] + novel_ids, seed=2, vocabulary=ALL_NAMES)
    write_classification_split(root / "cls" / "train", num_cls, novel_ids, seed=3)
    return root


def build_weak_dataset(
    root: Path, num_images: int = 10, *, seed: int = 5, bad_label_value: int | None = None, bad_row: int = 0
) -> Path:
    """The weak dataset of the module docstring at `root/weak`; `bad_label_value` goes into row `bad_row`."""
    folder = root / "weak" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    to_weak = np.zeros(len(ALL_NAMES), dtype=np.uint16)
    for weak_id, name in enumerate(WEAK_NAMES):
        to_weak[ALL_NAMES.index(name)] = weak_id
    novel = [ALL_NAMES.index(n) for n in WEAK_NAMES if n.startswith("novel")]
    base = [ALL_NAMES.index(n) for n in WEAK_NAMES if n.startswith("base")]
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_images):
        classes = [int(rng.choice(novel)), int(rng.choice(base)), int(rng.choice(novel))]
        image, label = _scene(rng, list(dict.fromkeys(classes)))
        label = to_weak[label]
        if bad_label_value is not None and i == bad_row:
            label[:8, :8] = bad_label_value
        Image.fromarray(image).save(folder / f"w{i}.png")
        Image.fromarray(label).save(folder / f"w{i}_label.png")
        rows.append({"file_name": f"w{i}.png", "label_file_name": f"w{i}_label.png"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "weak" / "vocabulary.json").write_text(json.dumps({"names": WEAK_NAMES}))
    return root / "weak"


def build_bad_mask_dataset(root: Path, bad_row: int = 1, num_images: int = 2) -> Path:
    """A mask dataset of `num_images` rows whose row `bad_row` holds label id 77 although it has only 4 classes."""
    folder = root / "badmask"
    write_mask_split(folder / "train", num_images, [1, 2, 3], seed=4, bad_label_value=77, bad_row=bad_row)
    (folder / "vocabulary.json").write_text(json.dumps({"names": BASE_NAMES[:4]}))
    return folder


__all__ = [
    "ALL_NAMES",
    "BASE_NAMES",
    "NOVEL_NAMES",
    "WEAK_NAMES",
    "build_bad_mask_dataset",
    "build_tiny_datasets",
    "build_weak_dataset",
    "write_classification_split",
    "write_mask_split",
]
