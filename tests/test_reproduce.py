"""scripts/reproduce.py end to end on a tiny built-in benchmark: every run trains, the table, the analyses
and the plot come out, and a second invocation reuses the finished runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPRODUCE = REPO / "scripts" / "reproduce.py"
TINY = (
    "--builtin_image_size 32 --builtin_num_mask_scenes 24 --builtin_num_single_images 12 "
    "--builtin_num_weak_scenes 6 --builtin_num_eval_scenes 6 --mask_crop_size 32 --image_crop_size 32 "
    "--eval_size 32 --per_device_train_batch_size 4 --dataloader_num_workers 0 --memory_bank_size 2"
)
SETTINGS = ["masks only", "LarvSeg (+ CA-Cls)"]


def _run(output_dir: Path, env: dict) -> str:
    command = [sys.executable, str(REPRODUCE), "--seeds", "0", "1", "--steps", "3", "--categories", "6"]
    command += [
        "--no-ablations",
        "--output_dir",
        str(output_dir),
        "--train_args",
        TINY,
        "--settings",
        *SETTINGS,
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_reproduce_table_analyses_plot_and_resume(tmp_path):
    env = {**os.environ, "LARVSEG_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    output_dir = tmp_path / "reproduce"
    first = _run(output_dir, env)
    assert first.count("(seed ") == 4  # two settings x two seeds trained

    results = json.loads((output_dir / "results.json").read_text())
    assert results["categories"] == 6 and results["steps"] == 3 and results["seeds"] == [0, 1]
    raw = results["raw"]
    assert set(raw) == {*SETTINGS, "LarvSeg (+ CA-Cls) + coseg inference"}
    for row in raw.values():
        assert len(row["mean_iou"]) == 2 and all(0 <= v <= 1 for v in row["novel_mean_iou"])
    assert len(raw["masks only"]["oracle_novel_mean_iou"]) == 2
    larvseg = raw["LarvSeg (+ CA-Cls)"]
    assert len(larvseg["localization_precision_attention_labels"]) == 2
    assert "localization_precision_score" not in raw["masks only"]

    table = (output_dir / "results.md").read_text()
    assert "| LarvSeg (+ CA-Cls) + coseg inference |" in table and "| features of | base | novel |" in table
    assert (output_dir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    second = _run(output_dir, env)  # finished runs are reused, not retrained
    assert "(seed " not in second
    assert json.loads((output_dir / "results.json").read_text())["raw"] == raw
