"""The decoded-row cache gives the same samples as decoding every draw, within its budget, and flat
imagefolders load through one data_files glob with the same rows as data_dir."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_data_loading import simple_masks, write_image_folder, write_mask_folder

from larvseg_hf.data import loaders
from larvseg_hf.data.decoded_cache import DecodedRowCache
from larvseg_hf.data.loaders import load_classification_dataset, load_segmentation_dataset, load_weak_dataset
from larvseg_hf.data.mixing import build_mixed_dataset
from larvseg_hf.data.source_dataset import SourceDataset
from larvseg_hf.data.transforms import TrainTransform
from larvseg_hf.data.vocabulary_mapping import build_union_vocabulary


@pytest.fixture
def sources(tmp_path):
    cache = str(tmp_path / "hf")
    masks = write_mask_folder(tmp_path / "seg", simple_masks(6))
    labels = [["cat"], ["dog", "horse"], ["horse"], ["cat", "dog"]]
    return [
        load_segmentation_dataset(masks, dataset_name="seg", cache_dir=cache),
        load_classification_dataset(
            write_image_folder(tmp_path / "cls", labels), dataset_name="cls", cache_dir=cache
        ),
        load_weak_dataset(masks, dataset_name="weak", cache_dir=cache),
    ]


def _mixed(sources, cache_bytes):
    transforms = {"mask": TrainTransform(crop_size=12), "image": TrainTransform(crop_size=10)}
    mapping = build_union_vocabulary(sources)
    return build_mixed_dataset(
        sources, mapping, transforms=transforms, length=60, seed=3, decoded_cache_bytes=cache_bytes
    )


def test_cached_samples_equal_decoded_ones_and_rows_are_decoded_once(sources, monkeypatch):
    plain, cached = _mixed(sources, 0), _mixed(sources, 2**30)
    decoded = []
    real = SourceDataset.get_example
    monkeypatch.setattr(
        SourceDataset, "get_example", lambda self, i: decoded.append((self.name, i)) or real(self, i)
    )
    for epoch in (0, 1):  # 60 draws per epoch over 16 rows: every row repeats
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for index in range(len(plain)):
            a, b = plain[index], cached[index]
            for key in ("pixel_values", "labels", "pixel_mask"):
                assert torch.equal(a[key], b[key]), (epoch, index, key)
                assert a[key].dtype == b[key].dtype
            assert a["image_label_ids"] == b["image_label_ids"] and a["kind"] == b["kind"]
    cache = cached.datasets[0].cache
    assert all(part.cache is cache for part in cached.datasets)  # one budget for every source
    rows = {(s.name, i) for s in sources for i in range(len(s))}
    assert len(cache) == len(rows)
    # The uncached dataset decodes at every draw (2 epochs x 60), the cached one once per row.
    assert len(decoded) == 2 * 60 + len(rows)


def test_cache_keeps_rows_only_within_its_budget_and_stores_them_read_only():
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    mask = np.full((16, 16), -100, dtype=np.int64)
    mask[:4] = 20000
    row_bytes = image.nbytes + mask.size * 2  # int16 labels
    cache = DecodedRowCache(max_bytes=row_bytes * 2 + 1)
    loads = []

    def load(i):
        def go():
            loads.append(i)
            return {"image": image + i, "mask": mask, "label_ids": None, "path": f"x{i}.png"}

        return go

    for _ in range(2):
        for i in range(4):
            cache.get("s", i, load(i))
    assert len(cache) == 2 and cache.bytes == 2 * row_bytes <= cache.max_bytes
    assert loads == [0, 1, 2, 3, 2, 3]  # rows past the budget are loaded at every draw
    kept = cache.get("s", 1, load(1))
    assert kept["mask"].dtype == np.int16 and np.array_equal(kept["mask"], mask)
    assert np.array_equal(kept["image"], image + 1) and kept["path"] == "x1.png"
    with pytest.raises(ValueError, match="read-only"):
        kept["image"][0, 0, 0] = 1
    wide = DecodedRowCache(2**20).get("s", 0, lambda: {"image": image, "mask": mask * 10, "label_ids": None})
    assert wide["mask"].dtype == np.int32  # ids past int16 keep every value
    with pytest.raises(ValueError, match=">= 0"):
        DecodedRowCache(-1)


def test_flat_folder_loads_through_one_glob_with_the_rows_of_data_dir(tmp_path, monkeypatch):
    folder = write_mask_folder(tmp_path / "flat", simple_masks(5))
    assert loaders._folder_files(str(folder), True) == {"data_files": {"train": str(folder / "*")}}
    nested = tmp_path / "nested"
    (nested / "train").mkdir(parents=True)
    assert loaders._folder_files(str(nested), True) == {"data_dir": str(nested)}
    assert loaders._folder_files(str(folder), False) == {"data_dir": str(folder)}

    fast = load_segmentation_dataset(folder, cache_dir=str(tmp_path / "a"))
    monkeypatch.setattr(loaders, "_folder_files", lambda data_dir, single: {"data_dir": data_dir})
    slow = load_segmentation_dataset(folder, cache_dir=str(tmp_path / "b"))
    assert len(fast) == len(slow) == 5
    for i in range(5):
        a, b = fast.get_example(i), slow.get_example(i)
        assert a["path"] == b["path"] and np.array_equal(a["image"], b["image"])
        assert np.array_equal(a["mask"], b["mask"])
