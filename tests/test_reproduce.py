"""scripts/reproduce.py end to end on a tiny built-in benchmark (every run trains, the JSON table, the
coseg and oracle analyses, the README tables and the plot come out, a second invocation reuses the runs),
and the README's result tables equal what the committed benchmarks/results/*.json render to."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REPRODUCE = REPO / "scripts" / "reproduce.py"
TINY = (
    "--builtin_image_size 32 --builtin_num_mask_scenes 24 --builtin_num_single_images 12 "
    "--builtin_num_weak_scenes 6 --builtin_num_eval_scenes 6 --mask_crop_size 32 --image_crop_size 32 "
    "--eval_size 32 --per_device_train_batch_size 4 --dataloader_num_workers 0 --memory_bank_size 2"
)
SETTINGS = ["masks_only", "baseline", "larvseg", "full_masks"]


def results_tables():
    spec = importlib.util.spec_from_file_location("results_tables", REPO / "scripts" / "results_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, env: dict) -> str:
    command = [sys.executable, str(REPRODUCE), "--seeds", "0", "1", "--steps", "3", "--categories", "6"]
    command += ["--output_dir", str(tmp_path / "runs"), "--train_args", TINY, "--settings", *SETTINGS]
    command += [
        "--results",
        str(tmp_path / "results" / "reproduce.json"),
        "--readme",
        str(tmp_path / "README.md"),
    ]
    command += ["--plot", str(tmp_path / "plot.png")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_reproduce_json_readme_plot_and_resume(tmp_path):
    env = {**os.environ, "LARVSEG_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    (tmp_path / "README.md").write_text(
        "before\n<!-- results:reproduce -->\nold\n<!-- /results:reproduce -->\nafter\n"
    )
    first = _run(tmp_path, env)
    assert first.count("(seed ") == 8  # four settings x two seeds trained

    results = json.loads((tmp_path / "results" / "reproduce.json").read_text())
    assert results["categories"] == 6 and results["steps"] == 3 and results["seeds"] == [0, 1]
    assert set(results["settings"]) == {*SETTINGS, "larvseg_coseg"}
    for setting in results["settings"].values():
        assert set(setting["seeds"]) == {"0", "1"}
        for scores in setting["seeds"].values():
            assert all(0.0 <= scores[key] <= 1.0 for key in ("base", "novel", "all")), scores
    assert set(results["oracle"]) == {"masks_only", "larvseg"}
    # The bound really had masks for novel emoji: its mask source's vocabulary holds every class.
    bound = json.loads((tmp_path / "runs" / "runs" / "full_masks-seed0" / "config.json").read_text())
    larvseg = json.loads((tmp_path / "runs" / "runs" / "larvseg-seed0" / "config.json").read_text())
    masks = "emoji mask_train"
    assert set(bound["source_vocabularies"][masks]) == set(range(7))
    assert set(larvseg["source_vocabularies"][masks]) == set(larvseg["base_label_ids"])

    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("before\n<!-- results:reproduce -->\n") and readme.endswith("after\n")
    assert results_tables().render_reproduce(results) in readme and "old" not in readme
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The dilution analysis on one of those runs, rendered into its own README section.
    dilution_readme = tmp_path / "README_dilution.md"
    dilution_readme.write_text("<!-- results:pooling_dilution -->\n<!-- /results:pooling_dilution -->\n")
    dilution = tmp_path / "results" / "pooling_dilution.json"
    command = [sys.executable, str(REPO / "scripts" / "pooling_dilution.py")]
    command += ["--model", str(tmp_path / "runs" / "runs" / "larvseg-seed0"), "--results", str(dilution)]
    command += ["--readme", str(dilution_readme)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads(dilution.read_text())
    assert {row["group"] for row in table["rows"]} == {"base", "novel", "background"}
    assert sum(row["pairs"] for row in table["rows"] if row["group"] == "background") > 0
    assert results_tables().render_pooling_dilution(table) in dilution_readme.read_text()

    second = _run(tmp_path, env)  # finished runs are reused, not retrained
    assert "(seed " not in second
    # ... but only when trained with the same arguments.
    command = [sys.executable, str(REPRODUCE), "--seeds", "0", "--steps", "4", "--categories", "6"]
    command += ["--output_dir", str(tmp_path / "runs"), "--train_args", TINY, "--settings", "baseline"]
    command += ["--results", str(tmp_path / "other.json"), "--readme", "none", "--plot", "none"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "baseline-seed0 was trained with other arguments" in result.stderr
    assert (
        json.loads((tmp_path / "results" / "reproduce.json").read_text())["settings"] == results["settings"]
    )


def test_large_suite_json_readme_and_plot(tmp_path):
    env = {**os.environ, "LARVSEG_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:emoji_large -->\n<!-- /results:emoji_large -->\n")
    train_args = (
        "--mask_crop_size 32 --image_crop_size 32 --eval_size 32 --per_device_train_batch_size 4 "
        "--dataloader_num_workers 0 --memory_bank_size 2"
    )
    command = [sys.executable, str(REPRODUCE), "--suite", "large", "--categories", "8", "--steps", "3"]
    command += ["--scale", "0.002", "--output_dir", str(tmp_path / "runs"), "--train_args", train_args]
    command += ["--results", str(tmp_path / "emoji_large.json"), "--readme", str(readme)]
    command += ["--plot", str(tmp_path / "plot.png")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    results = json.loads((tmp_path / "emoji_large.json").read_text())
    assert results["num_classes"] == 8 and results["num_base"] + results["num_novel"] == 8
    assert results["counts"] == {
        "num_mask_scenes": 24, "num_single_images": 16, "num_weak_scenes": 8, "num_eval_scenes": 2
    }  # fmt: skip
    assert set(results["settings"]) == {"baseline", "larvseg"}
    for values in results["settings"].values():
        assert all(0.0 <= values[key] <= 1.0 for key in ("base", "novel", "all")), values
        assert values["wall_s"] > 0
    assert results["minutes"] * 60 >= sum(v["wall_s"] for v in results["settings"].values())
    # Equal compute, CA-Cls off in the baseline only; the runs trained on the benchmark the suite built (and timed).
    runs = tmp_path / "runs" / "runs"
    baseline, larvseg = (
        json.loads((runs / f"{n}-seed0" / "command.json").read_text()) for n in ("baseline", "larvseg")
    )
    assert baseline[2:-2] == larvseg[2:] and baseline[-2:] == [
        "--attentive_loss_weight",
        "0",
    ]  # after --output_dir
    built = json.loads((tmp_path / "runs" / "benchmark_build.json").read_text())["root"]
    for name in ("baseline", "larvseg"):
        assert json.loads((runs / f"{name}-seed0" / "larvseg_training.json").read_text())["root"] == built
    assert results_tables().render_emoji_large(results) in readme.read_text()
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["reproduce", "main_command", "pooling_dilution", "emoji_large"])
def test_readme_tables_are_rendered_from_the_committed_results(name):
    tables = results_tables()
    path = tables.RESULTS / f"{name}.json"
    assert path.is_file(), f"{path} is not committed"
    results = json.loads(path.read_text())
    if name == "reproduce":  # the schema: settings -> seeds -> base / novel / all in [0, 1]
        assert {"masks_only", "baseline", "larvseg", "full_masks"} <= set(results["settings"])
        for setting in results["settings"].values():
            for scores in setting["seeds"].values():
                assert all(0.0 <= scores[key] <= 1.0 for key in ("base", "novel", "all"))
    if name == "emoji_large":  # the schema, and its scale and compute bounds
        assert results["num_classes"] >= 1500 and {"baseline", "larvseg"} <= set(results["settings"])
        for values in results["settings"].values():
            assert all(0.0 <= values[key] <= 1.0 for key in ("base", "novel", "all")) and values["wall_s"] > 0
        assert results["minutes"] <= 60
    section = re.search(
        rf"<!-- results:{name} -->\n(.*?)\n<!-- /results:{name} -->", tables.README.read_text(), re.DOTALL
    )
    assert section, f"README has no {name} results section"
    assert section.group(1) == tables.RENDERERS[name](results)
