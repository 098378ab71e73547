"""Checkpoints saved before the model was split into backbone -> head -> criterion still load, exactly."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from larvseg_hf import LarvSegForSemanticSegmentation
from larvseg_hf.modeling_larvseg import LEGACY_KEY_MAPPING

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoint_06cff37"
CHECKPOINTS = ["vit", "resnet_neck"]


@pytest.fixture(autouse=True)
def one_thread():
    """The expected logits were computed on one thread: CPU reductions split over threads round differently."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _keys(path: Path) -> set[str]:
    with safe_open(path, framework="pt") as handle:
        return set(handle.keys())


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_old_checkpoint_gives_identical_logits(name):
    folder = FIXTURES / name
    assert "class_embeddings" in _keys(folder / "model.safetensors")  # really the old layout
    model = LarvSegForSemanticSegmentation.from_pretrained(folder).eval()
    expected = load_file(folder / "expected_outputs.safetensors")
    with torch.no_grad():
        plain = model(expected["pixel_values"]).logits
        coseg = model(expected["pixel_values"], coseg=True).logits
    # Stored at 06cff37 on another CPU: kernels may differ in the last bits, a wrong key mapping by O(1).
    torch.testing.assert_close(plain, expected["logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(coseg, expected["coseg_logits"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_every_old_key_is_mapped_and_resaved_unchanged(name, tmp_path):
    folder = FIXTURES / name
    old = load_file(folder / "model.safetensors")
    model, info = LarvSegForSemanticSegmentation.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.head.mask_norm.gamma.item() == 2.5 and model.head.mask_norm.beta.item() == -0.25
    model.save_pretrained(tmp_path)
    new = load_file(tmp_path / "model.safetensors")
    renamed = {}
    for old_key, tensor in old.items():
        new_key = old_key
        for pattern, replacement in LEGACY_KEY_MAPPING.items():
            new_key = re.sub(pattern, replacement, new_key)
        renamed[new_key] = tensor
    assert set(renamed) == set(new)
    for key, tensor in renamed.items():
        assert torch.equal(new[key], tensor), key


def test_resaved_old_checkpoint_uses_the_new_names(tmp_path):
    source = tmp_path / "old"
    shutil.copytree(FIXTURES / "vit", source)
    model = LarvSegForSemanticSegmentation.from_pretrained(source)
    model.save_pretrained(tmp_path / "new")
    keys = _keys(tmp_path / "new" / "model.safetensors")
    assert {"head.class_embeddings", "head.mask_norm.gamma", "head.class_projection.weight"} <= keys
    assert not keys & {"class_embeddings", "mask_norm_gamma", "class_projection.weight"}
    again = LarvSegForSemanticSegmentation.from_pretrained(tmp_path / "new").eval()
    expected = load_file(source / "expected_outputs.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(
            again(expected["pixel_values"]).logits, expected["logits"], rtol=1e-4, atol=1e-4
        )
