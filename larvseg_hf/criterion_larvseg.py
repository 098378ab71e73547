# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""LarvSeg's criterion: which classes a training step scores, the three loss terms (supervised, image-level,
CA-Cls) and the memory-bank writes they imply. Modelled on transformers' `Mask2FormerLoss`: a module with a
`weight_dict` and one entry point returning the unweighted terms; the tensor maths is in losses_larvseg.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .configuration_larvseg import LarvSegConfig
from .losses_larvseg import (
    ItemLosses,
    attentive_image_level_loss,
    attentive_scores,
    image_label_pairs,
    image_level_loss,
    mask_slot_features,
    supervised_loss,
    topk_slot_features,
)
from .memory_bank_larvseg import LarvSegMemoryBank
from .reductions_larvseg import all_true, any_true
from .resize_larvseg import bilinear_resize, nearest_resize

LOSS_TERMS = ("supervised_loss", "image_level_loss", "attentive_loss")


def sample_classes(
    present: torch.Tensor,
    num_samples: int,
    pool: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Ids the classifier sees this step: every present class plus a random fill from `pool`.

    Args:
        present: (N,) bool, classes in this batch's labels; always kept, even beyond `num_samples`.
        num_samples: target number of classes.
        pool: (N,) bool, classes that may be drawn as negatives (a dataset's vocabulary); None = all.
    Returns:
        Sorted (S,) int64 ids with S = max(num_samples capped by the pool, number present).
    """
    present = present.bool()
    candidates = ~present if pool is None else pool.bool() & ~present
    num_extra = min(max(num_samples - int(present.sum()), 0), int(candidates.sum()))
    keys = torch.rand(present.shape, generator=generator, device=present.device)
    keys = torch.where(candidates, keys, torch.full_like(keys, -1.0))
    extra = keys.topk(num_extra).indices if num_extra > 0 else keys.new_zeros(0, dtype=torch.long)
    return torch.cat([present.nonzero().flatten(), extra]).sort().values


def source_pools(config: LarvSegConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """(S, num_labels) bool: row s is the vocabulary of source s of config.source_vocabularies."""
    vocabularies = list((config.source_vocabularies or {}).values())
    pools = torch.zeros(len(vocabularies), config.num_labels, dtype=torch.bool, device=device)
    for row, ids in enumerate(vocabularies):  # config parsing: once per source
        pools[row, list(ids)] = True
    return pools


def union_columns(
    groups: list[tuple[torch.Tensor | None, torch.Tensor]], batch: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One column axis for a batch's groups: (the union of their columns, class_mask (B, K) saying which
    of them each sample's group drew), class_mask None for the group of every sample (rows None)."""
    if len(groups) == 1 and groups[0][0] is None:
        return groups[0][1], None
    columns = torch.cat([ids for _, ids in groups]).unique()
    class_mask = torch.zeros(batch, columns.numel(), dtype=torch.bool, device=columns.device)
    for rows, ids in groups:  # a handful of groups
        class_mask[rows] = torch.isin(columns, ids)
    return columns, class_mask


def _as_slice(rows: torch.Tensor) -> slice | torch.Tensor:
    """Sorted distinct batch rows as a slice when they are consecutive, else themselves."""
    if rows.numel() and int(rows[-1]) - int(rows[0]) + 1 == rows.numel():
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


@dataclass
class ScoredGroup:
    """Samples of a batch scored on their own group's columns only (`LarvSegLoss.grouped`)."""

    rows: torch.Tensor  # (b,) their positions in the batch
    columns: torch.Tensor  # (k,) vocabulary ids of their logits' columns
    features: torch.Tensor  # (b, d, h, w)
    scores: torch.Tensor  # (b, k, h, w)
    logits: torch.Tensor  # (b, k, h, w)


class LarvSegLoss(nn.Module):
    """The LarvSeg training objective. Settings are read from the config at each call, so a config edited
    after construction (an ablation, a loaded model fine-tuned differently) takes effect."""

    def __init__(self, config: LarvSegConfig):
        super().__init__()
        self.config = config
        # Derived from the config, so rebuilt (in _init_weights) rather than saved.
        self.register_buffer("source_pools", source_pools(config), persistent=False)

    @property
    def weight_dict(self) -> dict[str, float]:
        config = self.config
        return {
            "supervised_loss": config.supervised_loss_weight,
            "image_level_loss": config.image_loss_weight,
            "attentive_loss": config.attentive_loss_weight,
        }

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the terms `forward` returns."""
        return sum(weight * terms[name] for name, weight in self.weight_dict.items())

    # ----------------------------------------------------------------------------------------- class sampling

    def sample_groups(
        self,
        labels: torch.Tensor | None,
        image_labels: torch.Tensor | None,
        batch: int,
        source_index: torch.Tensor | None = None,
    ) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
        """Class sampling: up to `num_sampled_classes` columns per group of samples, every present class kept.

        Groups are the sources of `source_index` when `config.per_source_columns` and the config knows the
        sources' vocabularies: each draws from its own vocabulary, as each GPU of the reference holds one
        dataset. Otherwise mask and image-level samples form two groups drawing from the whole vocabulary.
        Returns (sample rows, sorted column ids) per group, or one group (rows None: every sample) of every
        class when no sampling is needed; `union_columns` puts them on one column axis."""
        config, device = self.config, self.source_pools.device
        # Per sample, with one extra column that every unlabelled pixel writes to and that is then dropped:
        # one scatter over the pixels, no boolean indexing.
        present = torch.zeros(batch, config.num_labels + 1, dtype=torch.bool, device=device)
        valid = None
        if labels is not None:
            flat = labels.flatten(1)
            valid = flat != config.ignore_index
            present.scatter_(1, torch.where(valid, flat, config.num_labels), True)
        present = present[:, :-1]
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
                return [(None, torch.arange(config.num_labels, device=device))]
            is_mask = (
                any_true(valid, 1)
                if valid is not None
                else torch.zeros(batch, dtype=torch.bool, device=device)
            )
            group_of = (~is_mask).long()  # 0: mask samples (and samples without labels), 1: image-level
            group_pools = None
        groups = []
        for (
            g
        ) in group_of.unique().tolist():  # one draw per source present (a handful), not per sample or class
            rows = (group_of == g).nonzero().flatten()
            pool = None if group_pools is None else group_pools[g]
            groups.append((rows, sample_classes(present[rows].any(0), config.num_sampled_classes, pool)))
        return groups

    # ----------------------------------------------------------------------------------------- CA-Cls

    def attention_logits(
        self,
        memory_bank: LarvSegMemoryBank,
        features: torch.Tensor,
        scores: torch.Tensor,
        columns: torch.Tensor,
        usable: torch.Tensor,
        pair_image: torch.Tensor,
        pair_column: torch.Tensor,
        targets: torch.Tensor | None = None,
        class_mask: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        pair_rank: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """CA-Cls attention logits (P, h, w) for (image, column) pairs with this config's settings; the one
        place they are read, for the loss and for attentive (coseg) inference alike."""
        config = self.config
        return attentive_scores(
            features,
            scores,
            memory_bank.class_means(columns),
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
            pair_rank=pair_rank,
        )

    # ----------------------------------------------------------------------------------------- losses

    def forward(
        self,
        memory_bank: LarvSegMemoryBank,
        image_size: tuple[int, int],
        logits: torch.Tensor,
        features: torch.Tensor,
        scores: torch.Tensor,
        columns: torch.Tensor,
        class_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_labels: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        source_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The unweighted terms of `weight_dict`. In training, the step's bank writes are enqueued after
        every pair has been scored, so attention mines other images' features, never this batch's; in
        evaluation the bank is read, never written."""
        terms, writes = self._terms(
            memory_bank,
            image_size,
            logits,
            features,
            scores,
            columns,
            class_mask,
            labels,
            image_labels,
            pixel_mask,
            source_index if self.config.per_source_losses else None,
            reduce=True,
        )
        self._enqueue(memory_bank, writes)
        return terms

    def grouped(
        self,
        memory_bank: LarvSegMemoryBank,
        image_size: tuple[int, int],
        groups: list[ScoredGroup],
        labels: torch.Tensor | None = None,
        image_labels: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        source_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`forward` for a batch whose groups of samples were each scored on their own columns only: the
        same terms (each term's items from every group, reduced once) and one bank write for the step."""
        parts: dict[str, list] = {name: [] for name in LOSS_TERMS}
        writes = []
        for group in groups:
            rows = _as_slice(group.rows)  # a view of the full-resolution inputs when the rows are a run
            items, group_writes = self._terms(
                memory_bank,
                image_size,
                group.logits,
                group.features,
                group.scores,
                group.columns,
                None,
                None if labels is None else labels[rows],
                None if image_labels is None else image_labels[rows],
                None if pixel_mask is None else pixel_mask[rows],
                None,
                reduce=False,
            )
            for name, item_losses in items.items():
                parts[name].append((item_losses, group.rows))
            writes += group_writes
        self._enqueue(memory_bank, writes)
        image_source = source_index if self.config.per_source_losses else None
        return {name: ItemLosses.reduce(part, image_source) for name, part in parts.items()}

    @staticmethod
    def _enqueue(memory_bank: LarvSegMemoryBank, writes: list) -> None:
        # The gather across processes in enqueue is a collective: one call per step with every write.
        if writes:
            memory_bank.enqueue(
                torch.cat([column for column, _, _ in writes]),
                torch.cat([slot for _, slot, _ in writes]),
                torch.cat([count for _, _, count in writes]),
            )

    def _terms(
        self,
        memory_bank,
        image_size,
        logits,
        features,
        scores,
        columns,
        class_mask,
        labels,
        image_labels,
        pixel_mask,
        image_source,
        reduce: bool,
    ) -> tuple[dict, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """The terms (means, or with `reduce=False` their `ItemLosses`) and the bank writes (vocabulary id,
        slot mean, pixels) they imply."""
        config = self.config
        rate = config.loss_downsample_rate
        size = (image_size[0] // rate, image_size[1] // rate)
        zero = logits.sum() * 0.0
        terms = dict.fromkeys(LOSS_TERMS, zero if reduce else ItemLosses.empty(logits))

        writes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        if labels is not None:
            # Vocabulary id -> column; ids outside this step's columns cannot occur (present ids are always kept).
            # Nearest resizing copies ids, so they are taken at the loss and feature resolutions first and
            # mapped there, not at full resolution.
            to_column = torch.full(
                (config.num_labels,), config.ignore_index, dtype=torch.long, device=labels.device
            )
            to_column[columns] = torch.arange(columns.numel(), device=labels.device)

            def column_labels_at(shape):
                resized = nearest_resize(labels, shape)
                return torch.where(resized != config.ignore_index, to_column[resized.clamp(min=0)], resized)

            column_labels = column_labels_at(size)
            if any_true(column_labels != config.ignore_index):  # image-level samples: no supervised pixel
                terms["supervised_loss"] = supervised_loss(
                    bilinear_resize(logits, size),
                    column_labels,
                    class_mask,
                    config.ignore_index,
                    image_source,
                    reduce=reduce,
                )
            if self.training and config.attentive_loss_weight > 0 and config.memory_bank_from_masks:
                column, slot, count = mask_slot_features(
                    features,
                    scores,
                    column_labels_at(features.shape[-2:]),
                    config.memory_bank_topk,
                    config.ignore_index,
                )
                writes.append((columns[column], slot, count))

        targets = None if image_labels is None else image_labels.index_select(1, columns) > 0
        if targets is not None and any_true(targets):  # mask samples' groups have no (image, label) pair
            # The image's own pixels at loss and at feature resolution (the latter None: all of them). The
            # image-level terms pool the logits as upsampled to the loss resolution, computed at the logits'
            # own resolution (the pooling weights are brought down instead: see masked_mean_pool).
            # No padding anywhere: the unmasked statistics and their fast paths.
            if pixel_mask is None or all_true(pixel_mask.bool()):
                real_loss = torch.ones(logits.shape[0], *size, dtype=torch.bool, device=logits.device)
                real_features = None
            else:
                real = pixel_mask.bool()
                real_loss, real_features = (
                    nearest_resize(real, shape) for shape in (size, features.shape[-2:])
                )
            pairs = image_label_pairs(targets)
            terms["image_level_loss"] = image_level_loss(
                logits, targets, class_mask, real_loss, image_source, reduce=reduce, pairs=pairs
            )
            if config.attentive_loss_weight > 0:
                terms["attentive_loss"], pair_writes = self._attentive_loss(
                    memory_bank,
                    logits,
                    features,
                    scores,
                    columns,
                    class_mask,
                    targets,
                    real_loss,
                    real_features,
                    image_source,
                    reduce,
                    pairs,
                )
                if pair_writes is not None:
                    column, slot, count = pair_writes
                    writes.append((columns[column], slot, count))
        return terms, writes

    def _attentive_loss(
        self,
        memory_bank,
        logits,
        features,
        scores,
        columns,
        class_mask,
        targets,
        real_loss,
        real_features=None,
        image_source=None,
        reduce: bool = True,
        pairs=None,
    ) -> tuple[torch.Tensor | ItemLosses, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
        """CA-Cls loss and, in training, the (column, slot mean, pixels averaged) of each image-level pair
        for the caller to enqueue. `real_loss`, `real_features`: the image's own pixels at loss resolution,
        at which the attention is applied, and at feature resolution (None: all of them)."""
        pair_image, pair_column, pair_rank = image_label_pairs(targets) if pairs is None else pairs
        usable = memory_bank.usable(columns)
        attention = self.attention_logits(
            memory_bank,
            features,
            scores,
            columns,
            usable,
            pair_image,
            pair_column,
            targets,
            class_mask,
            real_features,
            pair_rank,
        )
        attention = torch.sigmoid(bilinear_resize(attention, real_loss.shape[-2:]))
        loss = attentive_image_level_loss(
            logits,
            attention,
            pair_image,
            pair_column,
            pair_rank,
            targets,
            class_mask,
            valid=usable[pair_column],
            pixel_mask=real_loss,
            image_source=image_source,
            reduce=reduce,
        )
        if not self.training:
            return loss, None
        slot_means, slot_counts = topk_slot_features(
            features,
            scores,
            pair_image,
            pair_column,
            self.config.memory_bank_topk,
            real_features,
            return_counts=True,
        )
        return loss, (pair_column, slot_means, slot_counts)


__all__ = ["LOSS_TERMS", "LarvSegLoss", "ScoredGroup", "sample_classes", "source_pools", "union_columns"]
