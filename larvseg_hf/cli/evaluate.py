"""`larvseg-evaluate`: evaluate's mean_iou results (mean_iou, mean_accuracy, overall_accuracy, per-category
IoU and accuracy) plus mIoU on base / novel classes, per-class IoU as CSV and a plot.

    larvseg-evaluate --model outputs/larvseg-emoji                 # its training eval set
    larvseg-evaluate --model org/name --dataset scene_parse_150:validation --sliding_window 512

A model trained on the built-in benchmark is also scored on its distribution-shift split (`eval_shift`:
photographs and artwork styles training never sees; built on first use), reported under "shift".
Base / novel come from the model's config (`base_label_ids`). Scores come from the `larvseg_mean_iou`
evaluate module, fed one sparse class histogram per batch, so memory is O(vocabulary), never
vocabulary x vocabulary, nor O(pixels). metrics.json holds every result (per-category arrays as lists over
the vocabulary, NaN for classes neither labelled nor predicted); the console shows the scalars.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

import larvseg_hf  # noqa: F401  (registers the Auto classes)
from larvseg_hf.data.emoji_scenes import EmojiBenchmark
from larvseg_hf.data.loaders import load_segmentation_dataset
from larvseg_hf.data.shift_scenes import build_shift_split
from larvseg_hf.data.vocabulary_mapping import build_union_vocabulary
from larvseg_hf.evaluation import evaluate_segmentation
from larvseg_hf.metrics import scalar_results
from larvseg_hf.metrics.reports import PER_CLASS_CSV, PER_CLASS_PNG, plot_per_class_iou, write_per_class_csv
from larvseg_hf.training.record import TrainingRecord
from larvseg_hf.training.setup import mapped_eval_rows, split_spec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="LarvSeg model folder or Hub id.")
    parser.add_argument(
        "--dataset",
        default=None,
        help="Segmentation dataset NAME_OR_PATH[:SPLIT]; default: the model's training eval set.",
    )
    parser.add_argument(
        "--synonyms", default=None, help="JSON/YAML {alias: canonical} for the dataset's names."
    )
    parser.add_argument(
        "--output_dir", default=None, help="Where to write metrics; default: <model>/evaluation."
    )
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument(
        "--coseg", action="store_true", help="Attentive (coseg) inference from the memory bank."
    )
    parser.add_argument(
        "--sliding_window", type=int, default=None, help="Window side for sliding-window inference."
    )
    parser.add_argument("--sliding_stride", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--no_shift",
        action="store_true",
        help="Skip the built-in benchmark's distribution-shift split (other photographs, restyled artwork), "
        "which a model trained on the built-in data is otherwise also scored on.",
    )
    return parser.parse_args(argv)


def _training_record(model_path: str) -> TrainingRecord:
    """The model's training record; an empty one for a model not trained by larvseg-train."""
    try:
        return TrainingRecord.read(model_path)
    except FileNotFoundError:
        return TrainingRecord()


def _default_dataset(record: TrainingRecord, model_path: str) -> tuple[str, bool]:
    """The eval set recorded at training time, and whether it is labelled in the model's own ids."""
    if record.builtin_eval_dir is not None:
        return str(record.builtin_eval_dir), True
    if record.eval_spec:
        return record.eval_spec, False
    raise SystemExit(
        f"No --dataset given and {model_path} does not name its evaluation data; pass --dataset."
    )


def main(argv: list[str] | None = None) -> None:
    """Console entry (`larvseg-evaluate`); `argv` defaults to the command line."""
    run(argv)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate and write metrics.json, per_class_iou.csv and per_class_iou.png; returns the results."""
    args = parse_args(argv)
    model = AutoModelForSemanticSegmentation.from_pretrained(args.model).to(args.device).eval()
    processor = AutoImageProcessor.from_pretrained(args.model)
    config = model.config
    names = config.class_names
    base_ids = list(config.base_label_ids or [])
    novel_ids = config.novel_label_ids

    record = _training_record(args.model)
    spec, in_model_ids = (args.dataset, False) if args.dataset else _default_dataset(record, args.model)

    def evaluate(spec: str, in_model_ids: bool):
        path, split = split_spec(spec)
        source = load_segmentation_dataset(
            path, split, class_names=names if in_model_ids else None, dataset_name=spec
        )
        mapping = build_union_vocabulary(
            [source], args.synonyms, target_vocabulary=names, ignore_index=config.ignore_index
        )
        rows, total = mapped_eval_rows(source, mapping, args.max_samples)
        return evaluate_segmentation(
            model,
            processor,
            rows(),
            num_classes=config.num_labels,
            base_ids=base_ids,
            novel_ids=novel_ids,
            ignore_index=config.ignore_index,
            batch_size=args.batch_size if "height" in processor.size else 1,
            coseg=args.coseg,
            sliding_window=args.sliding_window,
            sliding_stride=args.sliding_stride,
            total=total,
        )

    results, metrics = evaluate(spec, in_model_ids)
    summary = {"dataset": spec, "coseg": args.coseg}
    shift = {}
    if not (args.dataset or args.no_shift) and record.root:  # the built-in benchmark: also its shift split
        shift_dir = build_shift_split(EmojiBenchmark.from_dir(record.root))
        shift = {"shift": {"dataset": str(shift_dir), **scalar_results(evaluate(str(shift_dir), True)[0])}}
    output_dir = Path(args.output_dir or Path(args.model) / "evaluation")
    output_dir.mkdir(parents=True, exist_ok=True)
    as_json = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in results.items()}
    (output_dir / "metrics.json").write_text(json.dumps({**summary, **shift, **as_json}, indent=2))
    per_class = metrics.per_class()
    write_per_class_csv(output_dir / PER_CLASS_CSV, per_class, names, base_ids)
    plot_per_class_iou(output_dir / PER_CLASS_PNG, per_class, names, base_ids)
    print(json.dumps({**scalar_results(results), **shift}, indent=2))
    print(f"Per-class IoU: {output_dir / PER_CLASS_CSV} and {output_dir / PER_CLASS_PNG}")
    return {**results, **shift}


if __name__ == "__main__":
    main()
