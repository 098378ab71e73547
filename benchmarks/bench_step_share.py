#!/usr/bin/env python
"""Share of a training step spent outside the backbone (head + losses + bank + optimizer), side by side in
one run (run by hand):

    .venv/bin/python benchmarks/bench_step_share.py [--classes 61 1601] [--repeats 12]

The resnet-tiny preset at 128 px, batch 16 (8 mask samples, 4 + 4 image-level ones from two sources, as the
emoji preset mixes them), 100 sampled classes per source. Four step variants, interleaved so load hits
them alike: the backbone alone (forward + backward + AdamW), the union pass (every sample scored on the
union of the sources' sampled columns, with a class mask: the code before grouping) and the model's own
step as the trainer runs it (each source scored on its own columns once the union is wider than one source's
budget; `output_logits=False`, the loss alone), and that step with the output's logits laid out. Every
variant steps fused AdamW, the optimizer Trainer uses by default (`optim="adamw_torch_fused"`).
Target (issue 13): head + losses + optimizer <= 25% of the step at 1,600 classes.
"""

from __future__ import annotations

import argparse
import time

import torch

from larvseg_hf import LarvSegConfig, LarvSegForSemanticSegmentation
from larvseg_hf.criterion_larvseg import union_columns
from larvseg_hf.training.presets import backbone_preset

BATCH, SIDE = 16, 128


def build(num_labels: int) -> LarvSegForSemanticSegmentation:
    torch.manual_seed(0)
    base = int(num_labels * 0.6)
    config = LarvSegConfig(
        backbone_config=backbone_preset("resnet-tiny"),
        id2label={i: f"class {i}" for i in range(num_labels)},
        base_label_ids=list(range(base)),
        head_hidden_size=128,
        loss_downsample_rate=4,
        num_sampled_classes=100,
        memory_bank_topk=40,
        source_vocabularies={
            "mask": list(range(base)),
            "single": list(range(1, num_labels)),
            "weak": list(range(num_labels)),
        },
    )
    model = LarvSegForSemanticSegmentation(config).train()
    model.memory_bank.num_writes.fill_(100)  # every bank usable: the attentive term runs in full
    return model


def batches(num_labels: int, count: int = 4) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    base = int(num_labels * 0.6)
    out = []
    for _ in range(count):
        labels = torch.full((BATCH, SIDE, SIDE), -100, dtype=torch.long)
        image_labels = torch.zeros(BATCH, num_labels)
        for b in range(BATCH // 2):  # mask samples: background and three base squares
            labels[b] = 0
            for c in torch.randint(1, base, (3,), generator=generator).tolist():
                i, j = torch.randint(0, SIDE - 40, (2,), generator=generator).tolist()
                labels[b, i : i + 40, j : j + 40] = c
        for b in range(BATCH // 2, BATCH):
            image_labels[b, torch.randint(1, num_labels, (2,), generator=generator)] = 1
        out.append(
            {
                "pixel_values": torch.randn(BATCH, 3, SIDE, SIDE, generator=generator),
                "labels": labels,
                "image_labels": image_labels,
                "pixel_mask": torch.ones(BATCH, SIDE, SIDE, dtype=torch.bool),
                "source_index": torch.tensor([0] * 8 + [1] * 4 + [2] * 4),
            }
        )
    return out


def union_loss(model, batch):
    groups = model.criterion.sample_groups(
        batch["labels"], batch["image_labels"], BATCH, batch["source_index"]
    )
    columns, class_mask = union_columns(groups, BATCH)
    features, scores, logits = model.head(model.backbone(batch["pixel_values"]), columns, class_mask)
    terms = model.criterion(
        model.memory_bank,
        (SIDE, SIDE),
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
    return model.criterion.total(terms), columns.numel()


def measure(num_labels: int, repeats: int) -> dict[str, float]:
    model = build(num_labels)
    data = batches(num_labels)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    backbone_optimizer = torch.optim.AdamW(model.backbone.parameters(), lr=1e-3, fused=True)
    widths = []

    def backbone(batch):
        (model.backbone(batch["pixel_values"]) * 1e-3).sum().backward()
        backbone_optimizer.step()
        backbone_optimizer.zero_grad(set_to_none=True)

    def union(batch):
        loss, width = union_loss(model, batch)
        widths.append(width)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def model_step(batch, output_logits=False):
        model(**batch, output_logits=output_logits).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    variants = {
        "backbone alone": backbone,
        "union pass (before)": union,
        "model step (now)": model_step,
        "+ output logits": lambda batch: model_step(batch, output_logits=True),
    }
    for run in variants.values():
        run(data[0])  # warm-up
    times = {name: [] for name in variants}
    for i in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run(data[i % len(data)])
            times[name].append(time.perf_counter() - start)
    medians = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    medians["union width"] = sum(widths) / len(widths)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classes", type=int, nargs="+", default=[61, 1601])
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median step times\n")
    for num_labels in args.classes:
        result = measure(num_labels, args.repeats)
        backbone = result["backbone alone"]
        print(f"{num_labels} classes (union of the sources' columns: {result['union width']:.0f})")
        for name in (name for name in result if name != "union width"):  # the variants, in their order
            share = (
                ""
                if name == "backbone alone"
                else f"   outside the backbone: {1 - backbone / result[name]:5.1%}"
            )
            print(f"   {name:22s} {result[name] * 1000:6.1f} ms{share}")
        print(
            f"   model step / union pass: {result['model step (now)'] / result['union pass (before)']:.2f}x"
        )
    print("\n(target: outside the backbone <= 25% at 1,600 classes)")


if __name__ == "__main__":
    main()
