"""Checks of every data source before training step 1 (larvseg_hf/data/validation.py) and the
--image_column / --label_column choices of larvseg-train."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from fixtures_data import ALL_NAMES, BASE_NAMES, build_bad_mask_dataset, build_tiny_datasets, write_mask_split
from PIL import Image

import larvseg_hf.data.source_dataset as source_dataset
from larvseg_hf.data.errors import (
    ColumnNotFoundError,
    LabelOutOfRangeError,
    SizeMismatchError,
    UnknownLabelError,
)
from larvseg_hf.data.loaders import load_classification_dataset, load_segmentation_dataset
from larvseg_hf.data.sharding import as_iterable
from larvseg_hf.data.validation import STREAMING_ROWS, rows_to_check, validate_source
from larvseg_hf.training.arguments import parse_train_args
from larvseg_hf.training.setup import column_choice, load_training_data, validate_training_data


def _bad_masks(tmp_path: Path, bad_row: int = 13, num_images: int = 16):
    folder = build_bad_mask_dataset(tmp_path, bad_row=bad_row, num_images=num_images)
    return load_segmentation_dataset(folder, "train", dataset_name="bad masks")


def test_a_bad_label_map_deep_in_a_dataset_is_found_naming_the_label_file_and_image(tmp_path):
    source = _bad_masks(tmp_path)
    with pytest.raises(LabelOutOfRangeError) as caught:
        validate_source(source, show_progress=False)
    message = str(caught.value)
    assert "[77]" in message and "row 13" in message and "'bad masks'" in message
    assert "x13_label.png" in message and "x13.png" in message
    assert validate_source(source, max_rows=13, show_progress=False) == 13  # the rows before it are fine


def test_mask_check_reads_image_headers_only(tmp_path, monkeypatch):
    folder = write_mask_split(tmp_path / "ok" / "train", 6, [1, 2, 3], seed=0, vocabulary=BASE_NAMES[:4])
    source = load_segmentation_dataset(folder, "train", dataset_name="ok")
    decoded = []
    real_decode = source_dataset.decode_image

    def counting_decode(value, *, what="image", **kwargs):
        decoded.append(what)
        return real_decode(value, what=what, **kwargs)

    monkeypatch.setattr(source_dataset, "decode_image", counting_decode)
    assert validate_source(source, show_progress=False) == 6
    assert decoded == ["label map"] * 6  # every label map decoded, no image pixels


def test_size_mismatch_is_found_from_the_header(tmp_path):
    folder = write_mask_split(tmp_path / "m" / "train", 4, [1, 2], seed=0, vocabulary=BASE_NAMES[:3])
    Image.fromarray(np.zeros((10, 12, 3), dtype=np.uint8)).save(folder / "x2.png")
    source = load_segmentation_dataset(folder, "train", dataset_name="m")
    with pytest.raises(SizeMismatchError, match=r"12x10 but its label map is 64x64.*row 2.*x2_label.png"):
        validate_source(source, show_progress=False)


def _names_dataset(tmp_path: Path, labels: list) -> datasets.Dataset:
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)
    return datasets.Dataset.from_dict({"image": [str(path)] * len(labels), "labels": labels}).cast_column(
        "image", datasets.Image()
    )


def test_an_unknown_image_level_name_deep_in_a_dataset_is_found(tmp_path):
    labels = [["cat"], ["dog", "cat"]] * 10 + [["cat", "zebar"]] + [["dog"]] * 5
    source = load_classification_dataset(
        _names_dataset(tmp_path, labels), class_names=["cat", "dog", "zebra"], dataset_name="weak"
    )
    with pytest.raises(UnknownLabelError, match=r"'zebar'.*Closest names: \['zebra'\].*'weak', row 20"):
        validate_source(source, show_progress=False)


def test_label_ids_outside_the_classes_are_found(tmp_path):
    source = load_classification_dataset(
        _names_dataset(tmp_path, [[0], [1], [0, 3]]), class_names=["a", "b", "c"], dataset_name="ids"
    )
    with pytest.raises(LabelOutOfRangeError, match=r"label id 3 is outside the dataset's 3 classes.*row 2"):
        validate_source(source, show_progress=False)


def test_streaming_sources_check_their_first_rows(tmp_path):
    source = _bad_masks(tmp_path, bad_row=13, num_images=16)
    streamed = source.with_dataset(as_iterable(source.dataset))
    assert rows_to_check(streamed) == STREAMING_ROWS and rows_to_check(source) == 16
    assert validate_source(streamed, max_rows=10, show_progress=False) == 10
    with pytest.raises(LabelOutOfRangeError, match="row 13"):
        validate_source(streamed, show_progress=False)  # 16 rows < STREAMING_ROWS: all of them
    assert validate_source(source, max_rows=0, show_progress=False) == 0


def _train_args(*argv: str):
    return parse_train_args([*argv, "--output_dir", "unused"])[1]


def test_a_bad_evaluation_dataset_is_found_before_training(tmp_path):
    data = build_tiny_datasets(tmp_path / "tiny")
    bad = build_bad_mask_dataset(tmp_path, bad_row=1)
    (bad / "vocabulary.json").write_text(json.dumps({"names": BASE_NAMES[:4]}))
    data_args = _train_args(
        "--mask_datasets", f"{data}/mask:train", "--image_datasets", f"{data}/cls:train",
        "--eval_dataset", f"{bad}:train",
    )  # fmt: skip
    training_data = load_training_data(data_args, show_progress=False)
    with pytest.raises(LabelOutOfRangeError, match=rf"eval:{bad}:train.*row 1"):
        validate_training_data(training_data, show_progress=False)


def _folder_with_column(root: Path, column: str) -> Path:
    """A mask imagefolder whose label maps are in column `column` (metadata key `<column>_file_name`)."""
    folder = write_mask_split(root / "train", 3, [1, 2], seed=0)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    for row in rows:
        row[f"{column}_file_name"] = row.pop("label_file_name")
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "vocabulary.json").write_text(json.dumps({"names": ALL_NAMES}))
    return root


def test_an_unknown_label_column_names_the_flag_and_the_flag_works(tmp_path):
    data = build_tiny_datasets(tmp_path / "tiny")
    seg = _folder_with_column(tmp_path / "seg", "segmentation")
    spec = f"{seg}:train"
    base = ["--mask_datasets", spec, "--image_datasets", f"{data}/cls:train"]
    with pytest.raises(
        ColumnNotFoundError, match=rf"available columns: .*'segmentation'.*--label_column {spec}="
    ):
        load_training_data(_train_args(*base), show_progress=False)
    training_data = load_training_data(
        _train_args(*base, "--label_column", f"{spec}=segmentation"), show_progress=False
    )
    assert training_data.sources[0].label_column == "segmentation"
    assert training_data.sources[1].label_column == "labels"  # the other dataset keeps its default
    assert validate_training_data(training_data, show_progress=False) == {spec: 3, f"{data}/cls:train": 24}
    with pytest.raises(ValueError, match=r"--label_column 'nope=segmentation' names dataset 'nope'"):
        load_training_data(_train_args(*base, "--label_column", "nope=segmentation"), show_progress=False)


def test_column_choice_prefers_the_dataset_entry():
    assert column_choice(["lbl", "a:train=seg"], "a:train") == "seg"
    assert column_choice(["lbl", "a:train=seg"], "b") == "lbl"
    assert column_choice(["a:train=seg"], "b") is None
    assert column_choice([], "a") is None
