"""Shared fixtures: tiny LarvSeg configs and models that build and run in milliseconds on CPU.

Module-level helpers (`tiny_vit_backbone`, `tiny_resnet_backbone`, `make_config`, `make_model`) are
also exposed as fixtures (`larvseg_config_factory`, `larvseg_model_factory`, ...) so tests can use
either style. Everything here is random-init; nothing touches the network.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import pytest
import torch

from larvseg_hf import LarvSegConfig, LarvSegForSemanticSegmentation

# A ViT with 8-px patches: a 32x32 image gives a 4x4 feature map of width 32.
TINY_VIT = {
    "model_type": "vit",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "patch_size": 8,
    "image_size": 32,
}

# A ResNet AutoBackbone: stage2 (stride 8, 32 ch) + stage3 (stride 16, 64 ch) -> a stride-8 map of 96 channels.
TINY_RESNET = {
    "model_type": "resnet",
    "out_features": ["stage2", "stage3"],
    "hidden_sizes": [16, 32, 64, 128],
    "depths": [1, 1, 1, 1],
    "embedding_size": 16,
}

BACKBONES = {"vit": TINY_VIT, "resnet": TINY_RESNET}


def tiny_vit_backbone(**overrides) -> dict:
    """A copy of TINY_VIT with `overrides` applied."""
    return {**copy.deepcopy(TINY_VIT), **overrides}


def tiny_resnet_backbone(**overrides) -> dict:
    """A copy of TINY_RESNET with `overrides` applied."""
    return {**copy.deepcopy(TINY_RESNET), **overrides}


def class_names(num_labels: int, prefix: str = "class") -> list[str]:
    return [f"{prefix}_{i:03d}" for i in range(num_labels)]


def make_config(
    backbone: str | dict = "vit",
    num_labels: int = 5,
    names: Sequence[str] | None = None,
    **config_kwargs,
) -> LarvSegConfig:
    """A LarvSegConfig on a tiny backbone ("vit", "resnet" or a backbone config dict).

    `names` (if given) is the vocabulary and overrides `num_labels`.
    """
    backbone_config = copy.deepcopy(BACKBONES[backbone] if isinstance(backbone, str) else backbone)
    names = list(names) if names is not None else class_names(num_labels)
    config_kwargs.setdefault("id2label", dict(enumerate(names)))
    return LarvSegConfig(backbone_config=backbone_config, **config_kwargs)


def make_model(
    backbone: str | dict = "vit",
    num_labels: int = 5,
    names: Sequence[str] | None = None,
    seed: int = 0,
    train: bool = False,
    **config_kwargs,
) -> LarvSegForSemanticSegmentation:
    """A seeded random-init tiny model, in eval mode unless `train`."""
    torch.manual_seed(seed)
    model = LarvSegForSemanticSegmentation(make_config(backbone, num_labels, names, **config_kwargs))
    return model.train(train)


@pytest.fixture
def tiny_vit_config() -> dict:
    return tiny_vit_backbone()


@pytest.fixture
def tiny_resnet_config() -> dict:
    return tiny_resnet_backbone()


@pytest.fixture
def larvseg_config_factory() -> Callable[..., LarvSegConfig]:
    return make_config


@pytest.fixture
def larvseg_model_factory() -> Callable[..., LarvSegForSemanticSegmentation]:
    return make_model


@pytest.fixture
def tiny_model() -> LarvSegForSemanticSegmentation:
    """Eval-mode tiny ViT LarvSeg over 5 classes."""
    return make_model("vit", 5)


@pytest.fixture
def hf_offline_env(tmp_path, monkeypatch) -> dict:
    """Offline Hub settings with a private remote-code module cache (so parallel runs never share one),
    returned as a full environment for subprocesses. Also set in this process's environment, where it
    only affects code that reads it later (transformers reads HF_MODULES_CACHE at import).
    """
    import os

    settings = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **settings}
