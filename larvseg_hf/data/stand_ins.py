# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Tiny offline stand-ins for the datasets the paper presets name, to validate a preset end to end.

A preset can only be trusted once its column names, class tables and label conventions have met data shaped
like the real datasets', and those are tens of gigabytes behind gated Hub pages. Each stand-in has the real
dataset's columns, file formats and label conventions, with a handful of small synthetic images (noise with a
coloured rectangle per labelled class):

- ``coco_stuff_164k/{train,val}``: GATE-engine/COCOStuff164K, columns ``image``, ``mask``; 8-bit maps of raw
  COCO-Stuff ids (COCO category id - 1, 0..181), a 255 (unlabelled) border.
- ``scene_parse_150/{train,validation}``: SceneParse150, columns ``image``, ``annotation`` (8-bit, 0 = "other"
  as a border, 1..150 the classes), ``scene_category``.
- ``ade20k_847/{train,validation}``: ADE20K-847 as detectron2 prepares it, columns ``image``, ``label`` (16-bit
  TIFF, ids 0..846, a 65535 (unlabelled) border).
- ``imagenet_22k_wds/imagenet22k-train-0000.tar``: timm/imagenet-22k-wds, WebDataset samples ``KEY.jpg``,
  ``KEY.cls`` (the synset's index in timm's sorted fall11 list) and ``KEY.json``, from synsets of IN-124,
  of IN-585 only, and of neither (:data:`WNIDS`).

``python -m larvseg_hf.data.stand_ins PRESET DIR`` writes them and ``DIR/PRESET.yaml``, a ``--config`` file that
puts the stand-ins in the preset's dataset roles (and sizes the model and run for a CPU smoke test), so that
``scripts/train.py --preset PRESET --config DIR/PRESET.yaml`` reads them with the preset's own settings.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from ..known_vocabularies import known_vocabulary

SIZE = 48
BORDER = 4  # unlabelled frame of every label map
#: COCO-Stuff raw ids drawn in its stand-in (COCO category id - 1): person, car, building-other, sky-other,
#: wall-brick, wood.
COCO_RAW_IDS = (0, 2, 95, 156, 170, 181)
#: ImageNet synsets of the ImageNet stand-in: two of IN-124 (lamp, van), two of IN-585 only (aircraft carrier,
#: key) and two of neither (tench, Chihuahua), two images each.
WNIDS = ("n03636248", "n04520170", "n02687172", "n03613294", "n01440764", "n02085620")
IMAGES_PER_WNID = 2
IMAGENET_FOLDER = "imagenet_22k_wds"


@dataclass(frozen=True)
class LabelMapLayout:
    """How one segmentation dataset stores its label maps (see the module docstring for the real datasets).

    Attributes:
        folder: the stand-in's folder under the stand-ins' root.
        values: stored label values drawn as rectangles (every one appears in the first rows).
        background: the stored value under everything else.
        ignore: the stored value of the unlabelled border.
        label_key: the label column (metadata.jsonl names its file ``{label_key}_file_name``).
        suffix: the label maps' file type; ".tif" maps are 16-bit.
        splits: (train split, evaluation split) folder names.
        seed: the train split's seed; the evaluation split takes the next one.
        extra: further metadata.jsonl columns of every row.
    """

    folder: str
    values: tuple[int, ...]
    background: int
    ignore: int
    label_key: str
    suffix: str
    splits: tuple[str, str]
    seed: int
    extra: Mapping[str, Any] = field(default_factory=dict)


#: The segmentation stand-ins, by folder (the real datasets' conventions: see the module docstring).
LABEL_MAP_LAYOUTS = {
    layout.folder: layout
    for layout in (
        LabelMapLayout(
            folder="coco_stuff_164k",
            values=COCO_RAW_IDS,
            background=156,  # sky-other
            ignore=255,
            label_key="mask",
            suffix=".png",
            splits=("train", "val"),
            seed=0,
        ),
        LabelMapLayout(
            folder="scene_parse_150",
            values=(1, 3, 13, 150),  # wall, sky, person, flag
            background=1,
            ignore=0,  # "other"
            label_key="annotation",
            suffix=".png",
            splits=("train", "validation"),
            seed=10,
            extra={"scene_category": 0},
        ),
        LabelMapLayout(
            folder="ade20k_847",
            values=(0, 2, 11, 846),  # wall, sky, person, adding-machine
            background=0,
            ignore=65535,
            label_key="label",
            suffix=".tif",
            splits=("train", "validation"),
            seed=20,
        ),
    )
}
#: Preset -> {dataset flag: stand-in spec relative to the stand-ins' folder}.
PRESET_ROLES = {
    "paper-c171-a150-in124": {
        "mask_datasets": ["coco_stuff_164k:train"],
        "weak_datasets": ["scene_parse_150:train"],
        "image_datasets": ["imagenet_22k_wds:train"],
        "eval_dataset": "scene_parse_150:validation",
    },
    "paper-c171-a847-in585": {
        "mask_datasets": ["coco_stuff_164k:train"],
        "weak_datasets": ["ade20k_847:train"],
        "image_datasets": ["imagenet_22k_wds:train"],
        "eval_dataset": "ade20k_847:validation",
    },
    "paper-c171-in21k": {
        "mask_datasets": ["coco_stuff_164k:train"],
        "image_datasets": ["imagenet_22k_wds:train"],
        "eval_dataset": "scene_parse_150:validation",
    },
}
#: A model and run small enough for a CPU smoke test, and no pretrained backbone to download.
SMOKE_RUN = {
    "backbone_name_or_path": None,
    "backbone": "resnet-tiny",
    "head_hidden_size": 16,
    "mask_crop_size": 48,
    "image_crop_size": 48,
    "eval_size": 48,
    "per_device_train_batch_size": 4,
    "max_steps": 2,
    "logging_steps": 1,
    "save_strategy": "no",
    "dataloader_num_workers": 0,
}


def _colour(value: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(7919 + value)
    return tuple(int(v) for v in rng.integers(60, 256, 3))


def _scene(
    rng: np.random.Generator, values: Sequence[int], background: int, ignore: int | None, dtype: type
) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, label map): noise, `background` everywhere, one rectangle per value, an `ignore` border."""
    image = np.clip(rng.normal(40, 10, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    label = np.full((SIZE, SIZE), background, dtype=dtype)
    for value in values:
        h, w = (int(v) for v in rng.integers(12, 28, 2))
        y, x = (int(v) for v in rng.integers(BORDER, SIZE - BORDER - max(h, w) + 1, 2))
        image[y : y + h, x : x + w] = _colour(value)
        label[y : y + h, x : x + w] = value
    if ignore is not None:
        label = np.pad(label[BORDER:-BORDER, BORDER:-BORDER], BORDER, constant_values=ignore)
    return image, label


def write_label_maps(root: Path, layout: LabelMapLayout, rows: int = 6) -> Path:
    """`layout`'s stand-in: per split an imagefolder of JPEG images, label maps, and metadata.jsonl naming both
    (`rows` training rows, half as many, at least 2, for evaluation)."""
    dtype = np.uint16 if layout.suffix == ".tif" else np.uint8
    for offset, (split, count) in enumerate(zip(layout.splits, (rows, max(2, rows // 2)), strict=True)):
        folder = root / layout.folder / split
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(layout.seed + offset)
        lines = []
        for i in range(count):
            # two values a row, in turn: every value is drawn in the first rows
            drawn = [layout.values[(i + k) % len(layout.values)] for k in range(2)]
            image, label = _scene(rng, drawn, layout.background, layout.ignore, dtype)
            image_file, label_file = f"{i:04d}.jpg", f"{i:04d}_label{layout.suffix}"
            Image.fromarray(image).save(folder / image_file, quality=95)
            Image.fromarray(label).save(folder / label_file)
            lines.append(
                {"file_name": image_file, f"{layout.label_key}_file_name": label_file, **layout.extra}
            )
        (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root / layout.folder


def write_imagenet_22k_wds(root: Path, seed: int = 30) -> Path:
    """timm/imagenet-22k-wds's layout: one tar shard of KEY.jpg, KEY.cls, KEY.json samples (:data:`WNIDS`); `cls`
    is the synset's index in timm's sorted fall11 list, the order of the imagenet-21k vocabulary's wnids."""
    folder = root / IMAGENET_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    fall11 = {wnid: i for i, wnid in enumerate(known_vocabulary("imagenet-21k").wnids)}
    rng = np.random.default_rng(seed)
    with tarfile.open(folder / "imagenet22k-train-0000.tar", "w") as shard:
        for n, wnid in enumerate(WNIDS):
            for k in range(IMAGES_PER_WNID):
                image, _ = _scene(rng, [n], background=0, ignore=None, dtype=np.uint8)
                jpeg = io.BytesIO()
                Image.fromarray(image).save(jpeg, "JPEG", quality=95)
                fields = {
                    "jpg": jpeg.getvalue(),
                    "cls": str(fall11[wnid]).encode(),
                    "json": json.dumps({"label": fall11[wnid]}).encode(),
                }
                for ext, data in fields.items():
                    info = tarfile.TarInfo(f"{wnid}_{k:04d}.{ext}")
                    info.size = len(data)
                    shard.addfile(info, io.BytesIO(data))
    return folder


def build_stand_ins(preset: str, root: str | Path, *, rows: int = 6) -> Path:
    """Write the stand-ins of `preset`'s datasets under `root` and `root/PRESET.yaml` (a `--config` file that
    names them in the preset's roles); returns that file's path."""
    if preset not in PRESET_ROLES:
        raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESET_ROLES)}")
    root = Path(root).resolve()
    roles = PRESET_ROLES[preset]
    specs = [spec for value in roles.values() for spec in ([value] if isinstance(value, str) else value)]
    for folder in sorted({spec.split(":")[0] for spec in specs}):
        if folder == IMAGENET_FOLDER:
            write_imagenet_22k_wds(root)
        else:
            write_label_maps(root, LABEL_MAP_LAYOUTS[folder], rows)
    values = {
        role: str(root / value) if isinstance(value, str) else [str(root / spec) for spec in value]
        for role, value in roles.items()
    }
    values.update(SMOKE_RUN, output_dir=str(root / "outputs" / preset))
    path = root / f"{preset}.yaml"
    header = (
        f"# Stand-ins for --preset {preset} (python -m larvseg_hf.data.stand_ins): the preset's dataset roles\n"
        "# filled with tiny local copies of the real datasets' layouts, and a model and run sized for a CPU smoke\n"
        "# test. Use as --config over the preset; the preset's dataset_options still say how to read each role.\n"
    )
    path.write_text(header + yaml.safe_dump(values, sort_keys=False))
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of `python -m larvseg_hf.data.stand_ins PRESET DIR [--rows N]`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", choices=list(PRESET_ROLES))
    parser.add_argument("root", help="folder to write the stand-ins and their --config file into")
    parser.add_argument("--rows", type=int, default=6, help="images per mask / weak training split")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Build the stand-ins and print the command that trains on them."""
    args = parse_args(argv)
    path = build_stand_ins(args.preset, args.root, rows=args.rows)
    print(
        f"Stand-ins written; train on them with:\n  scripts/train.py --preset {args.preset} --config {path}"
    )


if __name__ == "__main__":
    main()
