"""The distribution-shift split: photographs and artwork styles that training never uses, eval's format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from larvseg_hf.data import emoji_scenes as es
from larvseg_hf.data import shift_scenes as ss
from larvseg_hf.data.loaders import load_segmentation_dataset

TINY = dict(
    num_categories=12,
    image_size=64,
    num_mask_scenes=4,
    num_single_images=4,
    num_weak_scenes=4,
    num_eval_scenes=10,
    show_progress=False,
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return es.build_emoji_benchmark(tmp_path_factory.mktemp("cache"), **TINY)


@pytest.fixture(scope="module")
def shift_dir(bench):
    return ss.build_shift_split(bench, show_progress=False)


def _digest(photo: Image.Image) -> bytes:
    return np.asarray(photo.resize((32, 32), Image.Resampling.BOX)).tobytes()


def test_no_shift_photograph_is_a_training_background():
    names = ss.shift_photo_names()
    training = es.varied_background_names()  # the plain look's and the varied look's
    assert len(names) >= 5 and not set(names) & set(training)
    shift = {_digest(p) for p in es.load_photos(tuple(names))}
    train = {_digest(p) for p in es.load_photos(tuple(training))}
    assert len(shift) == len(names) and not shift & train  # the same picture under another name counts too


def test_split_reads_like_eval(bench, shift_dir):
    assert (shift_dir / "vocabulary.json").read_text() == (
        bench.split_dir("eval") / "vocabulary.json"
    ).read_text()
    images = es.split_images(shift_dir)
    assert len(images) == TINY["num_eval_scenes"]
    source = load_segmentation_dataset(shift_dir, class_names=bench.class_names, dataset_name="eval_shift")
    novel = set(bench.novel_ids)
    seen_novel = set()
    for index in range(len(source)):
        example = source.get_example(index)
        ids = set(np.unique(example["mask"]).tolist())
        assert ids <= set(range(len(bench.class_names)))
        seen_novel |= ids & novel
    assert seen_novel  # novel emoji appear, as in eval


def test_scenes_differ_from_eval_and_are_deterministic(bench, shift_dir, tmp_path):
    eval_images = [np.asarray(Image.open(p)) for p in es.split_images(bench.split_dir("eval"))]
    shift_images = [np.asarray(Image.open(p)) for p in es.split_images(shift_dir)]
    assert not any(np.array_equal(a, b) for a, b in zip(eval_images, shift_images, strict=True))
    # The marker holds what the content depends on; a second build reuses, a forced one rewrites the same.
    marker = json.loads((shift_dir / "_COMPLETE").read_text())
    assert marker == ss.shift_params(bench) and marker["transforms"] == list(ss.SHIFT_TRANSFORMS)
    before = {p.name: p.read_bytes() for p in shift_dir.iterdir()}
    assert ss.build_shift_split(bench, show_progress=False) == shift_dir
    ss.build_shift_split(bench, force=True, show_progress=False)
    assert {p.name: p.read_bytes() for p in shift_dir.iterdir()} == before


def test_other_scene_counts_rebuild(bench, shift_dir):
    folder = ss.build_shift_split(bench, num_scenes=3, show_progress=False)
    assert len(es.split_images(folder)) == 3
    ss.build_shift_split(bench, show_progress=False)  # back to the default for the other tests


@pytest.mark.parametrize("name", list(ss.SHIFT_TRANSFORMS))
def test_artwork_transforms_restyle_and_keep_a_valid_premultiplied_sprite(name):
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (40, 40, 3)).astype(np.float32)
    alpha = np.zeros((40, 40, 1), np.float32)
    alpha[8:32, 8:32] = 1.0
    alpha[8:32, 8:10] = 0.5
    sprite = np.rint(np.concatenate([colours * alpha, alpha * 255], -1)).astype(np.uint8)
    out = ss.SHIFT_TRANSFORMS[name](sprite, np.random.default_rng(1))
    assert out.shape == sprite.shape and out.dtype == np.uint8
    assert (out[..., :3] <= out[..., 3:4]).all()  # premultiplied: colour never exceeds alpha
    assert not np.array_equal(out[..., :3], sprite[..., :3])  # the drawing changed
    if name != "pixelate":  # pixelation moves the outline by design; the others keep the alpha
        assert np.array_equal(out[..., 3], sprite[..., 3])
    else:
        assert (out[..., 3] >= 128).sum() == pytest.approx((sprite[..., 3] >= 128).sum(), rel=0.25)
