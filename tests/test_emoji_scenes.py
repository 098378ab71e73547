# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""The built-in emoji-scenes benchmark: determinism, exact masks, 16-bit ids, each split's own vocabulary and
contents (no novel mask in training; weak and single-image splits name base emoji and background too), cache,
errors."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import datasets
import numpy as np
import pytest
from PIL import Image

from larvseg_hf.data import emoji_scenes as es

datasets.disable_progress_bars()

TINY = dict(
    num_categories=12,
    image_size=64,
    num_mask_scenes=20,
    num_single_images=20,
    num_weak_scenes=20,
    num_eval_scenes=20,
    show_progress=False,
)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(bench, split):
    with open(bench.split_dir(split) / "metadata.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _label(bench, split, row):
    return np.asarray(Image.open(bench.split_dir(split) / row["label_file_name"]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return es.build_emoji_benchmark(tmp_path_factory.mktemp("a"), **TINY)


@pytest.fixture(scope="module")
def renderer():
    return es.SceneRenderer.from_vocabulary(12, 0.4, 0, 64)


# --------------------------------------------------------------------------- layout and vocabulary


def test_layout_and_vocabulary(tiny):
    vocab = json.loads((tiny.root / "vocabulary.json").read_text("utf-8"))
    assert (tiny.root / "_COMPLETE").is_file()
    assert tiny.root.parent.name == "emoji_scenes"
    assert {"class_names", "base_ids", "novel_ids", "groups", "source", "params"} <= set(vocab)
    assert "CC-BY 4.0" in vocab["source"] and "Twemoji" in vocab["source"]
    names = tiny.class_names
    assert names == vocab["class_names"] and names[0] == "background" and len(names) == 13
    assert len(vocab["groups"]) == len(names) and len(set(names)) == len(names)
    assert all(n == n.lower() for n in names)
    assert 0 in tiny.base_ids and 0 not in tiny.novel_ids
    assert sorted(tiny.base_ids + tiny.novel_ids) == list(range(13))
    assert len(tiny.novel_ids) == round(0.4 * 12)
    assert vocab["params"]["generator_version"] == es.GENERATOR_VERSION == "emoji-scenes-2"
    own = {  # each split names exactly what it can contain, in the global order
        "mask_train": [names[i] for i in sorted(tiny.base_ids)],  # background + base emoji
        "image_single": names[1:],  # every emoji, no background
        "image_weak": names,
        "eval": names,
    }
    for split in es.SPLITS:
        rows = _rows(tiny, split)
        assert len(rows) == 20
        keys = {"file_name", "labels"} if split == "image_single" else {"file_name", "label_file_name"}
        assert all(set(r) == keys for r in rows)
        assert json.loads((tiny.split_dir(split) / "vocabulary.json").read_text("utf-8")) == own[split]
        assert tiny.split_class_names(split) == own[split]


def test_vocabulary_is_a_seeded_sample_across_groups():
    catalog = es.available_emoji()
    infos, base, novel = es.select_vocabulary(60, 0.4, seed=0)
    again, base2, novel2 = es.select_vocabulary(60, 0.4, seed=0)
    other, _, _ = es.select_vocabulary(60, 0.4, seed=1)
    assert infos == again and base == base2 and novel == novel2
    assert [e.name for e in infos] != [e.name for e in other]
    assert [e.name for e in infos] != [e.name for e in catalog[:60]]
    groups = {e.group for e in infos}
    assert len(groups) >= 7 and not groups & set(es.EXCLUDED_GROUPS)
    assert len({infos[i - 1].group for i in novel}) >= 5  # novel categories are spread over groups too


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_and_other_seed_differs(tiny, tmp_path):
    again = es.build_emoji_benchmark(tmp_path / "b", **TINY)
    assert again.root != tiny.root and again.root.name == tiny.root.name
    first, second = _files(tiny.root), _files(again.root)
    assert first.keys() == second.keys() and len(first) > 100
    assert all(first[k] == second[k] for k in first)
    other = es.build_emoji_benchmark(tmp_path / "c", **{**TINY, "seed": 1})
    assert other.root.name != tiny.root.name
    assert other.class_names != tiny.class_names
    third = _files(other.root)
    assert sum(first[k] != third.get(k) for k in first if k.endswith(".png")) > 100


# --------------------------------------------------------------------------- masks


def test_render_masks_are_the_thresholded_alphas_after_occlusion(renderer):
    ids = list(range(1, 13))
    for i in range(25):
        rng = np.random.default_rng(i)
        chosen = [ids[j] for j in rng.permutation(12)[: 2 + i % 4]]
        scene = renderer.render(chosen, rng, return_alphas=True)
        assert scene.label.dtype == np.uint16 and scene.image.dtype == np.uint8
        assert len(scene.class_ids) >= 1 and set(scene.class_ids) <= set(chosen)
        expected = np.zeros_like(scene.label)
        for cid, alpha in zip(scene.class_ids, scene.alphas, strict=True):
            expected[alpha >= 128] = cid
        np.testing.assert_array_equal(scene.label, expected)
        for cid, alpha in zip(scene.class_ids, scene.alphas, strict=True):
            own = np.count_nonzero(alpha >= 128)
            assert np.count_nonzero(scene.label == cid) >= es.MIN_VISIBLE_FRACTION * own > 0


def _global_ids(bench, split, row) -> set[int]:
    """Classes of a written label map, as global ids (through the split's own vocabulary.json)."""
    own = bench.split_class_names(split)
    return {bench.class_names.index(own[i]) for i in np.unique(_label(bench, split, row)).tolist()}


def test_written_masks_use_the_split_vocabulary(tiny):
    base, novel = set(tiny.base_ids), set(tiny.novel_ids)
    seen = set()
    n_own = len(tiny.split_class_names("mask_train"))
    for row in _rows(tiny, "mask_train"):
        assert int(_label(tiny, "mask_train", row).max()) < n_own  # mask_train's own ids
        ids = _global_ids(tiny, "mask_train", row)
        assert ids <= base and not ids & novel and len(ids - {0}) >= 1  # never a novel mask in training
        seen |= ids
    assert len(seen) >= 5
    mixed = 0
    seen = set()
    for row in _rows(tiny, "eval"):
        ids = set(np.unique(_label(tiny, "eval", row)).tolist())
        assert ids <= base | novel
        mixed += bool(ids & novel) and bool(ids & (base - {0}))
        seen |= ids
    assert mixed >= 16 and novel <= seen


def test_written_files_are_the_rendered_scenes(tiny):
    r = es.SceneRenderer(
        es.select_vocabulary(12, 0.4, 0)[0],
        64,
        varied_look=tiny.vocabulary["params"].get("varied_look", False),
    )
    for split in es.LABEL_MAP_SPLITS:
        to_global = np.asarray([tiny.class_names.index(n) for n in tiny.split_class_names(split)])
        scenes = es.iter_split_scenes(split, 5, r, tiny.base_ids, tiny.novel_ids, seed=0)
        for row, scene in zip(_rows(tiny, split), scenes, strict=False):
            np.testing.assert_array_equal(
                np.asarray(Image.open(tiny.split_dir(split) / row["file_name"])), scene.image
            )
            np.testing.assert_array_equal(to_global[_label(tiny, split, row)], scene.label)


# --------------------------------------------------------------------------- image-level labels


def test_single_images_name_their_one_emoji_base_and_novel_alike(tiny):
    names = tiny.class_names
    r = es.SceneRenderer(
        es.select_vocabulary(12, 0.4, 0)[0],
        64,
        varied_look=tiny.vocabulary["params"].get("varied_look", False),
    )
    rows = _rows(tiny, "image_single")
    scenes = es.iter_split_scenes("image_single", len(rows), r, tiny.base_ids, tiny.novel_ids, seed=0)
    single_areas = []
    for row, scene in zip(rows, scenes, strict=True):
        on_disk = np.asarray(Image.open(tiny.split_dir("image_single") / row["file_name"]))
        np.testing.assert_array_equal(on_disk, scene.image)
        present = [names[c] for c in np.unique(scene.label).tolist() if c]
        assert len(row["labels"]) == 1 and row["labels"] == present  # one label, the emoji shown
        ys, xs = np.nonzero(scene.label)
        assert max(np.ptp(ys), np.ptp(xs)) + 1 >= 0.25 * scene.label.shape[0]
        single_areas.append(np.count_nonzero(scene.label))
    counts = Counter(r["labels"][0] for r in rows)
    assert set(counts) == set(names[1:])  # every emoji: base and novel
    assert max(counts.values()) - min(counts.values()) <= 1  # 20 images over 12 emoji: 1 or 2 each
    weak_areas = [
        np.count_nonzero(_label(tiny, "image_weak", row) == i)
        for row in _rows(tiny, "image_weak")
        for i in np.unique(_label(tiny, "image_weak", row)).tolist()
        if i
    ]
    assert np.mean(single_areas) > 2 * np.mean(weak_areas)  # single emoji are large


def test_weak_scenes_mix_base_and_novel_emoji_on_background(tiny):
    base, novel = set(tiny.base_ids) - {0}, set(tiny.novel_ids)
    sets = [_global_ids(tiny, "image_weak", row) for row in _rows(tiny, "image_weak")]
    assert sum(0 in ids for ids in sets) >= 19  # background is a class of (nearly) every scene
    assert sum(bool(ids & base) and bool(ids & novel) for ids in sets) >= 16
    assert all(2 <= len(ids - {0}) <= 5 for ids in sets)
    assert set().union(*sets) == set(range(len(tiny.class_names)))  # every class shows up
    eval_rows = {json.dumps(r) for r in _rows(tiny, "eval")}
    weak_dir = tiny.split_dir("image_weak")
    weak_images = [(weak_dir / r["file_name"]).read_bytes() for r in _rows(tiny, "image_weak")]
    eval_images = {(tiny.split_dir("eval") / json.loads(r)["file_name"]).read_bytes() for r in eval_rows}
    assert not eval_images & set(weak_images)  # drawn like eval, not the eval scenes


# --------------------------------------------------------------------------- datasets and 16-bit ids


def test_load_through_datasets(tiny, tmp_path):
    masks = tiny.load("mask_train", cache_dir=str(tmp_path / "hf"))
    assert set(masks.column_names) == {"image", "label"} and len(masks) == 20
    row = masks[0]
    assert row["image"].mode == "RGB" and row["image"].size == (64, 64)
    assert row["label"].mode == "I;16"
    weak = tiny.load("image_weak", cache_dir=str(tmp_path / "hf"))
    assert set(weak.column_names) == {"image", "label"} and weak[0]["label"].mode == "I;16"
    single = tiny.load("image_single", cache_dir=str(tmp_path / "hf"))
    assert set(single.column_names) == {"image", "labels"}
    assert all(set(labels) <= set(tiny.class_names[1:]) for labels in single["labels"])
    with pytest.raises(ValueError, match="unknown split"):
        tiny.split_dir("test")


def test_ids_above_255_survive(tmp_path):
    bench = es.build_emoji_benchmark(
        tmp_path,
        num_categories=500,
        image_size=32,
        num_mask_scenes=12,
        num_single_images=1,
        num_weak_scenes=12,
        num_eval_scenes=1,
        show_progress=False,
    )
    assert len(bench.class_names) == 501 and len(bench.split_class_names("mask_train")) == 301
    for split in ("mask_train", "image_weak"):
        ds = bench.load(split, cache_dir=str(tmp_path / "hf"))
        top = 0
        for i, row in enumerate(_rows(bench, split)):
            on_disk = _label(bench, split, row)
            read = np.asarray(ds[i]["label"])
            np.testing.assert_array_equal(read, on_disk)
            top = max(top, int(read.max()))
        assert top > 255, split
        if split == "mask_train":
            assert all(_global_ids(bench, split, row) <= set(bench.base_ids) for row in _rows(bench, split))


# --------------------------------------------------------------------------- cache and errors


def test_cache_is_reused_and_force_rebuilds(tmp_path, monkeypatch):
    bench = es.build_emoji_benchmark(tmp_path, **TINY)
    stamp = (bench.root / "_COMPLETE").stat().st_mtime_ns
    calls = []
    real = es._write_split
    monkeypatch.setattr(es, "_write_split", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    again = es.build_emoji_benchmark(tmp_path, **TINY)
    assert again == bench and calls == []
    assert (bench.root / "_COMPLETE").stat().st_mtime_ns == stamp
    es.build_emoji_benchmark(tmp_path, **{**TINY, "force": True})
    assert calls == list(es.SPLITS)
    assert sorted(p.name for p in (tmp_path / "emoji_scenes").iterdir()) == [bench.root.name]


def test_generator_version_is_part_of_the_cache_key(tmp_path, monkeypatch):
    """A folder built by the previous generator (same parameters) is not reused: its splits differ."""
    small = {**TINY, "num_mask_scenes": 2, "num_single_images": 2, "num_weak_scenes": 2, "num_eval_scenes": 2}
    monkeypatch.setattr(es, "GENERATOR_VERSION", "emoji-scenes-1")
    old = es.build_emoji_benchmark(tmp_path, **small)
    assert (old.root / "_COMPLETE").read_text().strip() == "emoji-scenes-1"
    monkeypatch.undo()
    new = es.build_emoji_benchmark(tmp_path, **small)
    assert new.root != old.root and new.root.parent == old.root.parent
    assert (new.root / "_COMPLETE").read_text().strip() == "emoji-scenes-2"
    assert new.vocabulary["params"]["generator_version"] == "emoji-scenes-2"


def test_default_root_follows_larvseg_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LARVSEG_CACHE", str(tmp_path / "cache"))
    small = {**TINY, "num_mask_scenes": 2, "num_single_images": 2, "num_weak_scenes": 2, "num_eval_scenes": 2}
    bench = es.build_emoji_benchmark(**small)
    assert bench.root.parent == tmp_path / "cache" / "emoji_scenes"


def test_interrupted_build_leaves_nothing_complete(tmp_path, monkeypatch):
    real = es._write_split

    def failing(out, split, *args, **kwargs):
        if split == "image_weak":
            raise KeyboardInterrupt
        return real(out, split, *args, **kwargs)

    monkeypatch.setattr(es, "_write_split", failing)
    with pytest.raises(KeyboardInterrupt):
        es.build_emoji_benchmark(tmp_path, **TINY)
    assert list((tmp_path / "emoji_scenes").iterdir()) == []


def test_errors(tmp_path):
    maximum = len(es.available_emoji())
    assert 1500 < maximum < 1700
    with pytest.raises(ValueError, match=f"maximum is {maximum}"):
        es.build_emoji_benchmark(tmp_path, **{**TINY, "num_categories": maximum + 1})
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="novel_fraction"):
            es.build_emoji_benchmark(tmp_path, **{**TINY, "novel_fraction": bad})
    with pytest.raises(ValueError, match="at least one base and one novel"):
        es.build_emoji_benchmark(tmp_path, **{**TINY, "novel_fraction": 0.01})
    with pytest.raises(ValueError, match="num_categories"):
        es.build_emoji_benchmark(tmp_path, **{**TINY, "num_categories": 1})
    with pytest.raises(ValueError, match="num_eval_scenes"):
        es.build_emoji_benchmark(tmp_path, **{**TINY, "num_eval_scenes": -1})
    assert not (tmp_path / "emoji_scenes").exists() or not any((tmp_path / "emoji_scenes").iterdir())


def test_plain_benchmark_parameters_keep_their_cache_key():
    """The plain look and the cache-key layout are unchanged, so folders built before EmojiBenchmarkParams
    (and varied_look, keyed only when on) existed are found again; the varied look, the default, is keyed with
    the photographs it adds."""
    expected = {
        "num_categories": 60,
        "novel_fraction": 0.4,
        "image_size": 128,
        "num_mask_scenes": 4000,
        "num_single_images": 2000,
        "num_weak_scenes": 1000,
        "num_eval_scenes": 300,
        "seed": 0,
        "full_masks": False,
    }
    assert dataclasses.asdict(es.EmojiBenchmarkParams()) == {**expected, "varied_look": True}
    plain = es.EmojiBenchmarkParams(varied_look=False).cache_params()
    assert list(plain) == ["generator_version", *expected, "artwork", "backgrounds"]
    assert plain == es._params(**expected)
    if plain["artwork"] == "svg" and len(plain["backgrounds"]) == 15:  # resvg and scikit-learn installed
        assert es._params_hash(plain) == "d44bf74f349a"
    varied = es.EmojiBenchmarkParams().cache_params()
    assert varied == {**plain, "varied_look": True, "varied_backgrounds": es.varied_background_names()}
    assert es._params_hash(varied) != es._params_hash(plain)


class _PickLog(list):
    """A photo list that records which indices backgrounds pick."""

    def __init__(self, items, log):
        super().__init__(items)
        self.log = log

    def __getitem__(self, index):
        self.log.append(index)
        return super().__getitem__(index)


def test_varied_look_draws_its_photographs_and_plain_scenes_never_do():
    """Varied training scenes draw from the plain photographs plus VARIED_EXTRA_BACKGROUNDS (and procedural
    backgrounds); plain scenes draw only the plain photographs, and a renderer loads the extra ones only when
    a varied scene first needs them."""
    renderer = es.SceneRenderer.from_vocabulary(12, image_size=32)
    assert renderer._varied_photos is None
    plain = len(renderer.photos)
    assert len(renderer.varied_photos) == plain + len(es.VARIED_EXTRA_BACKGROUNDS)
    plain_log, varied_log = [], []
    renderer.photos = _PickLog(renderer.photos, plain_log)
    renderer._varied_photos = _PickLog(renderer._varied_photos, varied_log)
    renderer.varied = False
    for seed in range(200):
        renderer.background(np.random.default_rng(seed))
    assert len(plain_log) == 200 and not varied_log and set(plain_log) == set(range(plain))
    renderer.varied = True
    for seed in range(400):
        renderer.background(np.random.default_rng(seed))
    assert len(plain_log) == 200  # no plain pick any more
    assert 400 * 0.6 < len(varied_log) < 400 * 0.8  # PROCEDURAL_FRACTION of the scenes have no photo
    assert set(varied_log) == set(range(plain + len(es.VARIED_EXTRA_BACKGROUNDS)))


def test_relief_rendering_is_deterministic_terrain_colour():
    for name in es.VARIED_EXTRA_BACKGROUNDS:
        if not name.endswith(".npz"):
            continue
        path = es._package_file("matplotlib", *es._PHOTO_FOLDERS["matplotlib"], name.split(":")[1])
        first, again = es._relief(path), es._relief(path)
        with np.load(path) as grid:
            shape = next(grid[k].shape for k in ("topo", "elevation") if k in grid.files)
        assert first.dtype == np.uint8 and first.shape == (*shape, 3)
        assert np.array_equal(first, again)
        assert first.std() > 10  # shaded relief, not a flat image


def test_params_object_and_keywords_build_the_same_folder(tiny, tmp_path):
    fields = {k: v for k, v in TINY.items() if k != "show_progress"}
    params = es.EmojiBenchmarkParams(**fields)
    again = es.build_emoji_benchmark(tmp_path, params, show_progress=False)
    assert again.root.name == tiny.root.name
    assert json.loads((again.root / "vocabulary.json").read_text("utf-8"))["params"] == params.cache_params()
    with pytest.raises(TypeError, match="num_categorie"):
        es.build_emoji_benchmark(tmp_path, num_categorie=3)


def test_cli_prints_a_summary(tiny, capsys):
    root = tiny.root.parent.parent
    args = ["--root", str(root), "--num_categories", "12", "--image_size", "64", "--quiet"]
    for key in ("num_mask_scenes", "num_single_images", "num_weak_scenes", "num_eval_scenes"):
        args += [f"--{key}", "20"]
    bench = es.main(args)
    out = capsys.readouterr().out
    assert bench == tiny
    assert str(tiny.root) in out and "24 novel" not in out and "5 novel" in out
    assert "mask_train" in out and "CC-BY 4.0" in out


def test_split_images_lists_every_image_and_no_label_map(tiny, tmp_path):
    for split in es.SPLITS:
        images = tiny.split_images(split)
        assert [p.name for p in images] == [row["file_name"] for row in _rows(tiny, split)]
        assert all(p.is_file() and Image.open(p).mode == "RGB" for p in images)
        label_files = {row.get("label_file_name") for row in _rows(tiny, split)}
        assert not label_files & {p.name for p in images}
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.jsonl").write_text('{"file_name": "a.png"}\n{"label": 3}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl, line 2"):
        es.split_images(broken)


def test_eval_keeps_the_plain_look_and_training_splits_vary(tiny, monkeypatch):
    """With varied_look, eval is drawn without any of the training look's extra random draws (identical to the
    plain benchmark's), and the training splits are restyled."""
    renderer = es.SceneRenderer.from_vocabulary(12, image_size=64)
    renderer.varied_look = True
    plain_eval = [
        s.image for s in es.iter_split_scenes("eval", 4, renderer, tiny.base_ids, tiny.novel_ids, 0)
    ]
    written = [np.asarray(Image.open(p)) for p in tiny.split_images("eval")[:4]]
    assert all(np.array_equal(a, b) for a, b in zip(plain_eval, written, strict=True))

    def forbidden(*args, **kwargs):
        raise AssertionError("eval must not use the training look")

    monkeypatch.setattr(es, "augment_sprite", forbidden)
    monkeypatch.setattr(es, "augment_scene", forbidden)
    monkeypatch.setattr(es, "procedural_background", forbidden)
    assert len(list(es.iter_split_scenes("eval", 4, renderer, tiny.base_ids, tiny.novel_ids, 0))) == 4
    with pytest.raises(AssertionError, match="training look"):
        list(es.iter_split_scenes("mask_train", 4, renderer, tiny.base_ids, tiny.novel_ids, 0))
