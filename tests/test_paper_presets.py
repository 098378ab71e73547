"""The paper presets (`--preset`, training/presets/paper_*.yaml) end to end on offline stand-ins of their datasets.

Each preset names Hub datasets with their own label conventions (ADE20K's 0 = "other", COCO-Stuff's raw ids with
255 unlabelled, ADE20K-847's 65535, ImageNet's one synset index per image). larvseg_hf.data.stand_ins writes tiny
local copies in the same layouts; here they replace the preset's dataset ids (through `--config`, as a user's own
copies would), so the preset's own `dataset_options` decide how they are read: the pixels and labels checked
below are what the real datasets' conventions say they mean. Then the real train script runs 2 steps offline and
the saved model loads and predicts.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from larvseg_hf import LarvSegForSemanticSegmentation, LarvSegImageProcessor
from larvseg_hf.data import stand_ins
from larvseg_hf.data.dataset_options import DatasetOptionsError, coco_stuff_raw_names
from larvseg_hf.known_vocabularies import known_vocabulary
from larvseg_hf.training.arguments import PAPER_PRESETS, parse_train_args, train_argument_parser
from larvseg_hf.training.setup import dataset_reading, load_training_data

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "scripts" / "train.py"

#: Preset -> (its vocabulary, that vocabulary's size in known_vocabularies).
VOCABULARIES = {
    "paper-c171-a150-in124": ("coco171+ade150+in124", 247),
    "paper-c171-a847-in585": ("coco171+ade847+in585", 909),
    "paper-c171-in21k": ("coco171+in21k", 21922),
}
IGNORE = -100


@pytest.fixture(scope="module")
def stand_in_configs(tmp_path_factory) -> dict[str, Path]:
    """Every preset's stand-ins, written once (the first through the `python -m` entry point)."""
    root = tmp_path_factory.mktemp("stand_ins")
    first, *others = PAPER_PRESETS
    stand_ins.main([first, str(root)])
    return {first: root / f"{first}.yaml", **{p: stand_ins.build_stand_ins(p, root) for p in others}}


@pytest.fixture(scope="module", params=list(PAPER_PRESETS))
def preset_run(request, stand_in_configs, tmp_path_factory):
    """(preset, its training data as loaded from the stand-ins, the output folder of a 2-step offline run)."""
    preset = request.param
    out = tmp_path_factory.mktemp(preset) / "model"
    argv = ["--preset", preset, "--config", str(stand_in_configs[preset]), "--output_dir", str(out)]
    _, data_args, _, _ = parse_train_args(argv)
    data = load_training_data(data_args, show_progress=False)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_MODULES_CACHE": str(out.parent / "hf_modules"),
    }
    proc = subprocess.run(
        [sys.executable, str(TRAIN), *argv], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    return preset, data, out


def _source(data, role_prefix: str):
    return next(s for s in data.sources if s.name.split("/")[-1].startswith(role_prefix))


def _rows(source, limit: int | None = None):
    """(index, undecoded row) of a map-style or streaming source."""
    return enumerate(itertools.islice(iter(source.raw), limit))


def _raw_map(value) -> np.ndarray:
    """The label values as stored in the file, read without the package."""
    with Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]) as image:
        return np.asarray(image).astype(np.int64)


# ------------------------------------------------------------------------------------- presets as arguments


def test_presets_are_listed_in_help_and_unknown_ones_fail():
    help_text = train_argument_parser().format_help()
    assert "--preset {" + ",".join(PAPER_PRESETS) + "}" in help_text
    with pytest.raises(
        ValueError, match=r"Unknown --preset 'paper-c171-a150'; choose one of \['paper-c171-a150-in124'"
    ):
        parse_train_args(["--preset", "paper-c171-a150"])
    with pytest.raises(ValueError, match="needs --weak_datasets: ADE20K-847 .* no public Hub copy"):
        parse_train_args(["--preset", "paper-c171-a847-in585"])


@pytest.mark.parametrize("preset", list(PAPER_PRESETS))
def test_presets_name_the_published_settings(preset):
    extra = (
        ["--weak_datasets", "/d/a847:train", "--eval_dataset", "/d/a847:validation"]
        if "a847" in preset
        else []
    )
    model_args, data_args, training_args, _ = parse_train_args(["--preset", preset, *extra])
    assert data_args.vocabulary == VOCABULARIES[preset][0]
    assert data_args.mask_datasets == ["GATE-engine/COCOStuff164K:train"]
    assert data_args.image_datasets == ["timm/imagenet-22k-wds:train"] and data_args.streaming
    assert model_args.backbone_name_or_path == "google/vit-base-patch16-224-in21k"
    crops = (data_args.mask_crop_size, data_args.image_crop_size, model_args.loss_downsample_rate)
    assert crops == (512, 320, 2)
    assert (training_args.optim, training_args.learning_rate, training_args.weight_decay) == ("sgd", 1e-3, 0)
    assert training_args.lr_scheduler_type == "polynomial" and training_args.max_steps == 320_000
    assert training_args.lr_scheduler_kwargs == {"power": 0.9, "lr_end": 1e-5}
    balance = (data_args.mask_fraction, model_args.image_loss_weight, model_args.attentive_loss_weight)
    topk, sampled = model_args.memory_bank_topk, model_args.num_sampled_classes
    # A150: 3 COCO : 3 weak ADE : 2 IN GPUs, 0.2 / 0.1 per GPU; fg40; no sampling
    if preset == "paper-c171-a150-in124":
        assert balance == (0.375, 0.33, 0.17) and topk == 40 and sampled == 247
        assert data_args.weak_datasets == ["zhoubolei/scene_parse_150:train"]
    elif preset == "paper-c171-a847-in585":  # the same split and weights; fg20; 100 sampled columns
        assert balance == (0.375, 0.33, 0.17) and topk == 20 and sampled == 100
    else:  # 4 COCO : 4 IN GPUs, image-level 0.2 (the 11K config), CA-Cls 0.2 (the C171 + IN-124 config)
        assert balance == (0.5, 0.2, 0.2) and topk == 40 and sampled == 100 and not data_args.weak_datasets


def test_command_line_beats_the_preset_and_adds_dataset_options():
    option = 'image_datasets={"drop_unmapped_rows": false}'
    argv = [
        "--preset",
        "paper-c171-a150-in124",
        "--mask_datasets",
        "/d/coco:train",
        "--image_loss_weight",
        "0.5",
    ]
    model_args, data_args, _, _ = parse_train_args([*argv, "--dataset_options", option])
    assert data_args.mask_datasets == ["/d/coco:train"] and model_args.image_loss_weight == 0.5
    assert data_args.dataset_options[-1] == option
    assert len(data_args.dataset_options) == 5  # the preset's 4 kept
    kwargs, drop = dataset_reading(data_args, "timm/imagenet-22k-wds:train", "image_datasets")
    assert not drop and kwargs["label_column"] == "cls" and len(kwargs["class_names"]) == 21841
    kwargs, _ = dataset_reading(data_args, "zhoubolei/scene_parse_150:train", "weak_datasets")
    assert kwargs["reduce_labels"] and kwargs["revision"] == "refs/convert/parquet"
    with pytest.raises(DatasetOptionsError, match="unknown key 'reduce_label'"):
        parse_train_args([*argv, "--dataset_options", 'weak_datasets={"reduce_label": true}'])
    with pytest.raises(DatasetOptionsError, match=r"do not apply to image-level data"):
        dataset_reading(
            parse_train_args([*argv, "--dataset_options", 'image_datasets={"ignore_value": 255}'])[1],
            "timm/imagenet-22k-wds:train",
            "image_datasets",
        )


def test_coco_raw_ids_keep_cocos_171_names_in_order():
    names = coco_stuff_raw_names()
    assert len(names) == 182 and names[0] == "person" and names[181] == "wood" and names[170] == "wall-brick"
    assert names[11] == "unused (street sign)" and names[90] == "unused (hair brush)"
    assert [n for n in names if not n.startswith("unused")] == list(
        known_vocabulary("coco-stuff-171").class_names
    )


# ------------------------------------------------------------------------------------- stand-ins, end to end


def test_vocabulary_is_the_presets_known_vocabulary(preset_run):
    preset, data, out = preset_run
    name, size = VOCABULARIES[preset]
    expected = list(known_vocabulary(name).class_names)
    assert len(expected) == size and data.class_names == expected
    config = json.loads((out / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(size)] == expected
    coco_ids = {data.mapping.vocabulary.index_of(n) for n in known_vocabulary("coco-stuff-171").class_names}
    assert set(config["base_label_ids"]) == coco_ids  # masks are COCO's only: every other class is novel


def test_coco_masks_read_raw_ids_with_255_unlabelled(preset_run):
    _, data, _ = preset_run
    coco, vocab, names = _source(data, "coco_stuff_164k"), data.mapping.vocabulary, coco_stuff_raw_names()
    seen = set()
    for index, row in _rows(coco):
        raw = _raw_map(row["mask"])
        mapped = data.mapping.map_mask(coco.name, coco.decode_row(row, index)["mask"])
        assert (raw == 255).any() and (mapped[raw == 255] == IGNORE).all()
        for value in np.unique(raw[raw != 255]):
            assert (mapped[raw == value] == vocab.index_of(names[value])).all()
            seen.add(int(value))
    assert seen == set(stand_ins.COCO_RAW_IDS)
    assert vocab.index_of(names[170]) == vocab.index_of("wall") or "wall" not in vocab.names  # a union rename


def test_ade_label_maps_follow_their_convention(preset_run):
    preset, data, _ = preset_run
    vocab = data.mapping.vocabulary
    if preset == "paper-c171-a847-in585":  # ids as stored, 65535 unlabelled
        names, ignore, shift, folder = known_vocabulary("ade20k-847").class_names, 65535, 0, "ade20k_847"
    else:  # reduce_labels: stored 0 is "other", 1..150 are classes 0..149
        names, ignore, shift, folder = known_vocabulary("ade20k-150").class_names, 0, 1, "scene_parse_150"
    weak = [s for s in data.sources if folder in s.name]
    assert [s.is_weak for s in weak] == ([] if preset == "paper-c171-in21k" else [True])
    checks = [
        (s, (data.mapping.map_mask(s.name, s.decode_row(r, i)["mask"]) for i, r in _rows(s))) for s in weak
    ]
    checks.append((data.eval_source, (row["label"] for row in data.eval_rows())))  # as evaluation reads them
    known = known_vocabulary(VOCABULARIES[preset][0])
    for source, mapped_maps in checks:
        for (_, row), mapped in zip(_rows(source), mapped_maps, strict=True):
            raw, mapped = _raw_map(row[source.label_column]), np.asarray(mapped)
            assert (raw == ignore).any() and (mapped[raw == ignore] == IGNORE).all()
            for value in np.unique(raw[raw != ignore]):
                name = names[value - shift]
                # ADE20K-150 val under coco171+in21k: 43 of its names are no class
                want = vocab.index_of(name) if name in known else IGNORE
                assert (mapped[raw == value] == want).all(), (source.name, value, name)


def test_imagenet_labels_are_synsets_and_rows_outside_the_vocabulary_are_dropped(preset_run):
    preset, data, _ = preset_run
    source = _source(data, "imagenet_22k_wds")
    vocabulary = known_vocabulary(VOCABULARIES[preset][0])
    wnids = list(known_vocabulary("imagenet-21k").wnids)
    kept = [wnid for wnid in stand_ins.WNIDS if wnid in vocabulary.wnids]
    assert "n03636248" in kept and "n01440764" not in kept or preset == "paper-c171-in21k"
    labels = {}
    for index, row in _rows(source):
        wnid = wnids[row["cls"]]
        # the shard's label is its synset's index in timm's fall11 list
        assert row["__key__"].startswith(wnid)
        labels.setdefault(wnid, set()).update(
            data.mapping.map_label_ids(source.name, source.parse_image_labels(row["cls"], index))
        )
    assert sorted(labels) == sorted(kept)
    for wnid, ids in labels.items():
        assert ids == {data.mapping.vocabulary.index_of(vocabulary.resolve(wnid))}
    if preset == "paper-c171-in21k":
        assert vocabulary.resolve("n01440764").startswith("tench")


def test_trained_model_loads_and_predicts(preset_run):
    preset, data, out = preset_run
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert "eval_mean_iou" in json.loads((out / "eval_results.json").read_text())
    model = LarvSegForSemanticSegmentation.from_pretrained(out).eval()
    processor = LarvSegImageProcessor.from_pretrained(out)
    assert model.config.num_labels == VOCABULARIES[preset][1]
    image = Image.new("RGB", (40, 56), (120, 30, 200))
    with torch.no_grad():
        outputs = model(**processor(image))
    assert outputs.logits.shape[:2] == (1, model.config.num_labels)
    label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[(56, 40)])[0]
    assert label_map.shape == (56, 40)
    assert 0 <= int(label_map.min()) and int(label_map.max()) < model.config.num_labels
