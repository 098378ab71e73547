"""The installed route: build the wheel, install it into a fresh virtual environment, and from a folder
outside the repository train 3 steps on a tiny built-in benchmark (through `accelerate launch -m`),
evaluate with the console script, and find the rendered model card. Nothing may read the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_BENCHMARK = [
    "--builtin_num_categories", "8",
    "--builtin_image_size", "32",
    "--builtin_num_mask_scenes", "16",
    "--builtin_num_single_images", "8",
    "--builtin_num_weak_scenes", "4",
    "--builtin_num_eval_scenes", "4",
    "--mask_crop_size", "32",
    "--image_crop_size", "32",
    "--eval_size", "32",
]  # fmt: skip


def run(cmd: list, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the files git would commit (tracked and new, not ignored): an in-tree build
    reuses build/lib, where files deleted since an earlier build would linger and ship."""
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.check_output(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO, text=True
    )
    for name in filter(None, listed.split("\0")):
        if (REPO / name).exists():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name, follow_symlinks=False)
    dist = tmp_path_factory.mktemp("dist")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q"]
    run([*pip_wheel, "-w", dist], source, dict(os.environ))
    (path,) = dist.glob("larvseg_hf-*.whl")
    return path


def test_the_wheel_ships_what_the_package_reads(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "larvseg_hf/training/presets/method.yaml",
        "larvseg_hf/training/presets/emoji_scenes.yaml",
        "larvseg_hf/training/model_card_template.md",
        "larvseg_hf/demo_app.py",
        "larvseg_hf/cli/train.py",
        "larvseg_hf/cli/evaluate.py",
        "larvseg_hf/cli/demo.py",
        "larvseg_hf/metrics/larvseg_mean_iou.py",
    ):
        assert needed in names, needed
    assert "larvseg_hf/metrics.py" not in names  # no stale module from an earlier layout
    # Links in the checkout, real files in the wheel, identical to their owners.
    archive = zipfile.ZipFile(wheel)
    assert archive.read("larvseg_hf/demo_app.py") == (REPO / "demo" / "app.py").read_bytes()
    template = archive.read("larvseg_hf/training/model_card_template.md")
    assert template == (REPO / "model_cards" / "larvseg_model_card.md").read_bytes()
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = archive.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    entry_points = archive.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    for script in ("larvseg-train", "larvseg-evaluate", "larvseg-demo"):
        assert f"{script} = larvseg_hf.cli." in entry_points, entry_points


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    """A new venv with only the wheel installed; its dependencies come from this environment's
    site-packages through a path entry (no .pth files there run, so the checkout's editable install
    is invisible)."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", venv], REPO, dict(os.environ))
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "_larvseg_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        REPO,
        dict(os.environ),
    )
    return venv


def test_installed_wheel_trains_evaluates_and_renders_the_card_outside_the_repository(fresh_venv, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "LARVSEG_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
        "PYTHONPATH": "",
        "VIRTUAL_ENV": str(fresh_venv),
        "PATH": f"{fresh_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    python = fresh_venv / "bin" / "python"
    where = run([python, "-c", "import larvseg_hf; print(larvseg_hf.__file__)"], work, env).stdout.strip()
    assert where.startswith(str(fresh_venv)), where  # the wheel, not the checkout

    out = work / "outputs" / "tiny"
    run(
        [
            python, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "larvseg_hf.cli.train", *TINY_BENCHMARK, "--max_steps", "3",
            "--per_device_train_batch_size", "4", "--dataloader_num_workers", "0", "--output_dir", out,
        ],
        work,
        env,
    )  # fmt: skip
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "larvseg_training.json"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "# tiny" in card and "library_name: transformers" in card and "$" not in card.split("```")[0]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3

    evaluated = run([fresh_venv / "bin" / "larvseg-evaluate", "--model", out], work, env)
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert 0.0 <= metrics["mean_iou"] <= 1.0 and "novel_mean_iou" in metrics, evaluated.stdout
    # Trained on the built-in data: also scored on its distribution-shift split, built from the installed wheel.
    shift = metrics["shift"]
    assert shift["dataset"].endswith("eval_shift") and 0.0 <= shift["novel_mean_iou"] <= 1.0, evaluated.stdout
    assert '"shift"' in evaluated.stdout
    for script in ("larvseg-train", "larvseg-demo"):
        assert "usage:" in run([fresh_venv / "bin" / script, "--help"], work, env).stdout
