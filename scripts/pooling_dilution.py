#!/usr/bin/env python
"""Is the image-level loss held up by mean pooling over mostly-other pixels? (README, results section 3)

    .venv/bin/python scripts/pooling_dilution.py --model outputs/main/runs/larvseg-seed0

On the model's built-in eval scenes, every (scene, class present) pair is scored twice with the
image-level loss's softmax (the scene's other classes' columns dropped, as on the labels route): logits
mean-pooled over the whole scene, as the loss pools them, and over the class's own pixels, an oracle
pooling. The gap, by class group and area fraction, is what dilution costs the loss. Writes
benchmarks/results/pooling_dilution.json and re-renders the README's table from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import results_tables
from reproduce import load_run

from larvseg_hf.training.record import TrainingRecord

BACKGROUND_ID = 0  # the built-in benchmark's background class


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="A run trained on the built-in benchmark.")
    parser.add_argument("--results", default=str(results_tables.RESULTS / "pooling_dilution.json"))
    parser.add_argument("--readme", default=str(results_tables.README), help="'none' skips the README.")
    args = parser.parse_args(argv)

    from larvseg_hf.analysis import pooling_dilution  # runs without gradients itself

    model_dir = Path(args.model)
    try:
        TrainingRecord.read(model_dir)
    except (OSError, ValueError) as error:
        parser.error(f"{error} This script needs a run of scripts/train.py on the built-in data.")
    model, processor, base, novel, rows = load_run(model_dir)
    groups = {"novel": novel, "base": [c for c in base if c != BACKGROUND_ID], "background": [BACKGROUND_ID]}
    table = pooling_dilution(model, processor, rows(), groups=groups)
    results = {
        "model": model_dir.name,
        "categories": model.config.num_labels - 1,
        "mask_norm_gamma": round(model.head.mask_norm.gamma.item(), 4),
        "rows": table,
    }
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    if args.readme != "none":
        results_tables.update_readme(Path(args.readme), {"pooling_dilution": path})
    print(results_tables.render_pooling_dilution(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
