"""Turn parsed arguments into data sources, a vocabulary, a model and evaluation rows."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..configuration_larvseg import LarvSegConfig, novel_label_ids
from ..data import dataset_options as options_module
from ..data.loaders import load_classification_dataset, load_segmentation_dataset, load_weak_dataset
from ..data.mixing import build_mixed_dataset
from ..data.source_dataset import SourceDataset
from ..data.transforms import TrainTransform
from ..data.validation import validate_sources
from ..data.vocabulary_mapping import VocabularyMapping, build_union_vocabulary
from ..image_processing_larvseg import BACKBONE_SETTINGS, LarvSegImageProcessor
from ..known_vocabularies import KnownVocabulary, known_vocabulary
from ..modeling_larvseg import LarvSegForSemanticSegmentation
from ..vocabulary import UNMAPPED, UnionVocabulary
from .arguments import DataArguments, ModelArguments
from .presets import backbone_preset

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Everything the training script needs to know about its data."""

    sources: list[SourceDataset]
    mapping: VocabularyMapping
    base_ids: list[int]
    eval_rows: Callable[[], Iterator[dict[str, Any]]] | None
    num_eval: int | None
    description: dict[str, str] = field(default_factory=dict)
    credit: str = ""
    eval_source: SourceDataset | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.mapping.vocabulary.names)

    @property
    def novel_ids(self) -> list[int]:
        return novel_label_ids(len(self.class_names), self.base_ids)

    @property
    def source_vocabularies(self) -> dict[str, list[int]]:
        """Each training source's own classes in vocabulary ids (config.source_vocabularies)."""
        return {
            source.name: sorted({int(i) for i in self.mapping.index_maps[source.name] if i >= 0})
            for source in self.sources
        }


def split_spec(spec: str) -> tuple[str, str]:
    """NAME[:SPLIT] (a Windows drive letter or a path containing ':' stays whole when it exists)."""
    import os

    if ":" in spec and not os.path.exists(spec):
        name, split = spec.rsplit(":", 1)
        return name, split
    return spec, "train"


def column_choice(values: list[str], spec: str) -> str | None:
    """The column that `--image_column` / `--label_column` values name for dataset `spec`: its own
    `SPEC=COLUMN` entry, else a plain `COLUMN` entry, else None (the loader's default)."""
    plain, own = None, None
    for value in values:
        dataset, sep, column = value.rpartition("=")
        if not sep:
            plain = value
        elif dataset == spec:
            own = column
    return own or plain


def check_column_specs(data_args: DataArguments) -> None:
    """`DATASET=COLUMN` entries must name a dataset of this run (a typo would silently use the default)."""
    specs = {*data_args.mask_datasets, *data_args.image_datasets, *data_args.weak_datasets}
    if data_args.eval_dataset:
        specs.add(data_args.eval_dataset)
    for flag, values in (
        ("--image_column", data_args.image_column),
        ("--label_column", data_args.label_column),
    ):
        for value in values:
            dataset, sep, _ = value.rpartition("=")
            if sep and dataset not in specs:
                raise ValueError(
                    f"{flag} {value!r} names dataset {dataset!r}, which is not one of this run's datasets "
                    f"{sorted(specs)}."
                )


def _specs_by_role(data_args: DataArguments) -> dict[str, list[str]]:
    """Each `--dataset_options` role's dataset specs (`eval_dataset`: none or one)."""
    values = {role: getattr(data_args, role) for role in options_module.ROLES}
    return {role: [value] if isinstance(value, str) else list(value or ()) for role, value in values.items()}


def dataset_reading(data_args: DataArguments, spec: str, role: str) -> tuple[dict[str, Any], bool]:
    """(loader keyword arguments, drop_unmapped_rows) for dataset `spec` of flag `role`.

    `--dataset_options` give the defaults (data/dataset_options.py); `--image_column` / `--label_column`
    entries, typed for this run, win over them. `load_kwargs` are for Hub datasets: a local folder in the same
    role (a user's own copy) is read without them."""
    options = options_module.options_for(data_args.dataset_options, spec, role)
    label_maps = role != "image_datasets"
    not_here = options_module.IMAGE_LEVEL_KEYS if label_maps else options_module.LABEL_MAP_KEYS
    wrong = [key for key in options if key in not_here]
    if wrong:
        kind = "label-map" if label_maps else "image-level"
        raise options_module.DatasetOptionsError(
            f"--dataset_options for {spec} ({role}, {kind} data): {wrong} do not apply to {kind} data"
        )
    kwargs: dict[str, Any] = {}
    if options.get("load_kwargs"):
        if os.path.exists(split_spec(spec)[0]):  # a local copy in a Hub dataset's role: imagefolder or shards
            logger.info(
                "%s is a local folder: its role's load_kwargs %s are for the Hub copy",
                spec,
                options["load_kwargs"],
            )
        else:
            kwargs.update(options["load_kwargs"])
    label = column_choice(data_args.label_column, spec) or options.get("label_column")
    image = column_choice(data_args.image_column, spec) or options.get("image_column")
    kwargs["label_column"] = label
    if image:
        kwargs["image_column"] = image
    if "class_names" in options:
        kwargs["class_names"] = options_module.class_names_from_option(options["class_names"])
    for key in options_module.LABEL_MAP_KEYS:
        if key in options:
            kwargs[key] = options[key]
    return kwargs, bool(options.get("drop_unmapped_rows", False))


def drop_unmapped_rows(source: SourceDataset, mapping: VocabularyMapping) -> SourceDataset:
    """`source` without the image-level rows none of whose labels is in the vocabulary.

    A fixed vocabulary ignores the classes it lacks; without their rows an ImageNet-21K copy trains only on
    the synsets the vocabulary has (the paper's IN-124 / IN-585 subsets) instead of mostly empty samples.
    Reads the label column only (streaming sources: as training reads them)."""
    lut = mapping.index_maps[source.name]
    if bool((lut >= 0).all()):
        return source

    def keep(cells: list[Any], indices: list[int]) -> list[bool]:
        return [
            bool((lut[source.parse_image_labels(cell, index)] >= 0).any())
            for cell, index in zip(cells, indices, strict=True)
        ]

    kept = source.dataset.filter(keep, input_columns=[source.label_column], with_indices=True, batched=True)
    if not source.streaming:
        logger.info("%s: %d of %d rows have a label in the vocabulary", source.name, len(kept), len(source))
        if len(kept) == 0:
            raise ValueError(
                f"no row of {source.name} has a label in the vocabulary ({mapping.num_labels} classes); "
                "drop_unmapped_rows would leave it empty"
            )
    return source.with_dataset(kept)


def known_target(data_args: DataArguments) -> UnionVocabulary | None:
    """The fixed vocabulary `--vocabulary` names (None: the union of the datasets' classes), followed by the
    `--extra_classes` it lacks: the datasets' classes map to either, so a class that only the extra
    vocabulary names gets its data rather than being ignored."""
    if not data_args.vocabulary:
        return None
    if data_args.uses_builtin:
        raise ValueError(
            f"--vocabulary {data_args.vocabulary} needs datasets (--mask_datasets, --image_datasets or "
            "--weak_datasets); the built-in benchmark has its own classes."
        )
    target = known_vocabulary(data_args.vocabulary).to_union_vocabulary(frozen=True)
    if data_args.extra_classes:
        extra = known_vocabulary(data_args.extra_classes)
        names = [*target.names, *_names_to_add(target, extra)]
        target = UnionVocabulary(names, synonyms=target.synonyms, frozen=True)
    return target


def load_training_data(data_args: DataArguments, *, show_progress: bool = True) -> TrainingData:
    target = known_target(data_args)  # before any dataset loads: an unknown name fails at once
    extra = known_vocabulary(data_args.extra_classes) if data_args.extra_classes else None
    data = (
        _builtin_data(data_args, show_progress)
        if data_args.uses_builtin
        else _dataset_data(data_args, target)
    )
    if extra is not None:
        data.mapping = with_extra_classes(data.mapping, extra)
        data.description["extra_classes"] = extra.name
    return data


def with_extra_classes(mapping: VocabularyMapping, extra: KnownVocabulary) -> VocabularyMapping:
    """`mapping` with `extra`'s classes appended after the datasets were mapped (their ids unchanged), so the
    added classes have no data; one the vocabulary already has, by normalised name or synonym, is skipped."""
    vocabulary = mapping.vocabulary
    added = _names_to_add(vocabulary, extra)
    names = [*vocabulary.names, *added]
    union = UnionVocabulary(names, synonyms=vocabulary.synonyms, frozen=True)
    logger.info(
        "--extra_classes %s: %d classes added (%d already in the vocabulary); %d in all",
        extra.name,
        len(added),
        len(extra.class_names) - len(added),
        len(names),
    )
    return dataclasses.replace(mapping, vocabulary=union)


def _names_to_add(vocabulary: UnionVocabulary, extra: KnownVocabulary) -> list[str]:
    """`extra`'s class names that `vocabulary` has neither by normalised name nor by synonym, in order."""
    return [name for name in extra.class_names if vocabulary.get(name) == UNMAPPED]


def _dataset_data(data_args: DataArguments, target: UnionVocabulary | None) -> TrainingData:
    check_column_specs(data_args)
    options_module.check_targets(data_args.dataset_options, _specs_by_role(data_args))
    sources: list[SourceDataset] = []
    to_filter: set[str] = set()
    loaders = (
        ("mask_datasets", load_segmentation_dataset),
        ("image_datasets", load_classification_dataset),
        ("weak_datasets", load_weak_dataset),  # label maps read as image-level label sets; never "base"
    )
    for role, loader in loaders:
        for spec in getattr(data_args, role):
            name, split = split_spec(spec)
            kwargs, drop = dataset_reading(data_args, spec, role)
            sources.append(loader(name, split, streaming=data_args.streaming, dataset_name=spec, **kwargs))
            if drop:
                to_filter.add(spec)
    mapping = build_union_vocabulary(sources, data_args.synonyms, target_vocabulary=target)
    sources = [drop_unmapped_rows(s, mapping) if s.name in to_filter else s for s in sources]
    base: set[int] = set()
    if data_args.base_names_from_masks:
        for source in sources:
            if source.kind == "mask":
                base.update(int(i) for i in mapping.index_maps[source.name] if i >= 0)
    eval_rows, num_eval, eval_source = None, None, None
    if data_args.eval_dataset:
        name, split = split_spec(data_args.eval_dataset)
        eval_source = load_segmentation_dataset(
            name,
            split,
            dataset_name=f"eval:{data_args.eval_dataset}",
            **dataset_reading(data_args, data_args.eval_dataset, "eval_dataset")[0],
        )
        eval_mapping = build_union_vocabulary(
            [eval_source], data_args.synonyms, target_vocabulary=mapping.vocabulary
        )
        eval_rows, num_eval = mapped_eval_rows(eval_source, eval_mapping, data_args.max_eval_samples)
    weak = [f"{spec} (weak: label maps, the classes in each crop)" for spec in data_args.weak_datasets]
    return TrainingData(
        sources,
        mapping,
        sorted(base),
        eval_rows,
        num_eval,
        description={
            "mask_data": ", ".join(data_args.mask_datasets) or "none",
            "image_data": ", ".join([*data_args.image_datasets, *weak]) or "none",
            "eval_data": data_args.eval_dataset or "none",
            **({"eval_spec": data_args.eval_dataset} if data_args.eval_dataset else {}),
        },
        eval_source=eval_source,
    )


def mapped_eval_rows(
    source: SourceDataset, mapping: VocabularyMapping, limit: int | None
) -> tuple[Callable[[], Iterator[dict[str, Any]]], int]:
    """(a function giving the first `limit` rows as {"image", "label" in vocabulary ids}, their number)."""
    total = len(source) if limit is None else min(limit, len(source))

    def rows() -> Iterator[dict[str, Any]]:
        for index in range(total):
            example = mapping.map_example(source.name, source.get_example(index))
            yield {"image": example["image"], "label": example["mask"]}

    return rows, total


def _builtin_data(data_args: DataArguments, show_progress: bool) -> TrainingData:
    from ..data.emoji_scenes import BENCHMARK_CREDIT, SCENE_EMOJI_RANGE, build_emoji_benchmark

    params = data_args.builtin_params()
    bench = build_emoji_benchmark(data_args.builtin_root, params, show_progress=show_progress)
    emoji_per_scene = "-".join(str(n) for n in SCENE_EMOJI_RANGE)
    names = bench.class_names
    # Each split keeps its own label space (as each dataset in the paper); the union is fixed to the
    # benchmark's global order, so vocabulary ids are the root vocabulary.json's.
    own = bench.split_class_names
    sources = [
        load_segmentation_dataset(
            bench.split_dir("mask_train"), class_names=own("mask_train"), dataset_name="emoji mask_train"
        ),
        load_classification_dataset(
            bench.split_dir("image_single"),
            class_names=own("image_single"),
            dataset_name="emoji image_single",
        ),
        load_weak_dataset(
            bench.split_dir("image_weak"), class_names=own("image_weak"), dataset_name="emoji image_weak"
        ),
    ]
    mapping = build_union_vocabulary(sources, target_vocabulary=names)
    eval_source = load_segmentation_dataset(
        bench.split_dir("eval"), class_names=own("eval"), dataset_name="emoji eval"
    )
    eval_rows, num_eval = mapped_eval_rows(
        eval_source,
        build_union_vocabulary([eval_source], target_vocabulary=names),
        data_args.max_eval_samples,
    )
    return TrainingData(
        sources,
        mapping,
        list(bench.base_ids),
        eval_rows,
        num_eval,
        description={
            "mask_data": (
                f"built-in emoji scenes: {params.num_mask_scenes} scenes of {emoji_per_scene} base emoji with "
                "full masks (classes: background and the base emoji)"
            ),
            "image_data": (
                f"built-in emoji images: {params.num_single_images} single-emoji images, one label "
                "each (every emoji, base and novel, about equally often; no background label), and "
                f"{params.num_weak_scenes} weak scenes of {emoji_per_scene} emoji (at least one base, one novel), "
                "each training crop labelled with every class in view, background and base emoji included, "
                "read from label maps that are never pixel supervision"
            ),
            "eval_data": f"built-in emoji scenes eval ({num_eval} scenes, base and novel emoji, full masks)",
            "root": str(bench.root),
        },
        credit=BENCHMARK_CREDIT,
        eval_source=eval_source,
    )


def validate_training_data(
    data: TrainingData, max_rows: int | None = None, *, show_progress: bool = True
) -> dict[str, int]:
    """Check every training source and the evaluation source before step 1 (see data/validation.py);
    {source name: rows checked}."""
    sources = [*data.sources, *([data.eval_source] if data.eval_source is not None else [])]
    checked = validate_sources(sources, max_rows, show_progress=show_progress)
    logger.info("data checked before training: %s", ", ".join(f"{k} ({v} rows)" for k, v in checked.items()))
    return checked


def build_train_dataset(
    data: TrainingData,
    data_args: DataArguments,
    seed: int,
    length: int,
    rank: int,
    world: int,
    processor: LarvSegImageProcessor | None = None,
):
    """The mixed training set; its transforms rescale and normalise as `processor` (the one saved with the
    model, see `build_image_processor`; None: a default processor's ImageNet mean and std)."""
    if processor is None:
        processor = LarvSegImageProcessor(size_divisor=1)  # crops exactly as given
    ignore_index = data.mapping.ignore_index
    transforms = {
        "mask": TrainTransform.from_processor(
            processor, crop_size=data_args.mask_crop_size, ignore_index=ignore_index
        ),
        "image": TrainTransform.from_processor(
            processor, crop_size=data_args.image_crop_size, ignore_index=ignore_index
        ),
    }
    return build_mixed_dataset(
        data.sources,
        data.mapping,
        mask_fraction=data_args.mask_fraction,
        transforms=transforms,
        length=length,
        seed=seed,
        rank=rank,
        world_size=world,
        decoded_cache_bytes=data_args.decoded_cache_mb * 2**20,
    )


def output_stride(model: LarvSegForSemanticSegmentation) -> int:
    """Feature stride, so that the processor's sizes align with the feature grid."""
    was_training = model.training
    model.eval()  # no BatchNorm statistics from the probe
    with torch.no_grad():
        side = model.backbone(torch.zeros(1, 3, 64, 64)).shape[-1]
    model.train(was_training)
    return 64 // side


def build_image_processor(
    model_args: ModelArguments, data_args: DataArguments, model: LarvSegForSemanticSegmentation
) -> LarvSegImageProcessor:
    """The processor saved next to the model, whose rescale, mean and std the training transforms use too
    (`build_train_dataset`): a LarvSeg checkpoint's own, a backbone checkpoint's
    (`LarvSegImageProcessor.from_backbone`: a ViT in21k backbone normalises with 0.5 / 0.5), else the
    defaults (ImageNet's). Evaluation size, the model's feature stride and ignore index in every case."""
    settings = {
        "size": {"height": data_args.eval_size, "width": data_args.eval_size},
        "size_divisor": output_stride(model),
        "ignore_index": model.config.ignore_index,
    }
    if model_args.model_name_or_path:
        try:
            saved = LarvSegImageProcessor.from_pretrained(model_args.model_name_or_path)
        except OSError as err:  # a checkpoint saved without its processor
            logger.warning(
                "%s has no usable preprocessor_config.json (%s): normalising with ImageNet's mean and std",
                model_args.model_name_or_path,
                str(err).splitlines()[0],
            )
            return LarvSegImageProcessor(**settings)
        return LarvSegImageProcessor(**{key: getattr(saved, key) for key in BACKBONE_SETTINGS}, **settings)
    if model_args.backbone_name_or_path:
        return LarvSegImageProcessor.from_backbone(model_args.backbone_name_or_path, **settings)
    return LarvSegImageProcessor(**settings)


def build_model(model_args: ModelArguments, data: TrainingData) -> LarvSegForSemanticSegmentation:
    model = _build_model(model_args, data)
    if model_args.text_init:
        from ..text_embeddings import init_class_embeddings_from_names

        init_class_embeddings_from_names(
            model, model_args.text_encoder, freeze=bool(model_args.freeze_class_embeddings)
        )
    return model


def _build_model(model_args: ModelArguments, data: TrainingData) -> LarvSegForSemanticSegmentation:
    overrides = {**model_args.config_values(), "source_vocabularies": data.source_vocabularies}
    if model_args.model_name_or_path:
        model = LarvSegForSemanticSegmentation.from_pretrained(model_args.model_name_or_path, **overrides)
        names = model.class_names
        if names != data.class_names:
            missing = sorted(set(data.class_names) - set(names))[:10]
            raise ValueError(
                f"{model_args.model_name_or_path} has a different vocabulary from the data "
                f"({len(names)} vs {len(data.class_names)} classes; e.g. missing {missing})."
            )
        return model
    if model_args.backbone_name_or_path:
        return LarvSegForSemanticSegmentation.from_backbone(
            model_args.backbone_name_or_path,
            vocabulary=data.class_names,
            base_label_ids=data.base_ids,
            head_hidden_size=model_args.head_hidden_size,
            ignore_index=data.mapping.ignore_index,
            **overrides,
        )
    config = LarvSegConfig(
        backbone_config=backbone_preset(model_args.backbone),
        id2label=dict(enumerate(data.class_names)),
        base_label_ids=data.base_ids,
        head_hidden_size=model_args.head_hidden_size,
        ignore_index=data.mapping.ignore_index,
        **overrides,
    )
    return LarvSegForSemanticSegmentation(config)
