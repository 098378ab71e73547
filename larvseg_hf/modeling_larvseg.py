# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""PyTorch LarvSeg: a cosine-classifier segmenter over a vocabulary mixing mask-supervised and
image-level-supervised categories, with the category-wise attentive classifier (CA-Cls)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoBackbone, AutoConfig, PreTrainedModel, ViTModel
from transformers import initialization as init
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_BACKBONE_MAPPING_NAMES,
    MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES,
)
from transformers.utils import SAFE_WEIGHTS_NAME

from .configuration_larvseg import LarvSegConfig, config_file_errors
from .losses_larvseg import (
    attentive_image_level_loss,
    attentive_scores,
    image_label_pairs,
    image_level_loss,
    mask_norm,
    mask_slot_features,
    sample_classes,
    supervised_loss,
    topk_slot_features,
)
from .memory_bank_larvseg import LarvSegMemoryBank
from .vocabulary import NameIndex


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


class LarvSegFeatureExtractor(nn.Module):
    """Any transformers vision backbone -> one dense (B, C, h, w) feature map."""

    def __init__(self, config: LarvSegConfig):
        super().__init__()
        backbone_config = config.backbone_config
        if config.is_vit_backbone:
            self.model = ViTModel(backbone_config, add_pooling_layer=False)
            self.channels = backbone_config.hidden_size
        else:
            self.model = AutoBackbone.from_config(backbone_config)
            self.channels = sum(self.model.channels)
        self.is_vit = config.is_vit_backbone

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.is_vit:
            patch = self.model.config.patch_size
            height, width = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
            tokens = self.model(pixel_values, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
            return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)
        maps = list(self.model(pixel_values).feature_maps)
        size = maps[0].shape[-2:]
        maps = [
            m if m.shape[-2:] == size else F.interpolate(m, size, mode="bilinear", align_corners=False)
            for m in maps
        ]
        return torch.cat(maps, dim=1)


class LarvSegPreTrainedModel(PreTrainedModel):
    config_class = LarvSegConfig
    config: LarvSegConfig
    base_model_prefix = "larvseg"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """As `PreTrainedModel.from_pretrained`; a broken config.json or weights file is named in the error."""
        with config_file_errors(pretrained_model_name_or_path):
            try:
                return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
            except SafetensorError as err:
                files = _unreadable_weight_files(pretrained_model_name_or_path)
                raise OSError(
                    f"The weights of {pretrained_model_name_or_path} are corrupt or truncated: "
                    f"{', '.join(files) or 'model.safetensors'} cannot be read ({err}). Download or save the model "
                    "again."
                ) from err

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
        if isinstance(backbone, PreTrainedModel):
            backbone._init_weights(module)  # ViT position embeddings, cls token, ... as their own model does
        else:
            super()._init_weights(module)
        if isinstance(module, LarvSegForSemanticSegmentation):
            init.normal_(module.class_embeddings, mean=0.0, std=self.config.initializer_range)
            init.ones_(module.mask_norm_gamma)
            init.zeros_(module.mask_norm_beta)
            # Non-persistent, so from_pretrained leaves it as uninitialised memory: rebuild it from the config.
            init.copy_(module.base_mask, _base_mask(self.config, module.base_mask.device))
            init.copy_(module.source_pools, _source_pools(self.config, module.source_pools.device))
            # Loading replaces parameters with fresh requires_grad=True ones; the config says whether E is frozen.
            module.class_embeddings.requires_grad_(not self.config.freeze_class_embeddings)
        elif isinstance(module, LarvSegMemoryBank):
            init.zeros_(module.slots)
            init.zeros_(module.num_writes)
            init.ones_(module.slot_counts)


class LarvSegForSemanticSegmentation(LarvSegPreTrainedModel):
    """LarvSeg segmenter. `forward(pixel_values, labels=None, image_labels=None, class_ids=None)`."""

    # The loss is already a mean; Trainer must keep scaling it for gradient accumulation.
    accepts_loss_kwargs = False

    def __init__(self, config: LarvSegConfig):
        super().__init__(config)
        if config.num_labels < 1:
            raise ValueError("LarvSeg needs a non-empty vocabulary: config.id2label has no classes.")
        self.backbone = LarvSegFeatureExtractor(config)
        dim = config.head_hidden_size or self.backbone.channels
        self.neck = (
            nn.Conv2d(self.backbone.channels, dim, 1) if dim != self.backbone.channels else nn.Identity()
        )
        self.pixel_projection = nn.Linear(dim, dim, bias=False)  # P
        self.class_projection = nn.Linear(dim, dim, bias=False)  # Q
        self.class_embeddings = nn.Parameter(torch.empty(config.num_labels, dim))  # E
        self.class_embeddings.requires_grad_(not config.freeze_class_embeddings)
        self.mask_norm_gamma = nn.Parameter(torch.ones(()))
        self.mask_norm_beta = nn.Parameter(torch.zeros(()))
        self.memory_bank = LarvSegMemoryBank(
            config.num_labels,
            dim,
            size=config.memory_bank_size,
            warmup=config.memory_bank_warmup,
            dtype=config.memory_bank_dtype,
        )
        # Derived from the config, so rebuilt (in _init_weights) rather than saved.
        self.register_buffer("base_mask", _base_mask(config), persistent=False)
        self.register_buffer("source_pools", _source_pools(config), persistent=False)
        self.post_init()

    # ----------------------------------------------------------------------------------------- vocabulary

    @property
    def class_names(self) -> list[str]:
        return [self.config.id2label[i] for i in range(self.config.num_labels)]

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
            ids = classes.to(dtype=torch.long, device=self.class_embeddings.device).flatten()
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
            ids = torch.tensor(ids_list, dtype=torch.long, device=self.class_embeddings.device)
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
            names = [id2label[i] for i in range(self.config.num_labels)]
            cached = (id2label, NameIndex(names, what="model's vocabulary"))
            self._name_index_cache = cached
        return cached[1]

    # ----------------------------------------------------------------------------------------- features

    def pixel_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected pixel features z (B, d, h, w)."""
        features = self.neck(self.backbone(pixel_values))
        projected = self.pixel_projection(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return F.normalize(projected, dim=1)

    def class_vectors(self, class_ids: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected class embeddings c (K, d).

        Without gradients, the whole vocabulary's vectors are computed once and reused until E or Q
        change (their in-place version counters move), so a 21K-class model does not re-project
        21K x d x d at every image."""
        if not torch.is_grad_enabled():
            vectors = self._cached_class_vectors()
            whole = class_ids.numel() == vectors.shape[0] and torch.equal(
                class_ids, torch.arange(vectors.shape[0], device=class_ids.device)
            )
            return vectors if whole else vectors[class_ids]
        embeddings = self.class_embeddings[class_ids]
        if self.config.freeze_class_embeddings:
            embeddings = embeddings.detach()
        return F.normalize(self.class_projection(embeddings), dim=-1)

    def _cached_class_vectors(self) -> torch.Tensor:
        embeddings, projection = self.class_embeddings, self.class_projection.weight
        key = (
            embeddings._version,
            projection._version,
            embeddings.data_ptr(),
            projection.data_ptr(),
            embeddings.device,
        )
        cache = getattr(self, "_class_vector_cache", None)
        if cache is None or cache[0] != key:
            with torch.no_grad():
                vectors = F.normalize(self.class_projection(embeddings), dim=-1)
            self._class_vector_cache = (key, vectors)
        return self._class_vector_cache[1]

    def _check_inputs(self, pixel_values, labels, image_labels, pixel_mask=None) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(
                f"pixel_values must be a torch.Tensor, got {type(pixel_values).__module__}.{type(pixel_values).__name__}; "
                "prepare images with LarvSegImageProcessor (return_tensors='pt'), or torch.from_numpy(...)."
            )
        if pixel_values.dtype != self.dtype:
            hint = (
                "normalised float pixels come from LarvSegImageProcessor"
                if not pixel_values.dtype.is_floating_point
                else f"cast with pixel_values.to({self.dtype})"
            )
            raise TypeError(
                f"pixel_values has dtype {pixel_values.dtype} but the model's weights are {self.dtype}; {hint}."
            )
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must be (batch, 3, height, width), got shape {tuple(pixel_values.shape)}; "
                "use LarvSegImageProcessor to prepare RGB images."
            )
        batch, _, height, width = pixel_values.shape
        if labels is not None:
            if labels.shape != (batch, height, width):
                raise ValueError(
                    f"labels must be (batch, height, width) = {(batch, height, width)}, got {tuple(labels.shape)}"
                )
            labeled = labels[labels != self.config.ignore_index]
            bad = labeled[(labeled < 0) | (labeled >= self.config.num_labels)]
            if bad.numel():
                raise ValueError(
                    f"labels hold ids {bad.unique().tolist()[:10]} outside the vocabulary [0, {self.config.num_labels}) "
                    f"that are not ignore_index={self.config.ignore_index}."
                )
        if pixel_mask is not None and tuple(pixel_mask.shape) != (batch, height, width):
            raise ValueError(
                f"pixel_mask must be (batch, height, width) = {(batch, height, width)}, got {tuple(pixel_mask.shape)}"
            )
        if image_labels is not None and tuple(image_labels.shape) != (batch, self.config.num_labels):
            raise ValueError(
                f"image_labels must be multi-hot of shape (batch, num_labels) = {(batch, self.config.num_labels)}, "
                f"got {tuple(image_labels.shape)}."
            )

    def _training_columns(
        self,
        labels: torch.Tensor | None,
        image_labels: torch.Tensor | None,
        batch: int,
        source_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class sampling: up to `num_sampled_classes` columns per group of samples, every present class kept.

        Groups are the sources of `source_index` when `config.per_source_columns` and the config knows the
        sources' vocabularies: each draws from its own vocabulary, as each GPU of the reference holds one
        dataset. Otherwise mask and image-level samples form two groups drawing from the whole vocabulary.
        Returns (columns, class_mask (B, K): the columns each sample's softmax and mask norm use), or
        (all ids, None) when every sample may use every class."""
        config, device = self.config, self.class_embeddings.device
        present = torch.zeros(batch, config.num_labels, dtype=torch.bool, device=device)  # per sample
        is_mask = torch.zeros(batch, dtype=torch.bool, device=device)
        if labels is not None:
            valid = labels != config.ignore_index
            is_mask = valid.flatten(1).any(1)
            rows = torch.arange(batch, device=device)[:, None, None].expand_as(labels)
            present[rows[valid], labels[valid]] = True
        if image_labels is not None:
            present |= image_labels > 0
        pools = self.source_pools if config.per_source_columns and source_index is not None else None
        if pools is not None and pools.shape[0] > 0:
            if int(source_index.max()) >= pools.shape[0] or int(source_index.min()) < 0:
                raise ValueError(
                    f"source_index holds {source_index.unique().tolist()}, but the config names "
                    f"{pools.shape[0]} sources: {list(config.source_vocabularies)}"
                )
            group_of = source_index.to(device)
            group_pools = pools
        else:
            if config.num_labels <= config.num_sampled_classes:
                return torch.arange(config.num_labels, device=device), None
            group_of = (~is_mask).long()  # 0: mask samples (and samples without labels), 1: image-level
            group_pools = None
        groups = group_of.unique()
        group_columns = [  # one draw per source present (a handful), not per sample or class
            sample_classes(
                present[group_of == g].any(0),
                config.num_sampled_classes,
                None if group_pools is None else group_pools[g],
            )
            for g in groups.tolist()
        ]
        columns = torch.cat(group_columns).unique()
        allowed = torch.stack([torch.isin(columns, ids) for ids in group_columns])  # (G, K)
        class_mask = allowed[torch.searchsorted(groups, group_of)]
        return columns, class_mask

    # ----------------------------------------------------------------------------------------- forward

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.LongTensor | None = None,
        image_labels: torch.Tensor | None = None,
        class_ids: Sequence[int | str] | torch.Tensor | None = None,
        coseg: bool = False,
        pixel_mask: torch.Tensor | None = None,
        source_index: torch.LongTensor | None = None,
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
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_inputs(pixel_values, labels, image_labels, pixel_mask)
        batch = pixel_values.shape[0]
        has_targets = labels is not None or image_labels is not None

        class_mask = None
        if class_ids is not None:
            columns = self.resolve_class_ids(class_ids)
        elif self.training and has_targets:
            columns, class_mask = self._training_columns(labels, image_labels, batch, source_index)
        else:
            columns = torch.arange(self.config.num_labels, device=self.class_embeddings.device)

        features = self.pixel_features(pixel_values)
        scores = torch.einsum("bdhw,kd->bkhw", features, self.class_vectors(columns))
        logits = mask_norm(
            scores, self.mask_norm_gamma, self.mask_norm_beta, class_mask, self.config.mask_norm_eps
        )
        if coseg:
            logits = logits * torch.sigmoid(self._coseg_attention(features, scores, columns))

        loss = terms = None
        if has_targets:
            image_source = source_index if self.config.per_source_losses else None
            loss, terms = self._losses(
                pixel_values,
                logits,
                features,
                scores,
                columns,
                class_mask,
                labels,
                image_labels,
                pixel_mask,
                image_source,
            )

        output = LarvSegSemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            class_ids=columns,
            class_mask=class_mask,
            features=features.detach(),
            scores=scores.detach(),
            **(terms or {}),
        )
        return output if return_dict else output.to_tuple()

    def _losses(
        self,
        pixel_values,
        logits,
        features,
        scores,
        columns,
        class_mask,
        labels,
        image_labels,
        pixel_mask,
        image_source=None,
    ):
        config = self.config
        rate = config.loss_downsample_rate
        size = (pixel_values.shape[-2] // rate, pixel_values.shape[-1] // rate)
        upsampled = F.interpolate(logits, size, mode="bilinear", align_corners=False)
        zero = upsampled.sum() * 0.0
        terms = {"supervised_loss": zero, "image_level_loss": zero, "attentive_loss": zero}

        # Bank writes of this step, enqueued together after the losses: the gather across processes is a
        # collective, and every pair is scored against the bank as it was before this step.
        writes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (column, slot mean, pixels)
        if labels is not None:
            # Vocabulary id -> column; ids outside this step's columns cannot occur (present ids are always kept).
            to_column = torch.full(
                (config.num_labels,), config.ignore_index, dtype=torch.long, device=labels.device
            )
            to_column[columns] = torch.arange(columns.numel(), device=labels.device)
            valid = labels != config.ignore_index
            full_column_labels = torch.where(valid, to_column[labels.clamp(min=0)], labels)[:, None].float()
            column_labels = F.interpolate(full_column_labels, size, mode="nearest")[:, 0].long()
            terms["supervised_loss"] = supervised_loss(
                upsampled, column_labels, class_mask, config.ignore_index, image_source
            )
            if self.training and config.attentive_loss_weight > 0 and config.memory_bank_from_masks:
                feature_labels = F.interpolate(full_column_labels, features.shape[-2:], mode="nearest")[:, 0]
                writes.append(
                    mask_slot_features(
                        features, scores, feature_labels.long(), config.memory_bank_topk, config.ignore_index
                    )
                )

        if image_labels is not None:
            targets = image_labels[:, columns] > 0
            real = None  # the image's own pixels at loss and feature resolution
            if pixel_mask is not None:
                real = tuple(
                    F.interpolate(pixel_mask[:, None].float(), shape, mode="nearest")[:, 0] > 0.5
                    for shape in (size, features.shape[-2:])
                )
            terms["image_level_loss"] = image_level_loss(
                upsampled, targets, class_mask, None if real is None else real[0], image_source
            )
            if config.attentive_loss_weight > 0:
                terms["attentive_loss"], pair_writes = self._attentive_loss(
                    upsampled, features, scores, columns, class_mask, targets, real, image_source
                )
                if pair_writes is not None:
                    writes.append(pair_writes)

        if writes:
            self.memory_bank.enqueue(
                columns[torch.cat([column for column, _, _ in writes])],
                torch.cat([slot for _, slot, _ in writes]),
                torch.cat([count for _, _, count in writes]),
            )

        loss = (
            config.supervised_loss_weight * terms["supervised_loss"]
            + config.image_loss_weight * terms["image_level_loss"]
            + config.attentive_loss_weight * terms["attentive_loss"]
        )
        return loss, {name: value.detach() for name, value in terms.items()}

    def _attentive_loss(
        self, upsampled, features, scores, columns, class_mask, targets, real=None, image_source=None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
        """CA-Cls loss and, in training, the (column, slot mean, pixels averaged) of each image-level pair
        for the caller to enqueue. `real`: the image's own pixels at loss and at feature resolution, or None for all."""
        config = self.config
        real_loss, real_features = (None, None) if real is None else real
        pair_image, pair_column, pair_rank = image_label_pairs(targets)
        usable = self.memory_bank.usable(columns)
        attention = self._attention_from_bank(
            features, scores, columns, usable, pair_image, pair_column, targets, class_mask, real_features
        )
        attention = torch.sigmoid(
            F.interpolate(attention[:, None], upsampled.shape[-2:], mode="bilinear", align_corners=False)[
                :, 0
            ]
        )
        loss = attentive_image_level_loss(
            upsampled,
            attention,
            pair_image,
            pair_column,
            pair_rank,
            targets,
            class_mask,
            valid=usable[pair_column],
            pixel_mask=real_loss,
            image_source=image_source,
        )
        if not self.training:
            return loss, None  # evaluation scores with the bank but never writes to it
        # Enqueued by the caller after scoring, so attention mines other images' features, never this one's.
        slot_means, slot_counts = topk_slot_features(
            features,
            scores,
            pair_image,
            pair_column,
            config.memory_bank_topk,
            real_features,
            return_counts=True,
        )
        return loss, (pair_column, slot_means, slot_counts)

    def _coseg_attention(self, features, scores, columns) -> torch.Tensor:
        """Attention logits (B, K, h, w) for every (image, column) whose class has a usable bank; 0 elsewhere
        so that sigmoid(0) = 0.5 scales those columns uniformly."""
        batch, num_columns = scores.shape[:2]
        pair_image = torch.arange(batch, device=scores.device).repeat_interleave(num_columns)
        pair_column = torch.arange(num_columns, device=scores.device).repeat(batch)
        usable = self.memory_bank.usable(columns)
        attention = self._attention_from_bank(features, scores, columns, usable, pair_image, pair_column)
        attention = attention.view(batch, num_columns, *scores.shape[-2:])
        return attention * usable[None, :, None, None]

    def _attention_from_bank(
        self,
        features,
        scores,
        columns,
        usable,
        pair_image,
        pair_column,
        targets=None,
        class_mask=None,
        pixel_mask=None,
    ) -> torch.Tensor:
        """CA-Cls attention logits for (image, column) pairs with this model's bank and settings."""
        config = self.config
        return attentive_scores(
            features,
            scores,
            self.memory_bank.class_means(columns),
            usable,
            pair_image,
            pair_column,
            targets,
            background_topk=config.background_topk,
            background_threshold=config.background_score_threshold,
            synonym_mse_threshold=config.synonym_mse_threshold,
            synonym_filter_routes=config.synonym_filter_routes,
            background_suppression=config.background_suppression,
            class_mask=class_mask,
            pixel_mask=pixel_mask,
        )

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
        """A LarvSeg model on a pretrained backbone (Hub id or local folder) with a fresh head.

        ViT checkpoints load as `ViTModel`; anything else as its own `*Backbone` class, since
        `load_backbone` builds random weights and `AutoBackbone.from_pretrained` rejects local paths.
        """
        vocabulary = list(vocabulary)
        if not vocabulary:
            raise ValueError("vocabulary is empty: LarvSeg needs at least one class name.")
        if len(set(vocabulary)) != len(vocabulary):
            duplicates = sorted({n for n in vocabulary if vocabulary.count(n) > 1})[:10]
            raise ValueError(f"vocabulary has duplicate names: {duplicates}")
        backbone_config = AutoConfig.from_pretrained(backbone_name_or_path)
        if backbone_config.model_type == "vit":
            pretrained = ViTModel.from_pretrained(backbone_name_or_path, add_pooling_layer=False)
        else:
            class_name = MODEL_FOR_BACKBONE_MAPPING_NAMES.get(backbone_config.model_type)
            if class_name is None:
                raise ValueError(
                    f"{backbone_name_or_path} is a {backbone_config.model_type!r} model, which has neither a ViT "
                    "encoder nor a transformers Backbone class."
                )
            kwargs = {"out_features": list(out_features)} if out_features else {}
            pretrained = getattr(transformers, class_name).from_pretrained(backbone_name_or_path, **kwargs)
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


def _source_pools(config: LarvSegConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """(S, num_labels) bool: row s is the vocabulary of source s of config.source_vocabularies."""
    vocabularies = list((config.source_vocabularies or {}).values())
    pools = torch.zeros(len(vocabularies), config.num_labels, dtype=torch.bool, device=device)
    for row, ids in enumerate(vocabularies):  # config parsing: once per source
        pools[row, list(ids)] = True
    return pools


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
