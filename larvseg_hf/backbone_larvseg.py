# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""LarvSeg's backbone: any transformers vision backbone as one dense (B, C, h, w) feature map."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import AutoBackbone, AutoConfig, PreTrainedModel, ViTModel
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

from .configuration_larvseg import LarvSegConfig


class LarvSegFeatureExtractor(nn.Module):
    """A plain ViT (patch tokens of the last layer) or an AutoBackbone (its feature maps upsampled to the
    finest one and concatenated)."""

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


def load_pretrained_backbone(
    backbone_name_or_path: str | Path, out_features: Sequence[str] | None = None
) -> PreTrainedModel:
    """A pretrained backbone (Hub id or local folder) as the module `LarvSegFeatureExtractor` wraps.

    ViT checkpoints load as `ViTModel`; anything else as its own `*Backbone` class, since
    `load_backbone` builds random weights and `AutoBackbone.from_pretrained` rejects local paths.
    """
    backbone_config = AutoConfig.from_pretrained(backbone_name_or_path)
    if backbone_config.model_type == "vit":
        return ViTModel.from_pretrained(backbone_name_or_path, add_pooling_layer=False)
    class_name = MODEL_FOR_BACKBONE_MAPPING_NAMES.get(backbone_config.model_type)
    if class_name is None:
        raise ValueError(
            f"{backbone_name_or_path} is a {backbone_config.model_type!r} model, which has neither a ViT "
            "encoder nor a transformers Backbone class."
        )
    kwargs = {"out_features": list(out_features)} if out_features else {}
    return getattr(transformers, class_name).from_pretrained(backbone_name_or_path, **kwargs)


__all__ = ["LarvSegFeatureExtractor", "load_pretrained_backbone"]
