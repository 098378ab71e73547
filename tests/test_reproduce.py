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


@pytest.mark.parametrize("name", ["reproduce", "main_command", "pooling_dilution"])
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
    section = re.search(
        rf"<!-- results:{name} -->\n(.*?)\n<!-- /results:{name} -->", tables.README.read_text(), re.DOTALL
    )
    assert section, f"README has no {name} results section"
    assert section.group(1) == tables.RENDERERS[name](results)
