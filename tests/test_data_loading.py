"""Loading, vocabulary mapping, errors, mixing, collation and streaming on tiny local imagefolders."""

from __future__ import annotations

import json
import logging

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from larvseg_hf.data.collate import LarvSegCollator
from larvseg_hf.data.decoding import mask_to_array, to_rgb
from larvseg_hf.data.errors import (
    ColumnNotFoundError,
    CorruptImageError,
    LabelOutOfRangeError,
    SizeMismatchError,
    UnknownLabelError,
)
from larvseg_hf.data.loaders import load_classification_dataset, load_segmentation_dataset
from larvseg_hf.data.map_dataset import LarvSegDataset
from larvseg_hf.data.mixing import MixedDataset, build_mixed_dataset, mixing_weights
from larvseg_hf.data.sharding import shard_for_node
from larvseg_hf.data.streaming import build_streaming_dataset
from larvseg_hf.data.transforms import TrainTransform
from larvseg_hf.data.vocabulary_mapping import build_union_vocabulary
from larvseg_hf.vocabulary import UnionVocabulary, closest_names, load_synonyms, normalize_name

datasets.disable_progress_bars()

SEG_NAMES = ["background", "Cat", "potted_plant", "dog"]


def rgb(seed: int, h: int = 16, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_mask_folder(root, masks, names=SEG_NAMES, images=None, vocab_file=True):
    """Imagefolder as emoji_scenes writes it: x.png + x_label.png (16-bit) + metadata.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, mask in enumerate(masks):
        img = images[i] if images is not None else Image.fromarray(rgb(i, *np.asarray(mask).shape[:2]))
        img.save(root / f"x{i}.png")
        lab = mask if isinstance(mask, Image.Image) else Image.fromarray(np.asarray(mask, dtype=np.uint16))
        lab.save(root / f"x{i}_label.png")
        rows.append({"file_name": f"x{i}.png", "label_file_name": f"x{i}_label.png"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if vocab_file:
        (root / "vocabulary.json").write_text(json.dumps(names))
    return root


def write_image_folder(root, labels, key="labels"):
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, lab in enumerate(labels):
        Image.fromarray(rgb(100 + i)).save(root / f"y{i}.png")
        rows.append({"file_name": f"y{i}.png", key: lab})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def seg(path, tmp_path, **kw):
    return load_segmentation_dataset(path, cache_dir=str(tmp_path / "cache"), **kw)


def cls(path, tmp_path, **kw):
    return load_classification_dataset(path, cache_dir=str(tmp_path / "cache"), **kw)


def simple_masks(n=4, ids=(0, 1, 2, 3)):
    out = []
    for i in range(n):
        m = np.full((16, 16), ids[0], dtype=np.uint16)
        m[:8, :8] = ids[1 + i % (len(ids) - 1)]
        m[8:, 8:] = ids[-1]
        out.append(m)
    return out


# --------------------------------------------------------------------------- vocabulary


def test_normalize_and_closest_names():
    assert normalize_name("  Potted_Plant--pot  ") == "potted plant pot"
    assert normalize_name("Traffic\tLight") == "traffic light"
    assert closest_names("catt", ["dog", "cat", "car"], n=2)[0] == "cat"


def test_union_vocabulary_merges_by_name_and_synonym(tmp_path):
    syn = tmp_path / "syn.yaml"
    syn.write_text("cat: [kitty, Pussy_Cat]\ncouch: sofa\n")
    vocab = UnionVocabulary.from_datasets(
        {"a": ["background", "Cat", "potted_plant"], "b": ["potted-plant", "kitty", "couch", "dog"]},
        synonyms=syn,
    )
    assert vocab.names == ["background", "cat", "potted plant", "sofa", "dog"]
    assert vocab.index_map(["kitty", "Pussy Cat", "dog", "zebra"], dataset="b") == [1, 1, 4, -1]
    assert vocab.unmapped == {"b": ["zebra"]}
    with pytest.raises(KeyError, match="closest names.*'dog'"):
        vocab.index_of("dogg")
    assert vocab.id2label[3] == "sofa"


def test_load_synonyms_json_chains_and_cycles(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"kitty": "kitten", "kitten": "cat"}))
    assert load_synonyms(path) == {"kitty": "cat", "kitten": "cat"}
    with pytest.raises(ValueError, match="cycle"):
        load_synonyms({"a": "b", "b": "a"})


def test_union_mapping_of_sources_with_synonyms(tmp_path):
    seg_src = seg(write_mask_folder(tmp_path / "seg", simple_masks()), tmp_path)
    cls_src = cls(
        write_image_folder(tmp_path / "cls", [["Kitty", "horse"], ["horse"], ["potted plant"]]), tmp_path
    )
    assert seg_src.kind == "mask" and seg_src.label_column == "label" and seg_src.class_names == SEG_NAMES
    assert cls_src.kind == "image" and cls_src.label_format == "names"
    mapping = build_union_vocabulary([seg_src, cls_src], synonyms={"kitty": "cat"})
    assert mapping.vocabulary.names == ["background", "cat", "potted plant", "dog", "horse"]
    # class names of the image source are sorted: horse, kitty, potted plant
    assert cls_src.class_names == ["horse", "Kitty", "potted plant"]
    assert mapping.index_maps[cls_src.name].tolist() == [4, 1, 2]
    ex = mapping.map_example(cls_src.name, cls_src.get_example(0))
    assert ex["label_ids"] == [1, 4]
    assert mapping.unmapped == {}


def test_unmapped_names_reported_with_fixed_target(tmp_path, caplog):
    masks = simple_masks()
    seg_src = seg(write_mask_folder(tmp_path / "seg", masks), tmp_path, dataset_name="seg")
    cls_src = cls(
        write_image_folder(tmp_path / "cls", [["cat", "zebra"], ["zebra"]]), tmp_path, dataset_name="cls"
    )
    with caplog.at_level(logging.WARNING):
        mapping = build_union_vocabulary([seg_src, cls_src], target_vocabulary=["background", "cat", "dog"])
    assert mapping.unmapped == {"seg": ["potted_plant"], "cls": ["zebra"]}
    assert "zebra" in caplog.text and "potted_plant" in caplog.text
    ex = mapping.map_example("seg", seg_src.get_example(1))  # pixels of potted_plant (id 2) become ignore
    assert (ex["mask"][:8, :8] == -100).all() and (ex["mask"][8:, 8:] == 2).all() and (ex["mask"][0, 15] == 0)
    assert mapping.map_example("cls", cls_src.get_example(0))["label_ids"] == [1]
    assert mapping.map_example("cls", cls_src.get_example(1))["label_ids"] == []


# --------------------------------------------------------------------------- errors


def test_missing_columns_list_available(tmp_path):
    path = write_mask_folder(tmp_path / "seg", simple_masks(2))
    with pytest.raises(
        ColumnNotFoundError, match=r"'img' not found.*available columns: \['image', 'label'\]"
    ):
        seg(path, tmp_path, image_column="img")
    cpath = write_image_folder(tmp_path / "cls", [["cat"], ["dog"]], key="tags")
    with pytest.raises(ColumnNotFoundError, match=r"looked for \['label', 'labels'\].*'tags'"):
        cls(cpath, tmp_path)
    assert cls(cpath, tmp_path, label_column="tags").label_column == "tags"


def test_mask_id_outside_classes_names_row_and_file(tmp_path):
    masks = simple_masks(3)
    masks[2][0, 0] = 7
    src = seg(write_mask_folder(tmp_path / "seg", masks), tmp_path)
    src.get_example(1)
    with pytest.raises(
        LabelOutOfRangeError, match=r"ids \[7\] outside the dataset's 4 classes.*row 2.*x2\.png"
    ):
        src.get_example(2)
    # the same value is fine when declared as the ignore value
    src = seg(tmp_path / "seg", tmp_path, ignore_value=7)
    assert (src.get_example(2)["mask"][0, 0]) == -1


def test_class_id_outside_classes_and_unknown_name(tmp_path):
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(rgb(0)), Image.fromarray(rgb(1))], "label": [1, 5]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    src = load_classification_dataset(ds, class_names=["a", "b", "c"], dataset_name="ints")
    assert src.get_example(0)["label_ids"] == [1]
    with pytest.raises(LabelOutOfRangeError, match=r"label id 5 .*3 classes.*'ints', row 1"):
        src.get_example(1)
    path = write_image_folder(tmp_path / "cls", [["cat"], ["dog", "catt"]])
    src = cls(path, tmp_path, class_names=["cat", "dog", "cow"])
    with pytest.raises(UnknownLabelError, match=r"unknown class name 'catt'.*Closest names: \['cat'.*row 1"):
        src.get_example(1)


def test_multilabel_classlabel_and_single_classlabel():
    names = ["a", "b", "c"]
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(rgb(0))], "labels": [[2, 0]]},
        features=datasets.Features(
            {"image": datasets.Image(), "labels": datasets.List(datasets.ClassLabel(names=names))}
        ),
    )
    src = load_classification_dataset(ds)
    assert src.class_names == names and src.label_format == "ids"
    assert src.get_example(0)["label_ids"] == [2, 0]
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(rgb(0))], "label": [1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}),
    )
    src = load_classification_dataset(ds)
    assert src.label_format == "id" and src.get_example(0)["label_ids"] == [1]


def test_size_mismatch_names_sizes_and_file(tmp_path):
    masks = simple_masks(2)
    masks[1] = masks[1][:, :12]
    images = [Image.fromarray(rgb(0)), Image.fromarray(rgb(1))]
    src = seg(write_mask_folder(tmp_path / "seg", masks, images=images), tmp_path)
    with pytest.raises(SizeMismatchError, match=r"16x16 but its label map is 12x16.*row 1.*x1\.png"):
        src.get_example(1)


def test_corrupt_image_names_row_and_path(tmp_path):
    path = write_mask_folder(tmp_path / "seg", simple_masks(3))
    (path / "x1.png").write_bytes(b"this is not a png")
    src = seg(path, tmp_path)
    src.get_example(0)
    with pytest.raises(
        CorruptImageError, match=r"cannot decode image.*row 1.*x1\.png.*UnidentifiedImageError"
    ):
        src.get_example(1)


def test_missing_class_names_is_a_clear_error(tmp_path):
    path = write_mask_folder(tmp_path / "seg", simple_masks(2), vocab_file=False)
    with pytest.raises(ValueError, match="no class names.*class_names="):
        seg(path, tmp_path)
    assert seg(path, tmp_path, class_names=SEG_NAMES).class_names == SEG_NAMES


# --------------------------------------------------------------------------- modes


def test_image_modes_convert_to_rgb():
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert (np.asarray(to_rgb(Image.fromarray(g))) == g[:, :, None]).all()
    g16 = g.astype(np.uint16) * 257  # full 16-bit range
    img16 = Image.fromarray(g16)
    assert img16.mode == "I;16"
    assert (np.asarray(to_rgb(img16)) == g[:, :, None]).all()  # scaled, not clipped at 255
    assert (np.asarray(to_rgb(Image.fromarray(g16.astype(np.int32)))) == g[:, :, None]).all()  # mode I
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:8, :, 3] = 255  # top opaque, bottom transparent (hidden colour must not leak)
    out = np.asarray(to_rgb(Image.fromarray(rgba)))
    assert (out[:8] == 200).all() and (out[8:] == 255).all()  # over white, as at inference
    pal = Image.fromarray(rgb(0)).quantize(8)
    assert pal.mode == "P"
    assert (np.asarray(to_rgb(pal)) == np.asarray(pal.convert("RGB"))).all()
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    assert tuple(np.asarray(to_rgb(cmyk))[0, 0]) == (255, 0, 0)


def test_palette_and_16bit_masks_round_trip_through_load_and_transform(tmp_path):
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pmask = Image.frombytes("P", (16, 16), ids.tobytes())
    pmask.putpalette(list(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8)))
    assert (mask_to_array(pmask) == ids).all()  # palette indices, not colours
    big = np.arange(256, dtype=np.uint16).reshape(16, 16) * 7 + 300  # ids 300..2085
    names = [f"c{i}" for i in range(2100)]
    # images in several modes next to the masks
    images = [
        Image.fromarray(rgb(0)).convert("L"),
        Image.fromarray(rgb(1)).convert("RGBA"),
        Image.fromarray(rgb(2)).quantize(16),
        Image.fromarray(rgb(3)[..., 0].astype(np.uint16) * 257),
    ]
    masks = [pmask, Image.fromarray(big), pmask, Image.fromarray(big)]
    src = seg(write_mask_folder(tmp_path / "seg", masks, names=names, images=images), tmp_path)
    assert src.dataset[1]["label"].mode == "I;16"
    mapping = build_union_vocabulary([src])
    exact = TrainTransform(crop_size=16, ratio_range=(1.0, 1.0), flip_prob=0.0, photometric=False)
    for i, expected in enumerate([ids, big, ids, big]):
        ex = mapping.map_example(src.name, src.get_example(i))
        assert ex["image"].dtype == np.uint8 and ex["image"].shape == (16, 16, 3)
        assert (ex["mask"] == expected).all()
        _, labels = exact(ex["image"], ex["mask"], np.random.default_rng(i))
        assert (labels.numpy() == expected).all()
        _, labels = TrainTransform(crop_size=12)(ex["image"], ex["mask"], np.random.default_rng(i))
        assert set(np.unique(labels.numpy())) <= set(np.unique(expected)) | {-100}
    assert int(np.asarray(src.get_example(3)["image"])[..., 0].max()) == int(rgb(3)[..., 0].max())


# --------------------------------------------------------------------------- samples, collation, mixing


@pytest.fixture
def two_sources(tmp_path):
    seg_src = seg(write_mask_folder(tmp_path / "seg", simple_masks(6)), tmp_path, dataset_name="seg")
    labels = [["cat"], ["dog", "horse"], ["horse"], ["cat", "dog"]]
    cls_src = cls(write_image_folder(tmp_path / "cls", labels), tmp_path, dataset_name="cls")
    return seg_src, cls_src


def test_samples_and_collator_shapes(two_sources):
    seg_src, cls_src = two_sources
    mapping = build_union_vocabulary([seg_src, cls_src])
    t = {"mask": TrainTransform(crop_size=12), "image": TrainTransform(crop_size=12)}
    mask_ds, img_ds = LarvSegDataset(seg_src, mapping, t), LarvSegDataset(cls_src, mapping, t)
    ms, im = mask_ds[0], img_ds[1]
    assert ms["image_label_ids"] == [] and ms["labels"].dtype == torch.int64
    assert (im["labels"] == -100).all() and im["image_label_ids"] == [
        mapping.vocabulary.index_of(n) for n in ("dog", "horse")
    ]
    collate = LarvSegCollator(mapping.num_labels)
    batch = collate([ms, im, img_ds[0]])
    assert set(batch) == {"pixel_values", "labels", "image_labels", "pixel_mask"}
    assert batch["pixel_mask"].shape == (3, 12, 12) and batch["pixel_mask"].dtype == torch.bool
    assert batch["pixel_values"].shape == (3, 3, 12, 12) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].shape == (3, 12, 12) and batch["labels"].dtype == torch.int64
    assert batch["image_labels"].shape == (3, mapping.num_labels)
    expected = torch.zeros(3, mapping.num_labels)
    expected[1, [mapping.vocabulary.index_of("dog"), mapping.vocabulary.index_of("horse")]] = 1
    expected[2, mapping.vocabulary.index_of("cat")] = 1
    assert torch.equal(batch["image_labels"], expected)
    # same seed/epoch/index -> identical augmentation
    assert torch.equal(mask_ds[2]["pixel_values"], mask_ds[2]["pixel_values"])


def test_image_level_samples_mark_their_padding(two_sources):
    seg_src, cls_src = two_sources
    mapping = build_union_vocabulary([seg_src, cls_src])
    halve = TrainTransform(
        crop_size=24, ratio_range=(0.5, 0.5)
    )  # every image comes back smaller than the crop
    images = LarvSegDataset(cls_src, mapping, {"mask": halve, "image": halve})
    for index in range(len(images)):
        sample = images[index]
        height, width = np.asarray(cls_src.get_example(index)["image"]).shape[:2]
        real = torch.zeros(24, 24, dtype=torch.bool)
        real[: round(height / 2), : round(width / 2)] = True
        assert torch.equal(sample["pixel_mask"], real)
        assert (sample["pixel_values"][:, ~real] == 0).all()
    masks = LarvSegDataset(seg_src, mapping, {"mask": halve, "image": halve})
    assert masks[0]["pixel_mask"].all()  # mask samples: padding is already ignore_index in their labels
    batch = LarvSegCollator(mapping.num_labels)([masks[0], images[0]])
    assert batch["pixel_mask"][0].all() and torch.equal(batch["pixel_mask"][1], images[0]["pixel_mask"])


def test_collator_groups_by_size_when_crops_differ(two_sources):
    seg_src, cls_src = two_sources
    mapping = build_union_vocabulary([seg_src, cls_src])
    t = {"mask": TrainTransform(crop_size=16), "image": TrainTransform(crop_size=8)}
    m, i = LarvSegDataset(seg_src, mapping, t), LarvSegDataset(cls_src, mapping, t)
    out = LarvSegCollator(mapping.num_labels)([m[0], i[0], m[1], i[1], i[2]])
    assert list(out) == ["groups"]
    a, b = out["groups"]
    assert a["pixel_values"].shape == (2, 3, 16, 16) and b["pixel_values"].shape == (3, 3, 8, 8)
    assert (
        a["image_labels"].sum() == 0 and (b["image_labels"].sum(1) >= 1).all() and (b["labels"] == -100).all()
    )


def test_mixed_dataset_proportions_and_determinism(two_sources):
    seg_src, cls_src = two_sources
    mapping = build_union_vocabulary([seg_src, cls_src])
    parts = [LarvSegDataset(seg_src, mapping), LarvSegDataset(cls_src, mapping)]
    weights = mixing_weights([seg_src, cls_src], mask_fraction=0.3)
    assert weights == [0.3, 0.7]
    mixed = MixedDataset(parts, weights, length=50, seed=1)
    kinds = np.array([mixed.locate(p)[0] for p in range(3000)])
    assert abs((kinds == 0).mean() - 0.3) < 0.02
    for window in range(0, 3000, 500):  # proportion holds locally, not only on average
        assert abs((kinds[window : window + 500] == 0).mean() - 0.3) < 0.05
    rows = [mixed.locate(p)[1] for p in range(3000) if kinds[p] == 1]
    assert set(rows) == set(range(len(cls_src)))  # every row visited
    first_pass = rows[: len(cls_src)]
    assert sorted(first_pass) == list(range(len(cls_src)))  # a permutation before any repeat
    again = MixedDataset(parts, weights, length=50, seed=1)
    assert [again.locate(p) for p in range(200)] == [mixed.locate(p) for p in range(200)]
    other = MixedDataset(parts, weights, length=50, seed=2)
    assert [other.locate(p) for p in range(200)] != [mixed.locate(p) for p in range(200)]
    # through __getitem__ with real decoding (small)
    built = build_mixed_dataset(
        [seg_src, cls_src],
        mapping,
        mask_fraction=0.3,
        length=20,
        seed=1,
        transforms=TrainTransform(crop_size=8),
    )
    got = [built[i]["kind"] for i in range(20)]
    assert got == ["mask" if k == 0 else "image" for k in kinds[:20]]
    assert torch.equal(built[3]["pixel_values"], built[3]["pixel_values"])


def test_streaming_interleave_and_disjoint_node_shards(two_sources, tmp_path):
    seg_s = seg(tmp_path / "seg", tmp_path, streaming=True, dataset_name="seg")
    cls_s = cls(
        tmp_path / "cls", tmp_path, streaming=True, dataset_name="cls", class_names=two_sources[1].class_names
    )
    assert seg_s.streaming and isinstance(seg_s.dataset, datasets.IterableDataset)
    mapping = build_union_vocabulary([seg_s, cls_s])
    t = TrainTransform(crop_size=8)
    seen = []
    for rank in range(2):
        ds = build_streaming_dataset(
            [seg_s, cls_s],
            mapping,
            probabilities=[0.5, 0.5],
            transforms=t,
            seed=0,
            rank=rank,
            world_size=2,
            infinite=False,
        )
        samples = list(ds)
        seen.append({(s["source"], s["index"]) for s in samples})
        assert all(s["pixel_values"].shape == (3, 8, 8) for s in samples)
        batch = LarvSegCollator(mapping.num_labels)(samples[:4])
        assert batch["labels"].shape == (min(4, len(samples)), 8, 8)
    assert seen[0] and seen[1] and not (seen[0] & seen[1])
    everything = {("seg", i) for i in range(6)} | {("cls", i) for i in range(4)}
    assert seen[0] | seen[1] == everything  # each row exactly once, on exactly one node
    # infinite mix keeps the proportion and keeps going past the data size
    inf = build_mixed_dataset([seg_s, cls_s], mapping, mask_fraction=0.75, transforms=t, seed=0)
    it = iter(inf.rows)
    kinds = [next(it)["source"] for _ in range(400)]
    assert abs(kinds.count("seg") / 400 - 0.75) < 0.08
    # split_dataset_by_node on a plain source, and on a map-style one
    shards = [shard_for_node(seg_s, r, 2) for r in range(2)]
    paths = [{row["image"].filename for row in s.dataset} for s in shards]
    assert not (paths[0] & paths[1]) and len(paths[0] | paths[1]) == 6
    mshards = [shard_for_node(two_sources[0].dataset, r, 3) for r in range(3)]
    assert sum(len(s) for s in mshards) == 6


def test_map_style_source_streams_through_to_iterable(two_sources):
    seg_src, cls_src = two_sources
    mapping = build_union_vocabulary([seg_src, cls_src])
    ds = build_streaming_dataset(
        [seg_src, cls_src], mapping, transforms=TrainTransform(crop_size=8), infinite=False, num_shards=2
    )
    got = {(s["source"], s["index"]) for s in ds}
    assert got == {("seg", i) for i in range(6)} | {("cls", i) for i in range(4)}


def test_collator_source_index_names_each_samples_source(two_sources):
    seg_src, cls_src = two_sources
    mapping = build_union_vocabulary([seg_src, cls_src])
    t = {"mask": TrainTransform(crop_size=16), "image": TrainTransform(crop_size=8)}
    m, i = LarvSegDataset(seg_src, mapping, t), LarvSegDataset(cls_src, mapping, t)
    samples = [i[0], m[0], i[1], m[1], i[2]]
    assert "source_index" not in LarvSegCollator(mapping.num_labels)(samples)["groups"][0]  # off by default
    collate = LarvSegCollator(mapping.num_labels, source_names=["cls", "seg"])
    first, second = collate(samples)["groups"]  # groups in order of first appearance: 8 px, then 16 px
    assert first["source_index"].dtype == torch.int64 and first["source_index"].tolist() == [0, 0, 0]
    assert second["source_index"].tolist() == [1, 1]
    flat = collate([m[2], m[3]])
    assert flat["source_index"].tolist() == [1, 1] and flat["labels"].shape[0] == 2
    with pytest.raises(ValueError, match=r"source 'seg' \(index 0\) is not one of .*\['cls'\]"):
        LarvSegCollator(mapping.num_labels, source_names=["cls"])([i[0], m[0]])
    with pytest.raises(ValueError, match="repeated"):
        LarvSegCollator(mapping.num_labels, source_names=["cls", "cls"])
