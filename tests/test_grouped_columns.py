"""Scoring each source's samples on its own sampled columns (the large-vocabulary training path) must give
the losses, gradients and bank writes of one pass over the union of the columns with a class mask."""

from __future__ import annotations

import copy

import pytest
import torch

from larvseg_hf import LarvSegConfig, LarvSegForSemanticSegmentation
from larvseg_hf.criterion_larvseg import union_columns
from larvseg_hf.losses_larvseg import ItemLosses, image_level_loss, supervised_loss

NUM_LABELS = 40
SIZE = 32


def _model(per_source_losses: bool, head_hidden_size: int = 16) -> LarvSegForSemanticSegmentation:
    torch.manual_seed(0)
    config = LarvSegConfig(
        backbone_config={
            "model_type": "resnet",
            "embedding_size": 8,
            "hidden_sizes": [8, 16],
            "depths": [1, 1],
            "layer_type": "basic",
            "out_features": ["stage2"],
        },
        id2label={i: f"class {i}" for i in range(NUM_LABELS)},
        base_label_ids=list(range(20)),
        head_hidden_size=head_hidden_size,
        num_sampled_classes=6,
        memory_bank_size=2,
        memory_bank_warmup=0,
        per_source_losses=per_source_losses,
        source_vocabularies={"mask": list(range(20)), "single": list(range(1, 40)), "weak": list(range(40))},
    )
    model = LarvSegForSemanticSegmentation(config).train()
    with torch.no_grad():  # usable banks, so the attentive term is live
        model.memory_bank.slots.normal_()
        model.memory_bank.num_writes.fill_(5)
    return model


def _batch(order: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Two mask samples, then two single-label and two weak-label ones; `order` interleaves the sources."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.full((6, SIZE, SIZE), -100, dtype=torch.long)
    labels[:2] = (
        torch.randint(0, 20, (2, SIZE // 8, SIZE // 8), generator=generator)
        .repeat_interleave(8, 1)
        .repeat_interleave(8, 2)
    )
    image_labels = torch.zeros(6, NUM_LABELS)
    image_labels[2, [5, 33]] = 1
    image_labels[3, 21] = 1
    image_labels[4, [0, 3, 27]] = 1
    image_labels[5, 39] = 1
    pixel_mask = torch.ones(6, SIZE, SIZE, dtype=torch.bool)
    pixel_mask[5, :, 20:] = False
    batch = {
        "pixel_values": torch.randn(6, 3, SIZE, SIZE, generator=generator),
        "labels": labels,
        "image_labels": image_labels,
        "pixel_mask": pixel_mask,
        "source_index": torch.tensor([0, 0, 1, 1, 2, 2]),
    }
    return batch if order is None else {name: value[order] for name, value in batch.items()}


def _dense(model, batch, groups):
    """The union pass, as the model runs it when the union fits one group's budget."""
    columns, class_mask = union_columns(groups, 6)
    features, scores, logits = model.head(model.backbone(batch["pixel_values"]), columns, class_mask)
    terms = model.criterion(
        model.memory_bank,
        (SIZE, SIZE),
        logits,
        features,
        scores,
        columns,
        class_mask,
        batch["labels"],
        batch["image_labels"],
        batch["pixel_mask"],
        batch["source_index"],
    )
    return model.criterion.total(terms), terms, scores, logits


@pytest.mark.parametrize(
    ("per_source_losses", "order"),
    [(True, None), (False, None), (True, [4, 2, 0, 5, 1, 3])],
    ids=["per-source", "pooled", "sources-interleaved"],
)
def test_grouped_pass_matches_union_pass(per_source_losses, order):
    grouped_model = _model(per_source_losses)
    dense_model = copy.deepcopy(grouped_model)
    batch = _batch(order)

    torch.manual_seed(7)
    groups = dense_model.criterion.sample_groups(
        batch["labels"], batch["image_labels"], 6, batch["source_index"]
    )
    columns, _ = union_columns(groups, 6)
    assert columns.numel() > 6, (
        "the union must be wider than one group's budget, or the grouped path is not taken"
    )
    dense_loss, dense_terms, dense_scores, dense_logits = _dense(dense_model, batch, groups)
    dense_loss.backward()

    torch.manual_seed(7)
    output = grouped_model(**batch)
    output.loss.backward()

    assert torch.equal(output.class_ids, columns)
    for name, value in dense_terms.items():
        assert float(value.detach()) != 0.0, name
        torch.testing.assert_close(getattr(output, name), value.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(output.loss, dense_loss, rtol=1e-5, atol=1e-6)
    for (name, grouped), (_, dense) in zip(
        grouped_model.named_parameters(), dense_model.named_parameters(), strict=True
    ):
        if dense.grad is None:
            assert grouped.grad is None or not grouped.grad.any(), name
            continue
        torch.testing.assert_close(grouped.grad, dense.grad, rtol=1e-4, atol=1e-6, msg=name)
    for name in ("slots", "slot_counts", "num_writes"):
        torch.testing.assert_close(
            getattr(grouped_model.memory_bank, name), getattr(dense_model.memory_bank, name)
        )
    # The output keeps the union layout, in the batch's order: each sample's own columns hold its group's
    # scores and logits, as the union pass computes them, and the others 0.
    assert output.logits.shape[:2] == (6, columns.numel())
    own = output.class_mask
    torch.testing.assert_close(output.scores[own], dense_scores[own].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(output.logits[own].detach(), dense_logits[own].detach(), rtol=1e-5, atol=1e-5)
    assert torch.equal(
        output.logits[output.class_mask.logical_not()].detach(),
        torch.zeros(int((~output.class_mask).sum()), *output.logits.shape[-2:]),
    )


def test_item_losses_reduce_like_one_pass():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, 8, 8, generator=generator, requires_grad=True)
    labels = torch.randint(0, 5, (4, 8, 8), generator=generator)
    labels[1] = -100
    labels[2, :4] = -100
    source = torch.tensor([0, 1, 1, 0])
    whole = supervised_loss(logits, labels, image_source=source)
    halves = [(torch.tensor([0, 1]),), (torch.tensor([2, 3]),)]
    parts = [(supervised_loss(logits[rows], labels[rows], reduce=False), rows) for (rows,) in halves]
    torch.testing.assert_close(ItemLosses.reduce(parts, source), whole)
    torch.testing.assert_close(ItemLosses.reduce(parts), supervised_loss(logits, labels))
    targets = torch.zeros(4, 5, dtype=torch.bool)
    empty = image_level_loss(logits[:2], targets[:2], reduce=False)
    assert float(empty.counts.sum()) == 0.0
    total = ItemLosses.reduce([(empty, torch.tensor([0, 1]))])
    total.backward()  # a term with no items anywhere is still a connected 0
    assert float(total.detach()) == 0.0 and logits.grad is not None


def test_output_logits_false_gives_the_same_loss_gradients_and_bank_writes():
    """The trainer's training steps ask for the loss alone: nothing else may change."""
    with_logits = _model(True)
    loss_only = copy.deepcopy(with_logits)
    batch = _batch([4, 2, 0, 5, 1, 3])
    torch.manual_seed(7)
    full = with_logits(**batch)
    full.loss.backward()
    torch.manual_seed(7)
    bare = loss_only(**batch, output_logits=False)
    bare.loss.backward()
    assert full.logits is not None and full.scores is not None and full.features is not None
    assert bare.logits is None and bare.scores is None and bare.features is None
    assert torch.equal(bare.loss, full.loss) and torch.equal(bare.class_ids, full.class_ids)
    for (name, a), (_, b) in zip(with_logits.named_parameters(), loss_only.named_parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad), name
    assert torch.equal(with_logits.memory_bank.slots, loss_only.memory_bank.slots)


def test_grouped_training_step_runs_under_bfloat16_autocast():
    """Trainer's --bf16: the whole grouped step (fused head, losses, bank writes) under autocast."""
    model = _model(True, head_hidden_size=8)  # 16 backbone channels -> 8: the fused neck + projection
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**_batch([4, 2, 0, 5, 1, 3]), output_logits=False)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    for name in ("head.pixel_projection.weight", "head.neck.weight", "head.class_embeddings"):
        grad = model.get_parameter(name).grad
        assert (
            grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.any()
        ), name
