"""`larvseg_training.json`, the record a training run leaves next to its model: one reader and writer."""

from __future__ import annotations

import json

import pytest

from larvseg_hf.training.record import RECORD_FILE, TrainingRecord, TrainingRecordError


def test_save_then_read_round_trips_and_keeps_unknown_keys(tmp_path):
    record = TrainingRecord(
        base_ids=[0, 1], novel_ids=[2, 3], mask_data="m", eval_data="e", root="/bench", extra={"later": 1}
    )
    path = record.save(tmp_path)
    assert path == tmp_path / RECORD_FILE == tmp_path / "larvseg_training.json"
    # The layout train.py always wrote: ids first, then the data description; no nulls for unset fields.
    assert json.loads(path.read_text()) == {
        "base_ids": [0, 1],
        "novel_ids": [2, 3],
        "mask_data": "m",
        "eval_data": "e",
        "root": "/bench",
        "later": 1,
    }
    assert TrainingRecord.read(tmp_path) == record
    assert record.builtin_eval_dir is not None and record.builtin_eval_dir.as_posix() == "/bench/eval"


def test_a_record_of_named_datasets_has_no_builtin_eval_dir(tmp_path):
    TrainingRecord(base_ids=[0], novel_ids=[1], eval_spec="org/data:validation").save(tmp_path)
    record = TrainingRecord.read(tmp_path)
    assert record.eval_spec == "org/data:validation" and record.builtin_eval_dir is None


def test_older_records_with_only_a_root_still_read(tmp_path):
    (tmp_path / RECORD_FILE).write_text(json.dumps({"root": "/bench"}))
    record = TrainingRecord.read(tmp_path)
    assert record.root == "/bench" and record.base_ids == [] and record.novel_ids == []


def test_missing_record_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"larvseg_training\.json not found"):
        TrainingRecord.read(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object, not list"),
        ('{"base_ids": "0 1"}', "'base_ids' must be a list of integers"),
        ('{"root": 3}', "'root' must be a string"),
    ],
)
def test_malformed_record_names_the_file(tmp_path, content, message):
    (tmp_path / RECORD_FILE).write_text(content)
    with pytest.raises(TrainingRecordError, match=message) as error:
        TrainingRecord.read(tmp_path)
    assert str(tmp_path / RECORD_FILE) in str(error.value)
    assert isinstance(error.value, ValueError)
