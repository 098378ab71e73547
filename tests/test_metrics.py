"""The `larvseg_mean_iou` evaluate module and its callers, against an independent computation.

`reference_mean_iou` below is written from the definitions of evaluate's `mean_iou` with plain Python loops over
pixels, sharing no code with larvseg_hf.metrics; the hand-made label maps cover ignored pixels, a class predicted
but never labelled, a class labelled but never predicted, classes absent from both and base / novel subsets.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model

from larvseg_hf import LarvSegImageProcessor
from larvseg_hf.evaluation import evaluate_segmentation, predict_label_maps
from larvseg_hf.metrics import (
    MEAN_IOU_MODULE,
    SegmentationMetrics,
    batch_row,
    load_mean_iou,
    rows_to_columns,
)

REPO = Path(__file__).resolve().parents[1]
IGNORE = -100
EVALUATE_KEYS = ("mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou", "per_category_accuracy")


@pytest.fixture(autouse=True)
def private_evaluate_caches(tmp_path, monkeypatch):
    """evaluate copies modules into HF_MODULES_CACHE (read at import): keep this test run's copies private."""
    import evaluate

    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "evaluate_modules")
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", tmp_path / "evaluate_metrics")


# --------------------------------------------------------------------------- the independent reference


def reference_mean_iou(pairs, num_labels, ignore_index=IGNORE, base_ids=None, novel_ids=None):
    """evaluate's mean_iou from its definitions, pixel by pixel; pairs = [(prediction map, label map), ...]."""
    intersect, pred_area, label_area = [0] * num_labels, [0] * num_labels, [0] * num_labels
    for prediction, label in pairs:
        prediction, label = np.asarray(prediction), np.asarray(label)
        assert prediction.shape == label.shape
        for p, t in zip(prediction.reshape(-1).tolist(), label.reshape(-1).tolist(), strict=True):
            if t == ignore_index:
                continue
            pred_area[p] += 1
            label_area[t] += 1
            if p == t:
                intersect[t] += 1
    nan = float("nan")
    iou, acc = [], []
    for c in range(num_labels):
        union = pred_area[c] + label_area[c] - intersect[c]
        iou.append(intersect[c] / union if union else nan)
        acc.append(intersect[c] / label_area[c] if label_area[c] else nan)

    def mean(values):
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else nan

    results = {
        "mean_iou": mean(iou),
        "mean_accuracy": mean(acc),
        "overall_accuracy": sum(intersect) / sum(label_area) if sum(label_area) else nan,
        "per_category_iou": iou,
        "per_category_accuracy": acc,
        "num_classes_present": sum(1 for a in label_area if a),
    }
    if base_ids is not None:
        results["base_mean_iou"] = mean([iou[c] for c in base_ids])
    if novel_ids is not None:
        results["novel_mean_iou"] = mean([iou[c] for c in novel_ids])
    return results


def assert_same(results, expected):
    assert set(expected) <= set(results), sorted(set(expected) - set(results))
    for key, value in expected.items():
        got = results[key]
        if isinstance(value, list):
            np.testing.assert_allclose(
                np.asarray(got, dtype=float), np.asarray(value, dtype=float), atol=1e-12
            )
        elif math.isnan(value):
            assert math.isnan(got), (key, got)
        else:
            assert got == pytest.approx(value, abs=1e-12), key


# Vocabulary of 7: 0, 1 labelled and predicted; 2 predicted, never labelled; 3 labelled, never predicted;
# 4 predicted only on ignored pixels (so absent); 5, 6 absent from both.
NUM_LABELS = 7
BASE, NOVEL = [0, 1, 3], [2, 4, 5, 6]
BATCHES = [
    [  # two maps of different sizes in one batch
        (
            np.array([[0, 0, 1, 2], [0, 1, 1, 4], [2, 2, 0, 0]]),
            np.array([[0, 0, 1, 1], [0, 3, 1, IGNORE], [0, 1, 0, 3]]),
        ),
        (np.array([[1, 1], [0, 4]]), np.array([[1, 1], [0, IGNORE]])),
    ],
    [(np.array([[1, 0, 0]]), np.array([[3, 0, IGNORE]]))],
    [(np.array([[2, 4]]), np.array([[IGNORE, IGNORE]]))],  # a batch with no valid pixel
]


def hand_made_rows():
    return [
        batch_row(
            [torch.as_tensor(p) for p, _ in batch], [torch.as_tensor(t) for _, t in batch], NUM_LABELS, IGNORE
        )
        for batch in BATCHES
    ]


def all_pairs():
    return [pair for batch in BATCHES for pair in batch]


def test_reference_on_a_case_worked_by_hand():
    # labels [[0, 0], [1, ignore]], predictions [[0, 1], [1, 2]]: class 0 has 1 hit, 1 predicted, 2 labelled;
    # class 1 has 1 hit, 2 predicted, 1 labelled; class 2 is predicted only on the ignored pixel.
    results = reference_mean_iou([(np.array([[0, 1], [1, 2]]), np.array([[0, 0], [1, IGNORE]]))], 3)
    assert results["per_category_iou"][:2] == [0.5, 0.5] and math.isnan(results["per_category_iou"][2])
    assert results["per_category_accuracy"][:2] == [0.5, 1.0] and math.isnan(
        results["per_category_accuracy"][2]
    )
    assert (results["mean_iou"], results["mean_accuracy"], results["overall_accuracy"]) == (0.5, 0.75, 2 / 3)
    assert results["num_classes_present"] == 2


def test_module_matches_reference_on_hand_made_maps():
    metric = load_mean_iou()
    for row in hand_made_rows():
        metric.add_batch(**rows_to_columns([row]))  # one row per batch
    results = metric.compute(num_labels=NUM_LABELS, base_ids=BASE, novel_ids=NOVEL)
    expected = reference_mean_iou(all_pairs(), NUM_LABELS, base_ids=BASE, novel_ids=NOVEL)
    assert_same(results, expected)
    assert set(results) == {*EVALUATE_KEYS, "base_mean_iou", "novel_mean_iou", "num_classes_present"}
    iou, acc = results["per_category_iou"], results["per_category_accuracy"]
    assert iou.shape == acc.shape == (NUM_LABELS,)
    # The cases the maps were made for: predicted-never-labelled is IoU 0 with NaN accuracy (and counts in
    # mean_iou, as in evaluate); labelled-never-predicted is 0 and 0; absent (or only on ignored pixels) is NaN.
    assert iou[2] == 0 and math.isnan(acc[2])
    assert iou[3] == 0 and acc[3] == 0
    assert all(math.isnan(iou[c]) and math.isnan(acc[c]) for c in (4, 5, 6))
    # Base and novel are the mean_iou convention on a subset, so novel here is only class 2's 0.
    assert results["novel_mean_iou"] == 0.0


def test_module_nan_to_num_and_order_of_rows():
    rows = hand_made_rows()
    metric = load_mean_iou()
    metric.add_batch(**rows_to_columns(rows[::-1]))
    results = metric.compute(num_labels=NUM_LABELS, nan_to_num=-1.0)
    expected = reference_mean_iou(all_pairs(), NUM_LABELS)
    for key in ("per_category_iou", "per_category_accuracy"):
        expected[key] = [-1.0 if math.isnan(v) else v for v in expected[key]]
    assert_same(results, expected)


def test_empty_evaluation_is_nan_not_an_error():
    metric = load_mean_iou()
    metric.add_batch(**rows_to_columns([batch_row(torch.zeros(2, 2), torch.full((2, 2), IGNORE), 4)]))
    results = metric.compute(num_labels=4, base_ids=[0], novel_ids=[1, 2, 3])
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy", "base_mean_iou", "novel_mean_iou"):
        assert math.isnan(results[key]), key
    assert results["num_classes_present"] == 0


def test_histograms_agree_with_module_and_reference():
    histograms = SegmentationMetrics(NUM_LABELS, IGNORE)
    for prediction, label in all_pairs():  # the dense update path, one image at a time
        histograms.update(torch.as_tensor(prediction), torch.as_tensor(label))
    from_rows = SegmentationMetrics(NUM_LABELS, IGNORE)
    for row in hand_made_rows():
        from_rows.add_row(row)
    assert torch.equal(histograms.state(), from_rows.state())
    expected = reference_mean_iou(all_pairs(), NUM_LABELS, base_ids=BASE, novel_ids=NOVEL)
    assert_same(histograms.compute(BASE, NOVEL), expected)
    np.testing.assert_allclose(histograms.iou().numpy(), expected["per_category_iou"])
    np.testing.assert_allclose(histograms.accuracy().numpy(), expected["per_category_accuracy"])


def test_per_class_reports_write_what_the_histograms_computed(tmp_path):
    import csv

    from larvseg_hf.metrics.reports import plot_per_class_iou, write_per_class_csv

    histograms = SegmentationMetrics(NUM_LABELS, IGNORE)
    for prediction, label in all_pairs():
        histograms.update(torch.as_tensor(prediction), torch.as_tensor(label))
    per_class = histograms.per_class()
    expected = reference_mean_iou(all_pairs(), NUM_LABELS)
    np.testing.assert_allclose(per_class.iou, expected["per_category_iou"])
    np.testing.assert_allclose(per_class.accuracy, expected["per_category_accuracy"])

    names = [f"class {i}" for i in range(NUM_LABELS)]
    path = write_per_class_csv(tmp_path / "per_class_iou.csv", per_class, names, BASE)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    shown = [i for i in range(NUM_LABELS) if per_class.label_pixels[i] or per_class.predicted_pixels[i]]
    assert [int(row["id"]) for row in rows] == shown and shown != list(range(NUM_LABELS))
    for row in rows:
        i = int(row["id"])
        assert row["name"] == names[i] and row["split"] == ("base" if i in BASE else "novel")
        assert int(row["label_pixels"]) == int(histograms.labeled[i])
        assert int(row["predicted_pixels"]) == int(histograms.predicted[i])
        if not math.isnan(expected["per_category_iou"][i]):
            assert float(row["iou"]) == pytest.approx(expected["per_category_iou"][i], abs=1e-6)
    png = plot_per_class_iou(tmp_path / "per_class_iou.png", per_class, names, BASE)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- sparse rows, errors


def test_rows_stay_sparse_at_imagenet_21k_scale():
    vocabulary = 21_841
    label = torch.tensor([[5, 5, 17_000], [IGNORE, 5, 17_000]])
    prediction = torch.tensor([[5, 21_840, 17_000], [3, 5, 5]])  # 3 on an ignored pixel: not present
    row = batch_row(prediction, label, vocabulary)
    # By hand: class 5 is labelled 3 times, predicted 3 times (twice on its own pixels); 17,000 labelled twice,
    # predicted once, correctly; 21,840 predicted once, never labelled.
    assert row == {
        "class_ids": [5, 17_000, 21_840],
        "area_intersect": [2, 1, 0],
        "area_pred": [3, 1, 1],
        "area_label": [3, 2, 0],
    }
    # What evaluate stores in Arrow and hands back to _compute is that row, 3 entries per column.
    metric = load_mean_iou()
    stored = {}
    compute = metric._compute

    def capture(**inputs):
        stored.update({k: v for k, v in inputs.items() if k in row})
        return compute(**inputs)

    metric._compute = capture
    metric.add_batch(**rows_to_columns([row]))
    results = metric.compute(num_labels=vocabulary)
    assert stored == {name: [values] for name, values in row.items()}
    assert results["per_category_iou"].shape == (vocabulary,)
    assert results["mean_iou"] == pytest.approx((2 / 4 + 1 / 2 + 0) / 3)


def test_ids_outside_the_vocabulary_are_named():
    with pytest.raises(ValueError, match=r"labels hold ids outside the vocabulary \[0, 4\): \[7\]"):
        batch_row(torch.zeros(1, 2), torch.tensor([[0, 7]]), 4)
    with pytest.raises(ValueError, match=r"predictions hold ids outside the vocabulary \[0, 4\): \[-3\]"):
        batch_row(torch.tensor([[0, -3]]), torch.zeros(1, 2), 4)
    with pytest.raises(ValueError, match="differ in shape"):
        batch_row(torch.zeros(2, 2), torch.zeros(2, 3), 4)
    metric = load_mean_iou()
    metric.add_batch(class_ids=[[1, 9]], area_intersect=[[0, 0]], area_pred=[[1, 1]], area_label=[[1, 0]])
    with pytest.raises(ValueError, match=r"class_ids hold ids outside the vocabulary \[0, 5\): \[9\]"):
        metric.compute(num_labels=5)
    metric.add_batch(class_ids=[[1]], area_intersect=[[3]], area_pred=[[1]], area_label=[[3]])
    with pytest.raises(ValueError, match="exceeds area_pred or area_label"):
        metric.compute(num_labels=5)
    metric.add_batch(class_ids=[[1, 2]], area_intersect=[[0]], area_pred=[[1, 1]], area_label=[[1, 0]])
    with pytest.raises(ValueError, match="differ in length"):
        metric.compute(num_labels=5)
    metric.add_batch(class_ids=[[1]], area_intersect=[[0]], area_pred=[[1]], area_label=[[1]])
    with pytest.raises(ValueError, match=r"novel_ids hold ids outside \[0, 5\): \[5\]"):
        metric.compute(num_labels=5, novel_ids=[4, 5])


# --------------------------------------------------------------------------- offline loading


def test_evaluate_load_works_offline_from_the_installed_file(tmp_path):
    """A fresh process, offline, with an unreachable Hub endpoint: evaluate.load of the package's file."""
    rows = hand_made_rows()
    script = f"""
import json, sys
import evaluate
from larvseg_hf.metrics import MEAN_IOU_MODULE, load_mean_iou, rows_to_columns
metric = load_mean_iou()
assert type(metric).__module__.startswith("evaluate_modules."), type(metric).__module__
metric.add_batch(**rows_to_columns(json.loads(sys.argv[1])))
results = metric.compute(num_labels={NUM_LABELS}, base_ids={BASE}, novel_ids={NOVEL})
print(json.dumps({{"name": metric.name, "path": str(MEAN_IOU_MODULE),
                  **{{k: v.tolist() if hasattr(v, "tolist") else v for k, v in results.items()}}}}))
"""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(rows)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results.pop("name") == "larvseg_mean_iou"
    assert Path(results.pop("path")) == MEAN_IOU_MODULE and MEAN_IOU_MODULE.parent.name == "metrics"
    assert_same(results, reference_mean_iou(all_pairs(), NUM_LABELS, base_ids=BASE, novel_ids=NOVEL))
    # The script was copied into the private module cache; keep_in_memory wrote no Arrow file or lock.
    assert list((tmp_path / "hf_modules").rglob("larvseg_mean_iou.py"))
    assert not [p for p in (tmp_path / "hf_home").rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- the evaluation loop and the Trainer


def _eval_rows(num_labels: int, count: int = 5):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        h, w = (24, 40) if i % 2 else (32, 32)
        label = rng.integers(0, num_labels, (h, w))
        label[:3] = IGNORE
        rows.append({"image": rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "label": label})
    return rows


def test_evaluate_segmentation_matches_reference_and_gathers_shards():
    model = make_model("vit", 5)
    processor = LarvSegImageProcessor(size={"height": 32, "width": 32}, size_divisor=8)
    rows = _eval_rows(5)
    base, novel = [0, 1, 2], [3, 4]
    results, histograms = evaluate_segmentation(
        model,
        processor,
        rows,
        num_classes=5,
        base_ids=base,
        novel_ids=novel,
        batch_size=2,
        show_progress=False,
    )
    predictions = [
        predict_label_maps(model, processor, [row["image"]], [row["label"].shape])[0].numpy() for row in rows
    ]
    expected = reference_mean_iou(
        list(zip(predictions, [row["label"] for row in rows], strict=True)), 5, base_ids=base, novel_ids=novel
    )
    assert_same(results, expected)
    assert_same(histograms.compute(base, novel), expected)

    # Two "processes": each scores a shard; `gather` hands every one all rows, so both get the full results.
    shards = [rows[0::2], rows[1::2]]
    captured = []

    def gather_first(local):
        captured.extend(local)
        return local

    evaluate_segmentation(
        model, processor, shards[0], num_classes=5, gather=gather_first, show_progress=False
    )
    sharded, _ = evaluate_segmentation(
        model,
        processor,
        shards[1],
        num_classes=5,
        base_ids=base,
        novel_ids=novel,
        gather=lambda local: captured + local,
        show_progress=False,
    )
    assert_same(sharded, expected)


def test_trainer_logs_scalars_and_keeps_per_category_results(tmp_path):
    from transformers import TrainingArguments

    from larvseg_hf.training.trainer import LarvSegTrainer

    model = make_model("vit", 5)
    rows = _eval_rows(5, count=3)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], disable_tqdm=True)
    trainer = LarvSegTrainer(
        model=model,
        args=args,
        segmentation_eval_rows=lambda: iter(rows),
        segmentation_eval_size=32,
        base_ids=[0, 1, 2],
        novel_ids=[3, 4],
    )
    metrics = trainer.evaluate()
    scalars = ["mean_iou", "mean_accuracy", "overall_accuracy", "base_mean_iou", "novel_mean_iou"]
    assert set(metrics) - {"epoch"} == {
        f"eval_{k}" for k in [*scalars, "num_classes_present"]
    }  # log adds epoch
    full = trainer.segmentation_results
    assert full["per_category_iou"].shape == full["per_category_accuracy"].shape == (5,)
    for key in scalars:
        assert metrics[f"eval_{key}"] == full[key]
    # What the Trainer logs and saves stays scalar and JSON-serialisable.
    logged = trainer.state.log_history[-1]
    assert all(isinstance(v, int | float) for v in logged.values()), logged
    trainer.save_metrics("eval", metrics)
    assert (
        json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval_mean_iou"]
        == metrics["eval_mean_iou"]
    )

    processor = LarvSegImageProcessor(size={"height": 32, "width": 32})
    direct, _ = evaluate_segmentation(
        model, processor, rows, num_classes=5, base_ids=[0, 1, 2], novel_ids=[3, 4], show_progress=False
    )
    assert_same(full, {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in direct.items()})


def test_metric_module_ships_in_the_package():
    assert MEAN_IOU_MODULE.is_file()
    source = MEAN_IOU_MODULE.read_text()
    # evaluate.load copies this file alone: no relative imports may appear in it.
    assert not [line for line in source.splitlines() if line.startswith(("from .", "import ."))]
    assert (REPO / "larvseg_hf" / "metrics" / "larvseg_mean_iou.py").resolve() == MEAN_IOU_MODULE
