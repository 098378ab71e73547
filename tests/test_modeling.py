"""LarvSegForSemanticSegmentation: shapes, class restriction, input errors, class sampling,
gradient flow of each loss term, memory-bank updates and coseg inference, on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_config, make_model
from PIL import Image

import larvseg_hf.head_larvseg as head_module
from larvseg_hf import LarvSegForSemanticSegmentation

NAMES = ["background", "cat", "dog", "potted_plant", "person"]
IGNORE = -100


def _image_labels(batch: int, num_labels: int, rows: dict[int, list[int]]) -> torch.Tensor:
    hot = torch.zeros(batch, num_labels)
    for row, ids in rows.items():
        hot[row, ids] = 1
    return hot


def _fill_bank(model: LarvSegForSemanticSegmentation, class_ids: list[int], seed: int = 0) -> None:
    """Make `class_ids` usable: write warmup x size slots of random unit vectors for each."""
    bank = model.memory_bank
    generator = torch.Generator().manual_seed(seed)
    writes = max(bank.warmup * bank.size, 1)
    ids = torch.tensor(class_ids).repeat_interleave(writes)
    rows = torch.nn.functional.normalize(
        torch.randn(ids.numel(), bank.slots.shape[-1], generator=generator), dim=-1
    )
    bank.enqueue(ids, rows)


# ------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("backbone", "size", "feature_size", "channels"),
    [("vit", (32, 48), (4, 6), 32), ("resnet", (64, 48), (8, 6), 96)],
)
def test_output_shapes_and_dtypes(backbone, size, feature_size, channels):
    model = make_model(backbone, names=NAMES)
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.logits.shape == (2, len(NAMES), *feature_size)
    assert out.scores.shape == out.logits.shape
    assert out.features.shape == (2, channels, *feature_size)
    assert out.logits.dtype == out.scores.dtype == out.features.dtype == torch.float32
    assert out.class_ids.dtype == torch.long
    assert out.class_ids.tolist() == list(range(len(NAMES)))
    assert out.loss is None
    assert torch.isfinite(out.logits).all()
    # Features are unit vectors; scores are their cosines with the classes.
    torch.testing.assert_close(out.features.norm(dim=1), torch.ones(2, *feature_size))
    assert out.scores.abs().max() <= 1 + 1e-5


def test_head_hidden_size_adds_neck():
    model = make_model("resnet", names=NAMES, head_hidden_size=24)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.features.shape == (1, 24, 4, 4)
    assert model.head.class_embeddings.shape == (len(NAMES), 24)


@pytest.mark.parametrize("size", [(24, 56), (64, 16), (40, 32)])
def test_vit_non_square_inputs_interpolate_position_embeddings(size):
    # The config's image_size is 32x32; other sizes need interpolated position embeddings.
    model = make_model("vit", names=NAMES)
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.logits.shape == (1, len(NAMES), size[0] // 8, size[1] // 8)
    assert torch.isfinite(out.logits).all()


def test_returns_tuple_without_return_dict(tiny_model):
    with torch.no_grad():
        out = tiny_model(torch.randn(1, 3, 32, 32), return_dict=False)
    assert isinstance(out, tuple)
    assert out[0].shape == (1, 5, 4, 4)


# ------------------------------------------------------------------------------------------- class_ids


def test_class_ids_by_ids_and_names_restrict_columns():
    model = make_model("vit", names=NAMES)
    pixels = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        full = model(pixels)
        by_ids = model(pixels, class_ids=[3, 1])
        by_names = model(pixels, class_ids=["potted_plant", "cat"])
        by_tensor = model(pixels, class_ids=torch.tensor([3, 1]))
    for out in (by_ids, by_names, by_tensor):
        assert out.class_ids.tolist() == [3, 1]
        assert out.logits.shape == (2, 2, 4, 5)
        # Raw cosine scores do not depend on the other columns: they ARE the full model's columns.
        torch.testing.assert_close(out.scores, full.scores[:, [3, 1]], rtol=0, atol=1e-6)
    torch.testing.assert_close(by_names.logits, by_ids.logits, rtol=0, atol=0)
    torch.testing.assert_close(by_tensor.logits, by_ids.logits, rtol=0, atol=0)
    # Mask norm standardises across the columns in use, so restricted logits are not a slice of full ones...
    assert not torch.allclose(by_ids.logits, full.logits[:, [3, 1]], atol=1e-3)
    # ...but the scores standardised per pixel over the two columns (gamma = 1, beta = 0 at init).
    scores = by_ids.scores
    mean, var = scores.mean(1, keepdim=True), scores.var(1, unbiased=False, keepdim=True)
    torch.testing.assert_close(by_ids.logits, (scores - mean) / torch.sqrt(var + 1e-5))


def test_unknown_class_name_lists_closest_names():
    model = make_model("vit", names=NAMES)
    with pytest.raises(KeyError, match=r"pottedplant.*Closest names.*potted_plant"):
        model(torch.randn(1, 3, 32, 32), class_ids=["cat", "pottedplant"])
    with pytest.raises(KeyError, match="zebra"):
        model.resolve_class_ids(["zebra"])


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": torch.full((2, 32, 40), 9)}, r"labels hold ids \[9\] outside the vocabulary \[0, 5\)"),
        ({"labels": torch.full((2, 32, 40), -5)}, r"labels hold ids \[-5\] outside the vocabulary"),
        ({"labels": torch.zeros(2, 16, 20, dtype=torch.long)}, r"labels must be \(batch, height, width\)"),
        (
            {"image_labels": torch.zeros(2, 4)},
            r"image_labels must be multi-hot of shape .* \(2, 5\), got \(2, 4\)",
        ),
        ({"image_labels": torch.zeros(2, 6)}, r"got \(2, 6\)"),
        (
            {"pixel_mask": torch.ones(2, 16, 20, dtype=torch.bool)},
            r"pixel_mask must be \(batch, height, width\) = \(2, 32, 40\), got \(2, 16, 20\)",
        ),
        ({"class_ids": [7]}, r"class ids \[7\] are outside the vocabulary \[0, 5\)"),
        ({"class_ids": [-1]}, r"outside the vocabulary"),
        ({"class_ids": []}, r"class_ids is empty"),
        ({"class_ids": torch.tensor([], dtype=torch.long)}, r"class_ids is empty"),
    ],
)
def test_clear_errors_for_bad_targets_and_classes(kwargs, message):
    model = make_model("vit", names=NAMES)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(2, 3, 32, 40), **kwargs)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 32, 32), (1, 4, 32, 32), (1, 1, 3, 32, 32)])
def test_pixel_values_of_wrong_rank_or_channels(shape):
    model = make_model("vit", names=NAMES)
    with pytest.raises(ValueError, match=r"pixel_values must be \(batch, 3, height, width\)"):
        model(torch.randn(*shape))


def test_empty_vocabulary_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="non-empty vocabulary"):
        LarvSegForSemanticSegmentation(make_config("vit", id2label={}))
    with pytest.raises(ValueError, match="vocabulary is empty"):
        LarvSegForSemanticSegmentation.from_backbone(tmp_path / "never_read", vocabulary=[])


def test_ignore_index_inside_vocabulary_is_rejected():
    with pytest.raises(ValueError, match="ignore_index=2 is a vocabulary id"):
        make_config("vit", names=NAMES, ignore_index=2)


# ------------------------------------------------------------------------------------------- training


class _MaskNormSpy:
    """Wraps head_larvseg.mask_norm to record the class_mask each forward standardises with."""

    def __init__(self):
        self.class_masks = []

    def __call__(self, scores, gamma, beta, class_mask=None, eps=1e-5, moments=None):
        self.class_masks.append(class_mask)
        return _ORIGINAL_MASK_NORM(scores, gamma, beta, class_mask, eps, moments)


_ORIGINAL_MASK_NORM = head_module.mask_norm


@pytest.mark.parametrize("per_source", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_class_sampling_keeps_present_and_draws_from_each_sources_vocabulary(
    seed, per_source, monkeypatch
):
    num_labels, sampled = 40, 8
    base = list(range(20))
    pools = {"masks": base, "images": list(range(10, 40))}  # the image source also has base classes 10..19
    model = make_model(
        "vit",
        num_labels,
        seed=seed,
        train=True,
        base_label_ids=base,
        num_sampled_classes=sampled,
        source_vocabularies=pools,
        per_source_columns=per_source,
    )
    spy = _MaskNormSpy()
    monkeypatch.setattr(head_module, "mask_norm", spy)

    labels = torch.full((4, 32, 32), IGNORE)
    labels[0, :16], labels[0, 16:], labels[1, :, :8] = 2, 5, 11  # mask rows 0, 1 (row 1 partly unlabelled)
    image_labels = _image_labels(4, num_labels, {2: [25, 33], 3: [38]})  # image rows 2, 3 (novel ids)
    torch.manual_seed(100 + seed)
    out = model(
        torch.randn(4, 3, 32, 32),
        labels=labels,
        image_labels=image_labels,
        source_index=torch.tensor([0, 0, 1, 1]),
    )

    columns = out.class_ids.tolist()
    assert {2, 5, 11, 25, 33, 38} <= set(columns)
    assert columns == sorted(set(columns))
    assert len(columns) <= 2 * sampled
    assert out.logits.shape[1] == len(columns)

    class_mask = out.class_mask
    assert class_mask is not None and class_mask.shape == (4, len(columns))
    # The union is wider than one source's draw, so each source is scored on its own columns alone.
    assert spy.class_masks == [None, None]
    ids = out.class_ids
    for rows, present, pool in (
        ((0, 1), {2, 5, 11}, pools["masks"]),
        ((2, 3), {25, 33, 38}, pools["images"]),
    ):
        used = [set(ids[class_mask[row]].tolist()) for row in rows]
        assert used[0] == used[1]  # one draw per source, shared by its samples
        assert present <= used[0] and len(used[0]) == sampled
        if per_source:  # negatives from the source's own vocabulary only
            assert used[0] <= set(pool) | present
    assert torch.isfinite(out.loss)
    assert torch.isfinite(out.supervised_loss) and out.supervised_loss > 0
    assert torch.isfinite(out.image_level_loss) and out.image_level_loss > 0
    out.loss.backward()
    assert torch.isfinite(model.head.class_embeddings.grad).all()
    # Only the columns seen this step receive gradient.
    touched = model.head.class_embeddings.grad.abs().sum(1) > 0
    assert set(touched.nonzero().flatten().tolist()) <= set(columns)


def test_small_source_vocabularies_are_used_whole():
    """A150-style: every source's vocabulary fits in num_sampled_classes, so each sees all its own names."""
    pools = {"masks": [0, 1, 2], "images": [2, 3, 4]}
    model = make_model("vit", names=NAMES, train=True, num_sampled_classes=100, source_vocabularies=pools)
    labels = torch.full((2, 32, 32), IGNORE)
    labels[0, :, :5] = 1
    image_labels = _image_labels(2, len(NAMES), {1: [4]})
    out = model(
        torch.randn(2, 3, 32, 32), labels=labels, image_labels=image_labels, source_index=torch.tensor([0, 1])
    )
    assert out.class_ids.tolist() == [0, 1, 2, 3, 4]
    assert out.class_ids[out.class_mask[0]].tolist() == [0, 1, 2]
    assert out.class_ids[out.class_mask[1]].tolist() == [2, 3, 4]
    with pytest.raises(ValueError, match="source_index holds"):
        model(torch.randn(1, 3, 32, 32), labels=labels[:1], source_index=torch.tensor([2]))


def test_small_vocabulary_uses_every_class_in_training():
    model = make_model("vit", names=NAMES, train=True, num_sampled_classes=100)
    labels = torch.full((1, 32, 32), IGNORE)
    labels[0, :8] = 1
    out = model(torch.randn(1, 3, 32, 32), labels=labels)
    assert out.class_ids.tolist() == list(range(len(NAMES)))


TRAINABLE = [
    "head.pixel_projection.weight",
    "head.class_projection.weight",
    "head.class_embeddings",
    "head.mask_norm.gamma",
]
ONLY = {
    "supervised": {"supervised_loss_weight": 1.0, "image_loss_weight": 0.0, "attentive_loss_weight": 0.0},
    "image_level": {"supervised_loss_weight": 0.0, "image_loss_weight": 1.0, "attentive_loss_weight": 0.0},
    "attentive": {"supervised_loss_weight": 0.0, "image_loss_weight": 0.0, "attentive_loss_weight": 1.0},
}


@pytest.mark.parametrize("term", list(ONLY))
def test_each_loss_term_alone_reaches_every_trainable_part(term):
    num_labels = 12
    model = make_model(
        "vit",
        num_labels,
        train=True,
        base_label_ids=range(6),
        memory_bank_size=1,
        memory_bank_warmup=1,
        **ONLY[term],
    )
    pixels = torch.randn(4, 3, 32, 32)
    labels = torch.full((4, 32, 32), IGNORE)
    labels[0, :16], labels[0, 16:], labels[1] = 1, 2, 3
    image_labels = _image_labels(4, num_labels, {2: [7, 8], 3: [9]})
    if term == "attentive":
        with torch.no_grad():  # warm the bank: one write per (image, label) pair makes size-1 rings usable
            model(pixels, labels=labels, image_labels=image_labels)
        assert model.memory_bank.usable(torch.tensor([7, 8, 9])).all()
    model.zero_grad()

    out = model(pixels, labels=labels, image_labels=image_labels)
    loss_name = {
        "supervised": "supervised_loss",
        "image_level": "image_level_loss",
        "attentive": "attentive_loss",
    }
    assert getattr(out, loss_name[term]) > 0
    torch.testing.assert_close(out.loss, getattr(out, loss_name[term]))
    out.loss.backward()

    for name in TRAINABLE:
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().max() > 1e-6, name
    backbone_grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None for g in backbone_grads)
    assert model.backbone.model.embeddings.patch_embeddings.projection.weight.grad.abs().max() > 1e-6
    # beta shifts every column equally, and every term is a softmax cross-entropy over columns: its
    # gradient is connected but mathematically zero (shift invariance), only float noise remains.
    beta_grad = model.head.mask_norm.beta.grad
    assert beta_grad is not None and beta_grad.abs() < 1e-5
    # The bank is buffers: never a parameter, never a gradient.
    parameter_names = {name for name, _ in model.named_parameters()}
    assert not any(name.startswith("memory_bank") for name in parameter_names)
    assert not model.memory_bank.slots.requires_grad and model.memory_bank.slots.grad is None
    assert model.memory_bank.num_writes.grad is None


def test_frozen_class_embeddings_get_no_gradient():
    model = make_model("vit", names=NAMES, train=True, freeze_class_embeddings=True)
    out = model(torch.randn(2, 3, 32, 32), image_labels=_image_labels(2, 5, {0: [1], 1: [2]}))
    out.loss.backward()
    assert model.head.class_embeddings.grad is None
    assert model.head.class_projection.weight.grad is not None


# ------------------------------------------------------------------------------------------- memory bank


def test_eval_forward_with_targets_leaves_bank_alone_and_train_forward_writes():
    num_labels = 6
    model = make_model("vit", num_labels, memory_bank_size=2, memory_bank_warmup=1)
    pixels = torch.randn(3, 3, 32, 32)
    labels = torch.full((3, 32, 32), IGNORE)
    labels[0] = 1
    image_labels = _image_labels(3, num_labels, {1: [2, 4], 2: [4]})
    slots, writes = model.memory_bank.slots.clone(), model.memory_bank.num_writes.clone()

    model.eval()
    with torch.no_grad():
        out = model(pixels, labels=labels, image_labels=image_labels)
    assert out.loss is not None
    assert torch.equal(model.memory_bank.slots, slots) and torch.equal(model.memory_bank.num_writes, writes)

    model.train()
    model(pixels, labels=labels, image_labels=image_labels)
    # One slot per (image, label) pair: class 2 once, class 4 twice; mask labels never enter the bank.
    assert model.memory_bank.num_writes.tolist() == [0, 0, 1, 0, 2, 0]
    assert model.memory_bank.slots[[2, 4]].abs().sum() > 0
    assert model.memory_bank.slots[[0, 1, 3, 5]].abs().sum() == 0
    # Slot means are means of unit vectors: norm at most 1.
    assert model.memory_bank.slots[4].float().norm(dim=-1).max() <= 1 + 1e-2


def test_memory_bank_from_masks_writes_mask_classes_after_scoring():
    num_labels = 6
    kwargs = {"memory_bank_size": 2, "memory_bank_warmup": 1}
    pixels = torch.randn(3, 3, 32, 32)
    labels = torch.full((3, 32, 32), IGNORE)
    labels[0, :16] = 1
    labels[0, 16:] = 3
    image_labels = _image_labels(3, num_labels, {1: [2, 4], 2: [4]})
    losses = {}
    for from_masks in (False, True):
        model = make_model("vit", num_labels, train=True, memory_bank_from_masks=from_masks, **kwargs)
        _fill_bank(model, [1, 2, 3, 4])
        writes = model.memory_bank.num_writes.clone()
        losses[from_masks] = model(pixels, labels=labels, image_labels=image_labels).attentive_loss
        added = (model.memory_bank.num_writes - writes).tolist()
        # Mask image 0 adds one slot for each of its classes 1 and 3 only with the option.
        assert added == ([0, 1, 1, 1, 2, 0] if from_masks else [0, 0, 1, 0, 2, 0])
    # This step's writes never reach this step's attention.
    torch.testing.assert_close(losses[True], losses[False])


def test_coseg_reweights_only_classes_with_a_usable_bank():
    model = make_model("vit", names=NAMES, memory_bank_size=2, memory_bank_warmup=1)
    pixels = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        plain = model(pixels).logits
        empty_bank = model(pixels, coseg=True).logits
    # No usable bank: every column gets sigmoid(0) = 0.5, a uniform scale that keeps the argmax.
    assert torch.equal(empty_bank, plain * 0.5)
    assert torch.equal(empty_bank.argmax(1), plain.argmax(1))

    usable, unusable = [1, 3], [0, 2, 4]
    _fill_bank(model, usable)
    model.memory_bank.enqueue(torch.tensor([4]), torch.ones(1, model.memory_bank.slots.shape[-1]))  # not warm
    assert model.memory_bank.usable(torch.arange(5)).tolist() == [False, True, False, True, False]
    with torch.no_grad():
        again = model(pixels).logits
        coseg = model(pixels, coseg=True).logits
    assert torch.equal(again, plain)  # coseg=False ignores the bank
    # Classes without a usable bank: still exactly the uniform 0.5 scale, no spatial re-weighting.
    assert torch.equal(coseg[:, unusable], plain[:, unusable] * 0.5)
    # Classes with a bank: a per-pixel attention in (0, 1), not a uniform scale.
    ratio = coseg[:, usable] / plain[:, usable]
    assert ((ratio > 0) & (ratio < 1)).all()
    assert ratio.flatten(2).std(-1).min() > 1e-3


def test_inference_class_vectors_are_cached_until_weights_change():
    model = make_model("vit", 10, train=True)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        first = model(pixels).logits
        cached = model.head._class_vector_cache[1]
        model(pixels)
        assert model.head._class_vector_cache[1] is cached  # reused, not recomputed
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(pixels).logits.square().sum().backward()
    optimizer.step()
    with torch.no_grad():
        after = model(pixels).logits
    assert model.head._class_vector_cache[1] is not cached
    torch.testing.assert_close(after, model(pixels).logits.detach())  # cached == freshly computed
    assert not torch.allclose(first, after)


# ------------------------------------------------------------------------------------------- class_ids input


def test_class_names_match_as_training_normalises_them():
    names = ["background", "high heeled shoe", "cat face", "t-rex"]
    model = make_model("vit", names=names)
    # The dataset and Unicode say "high-heeled shoe"; the vocabulary stores the normalised name.
    assert model.resolve_class_ids(["High-heeled shoe", "Background", "T_Rex", "cat  face"]).tolist() == [
        1,
        0,
        3,
        2,
    ]
    assert model.resolve_class_ids(["t-rex"]).tolist() == [3]  # the stored spelling itself


def test_ambiguous_normalised_name_lists_the_candidates():
    model = make_model("vit", names=["Cat", "cat", "dog"])
    assert model.resolve_class_ids(["Cat", "cat"]).tolist() == [0, 1]  # exact spellings are not ambiguous
    with pytest.raises(KeyError, match=r"'CAT' is ambiguous.*'Cat' \(id 0\), 'cat' \(id 1\)"):
        model.resolve_class_ids(["CAT"])


@pytest.mark.parametrize(
    ("class_ids", "error", "message"),
    [
        ("cat", TypeError, r"not one string .*pass \['cat'\]"),
        ([1.0, 2], TypeError, r"class names \(str\) or integer ids, got float: 1.0"),
        ([np.float32(2)], TypeError, r"got float32"),
        (torch.tensor([1.0]), TypeError, r"integer ids, got a tensor of dtype torch.float32"),
        ([True], TypeError, r"got bool"),
        ([1, 1], ValueError, r"repeats 'cat' \(id 1\)"),
        (["cat", 1], ValueError, r"repeats 'cat' \(id 1\)"),
        (torch.tensor([2, 3, 2]), ValueError, r"repeats 'dog' \(id 2\)"),
        (3, TypeError, r"must be a list of class names or ids, got int"),
    ],
)
def test_bad_class_ids_are_clear_errors(class_ids, error, message):
    model = make_model("vit", names=NAMES)
    with pytest.raises(error, match=message):
        model(torch.randn(1, 3, 32, 32), class_ids=class_ids)


def test_numpy_integer_ids_are_ids():
    model = make_model("vit", names=NAMES)
    assert model.resolve_class_ids([np.int64(3), 1]).tolist() == [3, 1]
    assert model.resolve_class_ids(np.array([4, 0])).tolist() == [4, 0]


@pytest.mark.parametrize(
    ("pixel_values", "message"),
    [
        (np.zeros((1, 3, 32, 32), dtype=np.float32), r"must be a torch.Tensor, got numpy.ndarray"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.float64), r"dtype torch.float64 .* torch.float32; cast with"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), r"dtype torch.uint8 .* LarvSegImageProcessor"),
    ],
)
def test_pixel_values_of_another_type_or_dtype_are_clear_errors(pixel_values, message):
    model = make_model("vit", names=NAMES)
    with pytest.raises(TypeError, match=message):
        model(pixel_values)


def test_post_processing_works_on_outputs_computed_with_gradients():
    from larvseg_hf import LarvSegImageProcessor

    model = make_model("vit", names=NAMES)
    processor = LarvSegImageProcessor(size={"height": 32, "width": 32}, size_divisor=8)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    outputs = model(**processor(image))  # as in the README: no torch.no_grad()
    assert outputs.logits.requires_grad
    label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
    with torch.no_grad():
        expected = processor.post_process_semantic_segmentation(
            model(**processor(image)), target_sizes=[image.size[::-1]]
        )[0]
    assert label_map.shape == (40, 50) and torch.equal(label_map, expected)
