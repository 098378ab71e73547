#!/usr/bin/env python
"""Input / prediction / ground truth on evaluation scenes of the built-in benchmark, for the README.

    .venv/bin/python scripts/make_figure.py --model outputs/larvseg-emoji \\
        --output model_cards/assets/emoji_example.png

Picks the first scenes whose ground truth holds at least one novel category (no masks in training),
so the figure shows what image-level labels taught the model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from reproduce import builtin_eval_source

from larvseg_hf import LarvSegForSemanticSegmentation, LarvSegImageProcessor


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return palette[label % len(palette)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="outputs/larvseg-emoji")
    parser.add_argument("--output", default="model_cards/assets/emoji_example.png")
    parser.add_argument("--scenes", type=int, default=3)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    model = LarvSegForSemanticSegmentation.from_pretrained(args.model).eval()
    processor = LarvSegImageProcessor.from_pretrained(args.model)
    config = model.config
    names = model.class_names
    base = set(config.base_label_ids or [])
    source = builtin_eval_source(Path(args.model), names)
    palette = (np.random.default_rng(3).random((len(names), 3)) * 200 + 55).astype(np.uint8)
    palette[0] = (40, 40, 40)

    chosen = []
    for index in range(len(source)):
        example = source.get_example(index)
        if any(int(i) not in base for i in np.unique(example["mask"])):
            chosen.append(example)
        if len(chosen) == args.scenes:
            break
    fig, axes = plt.subplots(len(chosen), 3, figsize=(9.5, 3.2 * len(chosen)), squeeze=False)
    for row, example in enumerate(chosen):
        with torch.no_grad():
            outputs = model(**processor(example["image"]))
        prediction = processor.post_process_semantic_segmentation(
            outputs, target_sizes=[example["mask"].shape]
        )[0]
        prediction = prediction.numpy()
        truth = example["mask"]
        for col, (image, title) in enumerate(
            (
                (example["image"], "input"),
                (colorize(prediction, palette), "prediction"),
                (colorize(truth, palette), "ground truth"),
            )
        ):
            axes[row, col].imshow(image)
            axes[row, col].set_title(title if row == 0 else "", fontsize=10)
            axes[row, col].axis("off")
        present = [int(i) for i in np.union1d(np.unique(truth), np.unique(prediction)) if i != 0]
        handles = [
            Patch(color=palette[i] / 255, label=f"{names[i]} ({'base' if i in base else 'novel'})")
            for i in present[:8]
        ]
        axes[row, 2].legend(
            handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False
        )
    fig.suptitle("LarvSeg on emoji scenes: novel emoji were never given a mask", fontsize=11)
    fig.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110, bbox_inches="tight")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
