"""Every code block of README.md, demo/README.md and the model-card template runs as written.

Python blocks run in a fresh interpreter, in a working folder that holds what the docs assume: the model
the main command trains (`outputs/larvseg-emoji`, here a tiny model with the default vocabulary and a
filled memory bank), `scene.png`, and an offline Hugging Face cache in which the Hub ids the docs name
(the card's repo id, the README's pretrained backbone) are tiny models built here. The only substitution
is the demo's URL, for a server started on a free port. Shell blocks are checked without running their
long jobs: every script they name exists and every argument they pass parses.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_vit_backbone
from PIL import Image

from larvseg_hf import LarvSegConfig, LarvSegForSemanticSegmentation, LarvSegImageProcessor
from larvseg_hf.training.arguments import DataArguments
from larvseg_hf.training.model_card import DEFAULT_TEMPLATE, render_model_card

REPO = Path(__file__).resolve().parents[1]
CARD_REPO_ID = "your-org/larvseg-model"
DEMO_URL = "http://127.0.0.1:7860/"
TINY_VIT = tiny_vit_backbone(image_size=64)
ACCELERATE_FLAGS = {"--multi_gpu", "--cpu"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def default_vocabulary() -> tuple[list[str], list[int]]:
    """The vocabulary and base ids of the model `bash scripts/run_main.sh` trains (names as in its config)."""
    from larvseg_hf.data.emoji_scenes import select_vocabulary
    from larvseg_hf.vocabulary import UnionVocabulary

    defaults = DataArguments()
    infos, base_ids, _ = select_vocabulary(
        defaults.builtin_num_categories, defaults.builtin_novel_fraction, defaults.builtin_seed
    )
    return UnionVocabulary(["background", *(info.name for info in infos)]).names, base_ids


def save_tiny_model(folder: Path, names: list[str], base_ids: list[int], backbone: dict = TINY_VIT) -> Path:
    """A random tiny LarvSeg with a memory bank that is usable for a few classes (coseg does something)."""
    torch.manual_seed(0)
    config = LarvSegConfig(
        backbone_config=dict(backbone),
        id2label=dict(enumerate(names)),
        base_label_ids=base_ids,
        memory_bank_size=2,
    )
    model = LarvSegForSemanticSegmentation(config).eval()
    filled = torch.arange(0, len(names), 3).repeat_interleave(2)
    model.memory_bank.enqueue(filled, torch.nn.functional.normalize(torch.randn(filled.numel(), 32)))
    model.save_pretrained(folder)
    LarvSegImageProcessor(size={"height": 64, "width": 64}, size_divisor=8).save_pretrained(folder)
    return folder


def put_in_hub_cache(hf_home: Path, repo_id: str, folder: Path) -> None:
    """Lay `folder` out as the offline Hub cache's copy of `repo_id` (refs/main -> one snapshot)."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


@pytest.fixture(scope="module")
def docs_world(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(working folder, environment, model folder) in which the docs' Python blocks run."""
    root = tmp_path_factory.mktemp("docs")
    work = root / "work"
    names, base_ids = default_vocabulary()
    model_dir = save_tiny_model(work / "outputs" / "larvseg-emoji", names, base_ids)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)).save(work / "scene.png")

    hf_home = root / "hf"
    put_in_hub_cache(hf_home, CARD_REPO_ID, model_dir)
    from transformers import ViTConfig, ViTModel

    backbone = root / "vit"
    ViTModel(
        ViTConfig(**{k: v for k, v in TINY_VIT.items() if k != "model_type"}), add_pooling_layer=False
    ).save_pretrained(backbone)
    put_in_hub_cache(hf_home, "google/vit-base-patch16-224-in21k", backbone)
    env = {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(root / "hf_modules"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "MPLBACKEND": "Agg",
    }
    return work, env, model_dir


def run_block(code: str, work: Path, env: dict[str, str], name: str) -> subprocess.CompletedProcess:
    script = work / f"{name}.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"--- {name} ---\n{code}\n--- stderr ---\n{proc.stderr[-4000:]}"
    return proc


def rendered_card(model_dir: Path) -> str:
    config = LarvSegConfig.from_pretrained(model_dir)
    return render_model_card(
        config,
        {"mean_iou": 0.25, "base_mean_iou": 0.3, "novel_mean_iou": 0.2},
        repo_id=CARD_REPO_ID,
        mask_data="tiny",
        image_data="tiny",
        eval_dataset_name="tiny eval",
    )


def test_every_doc_has_python_blocks():
    for path in (REPO / "README.md", REPO / "demo" / "README.md", DEFAULT_TEMPLATE):
        assert code_blocks(path.read_text(), "python"), path  # the extraction itself must find them


@pytest.mark.parametrize("index", range(len(code_blocks((REPO / "README.md").read_text(), "python"))))
def test_readme_python_block_runs(docs_world, index):
    work, env, _ = docs_world
    run_block(code_blocks((REPO / "README.md").read_text(), "python")[index], work, env, f"readme_{index}")


def test_model_card_python_blocks_run(docs_world):
    work, env, model_dir = docs_world
    blocks = code_blocks(rendered_card(model_dir), "python")
    assert len(blocks) >= 2 and all(CARD_REPO_ID in block for block in blocks)
    for index, block in enumerate(blocks):
        run_block(block, work, env, f"card_{index}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_demo_readme_python_blocks_run_against_a_live_demo(docs_world):
    from larvseg_hf import demo_app

    work, env, model_dir = docs_world
    blocks = code_blocks((REPO / "demo" / "README.md").read_text(), "python")
    demo = demo_app.build_demo(model_dir)
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        for index, block in enumerate(blocks):
            assert DEMO_URL in block, "the demo README's API example must name the default local URL"
            run_block(block.replace(DEMO_URL, demo.local_url), work, env, f"demo_{index}")
    finally:
        demo.close()


# ------------------------------------------------------------------------------------------- shell blocks


def _commands(block: str) -> list[list[str]]:
    """Shell lines of a block as argument lists (continuations joined, comments dropped)."""
    joined = block.replace("\\\n", " ")
    return [tokens for line in joined.splitlines() if (tokens := shlex.split(line, comments=True))]


def _check_command(tokens: list[str]) -> None:
    """The script a documented command runs exists, and its arguments parse."""
    from larvseg_hf.cli import evaluate as evaluate_cli
    from larvseg_hf.training.arguments import parse_train_args

    if tokens[0] == "pip" or tokens[:3] == [".venv/bin/python", "-m", "pip"]:
        return
    if tokens[0] == "bash":
        assert (REPO / tokens[1]).is_file(), tokens
        if tokens[1] == "scripts/run_main.sh":  # its arguments go to the training script
            parse_train_args(tokens[2:])
        return
    if tokens[0] in ("accelerate", ".venv/bin/accelerate"):
        assert tokens[1] == "launch", tokens
        rest = tokens[2:]
        while rest and rest[0].startswith("--"):  # accelerate's own options: flags, or options with a value
            rest = rest[1:] if rest[0] in ACCELERATE_FLAGS else rest[2:]
        tokens = ["python", *rest]  # what accelerate starts: a script, or -m and a module
    program, args = tokens[0], tokens[1:]
    if program.endswith("python") and args[:1] == ["-m"]:
        module, args = args[1], args[2:]
        if module == "pytest":
            for arg in args:
                assert arg.startswith("-") or (REPO / arg.split("::")[0]).exists(), arg
            return
        if module == "larvseg_hf.data.stand_ins":
            from larvseg_hf.data import stand_ins

            stand_ins.parse_args(args)
            return
        program = {"larvseg_hf.cli.train": "larvseg-train", "larvseg_hf.cli.evaluate": "larvseg-evaluate"}[
            module
        ]
    elif program.endswith("python"):
        script, args = args[0], args[1:]
        assert (REPO / script).is_file(), script
        program = {"scripts/train.py": "larvseg-train", "scripts/evaluate_model.py": "larvseg-evaluate"}.get(
            script, script
        )
    if program == "larvseg-train":
        parse_train_args([*args, *([] if "--output_dir" in args else ["--output_dir", "unused"])])
    elif program == "larvseg-evaluate":
        evaluate_cli.parse_args(args)
    elif program in ("larvseg-demo", "demo/app.py"):
        from larvseg_hf import demo_app

        demo_app.parse_args(args)
    elif program.startswith("scripts/") or program.startswith("benchmarks/"):
        help_text = subprocess.run(
            [sys.executable, str(REPO / program), "--help"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert help_text.returncode == 0, help_text.stderr[-2000:]
        for flag in (a.split("=")[0] for a in args if a.startswith("--")):
            assert flag in help_text.stdout, (program, flag)
    else:
        raise AssertionError(f"no check for documented command {tokens}: add one to tests/test_docs.py")


@pytest.mark.parametrize("doc", ["README.md", "demo/README.md"])
def test_shell_blocks_name_real_scripts_and_valid_arguments(doc):
    blocks = code_blocks((REPO / doc).read_text(), "bash")
    assert blocks, doc
    for block in blocks:
        for tokens in _commands(block):
            _check_command(tokens)
