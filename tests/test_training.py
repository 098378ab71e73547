"""scripts/train.py and scripts/evaluate_model.py end to end, on tiny local imagefolders (see fixtures_data.py).

The scripts run in subprocesses, as a user runs them, except where a test must reach inside (the `--config`
parser, and `push_to_hub` up to the network call). Runs that need hooks (stop after a checkpoint, count memory
bank writes per process) go through WRAPPER, which imports `larvseg_hf.cli.train` (what scripts/train.py runs)
and calls its `main()`.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from fixtures_data import ALL_NAMES, BASE_NAMES, NOVEL_NAMES, build_bad_mask_dataset, build_tiny_datasets
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "scripts" / "train.py"
EVALUATE = REPO / "scripts" / "evaluate_model.py"
PYTHON = sys.executable
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
LOSS_TERMS = ("supervised_loss", "image_level_loss", "attentive_loss")
HUB_ID = "me/tiny-larvseg"
KILLED = 75  # exit code of a run the wrapper interrupts

# Imports scripts/train.py and runs main() with test hooks, set through environment variables:
#   LARVSEG_TEST_RECORD=prefix  write prefix.rank<RANK>.json: steps run, first step, per-process bank writes
#                               (class ids enqueued by this process, before the cross-process gather), the
#                               trainer's process count, and the final bank of this process;
#   LARVSEG_TEST_KILL_AT=k      os._exit(75) right after checkpoint-k is written (an interrupted job).
WRAPPER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    from transformers import TrainerCallback

    import larvseg_hf.memory_bank_larvseg as memory_bank

    argv = sys.argv[1:]
    record_prefix = os.environ.get("LARVSEG_TEST_RECORD")
    kill_at = int(os.environ.get("LARVSEG_TEST_KILL_AT", "0"))
    record = {"steps_run": 0, "first_step": None, "enqueued_ids": []}
    trainers = []


    def write_record():
        if trainers:
            bank = trainers[0].accelerator.unwrap_model(trainers[0].model).memory_bank
            record["bank_num_writes"] = bank.num_writes.tolist()
            record["bank_slots_sum"] = float(bank.slots.double().sum())
            model = trainers[0].accelerator.unwrap_model(trainers[0].model)
            record["state_sums"] = {k: float(v.double().sum()) for k, v in model.state_dict().items()}
            results = trainers[0].segmentation_results or {}
            record["segmentation_results"] = {k: getattr(v, "tolist", lambda: v)() for k, v in results.items()}
        if record_prefix:
            Path(f"{record_prefix}.rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(record))


    original_enqueue = memory_bank.LarvSegMemoryBank.enqueue


    def enqueue(self, class_ids, *args, **kwargs):
        record["enqueued_ids"].append([int(i) for i in class_ids.tolist()])
        return original_enqueue(self, class_ids, *args, **kwargs)


    memory_bank.LarvSegMemoryBank.enqueue = enqueue


    class Hooks(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if record["first_step"] is None:
                record["first_step"] = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            record["steps_run"] += 1

        def on_save(self, args, state, control, **kwargs):
            if kill_at and state.global_step == kill_at:
                write_record()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(75)


    import larvseg_hf.cli.train as train


    class HookedTrainer(train.LarvSegTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Hooks())
            trainers.append(self)
            record["num_processes"] = self.accelerator.num_processes
            record["world_size"] = self.args.world_size


    train.LarvSegTrainer = HookedTrainer
    train.run(argv)
    write_record()
    """
)

# Loads a saved model folder through trust_remote_code alone: larvseg_hf is made unimportable first.
# Loads a saved folder with trust_remote_code only (larvseg_hf blocked) and segments one image; scripts that
# use it append what they print.
REMOTE_CODE_SEGMENT = textwrap.dedent(
    """
    import json, sys
    sys.modules["larvseg_hf"] = None  # any `import larvseg_hf` now raises ImportError
    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

    folder, image_path = sys.argv[1], sys.argv[2]
    model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    image = Image.open(image_path).convert("RGB")
    with torch.no_grad():
        outputs = model(**processor(image, return_tensors="pt"))
    label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
    """
)
REMOTE_CODE_CHECK = REMOTE_CODE_SEGMENT + textwrap.dedent(
    """
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    print(json.dumps({
        "modules": [type(config).__module__, type(model).__module__, type(base).__module__,
                    type(processor).__module__],
        "larvseg_hf_loaded": sys.modules.get("larvseg_hf") is not None,
        "logits": outputs.logits.flatten().tolist(),
        "label_map": label_map.tolist(),
        "num_writes": model.memory_bank.num_writes.tolist(),
    }))
    """
)


# --------------------------------------------------------------------------- helpers and fixtures


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return build_tiny_datasets(tmp_path_factory.mktemp("tinyds"))


@pytest.fixture(scope="module")
def hf_env(tmp_path_factory) -> dict[str, str]:
    """Subprocess environment: offline, own HF caches (datasets, remote-code modules, accelerate config)."""
    home = tmp_path_factory.mktemp("hf_home")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        HF_HOME=str(home),
        HF_DATASETS_CACHE=str(home / "datasets"),
        HF_MODULES_CACHE=str(home / "modules"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def tiny_args(
    data: Path, output_dir: Path, *, backbone: str = "resnet-tiny", steps: int = 4, eval_set: bool = True
):
    args = [
        "--mask_datasets", f"{data}/mask:train",
        "--image_datasets", f"{data}/cls:train",
        "--backbone", backbone,
        "--head_hidden_size", "32",
        "--mask_crop_size", "64",
        "--image_crop_size", "64",
        "--eval_size", "64",
        "--max_steps", str(steps),
        "--per_device_train_batch_size", "8",
        "--memory_bank_size", "1",
        "--memory_bank_topk", "3",
        "--logging_steps", "1",
        "--dataloader_num_workers", "0",
        "--output_dir", str(output_dir),
    ]  # fmt: skip
    if eval_set:
        args += ["--eval_dataset", f"{data}/mask:eval"]
    return args


def start(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [str(c) for c in cmd],
        env=env,
        cwd=cwd or REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: int = 300) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"{proc.args} ran past {timeout} s\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None, timeout: int = 300):
    return finish(start(cmd, env, cwd), timeout)


def check_ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    return proc


def log_history(folder: Path) -> list[dict]:
    return json.loads((folder / "trainer_state.json").read_text())["log_history"]


def write_wrapper(folder: Path) -> Path:
    path = folder / "train_with_hooks.py"
    path.write_text(WRAPPER)
    return path


def read_records(prefix: Path) -> list[dict]:
    paths = sorted(prefix.parent.glob(f"{prefix.name}.rank*.json"))
    return [json.loads(p.read_text()) for p in paths]


def load_train_script():
    import larvseg_hf.cli.train

    return larvseg_hf.cli.train


@pytest.fixture(scope="module")
def vit_run(tiny_data, hf_env, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The real train script, tiny ViT, 20 classes, --hub_model_id (no push): shared by the e2e/card tests."""
    out = tmp_path_factory.mktemp("vit") / "model"
    proc = check_ok(
        run(
            [PYTHON, TRAIN, *tiny_args(tiny_data, out, backbone="vit-tiny"), "--hub_model_id", HUB_ID], hf_env
        )
    )
    return out, proc


# --------------------------------------------------------------------------- 1. end to end


def test_train_then_evaluate_end_to_end(vit_run, hf_env):
    out, train_proc = vit_run
    assert "LarvSeg training done" in train_proc.stdout

    # Per-term losses are logged at every step; the image-level and attentive terms did work.
    logs = [entry for entry in log_history(out) if "loss" in entry]
    assert [entry["step"] for entry in logs] == [1, 2, 3, 4]
    for entry in logs:
        for term in LOSS_TERMS:
            assert isinstance(entry[term], float) and math.isfinite(entry[term]), (term, entry)
        assert "bank_checksum" in entry
    assert any(entry["image_level_loss"] > 0 for entry in logs)
    assert any(entry["attentive_loss"] > 0 for entry in logs), "memory bank never warm: no attentive loss"
    assert logs[0]["attentive_loss"] == 0  # nothing in the bank before the first write

    # The memory bank is a persistent buffer: the saved weights carry its writes (novel classes only).
    weights = load_file(out / "model.safetensors")
    num_writes = weights["memory_bank.num_writes"]
    assert num_writes.shape == (len(ALL_NAMES),)
    assert num_writes[len(BASE_NAMES) :].sum() > 0 and num_writes[: len(BASE_NAMES)].sum() == 0

    check_ok(run([PYTHON, EVALUATE, "--model", out], hf_env))
    eval_dir = out / "evaluation"
    for name in ("metrics.json", "per_class_iou.csv", "per_class_iou.png"):
        assert (eval_dir / name).is_file() and (eval_dir / name).stat().st_size > 0, name
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy", "base_mean_iou", "novel_mean_iou"):
        assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 1.0, (key, metrics)
    for key in ("per_category_iou", "per_category_accuracy"):  # evaluate's mean_iou keys, over the vocabulary
        assert len(metrics[key]) == len(ALL_NAMES), key
    assert metrics["dataset"].endswith("mask:eval")  # the eval set recorded at training time
    # The evaluation script and the trainer's end-of-training evaluation score the same model on the same set;
    # the trainer's saved results hold the scalars only.
    trainer_eval = json.loads((out / "eval_results.json").read_text())
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy", "base_mean_iou", "novel_mean_iou"):
        assert metrics[key] == pytest.approx(trainer_eval[f"eval_{key}"], abs=1e-6), key
    assert not [key for key in trainer_eval if "per_category" in key]

    with open(eval_dir / "per_class_iou.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(ALL_NAMES)
    assert {row["split"] for row in rows} == {"base", "novel"}
    assert sum(row["split"] == "novel" for row in rows) == len(NOVEL_NAMES)
    # The trainer's final evaluation wrote the same per-class table (and plot) next to the model.
    with open(out / "per_class_iou.csv", newline="") as f:
        assert list(csv.DictReader(f)) == rows
    assert (out / "per_class_iou.png").stat().st_size > 0


# --------------------------------------------------------------------------- 2. --config files


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_config_file_sets_arguments_and_cli_overrides(tmp_path, suffix):
    from larvseg_hf.training.arguments import parse_train_args

    values = {
        "mask_datasets": ["/data/a:train", "/data/b"],
        "image_datasets": ["/data/c:train"],
        "backbone": "vit-tiny",
        "memory_bank_size": 3,
        "background_suppression": False,
        "eval_size": 96,
        "learning_rate": 0.05,
        "max_steps": 7,
        "lr_scheduler_type": "cosine",
        "output_dir": str(tmp_path / "from_file"),
    }
    path = tmp_path / f"setup.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(values))
    else:
        import yaml

        path.write_text(yaml.safe_dump(values))

    model_args, data_args, training_args, _ = parse_train_args(["--config", str(path)])
    assert data_args.mask_datasets == values["mask_datasets"]
    assert data_args.image_datasets == values["image_datasets"]
    assert model_args.backbone == "vit-tiny" and model_args.memory_bank_size == 3
    assert model_args.background_suppression is False
    assert data_args.eval_size == 96
    assert training_args.learning_rate == 0.05 and training_args.max_steps == 7
    assert training_args.lr_scheduler_type == "cosine"
    assert training_args.output_dir == values["output_dir"]
    assert training_args.optim == "sgd"  # not in the file: the published schedule's default still applies

    # The command line wins over the file, in either order of the flags.
    argv = [
        "--max_steps",
        "11",
        "--config",
        str(path),
        "--memory_bank_size",
        "5",
        "--backbone",
        "resnet-tiny",
    ]
    model_args, data_args, training_args, _ = parse_train_args(argv)
    assert training_args.max_steps == 11
    assert model_args.memory_bank_size == 5 and model_args.backbone == "resnet-tiny"
    assert training_args.learning_rate == 0.05  # untouched file values stay
    assert data_args.mask_datasets == values["mask_datasets"]


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_config_file_unknown_key_is_named(tmp_path, suffix):
    from larvseg_hf.training.arguments import parse_train_args

    path = tmp_path / f"bad.{suffix}"
    content = {"max_steps": 3, "memory_bank_sise": 4}
    path.write_text(json.dumps(content) if suffix == "json" else "max_steps: 3\nmemory_bank_sise: 4\n")
    with pytest.raises(ValueError, match="memory_bank_sise"):
        parse_train_args(["--config", str(path), "--output_dir", str(tmp_path / "x")])


def test_dataset_named_in_any_spelling_turns_the_emoji_preset_off(tmp_path):
    """The preset choice asks the parser, so abbreviated and dashed flags count as naming a dataset."""
    from larvseg_hf.training.arguments import parse_train_args

    for flag in ("--mask_datasets", "--mask-datasets", "--mask_data", "--image_datasets", "--weak_datasets"):
        _, data_args, training_args, _ = parse_train_args([flag, "/data/a", "--output_dir", "x"])
        assert not data_args.uses_builtin, flag
        assert training_args.max_steps == 320000, flag  # method.yaml, without emoji_scenes.yaml on top
    # An eval set alone is not training data: the emoji preset still applies.
    _, data_args, training_args, _ = parse_train_args(["--eval_dataset", "/data/e"])
    assert data_args.uses_builtin and training_args.max_steps == 4000


def test_config_flag_is_in_help_and_needs_a_path(capsys):
    from larvseg_hf.training.arguments import parse_train_args, train_argument_parser

    assert "--config FILE" in train_argument_parser().format_help()
    with pytest.raises(ValueError, match="--config needs a YAML or JSON file path"):
        parse_train_args(["--max_steps", "3", "--config"])


def test_model_config_options_are_the_config_init_parameters():
    """One owner for model settings: LarvSegConfig's __init__; ModelArguments only lists which are options."""
    import dataclasses
    import inspect

    from larvseg_hf import LarvSegConfig
    from larvseg_hf.training.arguments import MODEL_CONFIG_FIELDS, ModelArguments

    parameters = inspect.signature(LarvSegConfig.__init__).parameters
    assert MODEL_CONFIG_FIELDS and set(MODEL_CONFIG_FIELDS) <= set(parameters)
    options = {f.name for f in dataclasses.fields(ModelArguments)}
    assert set(MODEL_CONFIG_FIELDS) == (options & set(parameters)) - {"head_hidden_size"}
    assert ModelArguments().config_values() == {}  # None everywhere: the config keeps its own defaults
    assert ModelArguments(memory_bank_size=3, head_hidden_size=8).config_values() == {"memory_bank_size": 3}


def test_builtin_options_are_the_benchmark_parameters():
    """`--builtin_<name>` is EmojiBenchmarkParams' field `name`, default included."""
    import dataclasses

    from larvseg_hf.data.emoji_scenes import EmojiBenchmarkParams
    from larvseg_hf.training.arguments import DataArguments

    names = {f.name for f in dataclasses.fields(DataArguments) if f.name.startswith("builtin_")}
    assert names - {"builtin_root"} == {f"builtin_{f.name}" for f in dataclasses.fields(EmojiBenchmarkParams)}
    assert DataArguments().builtin_params() == EmojiBenchmarkParams()
    assert DataArguments(builtin_num_categories=12).builtin_params().num_categories == 12


# --------------------------------------------------------------------------- 3. resume


def test_resume_after_interruption_matches_uninterrupted_run(tiny_data, hf_env, tmp_path):
    """6 steps with checkpoints every 3: run A straight through; run B is killed right after checkpoint-3 is
    written and started again with the same command. B's checkpoint-6 must equal A's: weights, memory bank,
    optimizer state, scheduler, global step and the logged losses."""
    wrapper = write_wrapper(tmp_path)
    # num_sampled_classes < vocabulary: the per-step class sampling draws from the torch RNG, which resume restores.
    extra = ["--save_steps", "3", "--num_sampled_classes", "10", "--seed", "3"]

    def train(out: Path, record: Path, kill_at: int | None = None):
        env = dict(hf_env, LARVSEG_TEST_RECORD=str(record))
        if kill_at:
            env["LARVSEG_TEST_KILL_AT"] = str(kill_at)
        return start([PYTHON, wrapper, *tiny_args(tiny_data, out, steps=6, eval_set=False), *extra], env)

    a, b = tmp_path / "A", tmp_path / "B"
    straight, interrupted = train(a, tmp_path / "a"), train(b, tmp_path / "b1", kill_at=3)  # independent runs
    check_ok(finish(straight))
    killed = finish(interrupted)
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    assert (b / "checkpoint-3").is_dir() and not (b / "checkpoint-6").exists()
    assert not (b / "model.safetensors").exists()  # really interrupted: no final save
    resumed = check_ok(finish(train(b, tmp_path / "b2")))
    assert "resuming from" in resumed.stderr and "checkpoint-3" in resumed.stderr

    (rec_a,), (rec_b1,), (rec_b2,) = (read_records(tmp_path / n) for n in ("a", "b1", "b2"))
    assert (rec_a["first_step"], rec_a["steps_run"]) == (0, 6)
    assert (rec_b1["first_step"], rec_b1["steps_run"]) == (0, 3)
    assert (rec_b2["first_step"], rec_b2["steps_run"]) == (3, 3), "the second run did not resume at step 3"
    # The data order after resume is the uninterrupted one: same image-level labels enqueued at steps 4-6.
    assert rec_b1["enqueued_ids"] + rec_b2["enqueued_ids"] == rec_a["enqueued_ids"]

    for ckpt in ("checkpoint-3", "checkpoint-6"):
        ca, cb = a / ckpt, b / ckpt
        state_a = json.loads((ca / "trainer_state.json").read_text())
        state_b = json.loads((cb / "trainer_state.json").read_text())
        assert state_a["global_step"] == state_b["global_step"] == int(ckpt.split("-")[1])
        strip = ("train_runtime", "train_samples_per_second", "train_steps_per_second")
        assert [{k: v for k, v in e.items() if k not in strip} for e in state_b["log_history"]] == [
            {k: v for k, v in e.items() if k not in strip} for e in state_a["log_history"]
        ]

        weights_a, weights_b = load_file(ca / "model.safetensors"), load_file(cb / "model.safetensors")
        assert weights_a.keys() == weights_b.keys()
        assert "memory_bank.slots" in weights_a and "memory_bank.num_writes" in weights_a
        assert weights_a["memory_bank.num_writes"].sum() > 0
        for name in weights_a:
            torch.testing.assert_close(weights_b[name], weights_a[name], rtol=0, atol=0, msg=f"{ckpt} {name}")

        opt_a = torch.load(ca / "optimizer.pt", weights_only=True)
        opt_b = torch.load(cb / "optimizer.pt", weights_only=True)
        assert opt_a["state"].keys() == opt_b["state"].keys() and len(opt_a["state"]) > 0
        for key, tensors in opt_a["state"].items():
            for field, value in tensors.items():
                torch.testing.assert_close(
                    opt_b["state"][key][field], value, rtol=0, atol=0, msg=f"{ckpt} optimizer {key} {field}"
                )
        assert [g["lr"] for g in opt_a["param_groups"]] == [g["lr"] for g in opt_b["param_groups"]]
        sched_a = torch.load(ca / "scheduler.pt", weights_only=True)
        sched_b = torch.load(cb / "scheduler.pt", weights_only=True)
        assert sched_a["last_epoch"] == sched_b["last_epoch"] == int(ckpt.split("-")[1])


# --------------------------------------------------------------------------- 4. two processes


def test_two_processes_gather_into_one_bank(tiny_data, hf_env, tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 on CPU: a real 2-process (gloo) run, each process on its own
    data, every process's bank holding the writes of both, and identical banks (checked at every log)."""
    wrapper = write_wrapper(tmp_path)
    out, record = tmp_path / "out", tmp_path / "rec"
    env = dict(hf_env, LARVSEG_TEST_RECORD=str(record), OMP_NUM_THREADS="1")
    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    proc = check_ok(run([*launch, wrapper, *tiny_args(tiny_data, out, steps=4)], env))
    assert "Memory banks differ" not in proc.stderr
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in proc.stderr  # not two independent single runs

    records = read_records(record)
    assert len(records) == 2
    for rec in records:
        assert rec["num_processes"] == 2 and rec["world_size"] == 2
        assert rec["steps_run"] == 4 and len(rec["enqueued_ids"]) == 4
    rank0, rank1 = records
    # Each process sees its own share of the data ...
    assert rank0["enqueued_ids"] != rank1["enqueued_ids"]
    # ... and every bank got the writes of both processes, more than any single process enqueued.
    local = [sum(len(ids) for ids in rec["enqueued_ids"]) for rec in records]
    for rec in records:
        assert sum(rec["bank_num_writes"]) == sum(local) > max(local)
    assert rank0["bank_num_writes"] == rank1["bank_num_writes"]
    assert rank0["bank_slots_sum"] == rank1["bank_slots_sum"]
    saved = load_file(out / "model.safetensors")["memory_bank.num_writes"]
    assert saved.tolist() == rank0["bank_num_writes"]

    logs = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logs) == 4 and all("bank_checksum" in entry for entry in logs)
    trainer_eval = json.loads((out / "eval_results.json").read_text())
    assert trainer_eval["eval_mean_iou"] >= 0
    # Each process scored a shard and gathered the other's rows: both hold the same full results (NaN-safe
    # comparison through JSON), and they equal a single-process evaluation of the saved model.
    differ = [k for k in rank0["state_sums"] if rank0["state_sums"][k] != rank1["state_sums"][k]]
    assert not differ, differ
    assert json.dumps(rank0["segmentation_results"]) == json.dumps(rank1["segmentation_results"])
    assert len(rank0["segmentation_results"]["per_category_iou"]) == len(ALL_NAMES)
    check_ok(run([PYTHON, EVALUATE, "--model", out], hf_env))
    single = json.loads((out / "evaluation" / "metrics.json").read_text())
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy", "base_mean_iou", "novel_mean_iou"):
        assert rank0["segmentation_results"][key] == pytest.approx(single[key], abs=1e-9), key
        assert trainer_eval[f"eval_{key}"] == pytest.approx(single[key], abs=1e-9), key


# --------------------------------------------------------------------------- 5. model card, Hub folder


def test_output_folder_is_a_hub_model_folder(vit_run):
    out, _ = vit_run
    for name in (
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "larvseg_training.json",
        "configuration_larvseg.py",
        "modeling_larvseg.py",
        "image_processing_larvseg.py",
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    auto_map = config["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_larvseg.LarvSegConfig"
    assert auto_map["AutoModel"] == auto_map["AutoModelForSemanticSegmentation"]
    assert auto_map["AutoModelForSemanticSegmentation"] == "modeling_larvseg.LarvSegForSemanticSegmentation"
    for reference in auto_map.values():
        assert (out / f"{reference.split('.')[0]}.py").is_file(), reference
    assert len(config["id2label"]) == len(ALL_NAMES)
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["auto_map"]["AutoImageProcessor"].startswith("image_processing_larvseg.")

    card = (out / "README.md").read_text()
    assert not re.search(r"\$\{?[A-Za-z_]", card), "unfilled template placeholder in the model card"
    assert f"**{len(ALL_NAMES)} classes**" in card
    assert f'{len(BASE_NAMES)} "base" classes' in card and f'{len(NOVEL_NAMES)} "novel" classes' in card
    metrics = json.loads((out / "eval_results.json").read_text())
    for key, label in (("base_mean_iou", "mIoU (base)"), ("novel_mean_iou", "mIoU (novel)")):
        assert f"name: {label}\n      value: {metrics[f'eval_{key}']:.4f}" in card, key
    assert f'from_pretrained("{HUB_ID}", trust_remote_code=True)' in card
    assert f'model="{HUB_ID}"' in card
    assert "generated_from_trainer" not in card
    assert "# tiny-larvseg" in card


def test_training_record_names_the_data(vit_run):
    from larvseg_hf.training.record import TrainingRecord

    out, _ = vit_run
    record = TrainingRecord.read(out)
    assert record.base_ids == list(range(len(BASE_NAMES)))
    assert record.novel_ids == list(range(len(BASE_NAMES), len(ALL_NAMES)))
    assert record.eval_spec.endswith("mask:eval") and record.builtin_eval_dir is None
    assert record.mask_data and record.image_data and record.eval_data


def test_saved_folder_loads_with_remote_code_only(vit_run, tiny_data, hf_env, tmp_path):
    from PIL import Image

    from larvseg_hf import LarvSegForSemanticSegmentation, LarvSegImageProcessor

    out, _ = vit_run
    script = tmp_path / "remote_code_check.py"
    script.write_text(REMOTE_CODE_CHECK)
    image_path = tiny_data / "mask" / "eval" / "x0.png"
    # cwd outside the repository and no PYTHONPATH: larvseg_hf is reachable only through the saved code files.
    env = {k: v for k, v in hf_env.items() if k != "PYTHONPATH"}
    proc = check_ok(run([PYTHON, script, out, image_path], env, cwd=tmp_path))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["larvseg_hf_loaded"]
    assert all(module.startswith("transformers_modules") for module in result["modules"]), result["modules"]

    # Same predictions as the installed package gives for that folder; the memory bank came back too.
    model = LarvSegForSemanticSegmentation.from_pretrained(out).eval()
    processor = LarvSegImageProcessor.from_pretrained(out)
    image = Image.open(image_path).convert("RGB")
    with torch.no_grad():
        outputs = model(**processor(image, return_tensors="pt"))
    label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
    torch.testing.assert_close(torch.tensor(result["logits"]), outputs.logits.flatten(), rtol=1e-5, atol=1e-5)
    assert result["label_map"] == label_map.tolist()
    assert result["num_writes"] == model.memory_bank.num_writes.tolist() and sum(result["num_writes"]) > 0


def test_push_to_hub_uploads_the_larvseg_card(tiny_data, tmp_path, monkeypatch):
    """--push_to_hub in-process, with the Hub calls replaced: what would be uploaded, and with which card."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    calls: list[dict] = []

    def create_repo(self, repo_id, *args, **kwargs):
        calls.append({"call": "create_repo", "repo_id": repo_id})
        return types.SimpleNamespace(repo_id=repo_id, url=f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, run_as_future=False, **kwargs):
        folder = Path(folder_path)
        readme = folder / "README.md"
        calls.append(
            {
                "call": "upload_folder",
                "repo_id": repo_id,
                "path_in_repo": path_in_repo,
                "folder": str(folder),
                "files": sorted(p.name for p in folder.iterdir()),
                "readme": readme.read_text() if readme.is_file() else None,
                **{k: kwargs.get(k) for k in ("commit_message", "ignore_patterns")},
            }
        )
        if run_as_future:
            future = concurrent.futures.Future()
            future.set_result(None)
            return future
        return types.SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)

    out = tmp_path / "push"
    train = load_train_script()
    metrics = train.run([*tiny_args(tiny_data, out, steps=2), "--push_to_hub", "--hub_model_id", "me/x"])
    assert "eval_mean_iou" in metrics

    assert calls[0] == {"call": "create_repo", "repo_id": "me/x"}
    uploads = [c for c in calls if c["call"] == "upload_folder"]
    assert uploads and all(u["repo_id"] == "me/x" for u in uploads)
    final = uploads[-1]
    assert final["folder"] == str(out) and final["path_in_repo"] is None
    assert final["commit_message"] == "LarvSeg model trained with larvseg-hf"
    assert any("checkpoint-" in pattern for pattern in final["ignore_patterns"])
    for name in (
        "README.md",
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "configuration_larvseg.py",
        "modeling_larvseg.py",
        "image_processing_larvseg.py",
        "larvseg_training.json",
    ):
        assert name in final["files"], name
    card = final["readme"]
    assert "# x\n" in card and f"**{len(ALL_NAMES)} classes**" in card
    assert 'from_pretrained("me/x", trust_remote_code=True)' in card
    assert f"value: {metrics['eval_novel_mean_iou']:.4f}" in card
    # No upload of the model folder ever carries Trainer's generic card.
    for upload in uploads:
        assert upload["readme"] is None or "generated_from_trainer" not in upload["readme"], upload[
            "commit_message"
        ]


# --------------------------------------------------------------------------- 6. data errors


def test_bad_label_in_data_fails_before_step_one_naming_the_mask_file(tiny_data, hf_env, tmp_path):
    # One step of 2 images from 40 rows would almost never draw row 37: only the check before training sees it.
    bad = build_bad_mask_dataset(tmp_path, bad_row=37, num_images=40)
    args = tiny_args(tiny_data, tmp_path / "out", steps=1, eval_set=False)
    args[args.index("--mask_datasets") + 1] = f"{bad}:train"
    args[args.index("--per_device_train_batch_size") + 1] = "2"
    proc = run([PYTHON, TRAIN, *args], hf_env)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "LabelOutOfRangeError:" in line]
    assert errors, proc.stderr[-3000:]
    message = errors[-1]
    assert "[77]" in message and "outside the dataset's 4 classes" in message, message
    assert "row 37" in message and "x37_label.png" in message and "x37.png" in message, message
    assert f"{bad}:train" in message, message
    assert "checking" in proc.stderr  # the pre-training check's progress bar
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no step, no checkpoint


@pytest.mark.parametrize("optim", ["adamw_torch", "sgd"])
def test_mask_norm_scalars_get_their_own_learning_rate(tmp_path, optim):
    """--mask_norm_lr_multiplier: gamma and beta in a group of their own at lr x multiplier, without weight
    decay, kept at that ratio by the schedule; a first AdamW step moves gamma by that learning rate."""
    from conftest import make_model

    from larvseg_hf.training.arguments import LarvSegTrainingArguments
    from larvseg_hf.training.trainer import LarvSegTrainer

    model = make_model(train=True)
    args = LarvSegTrainingArguments(
        output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.01, optim=optim, report_to="none",
        mask_norm_lr_multiplier=30.0, lr_scheduler_type="cosine", use_cpu=True,
    )  # fmt: skip
    trainer = LarvSegTrainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    scalars = {id(model.head.mask_norm.gamma), id(model.head.mask_norm.beta)}
    (own,) = [g for g in optimizer.param_groups if {id(p) for p in g["params"]} & scalars]
    assert {id(p) for p in own["params"]} == scalars and own["weight_decay"] == 0.0
    others = [g for g in optimizer.param_groups if g is not own and g["params"]]
    assert sum(len(g["params"]) for g in others) == sum(1 for _ in model.parameters()) - 2
    groups = len(optimizer.param_groups)
    assert trainer.create_optimizer() is optimizer and len(optimizer.param_groups) == groups  # train() again
    assert {id(p) for p in own["params"]} == scalars
    for _ in range(4):
        assert own["lr"] == pytest.approx(30 * others[0]["lr"])
        optimizer.step()
        scheduler.step()
    if optim == "adamw_torch":
        gamma = model.head.mask_norm.gamma
        trainer.optimizer.zero_grad()
        before, lr = gamma.detach().item(), own["lr"]
        (-gamma).sum().backward()
        optimizer.step()
        assert gamma.detach().item() - before == pytest.approx(lr, rel=1e-3)


@pytest.mark.parametrize("return_outputs", [False, True])
def test_trainer_asks_for_logits_only_when_it_returns_the_outputs(return_outputs):
    """Training steps (return_outputs False) skip the output's logits; evaluation's prediction step gets them."""
    from larvseg_hf.training.trainer import LarvSegTrainer

    seen = []

    def model(**kwargs):
        seen.append(kwargs.pop("output_logits"))
        return {"loss": torch.tensor(1.0), **{name: torch.tensor(0.5) for name in LOSS_TERMS}}

    trainer = types.SimpleNamespace(_term_sums=torch.zeros(3), _term_count=0)
    result = LarvSegTrainer.compute_loss(
        trainer, model, {"pixel_values": None}, return_outputs=return_outputs
    )
    assert seen == [return_outputs]
    assert (isinstance(result, tuple)) == return_outputs
