"""The vectorised losses of `larvseg_hf.losses_larvseg` (and the model's wiring of them) against the
loop-based reference of METHOD.md in `reference_larvseg.py`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference_larvseg import (
    FullMemoryBank,
    bilinear,
    ref_attention_map,
    ref_attentive_loss,
    ref_image_level_loss,
    ref_mask_norm,
    ref_mask_slot_features,
    ref_supervised_loss,
    ref_topk_pixel_features,
)

from larvseg_hf.criterion_larvseg import sample_classes
from larvseg_hf.head_larvseg import mask_norm
from larvseg_hf.losses_larvseg import (
    attentive_image_level_loss,
    attentive_scores,
    image_label_pairs,
    image_level_loss,
    mask_slot_features,
    supervised_loss,
    topk_slot_features,
)
from larvseg_hf.memory_bank_larvseg import LarvSegMemoryBank

TOL = 1e-5


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def normalized(*shape: int, dim: int, g: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=dim)


def multi_hot(labels: list[list[int]], columns: int) -> torch.Tensor:
    targets = torch.zeros(len(labels), columns, dtype=torch.bool)
    for b, row in enumerate(labels):
        targets[b, row] = True
    return targets


# ----------------------------------------------------------------------------------------- mask norm


@pytest.mark.parametrize("with_mask", [False, True])
def test_mask_norm_matches_per_pixel_loop(with_mask):
    g = gen(0)
    scores = torch.rand(2, 6, 3, 4, generator=g, dtype=torch.float64) * 2 - 1
    class_mask = None
    if with_mask:
        class_mask = torch.tensor([[1, 1, 0, 1, 0, 1], [0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    gamma, beta = 1.7, -0.3
    out = mask_norm(scores, torch.tensor(gamma), torch.tensor(beta), class_mask)
    ref = ref_mask_norm(scores, gamma, beta, class_mask)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    if with_mask:  # the mask changes the statistics, so the test sees it
        assert (out - ref_mask_norm(scores, gamma, beta, None)).abs().max() > 1e-2


# ----------------------------------------------------------------------------------------- supervised


@pytest.mark.parametrize("with_mask", [False, True])
def test_supervised_loss_matches_per_pixel_loop(with_mask):
    g = gen(1)
    batch, columns, height, width = 2, 5, 4, 5
    logits = torch.randn(batch, columns, height, width, generator=g, dtype=torch.float64) * 2
    class_mask = None
    allowed = [list(range(columns))] * batch
    if with_mask:
        class_mask = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1]], dtype=torch.bool)
        allowed = [[k for k in range(columns) if class_mask[b, k]] for b in range(batch)]
    labels = torch.empty(batch, height, width, dtype=torch.long)
    for b in range(batch):
        pick = torch.randint(len(allowed[b]), (height, width), generator=g)
        labels[b] = torch.tensor(allowed[b])[pick]
    labels[torch.rand(labels.shape, generator=g) < 0.3] = -100
    out = supervised_loss(logits, labels, class_mask, ignore_index=-100)
    ref = ref_supervised_loss(logits, labels, class_mask, ignore_index=-100)
    assert abs(float(out) - ref) < TOL
    if with_mask:
        assert abs(ref - ref_supervised_loss(logits, labels, None)) > 1e-3


def test_supervised_loss_all_ignored_is_zero_and_backprops():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = supervised_loss(logits, torch.full((1, 2, 2), -100), None, -100)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# ----------------------------------------------------------------------------------------- image level


@pytest.mark.parametrize("with_mask", [False, True])
def test_image_level_loss_matches_pair_loop(with_mask):
    g = gen(2)
    logits = torch.randn(3, 6, 3, 3, generator=g, dtype=torch.float64) * 2
    labels = [[0, 2, 5], [4], [1, 3]]
    class_mask = None
    if with_mask:
        class_mask = torch.tensor(
            [[1, 1, 1, 0, 0, 1], [1, 0, 1, 1, 1, 1], [0, 1, 1, 1, 0, 1]], dtype=torch.bool
        )
    out = image_level_loss(logits, multi_hot(labels, 6), class_mask)
    ref = ref_image_level_loss(logits, labels, class_mask)
    assert abs(float(out) - ref) < TOL
    # Dropping the OTHER present labels matters: without it the loss would differ.
    no_drop = sum(
        ref_image_level_loss(logits[b : b + 1], [[lab]], None) for b in range(3) for lab in labels[b]
    )
    if not with_mask:
        assert abs(ref - no_drop / 6) > 1e-3


def padding_mask(batch: int, height: int, width: int, g: torch.Generator) -> torch.Tensor:
    """Real pixels top-left, padding bottom/right as crops get it; image 0 unpadded."""
    real = torch.ones(batch, height, width, dtype=torch.bool)
    for b in range(1, batch):
        rows = int(torch.randint(1, height + 1, (1,), generator=g))
        cols = int(torch.randint(1, width, (1,), generator=g))
        real[b, rows:] = False
        real[b, :, cols:] = False
    return real


def test_image_level_loss_pools_over_real_pixels_only():
    g = gen(3)
    logits = torch.randn(3, 6, 5, 4, generator=g, dtype=torch.float64) * 2
    labels = [[0, 2], [4], [1, 3, 5]]
    real = padding_mask(3, 5, 4, g)
    assert not real.all()
    out = image_level_loss(logits, multi_hot(labels, 6), None, real)
    assert abs(float(out) - ref_image_level_loss(logits, labels, None, real.tolist())) < TOL
    # Whatever the padding holds does not change it; without the mask it would.
    changed = logits.masked_fill(~real[:, None], 50.0)
    assert abs(float(image_level_loss(changed, multi_hot(labels, 6), None, real)) - float(out)) < TOL
    assert abs(float(image_level_loss(changed, multi_hot(labels, 6))) - float(out)) > 1e-2


def test_image_level_loss_without_labels_is_zero_and_backprops():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = image_level_loss(logits, torch.zeros(2, 4, dtype=torch.bool))
    assert loss.item() == 0.0 and ref_image_level_loss(logits, [[], []]) == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_image_level_loss_one_class_vocabulary():
    logits = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    loss = image_level_loss(logits, torch.ones(2, 1, dtype=torch.bool))
    assert abs(loss.item() - ref_image_level_loss(logits, [[0], [0]])) < TOL
    assert abs(loss.item()) < TOL  # a one-way softmax is certain
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_image_level_loss_every_class_present():
    g = gen(3)
    logits = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    labels = [[0, 1, 2, 3], [2]]
    out = image_level_loss(logits, multi_hot(labels, 4))
    ref = ref_image_level_loss(logits, labels)
    assert abs(float(out) - ref) < TOL
    # The first image's four pairs each see only their own column: loss 0; only image 1 contributes.
    assert abs(ref - ref_image_level_loss(logits[1:], [[2]]) / 5) < TOL


# ----------------------------------------------------------------------------------------- top-k slots


def test_topk_slot_features_matches_loop():
    g = gen(4)
    features = normalized(2, 8, 4, 5, dim=1, g=g)
    scores = torch.rand(2, 5, 4, 5, generator=g, dtype=torch.float64) * 2 - 1
    targets = multi_hot([[0, 3, 4], [1]], 5)
    pair_image, pair_column, _ = image_label_pairs(targets)
    assert pair_image.tolist() == [0, 0, 0, 1] and pair_column.tolist() == [0, 3, 4, 1]
    for k in (1, 3, 20, 100):  # 100 > 20 pixels: every pixel
        out = topk_slot_features(features, scores, pair_image, pair_column, k)
        ref = torch.stack(
            [
                ref_topk_pixel_features(features[b], scores[b, col], k).mean(0)
                for b, col in zip(pair_image.tolist(), pair_column.tolist(), strict=True)
            ]
        )
        torch.testing.assert_close(out, ref, atol=TOL, rtol=0)


def test_mask_slot_features_matches_loop():
    g = gen(5)
    features = normalized(2, 8, 4, 5, dim=1, g=g)
    scores = torch.rand(2, 6, 4, 5, generator=g, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 4, (2, 4, 5), generator=g)
    labels[1] = torch.where(labels[1] == 2, 5, labels[1])  # image 1: classes 0, 1, 3, 5
    labels[0, 0, :3] = -100
    labels[1, 3, 4] = 4  # a class with a single pixel
    for k in (1, 3, 20):  # 20 > every class's pixel count: all of them
        columns, slots, counts = mask_slot_features(features, scores, labels, k)
        reference = ref_mask_slot_features(features, scores, labels, k)
        assert columns.tolist() == [c for c, _ in reference]
        torch.testing.assert_close(slots, torch.stack([slot for _, slot in reference]), atol=TOL, rtol=0)
        assert counts.tolist() == [
            min(k, int((labels[b] == c).sum()))
            for b in range(2)
            for c in labels[b].unique().tolist()
            if c >= 0
        ]


def test_mask_slot_features_of_image_level_samples_is_empty():
    features = normalized(2, 8, 4, 5, dim=1, g=gen(6))
    columns, slots, counts = mask_slot_features(features, torch.rand(2, 3, 4, 5), torch.full((2, 4, 5), -100))
    assert columns.shape == (0,) and slots.shape == (0, 8) and counts.shape == (0,)


def test_topk_slot_features_ignores_padding():
    g = gen(7)
    features = normalized(3, 8, 4, 5, dim=1, g=g)
    scores = torch.rand(3, 5, 4, 5, generator=g, dtype=torch.float64) * 2 - 1
    real = padding_mask(3, 4, 5, g)
    scores = scores.masked_fill(~real[:, None], 5.0)  # padding would win every top-k
    targets = multi_hot([[0, 3], [1, 4], [2]], 5)
    pair_image, pair_column, _ = image_label_pairs(targets)
    for k in (1, 3, 20):
        out = topk_slot_features(features, scores, pair_image, pair_column, k, real)
        ref = torch.stack(
            [
                ref_topk_pixel_features(features[b], scores[b, col], k, real[b].tolist()).mean(0)
                for b, col in zip(pair_image.tolist(), pair_column.tolist(), strict=True)
            ]
        )
        torch.testing.assert_close(out, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("size", [(6, 6), (6, 7), (8, 8)])  # 36 < 40, 42 just > 40, 64 > 40 pixels
def test_topk_slot_features_with_k40(size):
    """K = 40 (the A150 / IN-124 presets, REFERENCE_IMPL 4) on maps with fewer or just more pixels than K,
    and with padding leaving 39 or 41 real pixels."""
    g = gen(8)
    features = normalized(2, 8, *size, dim=1, g=g)
    scores = torch.rand(2, 4, *size, generator=g, dtype=torch.float64) * 2 - 1
    real = torch.ones(2, *size, dtype=torch.bool)
    flat = real[1].view(-1)
    flat[39 if flat.numel() > 42 else flat.numel() - 3 :] = False  # image 1: 39 (or 33, 39) real pixels
    if size == (6, 7):
        flat[:] = True
        flat[41:] = False  # 41 real: just more than 40
    scores = scores.masked_fill(~real[:, None], 5.0)
    targets = multi_hot([[0, 3], [1, 2]], 4)
    pair_image, pair_column, _ = image_label_pairs(targets)
    for mask in (None, real):
        out = topk_slot_features(features, scores, pair_image, pair_column, 40, mask)
        ref = torch.stack(
            [
                ref_topk_pixel_features(
                    features[b], scores[b, col], 40, None if mask is None else mask[b].tolist()
                ).mean(0)
                for b, col in zip(pair_image.tolist(), pair_column.tolist(), strict=True)
            ]
        )
        torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    picked = ref_topk_pixel_features(features[1], scores[1, 1], 40, real[1].tolist())
    assert picked.shape[0] == min(40, int(real[1].sum()))


# ----------------------------------------------------------------------------------------- class sampling


def test_sample_classes_keeps_every_present_class_beyond_num_samples():
    present = torch.zeros(30, dtype=torch.bool)
    present[[1, 4, 7, 9, 20, 28, 29]] = True
    out = sample_classes(present, 3, generator=gen(0))
    assert out.tolist() == [1, 4, 7, 9, 20, 28, 29]


def test_sample_classes_size_pool_and_determinism():
    present = torch.zeros(40, dtype=torch.bool)
    present[[2, 5, 33]] = True
    pool = torch.zeros(40, dtype=torch.bool)
    pool[10:20] = True
    pool[5] = True  # a present class inside the pool is not counted twice
    for seed in range(5):
        out = sample_classes(present, 8, pool, generator=gen(seed))
        assert out.numel() == 8 and out.unique().numel() == 8
        assert torch.equal(out, out.sort().values)
        assert {2, 5, 33} <= set(out.tolist())
        assert set(out.tolist()) - {2, 5, 33} <= set(range(10, 20))
        assert torch.equal(out, sample_classes(present, 8, pool, generator=gen(seed)))
    draws = {tuple(sample_classes(present, 8, pool, generator=gen(s)).tolist()) for s in range(10)}
    assert len(draws) > 1  # it is random across seeds
    # Capped by the pool: every pool class plus the present ones.
    big = sample_classes(present, 100, pool, generator=gen(0))
    assert big.tolist() == sorted({2, 5, 33, *range(10, 20)})
    # No pool: negatives from the whole vocabulary.
    free = sample_classes(present, 12, None, generator=gen(1))
    assert free.numel() == 12 and {2, 5, 33} <= set(free.tolist())


# ----------------------------------------------------------------------------------------- per source

# Images 0, 1: source 0; image 2: source 1; images 3, 4: source 2 (REFERENCE_IMPL "differs" 3).
IMAGE_SOURCE = torch.tensor([0, 0, 1, 2, 2])


def source_weighted(means: dict[int, float], weights: dict[int, int]) -> float:
    return sum(weights[s] * means[s] for s in means) / sum(weights[s] for s in means)


def test_supervised_loss_per_source_matches_reference():
    g = gen(20)
    logits = torch.randn(5, 4, 4, 5, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 4, (5, 4, 5), generator=g)
    labels[0, :3] = -100  # image 0: 5 labelled pixels, image 1: 20
    labels[2, :, :2] = -100
    labels[4] = -100  # image 4 has no labelled pixel: source 2 counts one image
    class_mask = torch.ones(5, 4, dtype=torch.bool)
    out = supervised_loss(logits, labels, class_mask, -100, IMAGE_SOURCE)
    ref = ref_supervised_loss(logits, labels, class_mask.tolist(), -100, IMAGE_SOURCE.tolist())
    assert abs(float(out) - ref) < TOL, (float(out), ref)
    # The rule, spelled out: per-source means weighted by their images with labelled pixels (2, 1, 1).
    means = {
        s: ref_supervised_loss(logits[rows], labels[rows]) for s, rows in enumerate([[0, 1], [2], [3, 4]])
    }
    assert abs(ref - source_weighted(means, {0: 2, 1: 1, 2: 1})) < 1e-12
    # Distinguishable from one mean over all pixels, from weighting every image of a source, and from equal
    # source weights.
    for wrong in (
        ref_supervised_loss(logits, labels),
        source_weighted(means, {0: 2, 1: 1, 2: 2}),
        source_weighted(means, {0: 1, 1: 1, 2: 1}),
    ):
        assert abs(ref - wrong) > 1e-3


def test_image_level_loss_per_source_matches_reference():
    g = gen(21)
    logits = torch.randn(5, 6, 3, 4, generator=g, dtype=torch.float64) * 2
    labels = [[0], [1, 2, 5], [], [3], [4, 0]]  # image 2 has no pair: source 1 does not count
    class_mask = torch.tensor(
        [[1, 1, 1, 0, 1, 1], [1, 1, 1, 0, 1, 1], [1, 0, 1, 1, 1, 0], [1, 1, 0, 1, 1, 1], [1, 1, 0, 1, 1, 1]],
        dtype=torch.bool,
    )
    out = image_level_loss(logits, multi_hot(labels, 6), class_mask, None, IMAGE_SOURCE)
    ref = ref_image_level_loss(logits, labels, class_mask.tolist(), None, IMAGE_SOURCE.tolist())
    assert abs(float(out) - ref) < TOL, (float(out), ref)
    means = {
        0: ref_image_level_loss(logits[:2], labels[:2], class_mask[:2].tolist()),
        2: ref_image_level_loss(logits[3:], labels[3:], class_mask[3:].tolist()),
    }
    assert abs(ref - source_weighted(means, {0: 2, 2: 2})) < 1e-12
    # One mean over the 7 pairs (4 of them in source 0) is another number.
    assert abs(ref - ref_image_level_loss(logits, labels, class_mask.tolist())) > 1e-3


def test_attentive_loss_per_source_counts_images_with_usable_pairs():
    g = gen(22)
    features = normalized(5, 8, 4, 4, dim=1, g=g)
    scores = (torch.rand(5, len(COLUMNS), 4, 4, generator=g, dtype=torch.float64) - 0.5) * 0.4
    logits = torch.randn(5, len(COLUMNS), 8, 8, generator=g, dtype=torch.float64) * 2
    slots = {int(c): random_slots(2, 4, 8, g) for c in COLUMNS}
    slots[4] = random_slots(1, 4, 8, g)  # column 4 (class 4): one write, not usable
    full, compact = build_banks(slots, 8, size=2, warmup=1)
    labels = [[0, 1], [2], [4], [3, 0, 2], [4]]  # images 2 and 4 have no usable pair
    loss, records = check_against_reference(
        logits, features, scores, full, compact, COLUMNS, labels, image_source=IMAGE_SOURCE
    )
    used = [(r["image"], r["loss"]) for r in records if r["used"]]
    assert {b for b, _ in used} == {0, 1, 3}
    mean = {s: [v for b, v in used if int(IMAGE_SOURCE[b]) == s] for s in (0, 2)}
    means = {s: sum(v) / len(v) for s, v in mean.items()}
    assert abs(loss - source_weighted(means, {0: 2, 2: 1})) < 1e-9  # source 2: image 3 only
    assert abs(loss - source_weighted(means, {0: 2, 2: 2})) > 1e-3
    assert abs(loss - sum(v for _, v in used) / len(used)) > 1e-3


# ----------------------------------------------------------------------------------------- CA-Cls


def test_reference_bilinear_is_torch_bilinear():
    g = gen(5)
    grid = torch.randn(3, 5, generator=g, dtype=torch.float64)
    for size in [(6, 10), (12, 7), (3, 5)]:
        ours = torch.tensor(bilinear(grid.tolist(), *size), dtype=torch.float64)
        theirs = F.interpolate(grid[None, None], size, mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


def build_banks(slot_sets: dict[int, list[torch.Tensor]], num_classes: int, size: int, warmup: int):
    """The same writes into the FULL reference bank and the compact float32 bank."""
    full = FullMemoryBank(num_classes, size, warmup)
    compact = LarvSegMemoryBank(
        num_classes, slot_sets[next(iter(slot_sets))][0].shape[-1], size, warmup, "float32"
    )
    for class_id, slots in slot_sets.items():
        for slot in slots:
            full.enqueue(class_id, slot)
            compact.enqueue(torch.tensor([class_id]), slot.mean(0, keepdim=True))
    return full, compact


def random_slots(count: int, topk: int, dim: int, g: torch.Generator) -> list[torch.Tensor]:
    return [normalized(topk, dim, dim=-1, g=g) for _ in range(count)]


def implementation_loss(
    logits,
    features,
    scores,
    bank,
    columns,
    targets,
    class_mask=None,
    real_features=None,
    real=None,
    image_source=None,
    **kwargs,
):
    """The criterion's `_attentive_loss` pipeline on the public functions."""
    means, usable = bank.class_means(columns), bank.usable(columns)
    pair_image, pair_column, pair_rank = image_label_pairs(targets)
    maps = attentive_scores(
        features,
        scores,
        means,
        usable,
        pair_image,
        pair_column,
        targets,
        class_mask=class_mask,
        pixel_mask=real_features,
        **kwargs,
    )
    attention = maps
    if maps.shape[-2:] != logits.shape[-2:]:
        attention = F.interpolate(maps[:, None], logits.shape[-2:], mode="bilinear", align_corners=False)[
            :, 0
        ]
    loss = attentive_image_level_loss(
        logits,
        torch.sigmoid(attention),
        pair_image,
        pair_column,
        pair_rank,
        targets,
        class_mask,
        valid=usable[pair_column],
        pixel_mask=real,
        image_source=image_source,
    )
    return loss, maps, list(zip(pair_image.tolist(), pair_column.tolist(), strict=True))


def _lists(tensor):
    return None if tensor is None else tensor.tolist()


def check_against_reference(
    logits,
    features,
    scores,
    full,
    compact,
    columns,
    labels,
    class_mask=None,
    real_features=None,
    real=None,
    image_source=None,
    **kwargs,
):
    targets = multi_hot(labels, len(columns))
    loss, maps, pairs = implementation_loss(
        logits,
        features,
        scores,
        compact,
        columns,
        targets,
        class_mask,
        real_features,
        real,
        image_source,
        **kwargs,
    )
    ref, records = ref_attentive_loss(
        logits,
        features,
        scores,
        full,
        columns.tolist(),
        labels,
        _lists(class_mask),
        _lists(real_features),
        _lists(real),
        _lists(image_source),
        **kwargs,
    )
    assert abs(loss.item() - ref) < TOL, (loss.item(), ref)
    for p, (b, col) in enumerate(pairs):
        if full.usable(int(columns[col])):
            own = None if real_features is None else real_features[b].tolist()
            allowed = None if class_mask is None else class_mask[b].tolist()
            grid, _ = ref_attention_map(
                features[b],
                scores[b],
                full,
                columns.tolist(),
                col,
                labels[b],
                real=own,
                allowed=allowed,
                **kwargs,
            )
            torch.testing.assert_close(maps[p], torch.tensor(grid, dtype=torch.float64), atol=TOL, rtol=0)
    return loss.item(), records


# Columns 0..4 of this step are vocabulary classes 6, 1, 3, 0, 4 of an 8-class bank.
COLUMNS = torch.tensor([6, 1, 3, 0, 4])


def ca_inputs(seed: int, dim: int = 8, size: tuple[int, int] = (4, 4), loss_size: tuple[int, int] = (8, 8)):
    g = gen(seed)
    features = normalized(2, dim, *size, dim=1, g=g)
    scores = (torch.rand(2, len(COLUMNS), *size, generator=g, dtype=torch.float64) - 0.5) * 0.4  # below 0.35
    logits = torch.randn(2, len(COLUMNS), *loss_size, generator=g, dtype=torch.float64) * 2
    return g, features, scores, logits


@pytest.mark.parametrize("routes", ["threshold", "both"])
def test_attentive_loss_with_other_image_labels(routes):
    g, features, scores, logits = ca_inputs(10)
    slots = {int(c): random_slots(3, 4, 8, g) for c in COLUMNS}  # 3 writes > M=2: wrapped
    full, compact = build_banks(slots, 8, size=2, warmup=1)
    labels = [[0, 2, 4], [1, 3]]
    args = (logits, features, scores, full, compact, COLUMNS, labels)
    loss, records = check_against_reference(*args, synonym_filter_routes=routes)
    assert all(r["used"] and r["route"] == "labels" for r in records)
    assert any(r["kept"] for r in records) and loss > 0
    if routes == "threshold":  # the authors: every other label is background, no synonym filter
        assert all(r["synonyms"] == [] and r["kept"] == r["candidates"] for r in records)
    else:
        assert any(r["synonyms"] for r in records)
    # The two settings differ here (some labelled background is within the MSE threshold).
    other = "both" if routes == "threshold" else "threshold"
    wrong, _ = ref_attentive_loss(
        logits, features, scores, full, COLUMNS.tolist(), labels, synonym_filter_routes=other
    )
    assert abs(wrong - loss) > 1e-4
    # Same resolution (no upsampling) and a class_mask.
    class_mask = torch.tensor([[1, 1, 1, 0, 1], [1, 1, 0, 1, 1]], dtype=torch.bool)
    check_against_reference(logits[..., :4, :4], *args[1:], class_mask, synonym_filter_routes=routes)


@pytest.mark.parametrize("labels", [[[0, 2, 4], [1, 3]], [[0], [3]]])  # labels route; threshold route
def test_attentive_loss_uses_real_pixels_only(labels):
    g, features, scores, logits = ca_inputs(12)
    slots = {int(c): random_slots(2, 4, 8, g) for c in COLUMNS}
    full, compact = build_banks(slots, 8, size=2, warmup=1)
    real_features = torch.ones(2, 4, 4, dtype=torch.bool)
    real_features[1, 2:] = False
    real_features[1, :, 3:] = False
    real = F.interpolate(real_features[:, None].double(), (8, 8), mode="nearest")[:, 0] > 0.5
    scores[1, :, 3, 3] = 0.9  # padding: would put every class over the 0.35 threshold
    args = (logits, features, scores, full, compact, COLUMNS, labels)
    loss, records = check_against_reference(*args, real_features=real_features, real=real)
    if labels[1] == [3]:
        assert next(r for r in records if r["image"] == 1)["route"] == "threshold"
        assert next(r for r in records if r["image"] == 1)["candidates"] == []  # the 0.9s were padding
    # Padding changes the loss when it is not masked out.
    assert abs(loss - check_against_reference(*args)[0]) > 1e-4


def test_attentive_loss_threshold_route_without_other_labels():
    g, features, scores, logits = ca_inputs(11)
    slots = {int(c): random_slots(2, 4, 8, g) for c in COLUMNS}
    slots[3] = [-s for s in slots[6]]  # column 2 anti-correlated with column 0: never a synonym
    slots[4] = random_slots(1, 4, 8, g)  # column 4: one write, not warm
    full, compact = build_banks(slots, 8, size=2, warmup=1)
    scores[0, 2, :2, :3] = 0.6  # image 0: column 2 likely present (top-5 mean 0.6 > 0.35)
    scores[0, 1, 0, :] = 0.3  # column 1: top-5 mean 0.3 + small < 0.35: not background
    scores[0, 0, 1:3, 1:3] = 0.9  # the label itself is never its own background
    scores[1, 4, :, :2] = 0.8  # image 1: column 4 is likely present but not usable
    labels = [[0], [3]]
    loss, records = check_against_reference(logits, features, scores, full, compact, COLUMNS, labels)
    assert (
        records[0]["route"] == "threshold" and records[0]["candidates"] == [2] and records[0]["kept"] == [2]
    )
    assert records[1]["candidates"] == [4] and records[1]["unusable"] == [4] and records[1]["kept"] == []
    # Inference (no image labels): always the threshold route.
    means, usable = compact.class_means(COLUMNS), compact.usable(COLUMNS)
    maps = attentive_scores(features, scores, means, usable, torch.tensor([0, 1]), torch.tensor([0, 3]), None)
    for p, (b, col) in enumerate([(0, 0), (1, 3)]):
        grid, _ = ref_attention_map(features[b], scores[b], full, COLUMNS.tolist(), col, None)
        torch.testing.assert_close(maps[p], torch.tensor(grid, dtype=torch.float64), atol=TOL, rtol=0)
    # With the synonym filter off, the label itself would still not be its own background.
    _, unfiltered = check_against_reference(
        logits, features, scores, full, compact, COLUMNS, labels, synonym_mse_threshold=-1.0
    )
    assert unfiltered[0]["candidates"] == [2] and unfiltered[0]["kept"] == [2]
    # Ablation: no background suppression -> foreground alone.
    check_against_reference(
        logits, features, scores, full, compact, COLUMNS, labels, background_suppression=False
    )


def test_attentive_loss_mse_synonym_filter_drops_a_near_copy():
    """With routes="both" the filter also runs on an image's other labels (the package's option)."""
    g, features, scores, logits = ca_inputs(12)
    slots = {int(c): random_slots(2, 4, 8, g) for c in COLUMNS}
    noise = random_slots(2, 4, 8, g)
    slots[1] = [
        F.normalize(s + 0.01 * n, dim=-1) for s, n in zip(slots[6], noise, strict=True)
    ]  # col 1 ~ col 0
    slots[3] = [-s for s in slots[6]]  # column 2 = -column 0: kept
    full, compact = build_banks(slots, 8, size=2, warmup=1)
    labels = [[0, 1, 2], [0, 3]]
    args = (logits, features, scores, full, compact, COLUMNS, labels)
    loss, records = check_against_reference(*args, synonym_filter_routes="both")
    by_pair = {(r["image"], r["label"]): r for r in records}
    assert by_pair[(0, 0)]["synonyms"] == [1] and by_pair[(0, 0)]["kept"] == [2]
    assert by_pair[(0, 1)]["synonyms"] == [0] and by_pair[(0, 1)]["kept"] == [2]
    assert by_pair[(0, 2)]["kept"] == [0, 1]
    # Without the filter the near-copy would be subtracted and the loss would change ...
    unfiltered, _ = check_against_reference(*args, synonym_filter_routes="both", synonym_mse_threshold=-1.0)
    assert abs(unfiltered - loss) > 1e-4
    # ... which is what the authors' setting does with labelled background (REFERENCE_IMPL "differs" 1).
    authors, records = check_against_reference(*args)
    by_pair = {(r["image"], r["label"]): r for r in records}
    assert by_pair[(0, 0)]["kept"] == [1, 2] and by_pair[(0, 1)]["kept"] == [0, 2]
    assert abs(authors - unfiltered) < TOL


@pytest.mark.parametrize("routes", ["threshold", "both"])
def test_attentive_loss_distinct_background_banks_on_both_routes(routes):
    """Several usable, distinct background banks on the threshold route; column 1 is a near-copy of column 0's
    bank: dropped as a synonym on the threshold route (image 0, labelled 0 only), kept as labelled background
    on the labels route (image 1, labelled 0 and 1) unless routes="both".

    With the copy as the only background, fg - bg is near zero, noise that standardisation blows up; with
    other background classes as well, a copy of the foreground in the mean only rescales
    fg - mean(bg) = ((n - 1) / n) (fg - mean(others)), which standardisation removes."""
    g, features, scores, logits = ca_inputs(15)
    slots = {int(c): random_slots(2, 4, 8, g) for c in COLUMNS}
    noise = random_slots(2, 4, 8, g)
    slots[1] = [F.normalize(s + 0.01 * n, dim=-1) for s, n in zip(slots[6], noise, strict=True)]
    slots[3] = [-s for s in slots[6]]  # column 2: anti-correlated with column 0, never a synonym
    slots[4] = [F.normalize(-s + 0.5 * n, dim=-1) for s, n in zip(slots[6], noise, strict=True)]  # column 4
    full, compact = build_banks(slots, 8, size=2, warmup=1)
    scores[0, 1, :2, :3] = 0.6  # image 0: columns 1, 2, 4 likely present
    scores[0, 2, 2:, 1:] = 0.5
    scores[0, 4, 1, :] = 0.7
    labels = [[0], [0, 1]]
    args = (logits, features, scores, full, compact, COLUMNS, labels)
    _, records = check_against_reference(*args, synonym_filter_routes=routes)
    by_pair = {(r["image"], r["label"]): r for r in records}
    threshold_pair = by_pair[(0, 0)]
    assert threshold_pair["route"] == "threshold" and threshold_pair["candidates"] == [1, 2, 4]
    assert threshold_pair["synonyms"] == [1] and threshold_pair["kept"] == [2, 4]
    labels_pair = by_pair[(1, 0)]
    assert labels_pair["route"] == "labels" and labels_pair["mse"][1] < 0.1
    assert labels_pair["kept"] == ([1] if routes == "threshold" else [])
    # The background means are of distinct banks (and column 1 a near-copy of column 0).
    means = compact.class_means(COLUMNS)
    assert (means[2] - means[4]).norm() > 0.1 and (means[0] - means[1]).norm() < 0.05
    # The other setting gives another attention map for the labels-route pair (image 1, label 0).
    other = "both" if routes == "threshold" else "threshold"
    grid, _ = ref_attention_map(
        features[1], scores[1], full, COLUMNS.tolist(), 0, labels[1], synonym_filter_routes=other
    )
    maps = implementation_loss(
        logits, features, scores, compact, COLUMNS, multi_hot(labels, 5), synonym_filter_routes=routes
    )[1]
    assert (maps[1] - torch.tensor(grid, dtype=torch.float64)).abs().max() > 0.1


def test_attentive_loss_threshold_route_only_among_the_sources_columns():
    """The threshold route looks for background among the classes of the image's forward pass: with
    per-source columns, its class_mask row (REFERENCE_IMPL "differs" 2)."""
    g, features, scores, logits = ca_inputs(16)
    slots = {int(c): random_slots(2, 4, 8, g) for c in COLUMNS}
    noise = random_slots(2, 4, 8, g)
    slots[3] = [-s for s in slots[6]]  # column 2: anti-correlated with column 0, kept
    slots[0] = [F.normalize(-s + 0.7 * n, dim=-1) for s, n in zip(slots[6], noise, strict=True)]  # column 3
    full, compact = build_banks(slots, 8, size=2, warmup=1)
    scores[0, 2, :2, :3] = 0.6  # columns 2 and 3 are likely present in image 0 ...
    scores[0, 3, 2:, :] = 0.6
    class_mask = torch.tensor([[1, 1, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)  # ... 3 is not its column
    labels = [[0], [4]]
    _, records = check_against_reference(logits, features, scores, full, compact, COLUMNS, labels, class_mask)
    assert records[0]["candidates"] == [2] and records[0]["kept"] == [2]
    # Without the restriction column 3 would be kept as well, and the attention map would change.
    grid, details = ref_attention_map(features[0], scores[0], full, COLUMNS.tolist(), 0, [0])
    assert details["candidates"] == [2, 3] and details["kept"] == [2, 3]
    restricted, _ = ref_attention_map(
        features[0], scores[0], full, COLUMNS.tolist(), 0, [0], allowed=class_mask[0].tolist()
    )
    assert (torch.tensor(grid) - torch.tensor(restricted)).abs().max() > 0.05


def test_attentive_loss_warmup_drops_pairs_and_background():
    g, features, scores, logits = ca_inputs(13)
    slots = {int(c): random_slots(2, 4, 8, g) for c in COLUMNS}
    slots[3] = random_slots(1, 4, 8, g)  # column 2: 1 write < W * M = 2
    full, compact = build_banks(slots, 8, size=2, warmup=1)
    assert compact.usable(COLUMNS).tolist() == [True, True, False, True, True]
    labels = [[0, 2], [2]]
    loss, records = check_against_reference(logits, features, scores, full, compact, COLUMNS, labels)
    by_pair = {(r["image"], r["label"]): r for r in records}
    assert not by_pair[(0, 2)]["used"] and not by_pair[(1, 2)]["used"]
    assert by_pair[(0, 0)]["unusable"] == [2] and by_pair[(0, 0)]["kept"] == []
    # With W = 0 the same class is used: a different loss.
    full0, compact0 = build_banks(slots, 8, size=2, warmup=0)
    warm0, records0 = check_against_reference(logits, features, scores, full0, compact0, COLUMNS, labels)
    assert all(r["used"] for r in records0) and abs(warm0 - loss) > 1e-4


def test_attentive_loss_without_usable_pairs_is_zero_and_backprops():
    g, features, scores, logits = ca_inputs(14)
    slots = {int(c): random_slots(1, 4, 8, g) for c in COLUMNS}
    full, compact = build_banks(slots, 8, size=2, warmup=1)
    logits.requires_grad_(True)
    labels = [[0, 1], [4]]
    loss, _, _ = implementation_loss(logits, features, scores, compact, COLUMNS, multi_hot(labels, 5))
    ref, records = ref_attentive_loss(logits, features, scores, full, COLUMNS.tolist(), labels)
    assert loss.item() == 0.0 and ref == 0.0 and not any(r["used"] for r in records)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# ----------------------------------------------------------------------------------------- through the model


def tiny_model(num_labels: int, size: int, topk: int):
    from larvseg_hf.configuration_larvseg import LarvSegConfig
    from larvseg_hf.modeling_larvseg import LarvSegForSemanticSegmentation

    config = LarvSegConfig(
        backbone_config=dict(
            model_type="vit",
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=8,
            image_size=32,
        ),
        id2label={i: f"class_{i}" for i in range(num_labels)},
        memory_bank_size=size,
        memory_bank_topk=topk,
        memory_bank_dtype="float32",
        num_sampled_classes=1000,
    )
    return LarvSegForSemanticSegmentation(config), config


def upsample_reference(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.tensor(
        [[bilinear(channel, *size) for channel in image] for image in logits.double().tolist()],
        dtype=torch.float64,
    )


def test_model_supervised_loss_and_total_match_reference():
    torch.manual_seed(1)
    model, config = tiny_model(5, 2, 3)
    pixel_values = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 5, (2, 32, 32))
    labels[0, :8] = config.ignore_index
    image_labels = torch.zeros(2, 5)
    image_labels[1, [0, 3]] = 1
    with torch.no_grad():
        out = model.eval()(pixel_values, labels=labels, image_labels=image_labels)
    upsampled = upsample_reference(out.logits, (16, 16))
    resized = labels[:, ::2, ::2]  # nearest, factor 2: source pixel floor(2 * i)
    ref_sup = ref_supervised_loss(upsampled, resized, None, config.ignore_index)
    ref_img = ref_image_level_loss(upsampled, [[], [0, 3]])
    assert abs(out.supervised_loss.item() - ref_sup) < TOL
    assert abs(out.image_level_loss.item() - ref_img) < TOL
    assert out.attentive_loss.item() == 0.0  # empty bank: no usable class
    assert (
        abs(out.loss.item() - (config.supervised_loss_weight * ref_sup + config.image_loss_weight * ref_img))
        < TOL
    )


def training_model_and_reference(seed: int, num_labels: int = 6, size: int = 2, topk: int = 3):
    """A tiny model in training mode and an empty published-layout bank shaped like its own."""
    torch.manual_seed(seed)
    model, config = tiny_model(num_labels, size, topk)
    return model.train(), config, FullMemoryBank(num_labels, size, config.memory_bank_warmup)


def test_model_attentive_loss_matches_reference_end_to_end():
    num_labels, topk = 6, 3
    model, config, reference = training_model_and_reference(0, num_labels, topk=topk)

    def step(labels: list[list[int]]):
        pixel_values = torch.randn(len(labels), 3, 32, 32)
        image_labels = multi_hot(labels, num_labels).float()
        with torch.no_grad():
            return model(pixel_values, image_labels=image_labels), pixel_values, image_labels

    def replay(out, labels):  # what the published bank would store for this forward
        columns = out.class_ids.tolist()
        for b, row in enumerate(labels):
            for col in row:
                reference.enqueue(
                    columns[col], ref_topk_pixel_features(out.features[b], out.scores[b, col], topk)
                )

    warm_steps = [[[0, 1], [0, 2]], [[1, 2], [3]], [[0], [1, 2, 3, 4]]]  # class 4: one write; class 5: none
    for labels in warm_steps:
        out, _, _ = step(labels)
        assert out.class_ids.tolist() == list(range(num_labels))  # no sampling: columns == ids
        replay(out, labels)
    assert reference.writes == [3, 3, 3, 2, 1, 0]
    every = torch.arange(num_labels)
    full_means = torch.stack(
        [
            torch.stack(reference.stored(c)).mean(0)
            if reference.stored(c)
            else torch.zeros(32, dtype=torch.float64)
            for c in range(6)
        ]
    )
    torch.testing.assert_close(model.memory_bank.class_means(every).double(), full_means, atol=TOL, rtol=0)

    before = reference.copy()
    labels = [[0, 1, 4], [3]]
    out, pixel_values, image_labels = step(labels)
    loss_size = (32 // config.loss_downsample_rate,) * 2
    upsampled = upsample_reference(out.logits, loss_size)
    ref, records = ref_attentive_loss(upsampled, out.features, out.scores, before, list(range(6)), labels)
    assert abs(float(out.attentive_loss) - ref) < TOL, (float(out.attentive_loss), ref)
    assert abs(float(out.image_level_loss) - ref_image_level_loss(upsampled, labels)) < TOL
    used = {(r["image"], r["label"]) for r in records if r["used"]}
    assert used == {(0, 0), (0, 1), (1, 3)}  # class 4 is still warming up
    by_pair = {(r["image"], r["label"]): r for r in records}
    assert by_pair[(0, 0)]["kept"] == [1] and by_pair[(0, 0)]["unusable"] == [4]
    assert by_pair[(1, 3)]["route"] == "threshold"
    # The forward then enqueued its own pairs (scored before enqueue, so the loss above used `before`).
    replay(out, labels)
    full_means = torch.stack([torch.stack(reference.stored(c)).mean(0) for c in range(5)])
    torch.testing.assert_close(
        model.memory_bank.class_means(every[:5]).double(), full_means, atol=TOL, rtol=0
    )
    # Evaluation mode scores with the bank but never writes to it.
    writes = model.memory_bank.num_writes.clone()
    slots = model.memory_bank.slots.clone()
    model.eval()
    with torch.no_grad():
        evaluated = model(pixel_values, image_labels=image_labels)
    assert torch.equal(model.memory_bank.num_writes, writes) and torch.equal(model.memory_bank.slots, slots)
    assert torch.isfinite(evaluated.attentive_loss)


def test_model_pixel_mask_keeps_image_losses_and_bank_writes_on_real_pixels():
    num_labels, topk = 6, 3
    model, config, reference = training_model_and_reference(1, num_labels, topk=topk)

    def forward(labels, pixel_mask=None):
        pixel_values = torch.randn(len(labels), 3, 32, 32)
        pixel_values = pixel_values if pixel_mask is None else pixel_values * pixel_mask[:, None]
        with torch.no_grad():
            return model(
                pixel_values, image_labels=multi_hot(labels, num_labels).float(), pixel_mask=pixel_mask
            )

    def replay(out, labels, real=None):
        for b, row in enumerate(labels):
            own = None if real is None else real[b].tolist()
            for col in row:
                reference.enqueue(
                    col, ref_topk_pixel_features(out.features[b], out.scores[b, col], topk, own)
                )

    for labels in ([[0, 1], [2, 3]], [[0, 2], [1, 3]], [[0, 3], [1, 2]]):
        replay(forward(labels), labels)
    before = reference.copy()

    labels = [[0, 1], [3]]
    pixel_mask = torch.ones(2, 32, 32, dtype=torch.bool)
    pixel_mask[1, 12:] = False
    pixel_mask[1, :, 20:] = False
    out = forward(labels, pixel_mask)
    loss_size = (32 // config.loss_downsample_rate,) * 2
    real = F.interpolate(pixel_mask[:, None].float(), loss_size, mode="nearest")[:, 0] > 0.5
    real_features = (
        F.interpolate(pixel_mask[:, None].float(), out.features.shape[-2:], mode="nearest")[:, 0] > 0.5
    )
    assert not real_features[1].all() and real_features[1].any()
    upsampled = upsample_reference(out.logits, loss_size)
    ref, records = ref_attentive_loss(
        upsampled,
        out.features,
        out.scores,
        before,
        list(range(6)),
        labels,
        None,
        real_features.tolist(),
        real.tolist(),
    )
    assert all(r["used"] for r in records)
    assert abs(float(out.attentive_loss) - ref) < TOL, (float(out.attentive_loss), ref)
    assert (
        abs(float(out.image_level_loss) - ref_image_level_loss(upsampled, labels, None, real.tolist())) < TOL
    )
    # Its slots came from real pixels only.
    replay(out, labels, real_features)
    every = torch.arange(4)
    full_means = torch.stack([torch.stack(reference.stored(c)).mean(0) for c in range(4)])
    torch.testing.assert_close(model.memory_bank.class_means(every).double(), full_means, atol=TOL, rtol=0)
