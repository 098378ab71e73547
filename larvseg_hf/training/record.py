# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""`larvseg_training.json`: what a training run records about its data, next to the saved model.

`larvseg-train` writes it; `larvseg-evaluate`, the scripts and the demo read it (for instance to find the
built-in benchmark's eval scenes). One reader and writer, so the file's layout has one owner.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

RECORD_FILE = "larvseg_training.json"


class TrainingRecordError(ValueError):
    """A `larvseg_training.json` that is not a JSON object of the expected fields."""


@dataclass(frozen=True)
class TrainingRecord:
    """The training data of a run: base / novel vocabulary ids and a description of each data source.

    `root` is set for the built-in emoji benchmark (its folder), `eval_spec` for a named eval dataset.
    Keys this version does not know are kept in `extra`, so that reading and saving again loses nothing.
    """

    base_ids: list[int] = field(default_factory=list)
    novel_ids: list[int] = field(default_factory=list)
    mask_data: str | None = None
    image_data: str | None = None
    eval_data: str | None = None
    eval_spec: str | None = None
    root: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def builtin_eval_dir(self) -> Path | None:
        """The built-in benchmark's eval split, when the run trained on it."""
        return Path(self.root) / "eval" if self.root else None

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        return {**data, **self.extra}

    def save(self, directory: str | Path) -> Path:
        """Write `directory/larvseg_training.json`; returns its path."""
        path = Path(directory) / RECORD_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingRecord:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in data.items() if k in known},
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def read(cls, directory: str | Path) -> TrainingRecord:
        """Read `directory/larvseg_training.json`.

        Raises FileNotFoundError when the file is missing and TrainingRecordError (a ValueError) when it
        is malformed; both name the file.
        """
        path = Path(directory) / RECORD_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {directory} is not the output folder of a larvseg-train run."
            )
        try:
            data = json.loads(path.read_text())
        except ValueError as error:
            raise TrainingRecordError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise TrainingRecordError(f"{path} must hold a JSON object, not {type(data).__name__}.")
        record = cls.from_dict(data)
        for name in ("base_ids", "novel_ids"):
            ids = getattr(record, name)
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                raise TrainingRecordError(f"{path}: {name!r} must be a list of integers, not {ids!r}.")
        for name in ("mask_data", "image_data", "eval_data", "eval_spec", "root"):
            value = getattr(record, name)
            if value is not None and not isinstance(value, str):
                raise TrainingRecordError(f"{path}: {name!r} must be a string, not {value!r}.")
        return record
