"""Analysis tools: one-point oracle propagation, CA-Cls attention localisation, pooling dilution."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from conftest import make_model

from larvseg_hf import LarvSegImageProcessor
from larvseg_hf.analysis import (
    attention_localization,
    pooled_cross_entropies,
    pooling_dilution,
    precision_at_area,
    propagate_from_seeds,
)

IGNORE = -100


def test_propagation_recovers_categories_whose_features_are_distinct():
    labels = torch.tensor([[0, 0, 3, 3], [0, 0, 3, 3], [7, 7, 7, IGNORE]])
    directions = {0: [1.0, 0, 0], 3: [0, 1.0, 0], 7: [0, 0, 1.0], IGNORE: [1.0, 1.0, 1.0]}
    features = torch.tensor([[directions[int(v)] for v in row] for row in labels]).permute(2, 0, 1)
    features = F.normalize(features + 0.01 * torch.randn(features.shape), dim=0)
    for seed in range(5):
        predicted = propagate_from_seeds(features, labels, torch.Generator().manual_seed(seed))
        valid = labels != IGNORE
        assert torch.equal(predicted[valid], labels[valid])


def test_propagation_never_seeds_from_ignored_pixels():
    labels = torch.full((3, 3), IGNORE)
    predicted = propagate_from_seeds(torch.randn(4, 3, 3), labels, torch.Generator().manual_seed(0))
    assert (predicted == IGNORE).all()


def test_precision_at_area_matches_sorting_loop():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 30, generator=g)
    masks = torch.rand(6, 30, generator=g) < 0.3
    masks[0] = False
    masks[0, 4] = True
    out = precision_at_area(maps, masks)
    for p in range(6):
        area = int(masks[p].sum())
        ranked = sorted(range(30), key=lambda x: -float(maps[p, x]))[:area]
        assert abs(float(out[p]) - sum(bool(masks[p, x]) for x in ranked) / area) < 1e-6
    # A map that is its own mask scores 1.
    assert torch.allclose(precision_at_area(masks.float(), masks), torch.ones(6))


def test_attention_localization_counts_pairs_and_chance():
    names = ["background", "cat", "dog", "emu"]
    model = make_model("vit", names=names, base_label_ids=[0, 1], memory_bank_size=2, memory_bank_warmup=1)
    bank = model.memory_bank
    bank.enqueue(torch.tensor([2, 2, 3, 3]), F.normalize(torch.randn(4, bank.slots.shape[-1]), dim=-1))
    processor = LarvSegImageProcessor(size={"height": 32, "width": 32}, size_divisor=8)
    rng = np.random.default_rng(0)
    rows, expected_areas = [], []
    for present in ([0, 2], [1, 3], [0, 1]):  # novel pairs: (0, dog), (1, emu); image 2 has none
        label = np.full((32, 32), present[0], dtype=np.int64)
        label[8:24, 8:24] = present[1]
        rows.append({"image": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "label": label})
        if present[1] in (2, 3):
            expected_areas.append(16 * 16 / 32 / 32)
    results = attention_localization(model, processor, rows, class_ids=[2, 3])
    assert results["pairs"] == 2 and results["usable_classes"] == 2
    assert abs(results["precision_chance"] - np.mean(expected_areas)) < 1e-6
    for key in ("precision_score", "precision_attention_labels", "precision_attention_threshold"):
        assert 0.0 <= results[key] <= 1.0
    assert (
        0.0 <= results["threshold_flag_precision"] <= 1.0 and 0.0 <= results["threshold_flag_recall"] <= 1.0
    )


def _loop_pooled_cross_entropy(logits, labels, c, own):
    """One class by hand: drop the other present classes' columns, pool, softmax cross-entropy."""
    present = sorted({int(v) for v in labels.flatten().tolist()} - {IGNORE})
    keep = [k for k in range(logits.shape[0]) if k == c or k not in present]
    pixels = [(i, j) for i in range(labels.shape[0]) for j in range(labels.shape[1])]
    if own:
        pixels = [(i, j) for i, j in pixels if int(labels[i, j]) == c]
    pooled = [sum(float(logits[k, i, j]) for i, j in pixels) / len(pixels) for k in keep]
    log_total = float(torch.tensor(pooled, dtype=torch.float64).logsumexp(0))
    return log_total - pooled[keep.index(c)]


def test_pooled_cross_entropies_match_a_loop():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, 5, dtype=torch.float64)
    labels = torch.tensor([[0, 0, 2, 2, 2], [0, 0, 2, 5, 5], [0, 0, 0, 5, IGNORE], [0, 0, 0, 0, 0]])
    out = pooled_cross_entropies(logits, labels, IGNORE)
    assert out["classes"].tolist() == [0, 2, 5]
    assert torch.allclose(out["area"], torch.tensor([12, 4, 3], dtype=torch.float64) / 20)
    for index, c in enumerate([0, 2, 5]):
        assert (
            abs(float(out["whole_image"][index]) - _loop_pooled_cross_entropy(logits, labels, c, False))
            < 1e-9
        )
        assert abs(float(out["own_mask"][index]) - _loop_pooled_cross_entropy(logits, labels, c, True)) < 1e-9


def test_pooling_dilution_groups_pairs_by_area():
    """A class that wins only on its own small mask: high whole-image loss, low own-mask loss."""
    labels = torch.zeros(10, 10, dtype=torch.long)
    labels[:2, :2] = 1  # 4% of the image
    logits = torch.zeros(3, 10, 10)
    logits[0] = 6.0 * (labels == 0)
    logits[1] = 6.0 * (labels == 1)
    logits[2] = 1.0  # an absent class, moderately likely everywhere

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, pixel_values):
            return SimpleNamespace(logits=logits[None])

    processor = lambda image: {"pixel_values": torch.zeros(1, 3, 10, 10)}  # noqa: E731
    rows = [{"image": None, "label": labels.numpy()}] * 3
    table = pooling_dilution(Model(), processor, rows, groups={"novel": [1], "background": [0]})
    assert [(r["group"], r["area"], r["pairs"]) for r in table] == [
        ("novel", [0.0, 0.05], 3),
        ("background", [0.4, 1.0], 3),
    ]
    novel = table[0]
    expected = _loop_pooled_cross_entropy(logits, labels, 1, False)
    assert abs(novel["whole_image"] - expected) < 1e-5 and novel["whole_image"] > 1.0
    assert abs(novel["own_mask"] - _loop_pooled_cross_entropy(logits, labels, 1, True)) < 1e-5
    assert novel["own_mask"] < 0.01
