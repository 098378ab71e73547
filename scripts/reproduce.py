#!/usr/bin/env python
"""Reproduce the paper's comparison on the built-in emoji-scenes benchmark, at equal compute.

    .venv/bin/python scripts/reproduce.py                  # the table: benchmarks/results/reproduce.json
    .venv/bin/python scripts/reproduce.py --suite main     # the README main command, baseline and LarvSeg
    .venv/bin/python scripts/reproduce.py --seeds 0 --steps 200 --settings baseline larvseg   # a quick look
    .venv/bin/python scripts/reproduce.py --suite large    # every emoji: benchmarks/results/emoji_large.json

Suite "reproduce" (same data and steps for every row; seeds 0 1 2, the switches 0 1): masks only; + image-level loss (the
simple baseline); + CA-Cls (LarvSeg); LarvSeg evaluated with attentive (coseg) inference; the fully
supervised bound (LarvSeg with masks for every category, novel ones too, so novel mIoU can be read as a
fraction of what masks give); and LarvSeg with each switch toward this package's former behaviour, one at
a time. Also the one-point oracle propagation (features only) of masks-only and LarvSeg models.
Suite "main": `bash scripts/run_main.sh` (60 emoji, varied look, 4,000 steps) with and without CA-Cls, its
fully supervised bound, and LarvSeg on the plain look at 2,000 steps (the main command before it), one seed.
The reproduce suite trains on the plain look.
Suite "large": the full emoji vocabulary (every emoji with artwork, 40% novel) on a benchmark scaled to it,
the baseline and LarvSeg at equal steps, one seed; its per-class IoU plot goes to
model_cards/assets/emoji_large_per_class_iou.png.

Each finished run is reused by later invocations (delete --output_dir to retrain). The results go to
benchmarks/results/reproduce.json (main: main_command.json), the README's marked tables are re-rendered from it
(scripts/results_tables.py) and the plot goes to model_cards/assets/reproduce_results.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import results_tables

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "scripts" / "train.py"
OFF = ["--image_loss_weight", "0", "--attentive_loss_weight", "0"]

# name: (label, train.py arguments). The switches turn one behaviour back, one at a time: the section-1
# reference behaviours to what the package did before, and its two measured departures (the mask-norm
# scalars' learning rate, the CA-Cls weight) to the reference's values.
REPRODUCE_SETTINGS: dict[str, tuple[str, list[str]]] = {
    "masks_only": ("masks only", ["--mask_fraction", "1.0", *OFF]),
    "baseline": ("baseline (+ image-level loss)", ["--attentive_loss_weight", "0"]),
    "larvseg": ("LarvSeg (+ CA-Cls)", []),
    "full_masks": ("fully supervised bound (masks for every category)", ["--builtin_full_masks", "True"]),
    "switch_synonym_filter_both": (
        "LarvSeg, synonym filter on both routes",
        ["--synonym_filter_routes", "both"],
    ),
    "switch_shared_negatives": (
        "LarvSeg, negatives from the whole vocabulary",
        ["--per_source_columns", "False"],
    ),
    "switch_batch_losses": (
        "LarvSeg, losses averaged over the batch",
        ["--per_source_losses", "False"],
    ),
    "switch_topk_20": ("LarvSeg, foreground top-K 20", ["--memory_bank_topk", "20"]),
    "switch_scalar_lr_1": (
        "LarvSeg, mask-norm scalars at the base learning rate",
        ["--mask_norm_lr_multiplier", "1"],
    ),
    "switch_cacls_weight_017": (
        "LarvSeg, CA-Cls weight 0.17 (the ADE-150 balance)",
        ["--attentive_loss_weight", "0.17"],
    ),
}
#: The switches run on these seeds only, so that the whole suite stays within an hour on 2 CPU cores.
SWITCH_SEEDS = (0, 1)
MAIN_SETTINGS: dict[str, tuple[str, list[str]]] = {
    "larvseg": ("`bash scripts/run_main.sh` (LarvSeg, CA-Cls on)", []),
    "baseline": (
        "same, CA-Cls off (`--attentive_loss_weight 0`: the simple baseline)",
        ["--attentive_loss_weight", "0"],
    ),
    "full_masks": (
        "same, masks for every emoji (the fully supervised bound)",
        ["--builtin_full_masks", "True"],
    ),
    "plain_look": (
        "LarvSeg on the plain look at 2,000 steps (the main command before the varied look)",
        ["--builtin_varied_look", "False", "--max_steps", "2000"],
    ),
}
#: The reproduce suite keeps the plain training look its table was measured on (same data for every row).
REPRODUCE_LOOK = ["--builtin_varied_look", "False"]
#: Emoji categories of the reproduce suite (the main suite keeps the built-in benchmark's).
REPRODUCE_CATEGORIES = 20
LARGE_SETTINGS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("simple baseline (CA-Cls off)", ["--attentive_loss_weight", "0"]),
    "larvseg": ("LarvSeg (+ CA-Cls)", []),
}
#: The large suite's benchmark (2-5 emoji a scene): about 44 mask instances per base emoji, about 14
#: image-level labels per emoji, and eval scenes that show nearly every emoji; the build takes about 2.5 min.
LARGE_COUNTS = {
    "num_mask_scenes": 12000,
    "num_single_images": 8000,
    "num_weak_scenes": 4000,
    "num_eval_scenes": 1000,
}
#: Steps per setting of the large suite: both settings, the build and eval fit in an hour on 2 CPU cores.
LARGE_STEPS = 6000
#: The large benchmark's 24,000 training rows decoded take about 1.6 GB: keep them all decoded.
LARGE_TRAIN_ARGS = ["--decoded_cache_mb", "2048"]
PLOTS = {
    "reproduce": REPO / "model_cards" / "assets" / "reproduce_results.png",
    "large": REPO / "model_cards" / "assets" / "emoji_large_per_class_iou.png",
}
CO_SEG = {"larvseg": ("larvseg_coseg", "LarvSeg (+ CA-Cls) + coseg inference")}
ORACLE = ("masks_only", "larvseg")


def run_training(name: str, extra: list[str], seed: int, args: argparse.Namespace, root: Path) -> Path:
    output_dir = root / "runs" / f"{name}-seed{seed}"
    command = ["--output_dir", str(output_dir), "--seed", str(seed)]
    if args.steps is not None:
        command += ["--max_steps", str(args.steps)]
    if args.categories is not None:
        command += ["--builtin_num_categories", str(args.categories)]
    if args.suite == "reproduce":
        command += REPRODUCE_LOOK
    if args.suite == "large":
        command += [
            arg for name, count in large_counts(args).items() for arg in (f"--builtin_{name}", str(count))
        ]
        command += LARGE_TRAIN_ARGS
    command += ["--save_strategy", "no", "--disable_tqdm", "True", *shlex.split(args.train_args), *extra]
    recorded = output_dir / "command.json"
    if (output_dir / "eval_results.json").is_file():  # finished in an earlier invocation
        if not recorded.is_file() or json.loads(recorded.read_text()) != command:
            raise SystemExit(
                f"{output_dir} was trained with other arguments than {shlex.join(command)}; delete it or give "
                "another --output_dir"
            )
        _check_generator(output_dir)
        return output_dir
    for stale in ("wall_seconds.txt", "extra_evaluations.json", "command.json"):
        (output_dir / stale).unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, str(TRAIN), *command], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    (output_dir / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
    recorded.write_text(json.dumps(command) + "\n")
    print(f"  {name} (seed {seed}): {seconds:.0f} s", flush=True)
    return output_dir


def large_counts(args: argparse.Namespace) -> dict[str, int]:
    """The large suite's scene counts, times --scale."""
    return {name: max(1, round(count * args.scale)) for name, count in LARGE_COUNTS.items()}


def _check_generator(output_dir: Path) -> None:
    """A finished run is reused only if it trained on data of today's benchmark generator."""
    from larvseg_hf.data.emoji_scenes import GENERATOR_VERSION, EmojiBenchmark
    from larvseg_hf.training.record import TrainingRecord

    root = TrainingRecord.read(output_dir).root
    used = EmojiBenchmark.from_dir(root).vocabulary["params"]["generator_version"] if root else None
    if used != GENERATOR_VERSION:
        raise SystemExit(
            f"{output_dir} trained on benchmark data of generator {used!r}, not today's {GENERATOR_VERSION!r}; "
            "delete it (or give another --output_dir) to train it again"
        )


def scores(metrics: dict, prefix: str = "") -> dict[str, float]:
    return {
        "base": metrics[f"{prefix}base_mean_iou"],
        "novel": metrics[f"{prefix}novel_mean_iou"],
        "all": metrics[f"{prefix}mean_iou"],
        "overall_accuracy": metrics[f"{prefix}overall_accuracy"],
    }


def run_row(output_dir: Path) -> dict[str, float]:
    """A finished run's scores, its wall time, and where its mask-norm scale and image-level loss ended."""
    row = scores(json.loads((output_dir / "eval_results.json").read_text()), "eval_")
    row["seconds"] = float((output_dir / "wall_seconds.txt").read_text())
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    logged = [entry for entry in history if "mask_norm_gamma" in entry]
    if logged:
        row["mask_norm_gamma"] = logged[-1]["mask_norm_gamma"]
        row["image_level_loss"] = logged[-1]["image_level_loss"]
    return row


def extra_evaluations(
    output_dir: Path, coseg: bool, oracle: bool, shift: bool = True, own_classes: bool = False
) -> dict[str, dict[str, float]]:
    """Coseg-inference scores and one-point oracle propagation of a trained run on its eval scenes, its
    scores on the benchmark's distribution-shift split, and its own-classes scores (`own_classes_scores`);
    kept in the run's folder (with their seconds) so that a later invocation reuses them."""
    from larvseg_hf.data.shift_scenes import SHIFT_VERSION

    cache = output_dir / "extra_evaluations.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    if done.get("shift_version") != SHIFT_VERSION:  # scored on an earlier version of the shift split
        done.pop("shift", None)
    kinds = (("coseg", coseg), ("oracle", oracle), ("shift", shift), ("own_classes", own_classes))
    wanted = {kind for kind, on in kinds if on}
    if wanted - set(done):
        start = time.perf_counter()
        missing = wanted - set(done)
        done.update(
            _extra_evaluations(
                output_dir, coseg="coseg" in missing, oracle="oracle" in missing, shift="shift" in missing
            )
        )
        if "own_classes" in missing:
            done["own_classes"] = own_classes_scores(output_dir)
        done["seconds"] = done.get("seconds", 0.0) + time.perf_counter() - start
        done["shift_version"] = SHIFT_VERSION
        cache.write_text(json.dumps(done, indent=1) + "\n")
    return {kind: done[kind] for kind in wanted} | {"seconds": done.get("seconds", 0.0)}


def builtin_eval_source(model_dir: Path, class_names: list[str], shift: bool = False):
    """The eval split of the built-in benchmark a run trained on (its larvseg_training.json "root"), or with
    `shift` its distribution-shift split (built on first use), read with the model's own class names."""
    from larvseg_hf.data.emoji_scenes import EmojiBenchmark
    from larvseg_hf.data.loaders import load_segmentation_dataset
    from larvseg_hf.data.shift_scenes import SHIFT_SPLIT, build_shift_split
    from larvseg_hf.training.record import RECORD_FILE, TrainingRecord

    eval_dir = TrainingRecord.read(model_dir).builtin_eval_dir
    if eval_dir is None:
        raise SystemExit(
            f"{Path(model_dir) / RECORD_FILE} names no built-in benchmark: not a run on the built-in data"
        )
    if shift:
        shift_dir = build_shift_split(EmojiBenchmark.from_dir(eval_dir.parent), show_progress=False)
        return load_segmentation_dataset(shift_dir, class_names=class_names, dataset_name=SHIFT_SPLIT)
    return load_segmentation_dataset(eval_dir, class_names=class_names, dataset_name="eval")


def load_run(output_dir: Path, shift: bool = False):
    """A trained run's model (eval mode), processor, base and novel ids, and its built-in eval scenes (with
    `shift`: the distribution-shift scenes) as a function returning fresh {"image", "label"} rows."""
    import larvseg_hf  # noqa: F401
    from larvseg_hf import LarvSegForSemanticSegmentation, LarvSegImageProcessor

    model = LarvSegForSemanticSegmentation.from_pretrained(output_dir).eval()
    processor = LarvSegImageProcessor.from_pretrained(output_dir)
    config = model.config
    base = list(config.base_label_ids or [])
    source = builtin_eval_source(output_dir, model.class_names, shift)

    def rows():
        for index in range(len(source)):
            example = source.get_example(index)
            yield {"image": example["image"], "label": example["mask"]}

    return model, processor, base, config.novel_label_ids, rows


def own_classes_scores(output_dir: Path) -> dict[str, float]:
    """A run's eval scenes, each scored against its own labelled classes only (background and the emoji in
    it): how well the model segments once recognising them among the whole vocabulary is taken away. Also
    the share of base and novel classes whose memory bank is usable (CA-Cls attends to those only)."""
    import torch

    from larvseg_hf.evaluation import predict_label_maps
    from larvseg_hf.image_utils_larvseg import to_label_array
    from larvseg_hf.metrics import SegmentationMetrics

    model, processor, base, novel, rows = load_run(output_dir)
    config = model.config
    metrics = SegmentationMetrics(config.num_labels, config.ignore_index)
    with torch.no_grad():
        for index, row in enumerate(rows()):  # one scene at a time: each has its own classes
            label = torch.from_numpy(to_label_array(row["label"], index))
            own = label[label != config.ignore_index].unique().tolist()
            prediction = predict_label_maps(
                model, processor, [row["image"]], [tuple(label.shape)], class_ids=own
            )
            metrics.update(prediction[0], label)
    result = metrics.compute(base_ids=base, novel_ids=novel)
    usable = model.memory_bank.usable(torch.arange(config.num_labels))
    return {
        "base": result["base_mean_iou"],
        "novel": result["novel_mean_iou"],
        "all": result["mean_iou"],
        "bank_usable_base": float(usable[[i for i in base if i != 0]].float().mean()),
        "bank_usable_novel": float(usable[novel].float().mean()),
    }


def _extra_evaluations(
    output_dir: Path, coseg: bool, oracle: bool, shift: bool = False
) -> dict[str, dict[str, float]]:
    import torch

    from larvseg_hf.analysis import oracle_propagation_miou
    from larvseg_hf.evaluation import evaluate_segmentation

    torch.manual_seed(0)
    model, processor, base, novel, rows = load_run(output_dir)
    config = model.config

    out = {}
    if coseg:
        metrics, _ = evaluate_segmentation(
            model, processor, rows(), num_classes=config.num_labels, base_ids=base, novel_ids=novel,
            coseg=True, show_progress=False,
        )  # fmt: skip
        out["coseg"] = scores(metrics)
    if oracle:
        metrics = oracle_propagation_miou(
            model, processor, rows(), num_classes=config.num_labels, base_ids=base, novel_ids=novel
        )
        out["oracle"] = {"base": metrics["base_mean_iou"], "novel": metrics["novel_mean_iou"]}
    if shift:
        _, _, _, _, shift_rows = load_run(output_dir, shift=True)
        metrics, _ = evaluate_segmentation(
            model, processor, shift_rows(), num_classes=config.num_labels, base_ids=base, novel_ids=novel,
            show_progress=False,
        )  # fmt: skip
        out["shift"] = scores(metrics)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", choices=["reproduce", "main", "large"], default="reproduce")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="Default: 0 1 2 (main, large: 0).")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"Default: 600 (main: the preset's 4,000; large: {LARGE_STEPS}).",
    )
    from larvseg_hf.data.emoji_scenes import EmojiBenchmarkParams

    builtin = EmojiBenchmarkParams()
    parser.add_argument(
        "--categories",
        type=int,
        default=None,
        help=f"Default: {REPRODUCE_CATEGORIES} (main: the built-in benchmark's {builtin.num_categories}; "
        "large: every available emoji).",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="Large suite: every split's scene count times this (a quick look).",
    )
    parser.add_argument("--settings", nargs="+", default=None, help="Run only these settings (names).")
    parser.add_argument("--train_args", default="", help="More train.py arguments for every run, one string.")
    parser.add_argument("--output_dir", default=None, help="Runs go here (default: outputs/<suite>).")
    parser.add_argument(
        "--results",
        default=None,
        help="Default: benchmarks/results/reproduce.json (main: main_command.json; large: emoji_large.json).",
    )
    parser.add_argument(
        "--readme", default=str(results_tables.README), help="README to re-render; 'none' skips."
    )
    parser.add_argument(
        "--plot", default=None, help=f"Default: {PLOTS['reproduce']} (large: {PLOTS['large']})."
    )
    args = parser.parse_args(argv)
    if args.suite == "large":
        return run_large(args, parser)
    main_suite = args.suite == "main"
    table = MAIN_SETTINGS if main_suite else REPRODUCE_SETTINGS
    if args.settings:
        unknown = sorted(set(args.settings) - set(table))
        if unknown:
            parser.error(f"unknown settings {unknown}; choose from {list(table)}")
        table = {name: table[name] for name in args.settings}
    args.seeds = args.seeds or ([0] if main_suite else [0, 1, 2])
    if main_suite and len(args.seeds) != 1:
        parser.error("the main suite reports one seed; give one --seeds value")
    if not main_suite:
        args.steps = args.steps or 600
        args.categories = args.categories or REPRODUCE_CATEGORIES
    root = Path(args.output_dir or REPO / "outputs" / args.suite)
    root.mkdir(parents=True, exist_ok=True)
    compute_seconds = 0.0

    results: dict = {"suite": args.suite, "settings": {}, "oracle": {}}
    print(f"{len(table)} settings x {len(args.seeds)} seeds", flush=True)
    for seed in args.seeds:
        for name, (label, extra) in table.items():
            if name.startswith("switch_") and args.seeds == [0, 1, 2] and seed not in SWITCH_SEEDS:
                continue
            output_dir = run_training(name, extra, seed, args, root)
            row = run_row(output_dir)
            compute_seconds += row["seconds"]
            results["settings"].setdefault(name, {"label": label, "args": extra, "seeds": {}})["seeds"][
                str(seed)
            ] = row
            extra_scores = extra_evaluations(
                output_dir, coseg=not main_suite and name in CO_SEG, oracle=not main_suite and name in ORACLE
            )
            compute_seconds += extra_scores["seconds"]
            row["shift"] = extra_scores["shift"]
            if "coseg" in extra_scores:
                coseg_name, coseg_label = CO_SEG[name]
                entry = results["settings"].setdefault(
                    coseg_name, {"label": coseg_label, "args": extra, "seeds": {}}
                )
                entry["seeds"][str(seed)] = extra_scores["coseg"]
            if "oracle" in extra_scores:
                entry = results["oracle"].setdefault(name, {"label": label, "seeds": {}})
                entry["seeds"][str(seed)] = extra_scores["oracle"]
    first = root / "runs" / f"{next(iter(table))}-seed{args.seeds[0]}"  # the main command's own settings
    state = json.loads((first / "trainer_state.json").read_text())
    results.update(
        seeds=args.seeds,
        steps=state["max_steps"],
        categories=len(json.loads((first / "config.json").read_text())["id2label"]) - 1,  # emoji
        batch_size=state["train_batch_size"],
        minutes=compute_seconds / 60,  # every run's training and analyses, reused runs included
        machine=f"{os.cpu_count()} CPU cores ({platform.machine()})",
    )
    table_name = "main_command" if main_suite else "reproduce"
    results_path = Path(args.results or results_tables.RESULTS / f"{table_name}.json")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    if args.readme != "none":
        results_tables.update_readme(Path(args.readme), {table_name: results_path})
    if not main_suite and args.plot != "none":
        _plot(results, Path(args.plot or PLOTS["reproduce"]))
    render = results_tables.render_main_command if main_suite else results_tables.render_reproduce
    print(render(results))
    return results


def run_large(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The large suite: build the full-vocabulary benchmark (timed), train each setting, write
    emoji_large.json, the README section and the per-class IoU plot."""
    from larvseg_hf.data.emoji_scenes import EmojiBenchmarkParams, available_emoji, build_emoji_benchmark

    args.seeds = args.seeds or [0]
    if len(args.seeds) != 1:
        parser.error("the large suite reports one seed; give one --seeds value")
    args.steps = args.steps or LARGE_STEPS
    args.categories = args.categories or len(available_emoji())
    unknown = sorted(set(args.settings or ()) - set(LARGE_SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(LARGE_SETTINGS)}")
    table = {name: LARGE_SETTINGS[name] for name in args.settings or LARGE_SETTINGS}
    root = Path(args.output_dir or REPO / "outputs" / "large")
    root.mkdir(parents=True, exist_ok=True)

    counts = large_counts(args)
    params = EmojiBenchmarkParams(num_categories=args.categories, **counts)
    build_record = root / "benchmark_build.json"
    start = time.perf_counter()
    bench = build_emoji_benchmark(None, params)
    built = {"root": str(bench.root), "seconds": time.perf_counter() - start}
    if build_record.is_file() and json.loads(build_record.read_text())["root"] == built["root"]:
        built = json.loads(build_record.read_text())  # built (and timed) by an earlier invocation
    build_record.write_text(json.dumps(built) + "\n")
    print(f"benchmark: {bench.root} ({built['seconds']:.0f} s to build)", flush=True)

    results: dict = {
        "suite": "large",
        "num_classes": args.categories,
        "num_base": len(bench.base_ids) - 1,  # emoji with masks; background comes on top
        "num_novel": len(bench.novel_ids),
        "counts": counts,
        "settings": {},
    }
    per_class: dict[str, dict[str, np.ndarray]] = {}
    for name, (label, extra) in table.items():
        output_dir = run_training(name, extra, args.seeds[0], args, root)
        row = run_row(output_dir)
        results["settings"][name] = {
            "label": label,
            "args": extra,
            **{metric: row[metric] for metric in ("base", "novel", "all", "overall_accuracy")},
            "wall_s": row["seconds"],
        }
        per_class[name] = read_per_class_iou(output_dir)
        results["settings"][name].update(iou_spread(per_class[name]))
        analysis = extra_evaluations(output_dir, coseg=False, oracle=False, shift=False, own_classes=True)
        results["settings"][name]["own_classes"] = analysis["own_classes"]
        results["settings"][name]["analysis_s"] = analysis["seconds"]
    first = root / "runs" / f"{next(iter(table))}-seed{args.seeds[0]}"
    state = json.loads((first / "trainer_state.json").read_text())
    results.update(
        seed=args.seeds[0],
        steps=state["max_steps"],
        batch_size=state["train_batch_size"],
        build_s=built["seconds"],
        minutes=(built["seconds"] + sum(s["wall_s"] + s["analysis_s"] for s in results["settings"].values()))
        / 60,
        machine=f"{os.cpu_count()} CPU cores ({platform.machine()})",
    )
    results_path = Path(args.results or results_tables.RESULTS / "emoji_large.json")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    if args.readme != "none":
        results_tables.update_readme(Path(args.readme), {"emoji_large": results_path})
    if args.plot != "none":
        _plot_per_class(results, per_class, Path(args.plot or PLOTS["large"]))
    print(results_tables.render_emoji_large(results))
    return results


def read_per_class_iou(output_dir: Path) -> dict[str, np.ndarray]:
    """IoU of every class a run's final evaluation labelled, by split, from its per-class CSV."""
    from larvseg_hf.metrics.reports import PER_CLASS_CSV

    with open(output_dir / PER_CLASS_CSV, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["label_pixels"]) > 0]
    return {
        split: np.array([float(row["iou"]) for row in rows if row["split"] == split and row["id"] != "0"])
        for split in ("base", "novel")
    }


def iou_spread(per_class: dict[str, np.ndarray]) -> dict[str, float]:
    """How the classes' IoUs spread: median per split, and the share of novel emoji segmented at all."""
    return {
        "median_base": float(np.median(per_class["base"])),
        "median_novel": float(np.median(per_class["novel"])),
        "novel_share_iou_over_10": float(np.mean(per_class["novel"] > 0.1)),
        "eval_base_classes": len(per_class["base"]),
        "eval_novel_classes": len(per_class["novel"]),
    }


def _plot_per_class(results: dict, per_class: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """Each setting's per-class IoU, sorted, base and novel side by side: at 1,600 classes a curve says more
    than 1,600 bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, split in zip(axes, ("base", "novel"), strict=True):
        for name, values in per_class.items():
            ranked = np.sort(values[split])[::-1]
            ax.plot(
                np.linspace(0, 100, len(ranked)), 100 * ranked, label=f"{results['settings'][name]['label']}"
            )
        ax.set_title(f"{split} emoji ({len(ranked)} in the eval scenes)")
        ax.set_xlabel("classes, best first (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("IoU (%)")
    axes[1].legend()
    fig.suptitle(f"Per-class IoU at {results['num_classes']} emoji categories, {results['steps']} steps")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = results["settings"]
    names = list(settings)
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(names)), 4.2))
    width = 0.38
    for offset, metric in ((-width / 2, "base"), (width / 2, "novel")):
        stats = [
            results_tables.mean_sd(list(results_tables.seed_values(settings[n], metric).values()))
            for n in names
        ]
        ax.bar(
            [i + offset for i in range(len(names))],
            [100 * m for m, _ in stats],
            width,
            yerr=[100 * s for _, s in stats],
            label=metric,
            capsize=3,
        )
    ax.set_xticks(
        range(len(names)), [settings[n]["label"] for n in names], rotation=30, ha="right", fontsize=7
    )
    ax.set_ylabel("mIoU (%)")
    ax.legend()
    ax.set_title("LarvSeg on emoji scenes: base vs novel categories (mean ± sd over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1:])
