#!/usr/bin/env python
"""Data pipeline vs training step throughput on the built-in benchmark (run by hand).

    .venv/bin/python benchmarks/bench_pipeline.py [--batches 30] [--workers 1]

Measures, in one run and side by side: samples/s of the data pipeline (decode + augment + collate,
through a DataLoader with the README main command's worker count) and samples/s of training steps
(forward + backward + optimizer) on pre-collated batches. The pipeline must be >= 2x faster so it
never bottlenecks training.
"""

from __future__ import annotations

import argparse
import time

import torch

from larvseg_hf.data.collate import LarvSegCollator
from larvseg_hf.training.arguments import parse_train_args
from larvseg_hf.training.setup import build_model, build_train_dataset, load_training_data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: the preset's)."
    )
    args = parser.parse_args()

    model_args, data_args, training_args, _ = parse_train_args([])
    batch_size = training_args.per_device_train_batch_size
    workers = training_args.dataloader_num_workers if args.workers is None else args.workers
    data = load_training_data(data_args)
    dataset = build_train_dataset(data, data_args, 0, batch_size * args.batches * 2, 0, 1)
    collator = LarvSegCollator(len(data.class_names))

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collator
    )
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start = time.perf_counter()
    batches = [next(iterator) for _ in range(args.batches)]
    pipeline_rate = args.batches * batch_size / (time.perf_counter() - start)

    model = build_model(model_args, data).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(**batches[0]).loss.backward()  # warm-up
    optimizer.zero_grad()
    start = time.perf_counter()
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    train_rate = args.batches * batch_size / (time.perf_counter() - start)

    print(f"threads: torch {torch.get_num_threads()}, DataLoader workers {workers}, batch {batch_size}")
    print(f"data pipeline : {pipeline_rate:8.1f} samples/s")
    print(f"training steps: {train_rate:8.1f} samples/s")
    print(f"ratio pipeline / training: {pipeline_rate / train_rate:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
