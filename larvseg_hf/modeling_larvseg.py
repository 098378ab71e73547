# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""PyTorch LarvSeg: backbone -> head (cosine classifier with mask norm) -> criterion (supervised, image-level
and category-wise attentive losses with a memory bank), over a vocabulary mixing mask-supervised and
image-level-supervised categories."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
from transformers.utils import SAFE_WEIGHTS_NAME

from .backbone_larvseg import LarvSegFeatureExtractor, load_pretrained_backbone
from .configuration_larvseg import LarvSegConfig, config_file_errors
from .criterion_larvseg import LarvSegLoss, ScoredGroup, source_pools, union_columns
from .head_larvseg import LarvSegHead, LarvSegMaskNorm
from .input_checks_larvseg import check_inputs
from .memory_bank_larvseg import LarvSegMemoryBank
from .vocabulary import NameIndex

#: State-dict keys of checkpoints saved before the head was its own module (commit 06cff37 and earlier).
LEGACY_KEY_MAPPING = {
    r"^neck\.": "head.neck.",
    r"^pixel_projection\.": "head.pixel_projection.",
    r"^class_projection\.": "head.class_projection.",
    r"^class_embeddings$": "head.class_embeddings",
    r"^mask_norm_gamma$": "head.mask_norm.gamma",
    r"^mask_norm_beta$": "head.mask_norm.beta",
}


@dataclass
class LarvSegSemanticSegmenterOutput(SemanticSegmenterOutput):
    r"""
    logits (`torch.FloatTensor` of shape `(batch_size, num_columns, height, width)`):
        Mask-normed scores at feature resolution; column j is vocabulary id `class_ids[j]`.
    class_ids (`torch.LongTensor` of shape `(num_columns,)`):
        Vocabulary id of each logits column (all ids, the requested subset, or the classes sampled in training).
    class_mask (`torch.BoolTensor` of shape `(batch_size, num_columns)`, *optional*):
        In training, the columns each sample's softmax and mask norm use (its source's sampled classes);
        None when every sample uses every column.
    features (`torch.FloatTensor` of shape `(batch_size, head_hidden_size, height, width)`):
        Detached L2-normalised pixel features z.
    scores (`torch.FloatTensor` of shape `(batch_size, num_columns, height, width)`):
        Detached raw cosine scores s in [-1, 1].
    supervised_loss, image_level_loss, attentive_loss (`torch.FloatTensor`, *optional*):
        Unweighted loss terms, detached, for logging.
    """

    class_ids: torch.LongTensor | None = None
    class_mask: torch.BoolTensor | None = None
    features: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    supervised_loss: torch.FloatTensor | None = None
    image_level_loss: torch.FloatTensor | None = None
    attentive_loss: torch.FloatTensor | None = None


class LarvSegPreTrainedModel(PreTrainedModel):
    config_class = LarvSegConfig
    config: LarvSegConfig
    base_model_prefix = "larvseg"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """As `PreTrainedModel.from_pretrained`; checkpoints with the pre-head key names load too, and a
        broken config.json or weights file is named in the error."""
        legacy = "key_mapping" not in kwargs
        kwargs.setdefault("key_mapping", LEGACY_KEY_MAPPING)
        with config_file_errors(pretrained_model_name_or_path):
            try:
                model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
            except SafetensorError as err:
                files = _unreadable_weight_files(pretrained_model_name_or_path)
                raise OSError(
                    f"The weights of {pretrained_model_name_or_path} are corrupt or truncated: "
                    f"{', '.join(files) or 'model.safetensors'} cannot be read ({err}). Download or save the model "
                    "again."
                ) from err
        if legacy:
            # save_pretrained reverses the renamings it loaded with; the new names are the ones to write.
            (model[0] if isinstance(model, tuple) else model)._weight_conversions = None
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        # register_for_auto_class records one auto class; AutoModel must resolve the same class too.
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.setdefault(
            "AutoModel",
            auto_map.get(
                "AutoModelForSemanticSegmentation", "modeling_larvseg.LarvSegForSemanticSegmentation"
            ),
        )
        self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        backbone = getattr(getattr(self, "backbone", None), "model", None)
        if isinstance(module, LarvSegHead):
            init.normal_(module.class_embeddings, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, LarvSegMaskNorm):
            init.ones_(module.gamma)
            init.zeros_(module.beta)
        elif isinstance(module, LarvSegMemoryBank):
            init.zeros_(module.slots)
            init.zeros_(module.num_writes)
            init.ones_(module.slot_counts)
        elif isinstance(module, LarvSegLoss):
            # Non-persistent, so from_pretrained leaves it as uninitialised memory: rebuild it from the config.
            init.copy_(module.source_pools, source_pools(self.config, module.source_pools.device))
        elif isinstance(module, LarvSegForSemanticSegmentation):
            # Non-persistent, so this runs on loading too (the head alone is skipped once its weights load).
            init.copy_(module.base_mask, _base_mask(self.config, module.base_mask.device))
            # Loading replaces parameters with fresh requires_grad=True ones; the config says whether E is frozen.
            module.head.class_embeddings.requires_grad_(not self.config.freeze_class_embeddings)
        elif isinstance(backbone, PreTrainedModel):
            backbone._init_weights(module)  # ViT position embeddings, cls token, ... as their own model does
        else:
            super()._init_weights(module)


class LarvSegForSemanticSegmentation(LarvSegPreTrainedModel):
    """LarvSeg segmenter. `forward(pixel_values, labels=None, image_labels=None, class_ids=None)`."""

    # The loss is already a mean; Trainer must keep scaling it for gradient accumulation.
    accepts_loss_kwargs = False

    def __init__(self, config: LarvSegConfig):
        super().__init__(config)
        if config.num_labels < 1:
            raise ValueError("LarvSeg needs a non-empty vocabulary: config.id2label has no classes.")
        self.backbone = LarvSegFeatureExtractor(config)
        self.head = LarvSegHead(config, self.backbone.channels)
        self.memory_bank = LarvSegMemoryBank(
            config.num_labels,
            self.head.hidden_size,
            size=config.memory_bank_size,
            warmup=config.memory_bank_warmup,
            dtype=config.memory_bank_dtype,
        )
        self.criterion = LarvSegLoss(config)
        # Derived from the config, so rebuilt (in _init_weights) rather than saved.
        self.register_buffer("base_mask", _base_mask(config), persistent=False)
        self.post_init()

    # ----------------------------------------------------------------------------------------- vocabulary

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    def resolve_class_ids(self, classes: Sequence[int | str] | torch.Tensor) -> torch.LongTensor:
        """Vocabulary ids from a list of ids or names (names matched as training merges them, see
        `NameIndex`). One string, floats, duplicates, unknown or ambiguous names are errors, never guessed."""
        if isinstance(classes, str):
            raise TypeError(
                f"class_ids must be a list of class names or ids, not one string ({classes!r} would be read "
                f"letter by letter); pass [{classes!r}]."
            )
        if isinstance(classes, torch.Tensor):
            if classes.dtype.is_floating_point or classes.dtype.is_complex or classes.dtype == torch.bool:
                raise TypeError(f"class_ids must hold integer ids, got a tensor of dtype {classes.dtype}.")
            ids = classes.to(dtype=torch.long, device=self.device).flatten()
        else:
            try:
                items = list(classes)
            except TypeError:
                raise TypeError(
                    f"class_ids must be a list of class names or ids, got {type(classes).__name__}: {classes!r}"
                ) from None
            index = self._name_index()
            ids_list = []
            for item in items:  # the user's request, a handful of entries; not a training-step loop
                if isinstance(item, str):
                    ids_list.append(index.index(item))
                elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
                    ids_list.append(int(item))
                else:
                    raise TypeError(
                        f"class_ids entries must be class names (str) or integer ids, got {type(item).__name__}: "
                        f"{item!r}."
                    )
            ids = torch.tensor(ids_list, dtype=torch.long, device=self.device)
        if ids.numel() == 0:
            raise ValueError("class_ids is empty: restrict inference to at least one class.")
        bad = ids[(ids < 0) | (ids >= self.config.num_labels)]
        if bad.numel():
            raise ValueError(
                f"class ids {bad.unique().tolist()[:10]} are outside the vocabulary [0, {self.config.num_labels})."
            )
        unique, counts = ids.unique(return_counts=True)
        if (counts > 1).any():
            repeated = [f"{self.config.id2label[int(i)]!r} (id {int(i)})" for i in unique[counts > 1][:10]]
            raise ValueError(f"class_ids repeats {', '.join(repeated)}; give each class once.")
        return ids

    def _name_index(self) -> NameIndex:
        """The vocabulary's name lookup, rebuilt when config.id2label is replaced."""
        id2label = self.config.id2label
        cached = getattr(self, "_name_index_cache", None)
        if cached is None or cached[0] is not id2label:
            cached = (id2label, NameIndex(self.config.class_names, what="model's vocabulary"))
            self._name_index_cache = cached
        return cached[1]

    # ----------------------------------------------------------------------------------------- forward

    def pixel_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected pixel features z (B, d, h, w)."""
        return self.head.pixel_features(self.backbone(pixel_values))

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.LongTensor | None = None,
        image_labels: torch.Tensor | None = None,
        class_ids: Sequence[int | str] | torch.Tensor | None = None,
        coseg: bool = False,
        pixel_mask: torch.Tensor | None = None,
        source_index: torch.LongTensor | None = None,
        output_logits: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> LarvSegSemanticSegmenterOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            Pixel masks in vocabulary ids, `config.ignore_index` where unlabeled (all of it for image-level samples).
        image_labels (`torch.Tensor` of shape `(batch_size, num_labels)`, *optional*):
            Multi-hot image-level label sets (all zeros for mask samples).
        class_ids (`list[int | str]` or `torch.LongTensor`, *optional*):
            Restrict inference to these classes (ids or names).
        coseg (`bool`, *optional*, defaults to `False`):
            Attentive inference: multiply each class's logits by its CA-Cls attention from the memory bank.
        pixel_mask (`torch.Tensor` of shape `(batch_size, height, width)`, *optional*):
            1 for the image's own pixels, 0 for padding. Image-level losses and memory-bank writes use only
            the image's pixels. Defaults to all ones.
        source_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Each sample's training source, an index into `config.source_vocabularies`: with
            `config.per_source_columns` each source's samples see their source's own classes, and with
            `config.per_source_losses` every loss is averaged per source (see the config).
        output_logits (`bool`, *optional*, defaults to `True`):
            False returns the loss and its terms only (`logits`, `scores` and `features` None), for a caller
            that needs nothing else, as the trainer's training steps: in training on several sources the
            output's logits are a copy of every group's onto the union of their columns, written for the
            output alone.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        check_inputs(self.config, self.dtype, pixel_values, labels, image_labels, pixel_mask)
        has_targets = labels is not None or image_labels is not None

        class_mask, groups = None, None
        if class_ids is not None:
            columns = self.resolve_class_ids(class_ids)
        elif self.training and has_targets:
            groups = self.criterion.sample_groups(labels, image_labels, pixel_values.shape[0], source_index)
            columns, class_mask = union_columns(groups, pixel_values.shape[0])
            if class_mask is None or columns.numel() <= self.config.num_sampled_classes or coseg:
                groups = None  # one pass over the union costs no more than one group's budget
        else:
            columns = torch.arange(self.config.num_labels, device=self.device)

        feature_map = self.backbone(pixel_values)
        if groups is None:
            features, scores, logits = self.head(feature_map, columns, class_mask)
        else:
            # Each group is scored on its own columns only: with several sources of ~num_sampled_classes
            # columns each, the union is several times wider than any sample uses.
            features = self.head.pixel_features(feature_map)
            groups = self._score_groups(features, groups, columns)
            scores, logits = (
                _union_layout(groups, columns, features.shape[0]) if output_logits else (None, None)
            )
        if coseg:
            logits = logits * torch.sigmoid(self._coseg_attention(features, scores, columns))

        loss, terms = None, {}
        if groups is not None:
            terms = self.criterion.grouped(
                self.memory_bank,
                tuple(pixel_values.shape[-2:]),
                groups,
                labels,
                image_labels,
                pixel_mask,
                source_index,
            )
        elif has_targets:
            terms = self.criterion(
                self.memory_bank,
                tuple(pixel_values.shape[-2:]),
                logits,
                features,
                scores,
                columns,
                class_mask,
                labels,
                image_labels,
                pixel_mask,
                source_index,
            )
        if terms:
            loss = self.criterion.total(terms)
            terms = {name: value.detach() for name, value in terms.items()}

        output = LarvSegSemanticSegmenterOutput(
            loss=loss,
            logits=logits if output_logits else None,
            class_ids=columns,
            class_mask=class_mask,
            features=features.detach() if output_logits else None,
            scores=scores.detach() if output_logits else None,
            **terms,
        )
        return output if return_dict else output.to_tuple()

    def _score_groups(
        self, features: torch.Tensor, groups: list[tuple[torch.Tensor, torch.Tensor]], columns: torch.Tensor
    ) -> list[ScoredGroup]:
        """Each group's samples scored on its own columns. The samples are taken group after group as
        slices of one tensor (one gather when the batch is not in group order, none when it is), so the
        backward gathers the features' gradients with one concatenation, not one scatter per group; the
        class vectors of the union of the columns are projected once and each group selects its own."""
        order = _group_order([rows for rows, _ in groups])
        if order is not None:
            features = features[order]
        parts = features.split([rows.numel() for rows, _ in groups])
        vectors = self.head.class_vectors(columns)
        return [
            ScoredGroup(
                rows,
                ids,
                part,
                *self.head.classify(
                    part, ids, vectors=vectors.index_select(0, torch.searchsorted(columns, ids))
                ),
            )
            for (rows, ids), part in zip(groups, parts, strict=True)  # one per source present, a handful
        ]

    def _coseg_attention(self, features, scores, columns) -> torch.Tensor:
        """Attention logits (B, K, h, w) for every (image, column) whose class has a usable bank; 0 elsewhere
        so that sigmoid(0) = 0.5 scales those columns uniformly."""
        batch, num_columns = scores.shape[:2]
        pair_image = torch.arange(batch, device=scores.device).repeat_interleave(num_columns)
        pair_column = torch.arange(num_columns, device=scores.device).repeat(batch)
        usable = self.memory_bank.usable(columns)
        attention = self.criterion.attention_logits(
            self.memory_bank, features, scores, columns, usable, pair_image, pair_column
        )
        attention = attention.view(batch, num_columns, *scores.shape[-2:])
        return attention * usable[None, :, None, None]

    # ----------------------------------------------------------------------------------------- building

    @classmethod
    def from_backbone(
        cls,
        backbone_name_or_path: str | Path,
        vocabulary: Sequence[str],
        base_label_ids: Sequence[int] | None = None,
        out_features: Sequence[str] | None = None,
        **config_kwargs,
    ) -> LarvSegForSemanticSegmentation:
        """A LarvSeg model on a pretrained backbone (Hub id or local folder) with a fresh head."""
        vocabulary = list(vocabulary)
        if not vocabulary:
            raise ValueError("vocabulary is empty: LarvSeg needs at least one class name.")
        if len(set(vocabulary)) != len(vocabulary):
            duplicates = sorted({n for n in vocabulary if vocabulary.count(n) > 1})[:10]
            raise ValueError(f"vocabulary has duplicate names: {duplicates}")
        pretrained = load_pretrained_backbone(backbone_name_or_path, out_features)
        config = LarvSegConfig(
            backbone_config=pretrained.config,
            id2label=dict(enumerate(vocabulary)),
            base_label_ids=base_label_ids,
            **config_kwargs,
        )
        model = cls(config)
        model.backbone.model.load_state_dict(pretrained.state_dict())
        return model


def _unreadable_weight_files(pretrained_model_name_or_path) -> list[str]:
    """Paths of the safetensors files of a local folder (or of the Hub cache) that safetensors cannot open."""
    path = Path(str(pretrained_model_name_or_path))
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
    else:
        cached = try_to_load_from_cache(str(pretrained_model_name_or_path), SAFE_WEIGHTS_NAME)
        candidates = [Path(cached)] if isinstance(cached, str) else []
    unreadable = []
    for candidate in candidates:
        try:
            with safe_open(candidate, framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError):
            unreadable.append(str(candidate))
    return unreadable


def _group_order(rows: list[torch.Tensor]) -> torch.Tensor | None:
    """The batch rows group after group, the order `_score_groups` takes the samples in; None when that
    is the batch's own order (no gather needed)."""
    order = torch.cat(rows)
    return None if torch.equal(order, torch.arange(order.numel(), device=order.device)) else order


def _union_layout(
    groups: list[ScoredGroup], columns: torch.Tensor, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grouped scores and logits on the batch's one column axis (`columns`), 0 where a sample's group did
    not score a column (class_mask says which it did), for the output only: the losses read the groups, so
    this copy is written in place without autograd (no gradient flows back through the output's logits).
    Written channels-last, the layout the groups' scores have, and group after group as `_score_groups`
    takes the samples, so every copy moves contiguous rows; one gather puts the samples back in order."""
    first = groups[0].logits
    order = _group_order([group.rows for group in groups])
    layouts = []
    with torch.no_grad():
        for name in ("scores", "logits"):
            union = first.new_zeros(batch, *first.shape[-2:], columns.numel())
            start = 0
            for group in groups:  # a handful
                values = getattr(group, name).permute(0, 2, 3, 1)
                union[start : start + values.shape[0]].index_copy_(
                    3, torch.searchsorted(columns, group.columns), values
                )
                start += values.shape[0]
            if order is not None:
                union = union[torch.argsort(order)]
            layouts.append(union.permute(0, 3, 1, 2))
    return layouts[0], layouts[1]


def _base_mask(config: LarvSegConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """(num_labels,) bool: True for the classes with mask supervision (config.base_label_ids)."""
    base = torch.zeros(config.num_labels, dtype=torch.bool, device=device)
    if config.base_label_ids:
        base[list(config.base_label_ids)] = True
    return base


# pipeline("image-segmentation") checks the model's class name against transformers' static table of names,
# which Auto*.register() and trust_remote_code do not extend; without this entry it logs that the model is
# "not supported" although it runs it correctly. The key is not a transformers config type, so the Auto
# mappings, which iterate the config table, are unaffected.
MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault(
    LarvSegConfig.model_type, "LarvSegForSemanticSegmentation"
)

__all__ = ["LarvSegForSemanticSegmentation", "LarvSegPreTrainedModel", "LarvSegSemanticSegmenterOutput"]
