# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Check every data source before training step 1, so that a bad row fails the run at once.

Training draws rows at random: a label map with an id outside its dataset's classes, or an image-level
name the dataset does not have, would otherwise surface at whatever step first samples it (and a short
run could finish without seeing it). The checks are those training applies to every row it decodes
(`SourceDataset.read_label_map`, `SourceDataset.parse_image_labels`), on every row of map-style
sources; for streaming sources on the first rows, and on the rest as training reads them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from tqdm.auto import tqdm

from .decoding import image_size
from .source_dataset import SourceDataset

#: Rows of a streaming source checked before training when no number is given.
STREAMING_ROWS = 1000


def rows_to_check(source: SourceDataset, max_rows: int | None = None) -> int:
    """How many rows `validate_source` reads: `max_rows`, else all of a map-style source and
    STREAMING_ROWS of a streaming one."""
    if max_rows is not None and max_rows < 0:
        raise ValueError(f"max_rows must be >= 0 or None, got {max_rows}")
    if source.streaming:
        return STREAMING_ROWS if max_rows is None else max_rows
    return len(source) if max_rows is None else min(max_rows, len(source))


def validate_source(source: SourceDataset, max_rows: int | None = None, *, show_progress: bool = True) -> int:
    """Check a source's first `rows_to_check` rows and return how many were checked.

    Sources with label maps (mask and weak): every label map is decoded and its ids checked against the
    dataset's classes, and its size against its image's header (the image pixels are not decoded).
    Other image-level sources: every label cell is looked up (each distinct cell once); images are not
    read. Raises the LarvSegDataError that training would raise on the row, naming the dataset, the row
    and the file.
    """
    limit = rows_to_check(source, max_rows)
    if limit == 0:
        return 0
    label_maps = source.has_label_maps
    columns = [source.image_column, source.label_column] if label_maps else [source.label_column]
    rows = itertools.islice(iter(source.raw.select_columns(columns)), limit)
    progress = tqdm(rows, total=limit, desc=f"checking {source.name}", unit="row", disable=not show_progress)
    checked = 0
    if label_maps:
        for index, row in enumerate(progress):
            image = row[source.image_column]
            size = image_size(image, dataset=source.name, index=index)
            source.read_label_map(row[source.label_column], index, size, _path(image))
            checked += 1
    else:
        seen: set = set()
        for index, row in enumerate(progress):
            cell = row[source.label_column]
            key = repr(cell)  # cells are ids, names or lists of them; repr makes lists hashable
            if key not in seen:
                source.parse_image_labels(cell, index)
                seen.add(key)
            checked += 1
    return checked


def validate_sources(
    sources: Sequence[SourceDataset], max_rows: int | None = None, *, show_progress: bool = True
) -> dict[str, int]:
    """validate_source on each source; {source name: rows checked}."""
    return {s.name: validate_source(s, max_rows, show_progress=show_progress) for s in sources}


def _path(value) -> str | None:
    return value.get("path") if isinstance(value, dict) else None


__all__ = ["STREAMING_ROWS", "rows_to_check", "validate_source", "validate_sources"]
