"""Render the README's result tables from the committed files under benchmarks/results/.

The README holds the rendered Markdown between `<!-- results:NAME -->` and `<!-- /results:NAME -->`
markers; scripts/reproduce.py rewrites them after a run, and tests check that the README matches
what the committed JSON renders to, so no number in those tables is typed by hand.

    .venv/bin/python scripts/results_tables.py            # re-render the README from the JSON files
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"
METRICS = ("base", "novel", "all")


def seed_values(setting: dict, metric: str) -> dict[str, float]:
    return {seed: values[metric] for seed, values in setting["seeds"].items() if metric in values}


def mean_sd(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list[float]) -> str:
    mean, spread = mean_sd(values)
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.1f} ± {100 * spread:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


def paired_gain(results: dict, name: str, reference: str, metric: str = "novel") -> dict[str, float]:
    """Per seed: metric(name) - metric(reference), on the seeds both have."""
    ours = seed_values(results["settings"][name], metric)
    theirs = seed_values(results["settings"][reference], metric)
    return {seed: ours[seed] - theirs[seed] for seed in sorted(ours) if seed in theirs}


def shift_values(setting: dict, metric: str) -> dict[str, float]:
    """Per seed: the run's score on the distribution-shift split, where it was scored there."""
    return {seed: values["shift"][metric] for seed, values in setting["seeds"].items() if "shift" in values}


def settings_table(results: dict) -> str:
    """One row per setting (with eval_shift's base and novel where runs were scored there); the last columns
    pair each row with LarvSeg on the seeds both ran, and give the mask-norm scale gamma (starts at 1) where
    training ended."""
    settings = results["settings"]
    shift = any(shift_values(setting, "base") for setting in settings.values())
    header = "| setting | seeds | base | novel | all |" + (" shift: base | shift: novel |" if shift else "")
    header += " novel - LarvSeg, same seeds | mask-norm gamma at the end |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, setting in settings.items():
        cells = [cell(list(seed_values(setting, metric).values())) for metric in METRICS]
        if shift:
            cells += [cell(list(shift_values(setting, metric).values())) for metric in ("base", "novel")]
        gain = "" if name == "larvseg" or "larvseg" not in settings else paired_cell(results, name)
        gamma = seed_values(setting, "mask_norm_gamma")
        gamma_cell = " ".join(f"{v:.2f}" for v in gamma.values()) if gamma else ""
        lines.append(
            f"| {setting['label']} | {' '.join(sorted(setting['seeds'], key=int))} | "
            + " | ".join([*cells, gain, gamma_cell])
            + " |"
        )
    return "\n".join(lines)


def paired_cell(results: dict, name: str) -> str:
    gains = paired_gain(results, name, "larvseg")
    return " ".join(f"{100 * v:+.1f}" for v in gains.values())


def render_reproduce(results: dict) -> str:
    seeds = results["seeds"]
    head = (
        f"Emoji scenes, {results['categories']} categories, {results['steps']} steps x "
        f"{results['batch_size']} images per run, seeds {' '.join(map(str, seeds))}; mIoU x 100, mean ± "
        f"standard deviation over seeds; {results['minutes']:.0f} min of training and analyses in all on "
        f"{results['machine']}."
    )
    lines = [head, "", settings_table(results), ""]
    settings = results["settings"]
    if {"larvseg", "baseline"} <= set(settings):
        gains = paired_gain(results, "larvseg", "baseline")
        base_gains = paired_gain(results, "larvseg", "baseline", "base")
        lines.append(
            "LarvSeg - baseline, per seed: novel "
            + ", ".join(f"{100 * v:+.1f}" for v in gains.values())
            + f" (mean {100 * statistics.fmean(gains.values()):+.1f}); base "
            + ", ".join(f"{100 * v:+.1f}" for v in base_gains.values())
            + "."
        )
    if {"larvseg", "full_masks"} <= set(settings):
        ours, _ = mean_sd(list(seed_values(settings["larvseg"], "novel").values()))
        bound, _ = mean_sd(list(seed_values(settings["full_masks"], "novel").values()))
        if bound > 0:  # False for NaN too
            lines.append(
                f"LarvSeg's novel mIoU is {100 * ours / bound:.0f}% of the fully supervised bound's."
            )
    for title, key in (("One-point oracle propagation (features only):", "oracle"),):
        if results.get(key):
            lines += ["", title, "", "| features of | base | novel |", "|---|---|---|"]
            for entry in results[key].values():
                lines.append(
                    f"| {entry['label']} | {cell(list(seed_values(entry, 'base').values()))} | "
                    f"{cell(list(seed_values(entry, 'novel').values()))} |"
                )
    return "\n".join(lines)


def render_main_command(results: dict) -> str:
    rows = {name: next(iter(setting["seeds"].values())) for name, setting in results["settings"].items()}
    shift = all("shift" in values for values in rows.values())
    header = "| | mIoU all | mIoU base | mIoU novel | overall accuracy |"
    header += " shift: base | shift: novel |" if shift else ""
    header += " mask-norm gamma at the end | wall time |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, values in rows.items():
        minutes, seconds = divmod(round(values["seconds"]), 60)
        gamma = f"{values['mask_norm_gamma']:.2f}" if "mask_norm_gamma" in values else ""
        line = (
            f"| {results['settings'][name]['label']} | {100 * values['all']:.1f} | {100 * values['base']:.1f} | "
            f"{100 * values['novel']:.1f} | {100 * values['overall_accuracy']:.1f} |"
        )
        if shift:
            line += f" {100 * values['shift']['base']:.1f} | {100 * values['shift']['novel']:.1f} |"
        lines.append(line + f" {gamma} | {minutes} min {seconds:02d} s |")
    novel = {name: values["novel"] for name, values in rows.items()}
    if {"larvseg", "baseline"} <= set(novel):
        lines += [
            "",
            f"CA-Cls adds {100 * (novel['larvseg'] - novel['baseline']):+.1f} novel mIoU over the baseline",
        ]
        if novel.get("full_masks", 0) > 0:
            lines[-1] += (
                f"; LarvSeg's novel mIoU is {100 * novel['larvseg'] / novel['full_masks']:.0f}% of the bound's"
            )
        lines[-1] += "."

    def shift_kept(values: dict) -> dict[str, float]:
        return {
            m: values["shift"][m] / values[m] if values[m] > 0 else float("nan") for m in ("base", "novel")
        }

    if shift and "larvseg" in rows:
        kept = shift_kept(rows["larvseg"])
        lines.append(
            f"On the distribution-shift split LarvSeg keeps {100 * kept['base']:.0f}% of its base and "
            f"{100 * kept['novel']:.0f}% of its novel mIoU"
        )
        if "plain_look" in rows:
            plain = shift_kept(rows["plain_look"])
            lines[-1] += (
                f" (on the plain look at 2,000 steps: {100 * plain['base']:.0f}% and {100 * plain['novel']:.0f}%)"
            )
        lines[-1] += "."
    return "\n".join(lines)


def render_emoji_large(results: dict) -> str:
    counts = results["counts"]
    lines = [
        f"Every emoji: {results['num_classes']} categories ({results['num_base']} base + background with masks, "
        f"{results['num_novel']} novel with image-level labels only); {counts['num_mask_scenes']:,} mask scenes, "
        f"{counts['num_single_images']:,} single-label images, {counts['num_weak_scenes']:,} weak scenes, "
        f"{counts['num_eval_scenes']:,} eval scenes; {results['steps']:,} steps x {results['batch_size']} images "
        f"per setting, seed {results['seed']}; {results['minutes']:.0f} min in all on "
        f"{results['machine']}, the benchmark's build ({results['build_s'] / 60:.0f} min) included.",
        "",
        "| setting | mIoU all | mIoU base | mIoU novel | overall accuracy | median IoU: base | median IoU: novel "
        "| novel emoji with IoU > 10% | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    settings = results["settings"]
    for values in settings.values():
        minutes, seconds = divmod(round(values["wall_s"]), 60)
        lines.append(
            f"| {values['label']} | {100 * values['all']:.1f} | {100 * values['base']:.1f} | "
            f"{100 * values['novel']:.1f} | {100 * values['overall_accuracy']:.1f} | "
            f"{100 * values['median_base']:.1f} | {100 * values['median_novel']:.1f} | "
            f"{100 * values['novel_share_iou_over_10']:.0f}% of {values['eval_novel_classes']} | "
            f"{minutes} min {seconds:02d} s |"
        )
    if {"larvseg", "baseline"} <= set(settings):
        gain = settings["larvseg"]["novel"] - settings["baseline"]["novel"]
        lines += ["", f"CA-Cls adds {100 * gain:+.1f} novel mIoU over the baseline (one seed)."]
    own = {name: values["own_classes"] for name, values in settings.items() if "own_classes" in values}
    if own:
        lines.append(
            "Each eval scene scored against its own classes only (background and the emoji in it, so that "
            "recognising them among the whole vocabulary is taken away): "
            + "; ".join(
                f"{settings[name]['label']} base {100 * o['base']:.1f}, novel {100 * o['novel']:.1f}"
                for name, o in own.items()
            )
            + "."
        )
        if "larvseg" in own:
            o = own["larvseg"]
            lines[-1] += (
                f" At the end of LarvSeg's training {100 * o['bank_usable_base']:.0f}% of the base and "
                f"{100 * o['bank_usable_novel']:.0f}% of the novel emoji had a usable memory bank (CA-Cls "
                "attends with those only)."
            )
    return "\n".join(lines)


def render_pooling_dilution(results: dict) -> str:
    lines = [
        f"Model `{results['model']}` ({results['categories']} emoji, mask-norm gamma "
        f"{results['mask_norm_gamma']:.2f}), its eval scenes; cross-entropy of the image-level softmax:",
        "",
        "| class | area of the scene | pairs | pooled over the scene (the loss) | pooled over its own pixels |",
        "|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        low, high = row["area"]
        lines.append(
            f"| {row['group']} | {100 * low:.0f}-{100 * high:.0f}% | {row['pairs']} | "
            f"{row['whole_image']:.2f} | {row['own_mask']:.2f} |"
        )
    return "\n".join(lines)


RENDERERS = {
    "reproduce": render_reproduce,
    "main_command": render_main_command,
    "pooling_dilution": render_pooling_dilution,
    "emoji_large": render_emoji_large,
}


def update_readme(readme: Path = README, files: dict[str, Path] | None = None) -> str:
    """Rewrite the README's marked sections from their JSON files (default: every committed one under
    benchmarks/results/); returns the new text."""
    if files is None:
        files = {name: RESULTS / f"{name}.json" for name in RENDERERS if (RESULTS / f"{name}.json").is_file()}
    text = readme.read_text()
    for name, path in files.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n)(?:.*?\n)?(<!-- /results:{name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"{readme} has no <!-- results:{name} --> ... <!-- /results:{name} --> section")
        rendered = RENDERERS[name](json.loads(Path(path).read_text()))
        text = pattern.sub(lambda m, body=rendered: m.group(1) + body + "\n" + m.group(2), text)
    readme.write_text(text)
    return text


if __name__ == "__main__":
    update_readme()
    sys.exit(0)
