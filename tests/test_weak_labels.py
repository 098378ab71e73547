"""Weak sources (a segmentation dataset used as image-level data, the paper's weak ADE20K): label sets
recomputed from the cropped label map, no pixel supervision, map-style and streaming, validation, and
`--weak_datasets` through load_training_data; the built-in benchmark's splits in their own label spaces."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
from fixtures_data import ALL_NAMES, BASE_NAMES, WEAK_NAMES, build_tiny_datasets, build_weak_dataset
from PIL import Image
from transformers.image_utils import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from transformers.image_utils import IMAGENET_DEFAULT_STD as IMAGENET_STD

from larvseg_hf.data import emoji_scenes as es
from larvseg_hf.data.collate import LarvSegCollator
from larvseg_hf.data.errors import LabelOutOfRangeError
from larvseg_hf.data.loaders import load_weak_dataset
from larvseg_hf.data.map_dataset import LarvSegDataset
from larvseg_hf.data.samples import make_sample
from larvseg_hf.data.streaming import build_streaming_dataset
from larvseg_hf.data.transforms import TrainTransform
from larvseg_hf.data.validation import validate_source
from larvseg_hf.data.vocabulary_mapping import build_union_vocabulary
from larvseg_hf.training.arguments import DataArguments, parse_train_args
from larvseg_hf.training.setup import build_train_dataset, load_training_data, validate_training_data

datasets.disable_progress_bars()

IGNORE = -100
UNLABELLED = 255  # stored value of unlabelled pixels in the weak maps below
#: The weak dataset's own names; the union below orders them differently.
NAMES = ["sky", "background", "cat", "wall", "dog"]
UNION = ["background", "cat", "dog", "wall", "sky", "horse"]


def _known_map() -> np.ndarray:
    """12x12 stored ids (NAMES), classes in known places::

    rows 0-5:  wall at rows 0-1 / cols 0-1, sky in the rest of cols 0-5 | cat in cols 6-11
    rows 6-11: background in cols 0-5 | dog in cols 6-9 | unlabelled (255) in cols 10-11
    """
    m = np.zeros((12, 12), dtype=np.uint16)  # sky
    m[:2, :2] = 3  # wall
    m[:6, 6:] = 2  # cat
    m[6:, :6] = 1  # background
    m[6:, 6:10] = 4  # dog
    m[6:, 10:] = UNLABELLED
    return m


def _coordinate_image(h: int, w: int) -> np.ndarray:
    """R = 16 * row, G = 16 * column, B = 255: after a crop and flip (no resize, no colour jitter) every
    output pixel says which input pixel it is; padding (0 once normalised) has B = 255 * mean."""
    rows, cols = np.mgrid[:h, :w]
    return np.stack([rows * 16, cols * 16, np.full((h, w), 255)], axis=-1).astype(np.uint8)


def _write_weak_folder(root, label_maps, names=NAMES):
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, label in enumerate(label_maps):
        Image.fromarray(_coordinate_image(*label.shape)).save(root / f"w{i}.png")
        Image.fromarray(label.astype(np.uint16)).save(root / f"w{i}_label.png")
        rows.append({"file_name": f"w{i}.png", "label_file_name": f"w{i}_label.png"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "vocabulary.json").write_text(json.dumps(names))
    return root


class FixedCrop:
    """Crop [rows, cols], pad bottom/right to `out` with ignore_index (as TrainTransform pads)."""

    ignore_index = IGNORE

    def __init__(self, rows: slice, cols: slice, out: tuple[int, int] = (12, 14)) -> None:
        self.rows, self.cols, self.out = rows, cols, out

    def __call__(self, image, mask, rng):
        image = np.asarray(image)[self.rows, self.cols]
        mask = np.asarray(mask)[self.rows, self.cols]
        pixels = torch.zeros(3, *self.out)
        labels = torch.full(self.out, IGNORE, dtype=torch.int64)
        h, w = mask.shape
        pixels[:, :h, :w] = torch.as_tensor(image.transpose(2, 0, 1).astype(np.float32))
        labels[:h, :w] = torch.as_tensor(mask.astype(np.int64))
        return pixels, labels


@pytest.fixture
def weak(tmp_path):
    folder = _write_weak_folder(tmp_path / "weak", [_known_map(), _known_map()[:, ::-1].copy()])
    source = load_weak_dataset(
        folder, ignore_value=UNLABELLED, dataset_name="weak", cache_dir=str(tmp_path / "c")
    )
    return source, build_union_vocabulary([source], target_vocabulary=UNION)


def _ids(*names: str) -> list[int]:
    return sorted(UNION.index(n) for n in names)


def test_a_weak_source_is_image_level_data_read_from_label_maps(weak):
    source, mapping = weak
    assert source.kind == "image" and source.label_format == "mask" and source.is_weak
    assert source.class_names == NAMES and source.label_column == "label"
    assert mapping.index_maps["weak"].tolist() == [UNION.index(n) for n in NAMES]
    example = source.get_example(0)
    assert example["label_ids"] is None and example["mask"].shape == (12, 12)
    assert (example["mask"][6:, 10:] == -1).all()  # the stored ignore value is unlabelled


@pytest.mark.parametrize(
    ("rows", "cols", "expected"),
    [
        (slice(6, 12), slice(4, 12), ("background", "dog")),  # cat, sky, wall cropped away; unlabelled kept
        (slice(0, 6), slice(0, 12), ("sky", "wall", "cat")),
        (slice(2, 6), slice(0, 6), ("sky",)),  # wall (rows 0-1) cut off
        (slice(6, 12), slice(10, 12), ()),  # only unlabelled pixels: no label at all
    ],
)
def test_weak_labels_are_the_classes_left_in_the_crop(weak, rows, cols, expected):
    source, mapping = weak
    transform = FixedCrop(rows, cols)
    sample = LarvSegDataset(source, mapping, transform)[0]
    assert sample["kind"] == "image" and sample["image_label_ids"] == _ids(*expected)
    assert (sample["labels"] == IGNORE).all()  # never pixel supervision
    real = torch.zeros(12, 14, dtype=torch.bool)
    real[: rows.stop - rows.start, : cols.stop - cols.start] = True
    assert torch.equal(sample["pixel_mask"], real)  # unlabelled pixels are real pixels, padding is not
    batch = LarvSegCollator(len(UNION))([sample])
    assert batch["image_labels"][0].nonzero().flatten().tolist() == _ids(*expected)
    assert (batch["labels"] == IGNORE).all()


@pytest.mark.parametrize("ignore_index", [IGNORE, -1, 255])
def test_padding_unlabelled_and_classes_stay_apart_for_any_ignore_index(ignore_index):
    """A map with background (0), unlabelled (ignore_index after mapping) and one class, cropped so that the
    output is padded: the label set is {0, 7} whatever ignore_index is (-1 collides with a naive sentinel)."""
    label_map = np.full((6, 6), ignore_index, dtype=np.int64)
    label_map[:, :2] = 0
    label_map[:, 4:] = 7
    image = np.zeros((6, 6, 3), dtype=np.uint8)
    transform = TrainTransform(
        crop_size=8, ratio_range=(1.0, 1.0), photometric=False, ignore_index=ignore_index
    )
    example = {"image": image, "mask": label_map, "label_ids": None}
    sample = make_sample(example, "image", transform, np.random.default_rng(0), ignore_index)
    assert sample["image_label_ids"] == [0, 7]
    assert int(sample["pixel_mask"].sum()) == 36 and (sample["labels"] == ignore_index).all()


def _expected_from_witness(sample, stored: np.ndarray) -> tuple[list[int], torch.Tensor]:
    """Label set and real-pixel mask computed from the coordinate image that came through the transform."""
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None] * 255
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None] * 255
    rgb = np.rint(sample["pixel_values"].numpy() * std + mean)
    real = np.abs(rgb[2] - 255) < 1
    rows, cols = (rgb[0][real] / 16).astype(int), (rgb[1][real] / 16).astype(int)
    values = stored[rows, cols]
    union = np.asarray([UNION.index(n) for n in NAMES])
    present = sorted({int(union[v]) for v in values.tolist() if v != UNLABELLED})
    return present, torch.as_tensor(real)


def test_random_crops_label_exactly_the_classes_they_keep(weak):
    source, mapping = weak
    transform = TrainTransform(crop_size=(5, 16), ratio_range=(1.0, 1.0), photometric=False)
    dataset = LarvSegDataset(source, mapping, transform)
    seen = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        for index, stored in enumerate([_known_map(), _known_map()[:, ::-1]]):
            sample = dataset[index]
            expected, real = _expected_from_witness(sample, stored)
            assert sample["image_label_ids"] == expected
            assert torch.equal(sample["pixel_mask"], real) and not real.all()  # 12 wide, padded to 16
            assert (sample["labels"] == IGNORE).all()
            seen.add(tuple(expected))
    assert len(seen) >= 3  # the crops really differ in what they keep


def test_streaming_weak_source_gives_the_same_samples(weak, tmp_path):
    source, mapping = weak
    streamed = load_weak_dataset(
        tmp_path / "weak",
        ignore_value=UNLABELLED,
        dataset_name="weak",
        streaming=True,
        cache_dir=str(tmp_path / "c"),
    )
    assert streamed.streaming and streamed.is_weak
    transform = FixedCrop(slice(0, 6), slice(4, 12))
    stream = build_streaming_dataset([streamed], mapping, transforms=transform, infinite=False)
    got = {s["index"]: s for s in stream}
    assert sorted(got) == [0, 1]
    assert got[0]["image_label_ids"] == _ids("sky", "cat")  # cols 4-5 sky, 6-11 cat
    assert got[1]["image_label_ids"] == _ids("sky", "wall", "cat")  # mirrored: wall at cols 10-11
    map_style = LarvSegDataset(source, mapping, transform)
    for index, sample in got.items():
        assert (sample["labels"] == IGNORE).all()
        assert sample["image_label_ids"] == map_style[index]["image_label_ids"]
        assert torch.equal(sample["pixel_mask"], map_style[index]["pixel_mask"])


def test_validation_decodes_weak_label_maps_and_names_the_bad_file(tmp_path):
    bad = _known_map()
    bad[3, 3] = 9  # NAMES has 5 classes
    folder = _write_weak_folder(tmp_path / "weak", [_known_map(), _known_map(), bad])
    source = load_weak_dataset(
        folder, ignore_value=UNLABELLED, dataset_name="weak", cache_dir=str(tmp_path / "c")
    )
    assert validate_source(source, max_rows=2, show_progress=False) == 2
    with pytest.raises(LabelOutOfRangeError, match=r"ids \[9\].*'weak', row 2, file .*w2_label\.png"):
        validate_source(source, show_progress=False)


def test_a_segmentation_folder_given_as_classification_data_points_to_weak(tmp_path):
    from larvseg_hf.data.errors import LarvSegDataError
    from larvseg_hf.data.loaders import load_classification_dataset

    folder = _write_weak_folder(tmp_path / "weak", [_known_map()])
    with pytest.raises(LarvSegDataError, match="holds images.*load_weak_dataset.*--weak_datasets"):
        load_classification_dataset(folder, label_column="label", cache_dir=str(tmp_path / "c"))


# --------------------------------------------------------------------------- --weak_datasets


def _train_args(*argv: str) -> DataArguments:
    return parse_train_args([*argv, "--output_dir", "unused"])[1]


def test_weak_datasets_end_to_end_through_load_training_data(tmp_path):
    data = build_tiny_datasets(tmp_path / "tiny", num_mask=6, num_cls=6, num_eval=2)
    weak = build_weak_dataset(tmp_path, num_images=8)
    spec = f"{weak}:train"
    args = _train_args(
        "--mask_datasets", f"{data}/mask:train", "--weak_datasets", spec,
        "--eval_dataset", f"{data}/mask:eval", "--label_column", f"{spec}=label",
    )  # fmt: skip
    assert not args.uses_builtin and args.weak_datasets == [spec]
    assert not DataArguments(weak_datasets=[spec]).uses_builtin and DataArguments().uses_builtin
    training = load_training_data(args, show_progress=False)
    mask_src, weak_src = training.sources
    assert mask_src.kind == "mask" and weak_src.is_weak and weak_src.class_names == WEAK_NAMES
    vocab = training.mapping.vocabulary
    assert len(vocab) == len(set(BASE_NAMES) | set(WEAK_NAMES)) == len(ALL_NAMES)
    assert training.base_ids == sorted(vocab.index_of(n) for n in BASE_NAMES)  # weak classes are never "base"
    assert "weak" in training.description["image_data"] and spec in training.description["image_data"]
    assert validate_training_data(training, show_progress=False) == {
        f"{data}/mask:train": 6, spec: 8, f"eval:{data}/mask:eval": 2,
    }  # fmt: skip

    # training samples of the weak source: image-level labels = classes of its (whole, here) label map
    args.image_crop_size = 64  # no crop: the 64x64 scene kept whole (rescale ratio 1 below)
    train = build_train_dataset(training, args, seed=0, length=40, rank=0, world=1)
    weak_part = train.datasets[1]
    weak_part.transform = TrainTransform(crop_size=64, ratio_range=(1.0, 1.0), photometric=False)
    for index in range(len(weak_src)):
        sample = weak_part[index]
        stored = np.asarray(Image.open(weak / "train" / f"w{index}_label.png"))
        expected = sorted(vocab.index_of(WEAK_NAMES[v]) for v in np.unique(stored).tolist())
        assert sample["image_label_ids"] == expected and (sample["labels"] == -100).all()
        assert vocab.index_of("background") in expected and len(expected) >= 2
    kinds = {train[i]["source"]: train[i]["kind"] for i in range(40)}
    assert kinds == {f"{data}/mask:train": "mask", spec: "image"}


def test_a_bad_weak_label_map_is_found_before_training(tmp_path):
    data = build_tiny_datasets(tmp_path / "tiny", num_mask=4, num_cls=4, num_eval=2)
    weak = build_weak_dataset(tmp_path, num_images=5, bad_label_value=len(WEAK_NAMES) + 3, bad_row=3)
    args = _train_args("--mask_datasets", f"{data}/mask:train", "--weak_datasets", f"{weak}:train")
    training = load_training_data(args, show_progress=False)
    with pytest.raises(
        LabelOutOfRangeError, match=rf"\[{len(WEAK_NAMES) + 3}\].*row 3.*w3_label\.png.*w3\.png"
    ):
        validate_training_data(training, show_progress=False)


# --------------------------------------------------------------------------- the built-in benchmark


TINY = dict(
    builtin_num_categories=12,
    builtin_image_size=64,
    builtin_num_mask_scenes=10,
    builtin_num_single_images=24,
    builtin_num_weak_scenes=10,
    builtin_num_eval_scenes=4,
)


def test_builtin_splits_keep_their_own_vocabularies_mapped_into_global_ids(tmp_path):
    args = DataArguments(builtin_root=str(tmp_path), **TINY)
    training = load_training_data(args, show_progress=False)
    bench = es.EmojiBenchmark.from_dir(training.description["root"])
    names, base, novel = bench.class_names, bench.base_ids, bench.novel_ids
    assert training.class_names == names and training.base_ids == base
    by_name = {s.name: s for s in training.sources}
    mask_src, single, weak_src = (by_name[f"emoji {s}"] for s in ("mask_train", "image_single", "image_weak"))
    assert mask_src.kind == "mask" and single.kind == "image" and single.label_format == "names"
    assert weak_src.is_weak
    maps = training.mapping.index_maps
    assert maps[mask_src.name].tolist() == sorted(base)  # background + base, nothing else
    assert maps[single.name].tolist() == list(range(1, len(names)))  # every emoji, no background
    assert maps[weak_src.name].tolist() == list(range(len(names)))
    assert [names[i] for i in maps[mask_src.name]] == mask_src.class_names
    assert training.mapping.unmapped == {}

    # mask_train maps hold mask_train ids; mapped, they are global base ids
    exact = TrainTransform(crop_size=64, ratio_range=(1.0, 1.0), flip_prob=0.0, photometric=False)
    masks = LarvSegDataset(mask_src, training.mapping, exact)
    to_global = np.asarray([names.index(n) for n in bench.split_class_names("mask_train")])
    for index in range(len(mask_src)):
        stored = np.asarray(Image.open(bench.split_dir("mask_train") / f"{index:06d}_label.png")).astype(
            np.int64
        )
        expected = to_global[stored]
        np.testing.assert_array_equal(masks[index]["labels"].numpy(), expected)
        assert set(np.unique(expected).tolist()) <= set(base)

    # weak samples: background and base emoji are image-level labels; no pixel supervision
    weak_ds = LarvSegDataset(weak_src, training.mapping, exact)
    with_background = with_base = with_novel = 0
    for index in range(len(weak_src)):
        sample = weak_ds[index]
        ids = set(sample["image_label_ids"])
        assert (sample["labels"] == -100).all()
        with_background += 0 in ids
        with_base += bool(ids & (set(base) - {0}))
        with_novel += bool(ids & set(novel))
    assert with_background == len(weak_src) and with_base >= 8 and with_novel >= 8
