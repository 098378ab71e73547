"""LarvSegForSemanticSegmentation end to end against the loop-based reference (`reference_larvseg.py`), in the
settings the published runs train with: class sampling smaller than the vocabulary, several data sources
(mask, single-label image-level and multi-label "weak" samples in one batch, each with its own vocabulary),
per-source loss averaging, usable and distinct background banks on both background routes, coseg inference,
the float16 bank and the K = 40 top-K of the A150 presets.

The model's class draw is random, so the tests check the sampling RULES on the returned `class_mask` and
compute every loss in the reference with that class_mask. The reference bank is the full published layout,
filled by replaying every image-level pair of every training forward (top-K features of that pair)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model
from reference_larvseg import (
    FullMemoryBank,
    bilinear,
    ref_attentive_loss,
    ref_column_violations,
    ref_coseg_logits,
    ref_image_level_loss,
    ref_mask_norm,
    ref_supervised_loss,
    ref_topk_pixel_features,
)

from larvseg_hf import LarvSegConfig

TOL = 1e-5
IGNORE = -100
NUM_LABELS = 10
#: Sources, in `source_index` order. Class 5 and class 6 are made near-synonyms (embeddings within 1e-3).
SOURCES = {
    "masks_a": [0, 1, 2, 3, 4, 5],
    "masks_b": [0, 3, 9],
    "single": [4, 5, 6, 7, 8],
    "weak": [0, 1, 2, 6, 9],
}
SYNONYM, LABEL = 5, 6


# ----------------------------------------------------------------------------------------- helpers


def upsample_reference(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.tensor(
        [[bilinear(channel, *size) for channel in image] for image in logits.double().tolist()],
        dtype=torch.float64,
    )


def vocabulary_model(seed: int = 0, **config_kwargs):
    """A tiny training-mode ViT over NUM_LABELS classes with the four SOURCES; class SYNONYM's embedding
    is a near-copy of class LABEL's, so the two score (and get banked) almost identically."""
    config_kwargs = {
        "source_vocabularies": SOURCES,
        "num_sampled_classes": 5,
        "memory_bank_size": 2,
        "memory_bank_topk": 3,
        "memory_bank_dtype": "float32",
        **config_kwargs,
    }
    model = make_model("vit", NUM_LABELS, seed=seed, train=True, **config_kwargs)
    with torch.no_grad():
        embeddings = model.head.class_embeddings
        embeddings[SYNONYM] = embeddings[LABEL] + 1e-3 * torch.randn(embeddings.shape[1])
    return model


class Replay:
    """The published bank next to the model: every training forward's image-level pairs, replayed."""

    def __init__(self, model):
        config = model.config
        self.model = model
        self.topk = config.memory_bank_topk
        self.bank = FullMemoryBank(config.num_labels, config.memory_bank_size, config.memory_bank_warmup)

    def forward(self, pixel_values, masks=None, image_labels=None, source_index=None, pixel_mask=None):
        """masks: (B, H, W) vocabulary ids / IGNORE or None; image_labels: per image a list of vocabulary ids."""
        batch = pixel_values.shape[0]
        hot = None
        if image_labels is not None:
            hot = torch.zeros(batch, self.model.config.num_labels)
            for b, row in enumerate(image_labels):
                hot[b, row] = 1.0
        with torch.no_grad():
            return self.model(
                pixel_values,
                labels=masks,
                image_labels=hot,
                source_index=None if source_index is None else torch.tensor(source_index),
                pixel_mask=pixel_mask,
            )

    def replay(self, out, image_labels, real_features=None):
        """Enqueue what the published bank stores for this forward: one slot per (image, label) pair, image by
        image, labels in column order (= vocabulary order, columns are sorted ids), top-K by the raw score."""
        columns = out.class_ids.tolist()
        for b, row in enumerate(image_labels):
            own = None if real_features is None else real_features[b].tolist()
            for class_id in sorted(row):
                col = columns.index(class_id)
                self.bank.enqueue(
                    class_id, ref_topk_pixel_features(out.features[b], out.scores[b, col], self.topk, own)
                )

    def step(self, pixel_values, masks=None, image_labels=None, source_index=None):
        out = self.forward(pixel_values, masks, image_labels, source_index)
        self.replay(out, image_labels or [])
        return out


def present_classes(masks, image_labels, batch: int) -> list[set[int]]:
    present = [set() for _ in range(batch)]
    for b in range(batch):
        if masks is not None:
            present[b] |= {int(v) for v in masks[b].flatten().tolist()} - {IGNORE}
        if image_labels is not None:
            present[b] |= set(image_labels[b])
    return present


def column_labels(masks: torch.Tensor, columns: list[int], rate: int) -> torch.Tensor:
    """Vocabulary-id masks -> column ids at the loss resolution (nearest: source pixel rate * i)."""
    small = masks[:, ::rate, ::rate]
    return torch.tensor(
        [
            [[columns.index(v) if v != IGNORE else IGNORE for v in row] for row in image]
            for image in small.tolist()
        ]
    )


def to_columns(image_labels: list[list[int]], columns: list[int]) -> list[list[int]]:
    return [sorted(columns.index(c) for c in row) for row in image_labels]


def source_list(source_index) -> list[int] | None:
    return None if source_index is None else list(source_index)


# ----------------------------------------------------------------------------------------- the mixed batch


def mixed_batch(g: torch.Generator):
    """7 images: masks_a x 2, masks_b x 1, single x 2, weak x 2 (vocabulary ids).

    single: image 3 labelled LABEL (threshold route), image 4 labelled 8 (one write: unusable);
    weak: image 5 labelled {1, SYNONYM, LABEL} (labels route, the synonym is background of LABEL),
    image 6 labelled {0, 2, 3, 9} (3 has masks only: never banked, so unusable)."""
    masks = torch.full((7, 32, 32), IGNORE)
    masks[0, :20], masks[0, 20:, :10] = 0, 2  # image 0: classes 0, 2 and ignored pixels
    masks[1, :, :16], masks[1, :, 16:] = 3, 0
    masks[2, 8:, :] = 9  # masks_b
    masks[2, :8, :12] = 3
    image_labels = [[], [], [], [LABEL], [8], [1, SYNONYM, LABEL], [0, 2, 3, 9]]
    source_index = [0, 0, 1, 2, 2, 3, 3]
    return torch.randn(7, 3, 32, 32, generator=g), masks, image_labels, source_index


def warm_up(replay: Replay, g: torch.Generator, steps: int = 2):
    """Image-level steps that fill the rings of 0, 1, 2, 4, 5, 6, 7, 9 (two writes each, M = 2) and give
    class 8 one write; classes 5 and 6 are banked on the same images (the synonym pair)."""
    for _ in range(steps):
        labels = [[SYNONYM, LABEL, 0], [1, 2, 9], [7], [4]]
        replay.step(torch.randn(4, 3, 32, 32, generator=g), None, labels, [3, 3, 2, 2])
    replay.step(torch.randn(1, 3, 32, 32, generator=g), None, [[8]], [2])


def reference_losses(model, out, before, masks, image_labels, source_index, **attention_kwargs):
    """(supervised, image-level, attentive, records) of the reference for one forward of the model."""
    config = model.config
    columns = out.class_ids.tolist()
    rate = config.loss_downsample_rate
    size = (masks.shape[-2] // rate, masks.shape[-1] // rate)
    upsampled = upsample_reference(out.logits, size)
    class_mask = None if out.class_mask is None else out.class_mask.tolist()
    image_source = source_list(source_index) if config.per_source_losses else None
    labels = to_columns(image_labels, columns)
    supervised = ref_supervised_loss(
        upsampled, column_labels(masks, columns, rate), class_mask, IGNORE, image_source
    )
    image_level = ref_image_level_loss(upsampled, labels, class_mask, None, image_source)
    settings = {
        "background_topk": config.background_topk,
        "background_threshold": config.background_score_threshold,
        "synonym_mse_threshold": config.synonym_mse_threshold,
        "synonym_filter_routes": config.synonym_filter_routes,
        "background_suppression": config.background_suppression,
        **attention_kwargs,
    }
    attentive, records = ref_attentive_loss(
        upsampled,
        out.features,
        out.scores,
        before,
        columns,
        labels,
        class_mask,
        image_source=image_source,
        **settings,
    )
    return supervised, image_level, attentive, records


# ----------------------------------------------------------------------------------------- class sampling


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_training_columns_follow_the_per_source_sampling_rules(seed):
    model = vocabulary_model(seed, num_sampled_classes=4)
    g = torch.Generator().manual_seed(seed)
    pixel_values, masks, image_labels, source_index = mixed_batch(g)
    replay = Replay(model)
    draws = []
    for _ in range(4):
        out = replay.forward(pixel_values, masks, image_labels, source_index)
        violations = ref_column_violations(
            out.class_ids.tolist(),
            out.class_mask.tolist(),
            source_index,
            list(SOURCES.values()),
            present_classes(masks, image_labels, 7),
            4,
        )
        assert violations == []
        assert out.class_ids.tolist() == sorted(out.class_ids.tolist())
        draws.append(tuple(out.class_ids[out.class_mask[0]].tolist()))
    # masks_a: present {0, 2, 3}, one negative of {1, 4, 5} drawn at random per step.
    assert len(set(draws)) > 1
    # The checker can fail: a class_mask that lets a sample see another source's negative breaks the rule.
    bad = out.class_mask.clone()
    outside = [
        k for k, c in enumerate(out.class_ids.tolist()) if c not in SOURCES["masks_b"] and not bad[2, k]
    ]
    bad[2, outside[0]] = True
    assert ref_column_violations(
        out.class_ids.tolist(),
        bad.tolist(),
        source_index,
        list(SOURCES.values()),
        present_classes(masks, image_labels, 7),
        4,
    )


def synonym_threshold(model, pixel_values) -> float:
    """A background score threshold just under the synonym's top-5 mean on image 3 (labelled LABEL only),
    so the near-copy of its own class is a threshold-route candidate there. Raw scores do not depend on the
    bank, the mode or the columns (cosines; the tiny ViT has no dropout)."""
    was_training = model.training
    with torch.no_grad():
        scores = model.eval()(pixel_values[3:4]).scores[0, SYNONYM]
    model.train(was_training)
    values = sorted(scores.flatten().tolist(), reverse=True)[: model.config.background_topk]
    return sum(values) / len(values) - 0.005


def mixed_scenario(seed: int = 0, **config_kwargs):
    """Warmed model and reference bank, the mixed batch, and the bank as it was before the batch's forward."""
    model = vocabulary_model(seed, **config_kwargs)
    g = torch.Generator().manual_seed(seed)
    replay = Replay(model)
    warm_up(replay, g)
    pixel_values, masks, image_labels, source_index = mixed_batch(g)
    model.config.background_score_threshold = synonym_threshold(model, pixel_values)
    return model, replay, (pixel_values, masks, image_labels, source_index)


def ring_in_order(bank_module, class_id: int) -> list[torch.Tensor]:
    """The model's stored slot means of one class, oldest first (slot (writes + i) mod M for a full ring)."""
    writes = int(bank_module.num_writes[class_id])
    size = bank_module.size
    stored = min(writes, size)
    return [bank_module.slots[class_id, (writes - stored + i) % size].double() for i in range(stored)]


def assert_bank_matches(bank_module, reference_bank, num_classes: int, close=None) -> None:
    """Every class's stored slot means, oldest first, against the reference bank's slot means; `close(a, b)`
    compares one slot (default: assert_close at TOL)."""
    for class_id in range(num_classes):
        ours = ring_in_order(bank_module, class_id)
        theirs = [slot.mean(0) for slot in reference_bank.slots[class_id]]
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            if close is None:
                torch.testing.assert_close(a, b, atol=TOL, rtol=0)
            else:
                close(a, b)


def by_pair(records, columns):
    return {(r["image"], columns[r["label"]]): r for r in records}


def ids(columns, cols):
    return sorted(columns[k] for k in cols)


def test_loss_weight_defaults_are_the_published_effective_balance():
    """REFERENCE_IMPL "differs" 3: 1 : 0.33 : 0.17 (ADE-150 runs), CA-Cls 0.33 with the C171 + IN-124 config's
    0.2 per GPU. Supervised and image-level weights are the published ones; CA-Cls is the measured 0.25
    between the two published balances, and the docstring says so."""
    config = LarvSegConfig()
    assert (config.supervised_loss_weight, config.image_loss_weight) == (1.0, 0.33)
    assert 0.17 < config.attentive_loss_weight < 0.33
    doc = " ".join(LarvSegConfig.__doc__.split())
    assert f"CA-Cls defaults to {config.attentive_loss_weight}" in doc and "1 : 0.33 : 0.17" in doc
    assert config.synonym_filter_routes == "threshold" and config.per_source_losses
    assert config.memory_bank_topk == 20 and config.memory_bank_warmup == 1


@pytest.mark.parametrize("routes", ["threshold", "both"])
@pytest.mark.parametrize("per_source", [True, False])
def test_mixed_sources_with_class_sampling_match_reference(per_source, routes):
    model, replay, (pixel_values, masks, image_labels, source_index) = mixed_scenario(
        0, per_source_losses=per_source, synonym_filter_routes=routes
    )
    config = model.config
    before = replay.bank.copy()
    writes_before = model.memory_bank.num_writes.clone()
    out = replay.forward(pixel_values, masks, image_labels, source_index)
    columns = out.class_ids.tolist()

    # Columns: the per-source rule; 5 columns of 10 (masks_a draws 2 negatives, masks_b and single use their
    # whole pool, weak keeps its 7 present classes); the reference computes with this class_mask.
    present = present_classes(masks, image_labels, 7)
    pools = list(SOURCES.values())
    assert ref_column_violations(columns, out.class_mask.tolist(), source_index, pools, present, 5) == []
    assert out.class_mask.sum(1).tolist() == [5, 5, 3, 5, 5, 7, 7]  # every sample sees < NUM_LABELS classes
    gamma, beta = model.head.mask_norm.gamma.detach().item(), model.head.mask_norm.beta.detach().item()
    # Each sample's group scores its own columns only; the others are 0 in the output and used by no loss.
    scored = out.class_mask[:, :, None, None].expand_as(out.logits)
    expected = ref_mask_norm(out.scores, gamma, beta, out.class_mask.tolist())
    torch.testing.assert_close(out.logits.double()[scored], expected[scored], atol=TOL, rtol=0)
    assert not out.logits[~scored].any() and not out.scores[~scored].any()

    supervised, image_level, attentive, records = reference_losses(
        model, out, before, masks, image_labels, source_index
    )
    assert abs(float(out.supervised_loss) - supervised) < TOL, (float(out.supervised_loss), supervised)
    assert abs(float(out.image_level_loss) - image_level) < TOL, (float(out.image_level_loss), image_level)
    assert abs(float(out.attentive_loss) - attentive) < TOL, (float(out.attentive_loss), attentive)
    total = (
        config.supervised_loss_weight * supervised
        + config.image_loss_weight * image_level
        + config.attentive_loss_weight * attentive
    )
    assert abs(float(out.loss) - total) < TOL

    # What the batch exercised: both routes with several usable, distinct background banks; the synonym
    # (a near-copy of LABEL's bank) dropped on the threshold route and, with "threshold", kept as another
    # label of a weak image; unusable pairs (class 8: one write, class 3: never banked) and backgrounds.
    pairs = by_pair(records, columns)
    assert {key for key, r in pairs.items() if not r["used"]} == {(4, 8), (6, 3)}
    threshold_pair = pairs[(3, LABEL)]
    assert threshold_pair["route"] == "threshold"
    assert SYNONYM in ids(columns, threshold_pair["synonyms"]) and ids(columns, threshold_pair["kept"])
    assert 8 in ids(columns, threshold_pair["unusable"])
    # Its background comes only from its source's columns: class 9 (weak's) scores above the threshold there.
    # (Sample 3's group never scores class 9, so its cosine map is computed here from the features.)
    with torch.no_grad():
        score_9 = torch.einsum("dhw,d->hw", out.features[3], model.head.class_vectors(torch.tensor([9]))[0])
    top5 = sorted(score_9.flatten().tolist(), reverse=True)[:5]
    assert sum(top5) / 5 > config.background_score_threshold and 9 not in ids(
        columns, threshold_pair["candidates"]
    )
    labels_pair = pairs[(5, LABEL)]
    assert labels_pair["route"] == "labels" and labels_pair["mse"][columns.index(SYNONYM)] < 0.5
    if routes == "threshold":
        assert ids(columns, labels_pair["kept"]) == [1, SYNONYM]
    else:
        assert ids(columns, labels_pair["kept"]) == [1] and ids(columns, labels_pair["synonyms"]) == [SYNONYM]
    assert len(pairs[(6, 0)]["kept"]) == 2 and ids(columns, pairs[(6, 0)]["unusable"]) == [3]

    # The test can fail: the other route setting, or the other averaging, gives other numbers.
    other = "both" if routes == "threshold" else "threshold"
    _, _, wrong_routes, _ = reference_losses(
        model, out, before, masks, image_labels, source_index, synonym_filter_routes=other
    )
    assert abs(wrong_routes - attentive) > 1e-4
    model.config.per_source_losses = not per_source
    wrong = reference_losses(model, out, before, masks, image_labels, source_index)
    model.config.per_source_losses = per_source
    assert all(
        abs(a - b) > 1e-4 for a, b in zip(wrong[:3], (supervised, image_level, attentive), strict=True)
    )

    # Bank writes of this forward: one slot per image-level pair (mask samples write nothing), in order.
    replay.replay(out, image_labels)
    assert model.memory_bank.num_writes.tolist() == replay.bank.writes
    assert (model.memory_bank.num_writes - writes_before).tolist() == [1, 1, 1, 1, 0, 1, 2, 0, 1, 1]
    assert_bank_matches(model.memory_bank, replay.bank, NUM_LABELS)


# ----------------------------------------------------------------------------------------- coseg inference


def test_coseg_inference_matches_reference_coseg():
    model, replay, (pixel_values, _, _, _) = mixed_scenario(0)
    model.eval()
    with torch.no_grad():
        plain = model(pixel_values[3:])
        coseg = model(pixel_values[3:], coseg=True)
    config = model.config
    settings = {
        "background_topk": config.background_topk,
        "background_threshold": config.background_score_threshold,
        "synonym_mse_threshold": config.synonym_mse_threshold,
        "background_suppression": config.background_suppression,
    }
    columns = plain.class_ids.tolist()
    assert columns == list(range(NUM_LABELS)) and plain.class_mask is None
    expected, records = ref_coseg_logits(
        plain.logits, plain.features, plain.scores, replay.bank, columns, unusable_scale=0.5, **settings
    )
    torch.testing.assert_close(coseg.logits.double(), expected, atol=TOL, rtol=0)
    # Non-trivial: 8 of 10 classes usable (3 and 8 are not), with kept and synonym-dropped backgrounds, and
    # attention that varies over the pixels.
    assert {r["label"] for r in records} == set(range(NUM_LABELS)) - {3, 8}
    assert sum(len(r["kept"]) for r in records) >= 4 and any(r["synonyms"] for r in records)
    assert any(r["unusable"] for r in records)
    ratio = coseg.logits.double() / plain.logits.double()
    assert ratio[:, [0, 1, 2, 4, 5, 6, 7, 9]].flatten(2).std(-1).min() > 0.05
    torch.testing.assert_close(ratio[:, [3, 8]], torch.full_like(ratio[:, [3, 8]], 0.5), atol=1e-4, rtol=0)
    # It can fail: another scale for unusable classes, or no synonym filter, changes the logits.
    other, _ = ref_coseg_logits(
        plain.logits, plain.features, plain.scores, replay.bank, columns, unusable_scale=1.0, **settings
    )
    assert (other - expected).abs().max() > 1e-2
    unfiltered, _ = ref_coseg_logits(
        plain.logits,
        plain.features,
        plain.scores,
        replay.bank,
        columns,
        unusable_scale=0.5,
        **{**settings, "synonym_mse_threshold": -1.0},
    )
    assert (unfiltered - expected).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------- float16 bank

#: Round-to-nearest float16: relative error <= 2^-11 for normal values, absolute <= 2^-25 below 2^-14.
HALF_RELATIVE, HALF_ABSOLUTE = 2.0**-11, 2.0**-25


def rounded_bank(bank: FullMemoryBank) -> FullMemoryBank:
    """The reference bank with each slot replaced by the float16 rounding of its mean feature: what a
    float16 bank of slot means holds (every slot here has K features, so the mean over all stored features
    is the mean of the slot means)."""
    rounded = FullMemoryBank(len(bank.slots), bank.size, bank.warmup)
    for class_id, ring in enumerate(bank.slots):
        for slot in ring:
            rounded.slots[class_id].append(slot.mean(0).float().half().double()[None])
    rounded.writes = list(bank.writes)
    return rounded


def class_mean_error_bound(bank: FullMemoryBank, class_id: int) -> float:
    """L2 bound on how far the mean of float16-rounded slot means is from the exact class mean: per
    component the mean over slots of 2^-11 |m_s,i| (+ 2^-25, + 1e-7 for the float32 arithmetic before the
    rounding). A bank map value is a dot product with a unit pixel feature, so it moves by at most this."""
    slots = [slot.mean(0) for slot in bank.slots[class_id]]
    per_component = sum(HALF_RELATIVE * s.abs() for s in slots) / len(slots) + HALF_ABSOLUTE + 1e-7
    return float(per_component.norm())


Z_MAX = 5.0  # a map standardised over 16 pixels lies within sqrt(15) < 5 std of its mean


def decisions(records) -> list[tuple]:
    """The discrete choices of CA-Cls per pair: route, background kept, dropped as synonyms, unusable."""
    return [
        (
            r["image"],
            r["label"],
            r.get("used", True),
            r.get("route"),
            r.get("kept"),
            r.get("synonyms"),
            r.get("unusable"),
        )
        for r in records
    ]


def test_float16_bank_matches_the_full_precision_reference():
    """The package's default float16 bank stores slot means rounded to float16.

    Checked three ways: (1) every stored slot is the float16 rounding of the reference slot's mean feature,
    within one rounding (2^-11 relative); (2) the losses and coseg logits equal the reference computed on
    those rounded means (float16 storage is the only difference) to 1e-5; (3) against the full-precision
    reference they agree within a first-order bound derived from that rounding: every bank map moves by at
    most delta (class_mean_error_bound), so a combined map by 2 delta; its standardisation by at most
    2 delta (2 + |z|) / std; the sigmoid by a quarter of that; a pooled attentive logit by max|logit| times
    that; a cross-entropy by twice the largest pooled change (and an average of them by no more). That holds
    while no discrete choice flips: the threshold route reads raw scores (not the bank), and the synonym
    filter's choices are checked to be the same on the rounded and the exact reference bank."""
    model, replay, (pixel_values, masks, image_labels, source_index) = mixed_scenario(
        0, memory_bank_dtype="float16"
    )
    assert model.memory_bank.slots.dtype == torch.float16
    before = replay.bank.copy()

    # (1) slot contents of the warm-up writes.
    def within_half_precision(a, b):
        assert ((a - b).abs() <= HALF_RELATIVE * b.abs() + HALF_ABSOLUTE + 1e-7).all()

    assert_bank_matches(model.memory_bank, before, NUM_LABELS, within_half_precision)

    out = replay.forward(pixel_values, masks, image_labels, source_index)
    _, _, full, records = reference_losses(model, out, before, masks, image_labels, source_index)
    _, _, rounded, rounded_records = reference_losses(
        model, out, rounded_bank(before), masks, image_labels, source_index
    )
    # (2)
    assert abs(float(out.attentive_loss) - rounded) < TOL, (float(out.attentive_loss), rounded)
    # (3)
    used = [r for r in records if r["used"]]
    assert decisions(rounded_records) == decisions(records)  # no discrete choice flips
    delta = max(class_mean_error_bound(before, c) for c in range(NUM_LABELS) if before.usable(c))
    upsampled = upsample_reference(out.logits, (16, 16))
    bound = (
        2
        * upsampled.abs().max().item()
        * 0.25
        * max(2 * delta * (2 + Z_MAX) / r["combined_std"] for r in used)
    )
    assert abs(float(out.attentive_loss) - full) <= bound, (float(out.attentive_loss), full, bound)
    assert abs(full - rounded) > 0  # the rounding is visible at all

    # Coseg logits (the most direct read of the attention), element by element.
    model.eval()
    with torch.no_grad():
        plain = model(pixel_values[3:])
        coseg = model(pixel_values[3:], coseg=True)
    settings = {"background_threshold": model.config.background_score_threshold}
    columns = list(range(NUM_LABELS))
    replay.replay(out, image_labels)  # the mixed batch's writes, which the model's bank now holds
    bank = replay.bank
    args = (plain.logits, plain.features, plain.scores)
    exact, coseg_records = ref_coseg_logits(*args, bank, columns, unusable_scale=0.5, **settings)
    on_rounded, rounded_records = ref_coseg_logits(
        *args, rounded_bank(bank), columns, unusable_scale=0.5, **settings
    )
    torch.testing.assert_close(coseg.logits.double(), on_rounded, atol=TOL, rtol=0)  # (2)
    assert decisions(rounded_records) == decisions(coseg_records)
    delta = max(class_mean_error_bound(bank, c) for c in columns if bank.usable(c))
    allowed = torch.zeros_like(exact)
    for r in coseg_records:
        b, k = r["image"], r["label"]
        allowed[b, k] = plain.logits[b, k].double().abs() * 0.25 * 2 * delta * (2 + Z_MAX) / r["combined_std"]
    assert ((coseg.logits.double() - exact).abs() <= allowed + 1e-6).all()  # (3)


# ----------------------------------------------------------------------------------------- warm-up


@pytest.mark.parametrize("warmup", [1, 2])
def test_warmup_against_the_ring_rule(warmup):
    """W = 1 (published): a class is used once its ring of M slots is full (REFERENCE_IMPL H:460-461), and is
    background only then. W = 2 is this package's extension ("wrapped W times": W * M writes)."""
    size = 3
    model = make_model(
        "vit",
        6,
        seed=3,
        train=True,
        memory_bank_size=size,
        memory_bank_topk=3,
        memory_bank_dtype="float32",
        memory_bank_warmup=warmup,
    )
    replay = Replay(model)
    g = torch.Generator().manual_seed(3)
    # Writes per class: 0 -> 3 (= M), 1 -> 2 (= M - 1), 2 -> 6 (= 2M), 3 -> 5 (= 2M - 1).
    plan = [[[0, 1, 2, 3]], [[0, 1, 2, 3]], [[0, 2, 3]], [[2, 3]], [[2, 3]], [[2]]]
    for labels in plan:
        replay.step(torch.randn(1, 3, 32, 32, generator=g), None, labels)
    assert replay.bank.writes[:4] == [3, 2, 6, 5] == model.memory_bank.num_writes[:4].tolist()
    usable = [replay.bank.usable(c) for c in range(4)]
    assert usable == ([True, False, True, True] if warmup == 1 else [False, False, True, False])
    assert model.memory_bank.usable(torch.arange(4)).tolist() == usable
    before = replay.bank.copy()
    labels = [[0, 1, 2, 3], [1], [3]]
    out = replay.forward(torch.randn(3, 3, 32, 32, generator=g), None, labels)
    upsampled = upsample_reference(out.logits, (16, 16))
    ref, records = ref_attentive_loss(upsampled, out.features, out.scores, before, list(range(6)), labels)
    assert abs(float(out.attentive_loss) - ref) < TOL, (float(out.attentive_loss), ref)
    pairs = {(r["image"], r["label"]): r for r in records}
    assert {key for key, r in pairs.items() if r["used"]} == {key for key in pairs if usable[key[1]]}
    assert pairs[(0, 2)]["unusable"] == [c for c in (0, 1, 3) if not usable[c]]
    # It can fail: counting writes (2 of 3 for class 1) instead of a full ring changes the loss.
    eager = before.copy()
    eager.warmup = 0
    wrong, _ = ref_attentive_loss(upsampled, out.features, out.scores, eager, list(range(6)), labels)
    assert abs(wrong - ref) > 1e-4


# ----------------------------------------------------------------------------------------- top-K = 40


def patch_mask(pixel_mask: torch.Tensor, patch: int = 8) -> torch.Tensor:
    """The feature-resolution real pixels of a patch-aligned pixel mask: patch (i, j) is real iff its pixels are."""
    return pixel_mask[:, ::patch, ::patch].clone()


def test_topk40_slots_with_fewer_and_just_more_real_pixels_than_k():
    """The A150 presets' K = 40 on feature maps of 6 x 7 = 42 pixels (40 of them picked), of 36 real pixels
    (all 36) and of 4 x 4 = 16 pixels (all 16)."""
    model = make_model(
        "vit", 6, seed=4, train=True, memory_bank_size=3, memory_bank_topk=40, memory_bank_dtype="float32"
    )
    replay = Replay(model)
    g = torch.Generator().manual_seed(4)
    pixel_mask = torch.ones(2, 48, 56, dtype=torch.bool)
    pixel_mask[1, :, 48:] = False  # image 1: 6 x 6 = 36 real feature pixels
    labels = [[0, 1], [2, 3]]
    pixel_values = torch.randn(2, 3, 48, 56, generator=g) * pixel_mask[:, None]
    out = replay.forward(pixel_values, None, labels, pixel_mask=pixel_mask)
    real = patch_mask(pixel_mask)
    assert out.features.shape[-2:] == (6, 7) and real.sum((1, 2)).tolist() == [42, 36]
    replay.replay(out, labels, real)
    out = replay.step(torch.randn(2, 3, 32, 32, generator=g), None, [[0, 2], [1, 3]])
    assert [len(slot) for slot in replay.bank.slots[0]] == [40, 16] and [
        len(s) for s in replay.bank.slots[2]
    ] == [36, 16]
    assert model.memory_bank.num_writes.tolist() == replay.bank.writes
    assert_bank_matches(model.memory_bank, replay.bank, 6)


def test_attentive_loss_with_slots_of_unequal_size_averages_every_stored_feature():
    """METHOD.md: the foreground score is the mean cosine to EVERY feature stored for the class, and a bank of
    slot means must give "the same result". With K = 40 a slot of a small image holds fewer than K features
    (here slots of 40 and of 16), so the mean over stored features weighs slots by their size; an unweighted
    mean of slot means does not. The authors' slots always hold K features (their crops have >= 400 feature
    pixels; pad pixels included, a listed bug), so this only arises for maps or real regions under K pixels.
    The package stores each slot's feature count and weighs the slot means by it."""
    model = make_model(
        "vit", 6, seed=5, train=True, memory_bank_size=2, memory_bank_topk=40, memory_bank_dtype="float32"
    )
    replay = Replay(model)
    g = torch.Generator().manual_seed(5)
    replay.step(torch.randn(2, 3, 48, 56, generator=g), None, [[0, 1], [2, 3]])  # 42 pixels: 40 features
    replay.step(torch.randn(2, 3, 32, 32, generator=g), None, [[0, 2], [1, 3]])  # 16 pixels: 16 features
    assert {len(slot) for c in range(4) for slot in replay.bank.slots[c]} == {40, 16}
    before = replay.bank.copy()
    labels = [[0, 1], [2]]
    out = replay.forward(torch.randn(2, 3, 48, 56, generator=g), None, labels)
    upsampled = upsample_reference(out.logits, (24, 28))
    ref, records = ref_attentive_loss(upsampled, out.features, out.scores, before, list(range(6)), labels)
    assert all(r["used"] for r in records)
    assert abs(float(out.attentive_loss) - ref) < TOL, (float(out.attentive_loss), ref)
    # Equal slot weights (a bank of slot means without counts) would give another number: the case matters.
    slot_means = FullMemoryBank(6, 2, 1)
    for class_id, ring in enumerate(before.slots):
        for slot in ring:
            slot_means.enqueue(class_id, slot.mean(0, keepdim=True))
    equal_weights, _ = ref_attentive_loss(
        upsampled, out.features, out.scores, slot_means, list(range(6)), labels
    )
    assert abs(equal_weights - ref) > 1e-3
