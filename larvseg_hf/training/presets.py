"""Named backbone shapes, so a command line can say `--backbone resnet-tiny` instead of a config."""

from __future__ import annotations

from typing import Any

from ..configuration_larvseg import VIT_B16

BACKBONE_PRESETS: dict[str, dict[str, Any]] = {
    # Measured on a 2-core CPU (CPU_FEASIBILITY.md): the best small model at 128 px; stage 3 is
    # upsampled to stage 2 (stride 8) and concatenated.
    "resnet-tiny": {
        "model_type": "resnet",
        "embedding_size": 32,
        "hidden_sizes": [32, 64, 128, 256],
        "depths": [1, 1, 2, 1],
        "layer_type": "basic",
        "out_features": ["stage2", "stage3"],
    },
    "vit-tiny": {
        "model_type": "vit",
        "hidden_size": 192,
        "num_hidden_layers": 4,
        "num_attention_heads": 3,
        "intermediate_size": 768,
        "patch_size": 16,
        "image_size": 128,
    },
    # The paper's backbone shape (random init here; use --backbone_name_or_path for pretrained weights).
    "vit-b16": dict(VIT_B16),
}


def backbone_preset(name: str) -> dict[str, Any]:
    if name not in BACKBONE_PRESETS:
        raise ValueError(f"Unknown backbone preset {name!r}; choose one of {sorted(BACKBONE_PRESETS)}.")
    return dict(BACKBONE_PRESETS[name])
