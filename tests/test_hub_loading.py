"""Saving and loading through transformers' Auto classes: remote code in a fresh process where
larvseg_hf cannot be imported, the installed-package route, config round trips, from_backbone,
and corrupt checkpoints."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import TINY_RESNET, TINY_VIT, make_config, make_model
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForSemanticSegmentation,
    ResNetBackbone,
    ResNetConfig,
    ViTConfig,
    ViTModel,
)

from larvseg_hf import LarvSegConfig, LarvSegForSemanticSegmentation, LarvSegImageProcessor

# Every CA-Cls hyper-parameter and loss weight, all away from their defaults.
HYPER_PARAMETERS = {
    "memory_bank_size": 3,
    "memory_bank_topk": 7,
    "memory_bank_warmup": 2,
    "memory_bank_dtype": "float16",
    "background_topk": 4,
    "background_score_threshold": 0.25,
    "synonym_mse_threshold": 1.5,
    "background_suppression": False,
    "supervised_loss_weight": 0.7,
    "image_loss_weight": 0.3,
    "attentive_loss_weight": 0.05,
    "num_sampled_classes": 64,
    "loss_downsample_rate": 4,
    "ignore_index": -1,
    "mask_norm_eps": 1e-4,
    "freeze_class_embeddings": True,
    "initializer_range": 0.01,
    "head_hidden_size": 24,
}
NAMES = ["background", "cat", "dog", "potted plant", "person", "zebra", "kite"]
BASE_IDS = [0, 1, 2, 4]

CHILD = textwrap.dedent(
    """
    import sys
    sys.modules["larvseg_hf"] = None  # the package must not be importable: only the saved code may run
    import json
    from pathlib import Path

    import numpy as np
    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        import larvseg_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("larvseg_hf is importable in the child")

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    auto = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    seg = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    image = np.load(folder / "image.npy")
    inputs = processor(image)
    with torch.no_grad():
        a, b = auto(**inputs), seg(**inputs)
        coseg = seg(**inputs, coseg=True)
        named = seg(**inputs, class_ids=["potted plant", "cat"])
    (segmentation,) = processor.post_process_semantic_segmentation(a, target_sizes=[image.shape[:2]])
    torch.save(
        {
            "pixel_values": inputs["pixel_values"],
            "auto_logits": a.logits,
            "seg_logits": b.logits,
            "coseg_logits": coseg.logits,
            "named_logits": named.logits,
            "named_class_ids": named.class_ids,
            "segmentation": segmentation,
            "num_writes": seg.memory_bank.num_writes,
            "slots": seg.memory_bank.slots,
            "base_mask": seg.base_mask,
        },
        out / "tensors.pt",
    )
    hyper = {key: getattr(config, key) for key in json.loads(sys.argv[3])}
    (out / "info.json").write_text(json.dumps({
        "classes": [type(m).__module__ + "." + type(m).__name__ for m in (config, auto, seg, processor)],
        "id2label": {str(k): v for k, v in config.id2label.items()},
        "base_label_ids": list(config.base_label_ids),
        "embeddings_trainable": [m.head.class_embeddings.requires_grad for m in (auto, seg)],
        "hyper": hyper,
    }))
    """
)


def _trained_model() -> LarvSegForSemanticSegmentation:
    """A tiny model whose bank holds state: some classes wrapped (usable), some partly written."""
    model = make_model("vit", names=NAMES, base_label_ids=BASE_IDS, **HYPER_PARAMETERS)
    generator = torch.Generator().manual_seed(7)
    ids = torch.tensor([5] * 8 + [3] * 6 + [6] * 2)  # 5 wrapped twice+, 3 exactly twice, 6 not yet
    model.memory_bank.enqueue(
        ids, torch.nn.functional.normalize(torch.randn(ids.numel(), 24, generator=generator))
    )
    with torch.no_grad():
        model.head.mask_norm.gamma.fill_(1.7)
        model.head.mask_norm.beta.fill_(0.1)
    return model.eval()


def _image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (30, 45, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("larvseg_saved")
    model = _trained_model()
    processor = LarvSegImageProcessor(
        size={"height": 32, "width": 48}, size_divisor=8, image_mean=[0.4, 0.5, 0.6]
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    np.save(folder / "image.npy", _image())
    return folder, model, processor


def test_saved_folder_layout(saved):
    folder, model, _ = saved
    files = {path.name for path in folder.iterdir()}
    assert "model.safetensors" in files
    assert not any(name.endswith(".bin") for name in files)
    assert {"modeling_larvseg.py", "configuration_larvseg.py", "image_processing_larvseg.py"} <= files
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_larvseg.LarvSegConfig",
        "AutoModel": "modeling_larvseg.LarvSegForSemanticSegmentation",
        "AutoModelForSemanticSegmentation": "modeling_larvseg.LarvSegForSemanticSegmentation",
    }
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"]["AutoImageProcessor"] == "image_processing_larvseg.LarvSegImageProcessor"
    # The bank is in the weights file, in its compact dtype.
    weights = load_file(folder / "model.safetensors")
    assert weights["memory_bank.slots"].dtype == torch.float16
    assert weights["memory_bank.slots"].shape == (len(NAMES), 3, 24)
    assert torch.equal(weights["memory_bank.num_writes"], model.memory_bank.num_writes)
    assert "base_mask" not in weights


def test_remote_code_in_a_fresh_process_without_the_package(saved, tmp_path, hf_offline_env):
    folder, model, processor = saved
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(tmp_path), json.dumps(list(HYPER_PARAMETERS))],
        cwd=tmp_path,
        env=hf_offline_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    info = json.loads((tmp_path / "info.json").read_text())
    child = torch.load(tmp_path / "tensors.pt")

    # Every class came from the saved folder's code, none from the installed package.
    for name in info["classes"]:
        assert name.startswith("transformers_modules."), name
        assert "larvseg_hf" not in name
    assert info["classes"][1].endswith("modeling_larvseg.LarvSegForSemanticSegmentation")
    assert info["classes"][3].endswith("image_processing_larvseg.LarvSegImageProcessor")

    # Same preprocessing, same logits (plain, coseg, restricted by name), same label map. Bit for bit against
    # the installed package's model loaded from the same file (a float kernel's rounding can depend on where
    # its weights lie in memory); within float rounding of the model that was saved.
    inputs = processor(_image())
    assert torch.equal(child["pixel_values"], inputs["pixel_values"])
    with torch.no_grad():
        original = model(**inputs, coseg=True)
        model = LarvSegForSemanticSegmentation.from_pretrained(folder).eval()
        expected = model(**inputs)
        coseg = model(**inputs, coseg=True)
        named = model(**inputs, class_ids=["potted plant", "cat"])
    torch.testing.assert_close(coseg.logits, original.logits, rtol=0, atol=1e-5)
    assert torch.equal(child["auto_logits"], expected.logits)
    assert torch.equal(child["seg_logits"], expected.logits)
    assert torch.equal(child["coseg_logits"], coseg.logits)
    assert not torch.equal(coseg.logits, expected.logits * 0.5)  # the bank made a difference
    assert torch.equal(child["named_logits"], named.logits)
    assert child["named_class_ids"].tolist() == [3, 1]
    (segmentation,) = processor.post_process_semantic_segmentation(expected, target_sizes=[(30, 45)])
    assert torch.equal(child["segmentation"], segmentation)

    # Bank state, base pool, vocabulary and hyper-parameters survive.
    assert torch.equal(child["num_writes"], model.memory_bank.num_writes)
    assert child["num_writes"].tolist() == [0, 0, 0, 6, 0, 8, 2]
    assert child["slots"].dtype == torch.float16 and torch.equal(child["slots"], model.memory_bank.slots)
    assert torch.equal(child["base_mask"], model.base_mask)
    assert child["base_mask"].nonzero().flatten().tolist() == BASE_IDS
    assert info["id2label"] == {str(i): name for i, name in enumerate(NAMES)}
    assert info["base_label_ids"] == BASE_IDS
    assert info["embeddings_trainable"] == [False, False]  # freeze_class_embeddings=True
    assert info["hyper"] == HYPER_PARAMETERS


def test_installed_package_route_without_trust_remote_code(saved):
    folder, model, processor = saved
    loaded = AutoModel.from_pretrained(folder).eval()
    seg = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
    loaded_processor = AutoImageProcessor.from_pretrained(folder)
    for obj in (loaded, seg):
        assert type(obj) is LarvSegForSemanticSegmentation
    assert type(loaded_processor) is LarvSegImageProcessor
    assert type(AutoConfig.from_pretrained(folder)) is LarvSegConfig

    inputs = loaded_processor(_image())
    assert torch.equal(inputs["pixel_values"], processor(_image())["pixel_values"])
    with torch.no_grad():
        for kwargs in ({}, {"coseg": True}, {"class_ids": [6, 0]}):
            # Bit for bit between the two Auto classes (same file, same weights in memory); within float
            # rounding of the saved model, whose weights lie elsewhere (kernel rounding can depend on that).
            assert torch.equal(loaded(**inputs, **kwargs).logits, seg(**inputs, **kwargs).logits)
            torch.testing.assert_close(
                loaded(**inputs, **kwargs).logits, model(**inputs, **kwargs).logits, rtol=0, atol=1e-5
            )
    assert torch.equal(loaded.memory_bank.slots, model.memory_bank.slots)
    assert torch.equal(loaded.memory_bank.num_writes, model.memory_bank.num_writes)
    # base_mask is a non-persistent buffer: it must be rebuilt from the config, not left uninitialised.
    assert torch.equal(loaded.base_mask, model.base_mask)
    # freeze_class_embeddings survives loading: E stays frozen and gets no gradient in training.
    assert not loaded.head.class_embeddings.requires_grad
    loaded.train()
    image_labels = torch.zeros(1, len(NAMES))
    image_labels[0, 5] = 1
    loaded(**inputs, image_labels=image_labels).loss.backward()
    assert loaded.head.class_embeddings.grad is None
    assert loaded.head.class_projection.weight.grad is not None
    assert loaded.memory_bank.size == 3 and loaded.memory_bank.warmup == 2


@pytest.mark.parametrize("num_labels", [300, 2000])
def test_base_mask_rebuilt_after_loading_large_vocabularies(tmp_path, num_labels):
    base = list(range(0, num_labels, 3))
    model = make_model("vit", num_labels, base_label_ids=base, num_sampled_classes=16)
    model.save_pretrained(tmp_path)
    for _ in range(2):
        loaded = AutoModel.from_pretrained(tmp_path)
        assert loaded.base_mask.nonzero().flatten().tolist() == base


def test_criterion_source_pools_rebuilt_after_loading(tmp_path):
    """The criterion's per-source sampling pools are a non-persistent buffer: rebuilt from the config."""
    pools = {"masks": [0, 1, 2], "images": [3, 4, 5, 6]}
    model = make_model("vit", 12, source_vocabularies=pools, per_source_columns=True)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    rows = [row.nonzero().flatten().tolist() for row in loaded.criterion.source_pools]
    assert rows == list(loaded.config.source_vocabularies.values()) and sorted(rows) == sorted(pools.values())


def test_config_round_trip_with_a_30000_name_vocabulary(tmp_path):
    names = [f"synset {i:05d} / name" for i in range(30000)]
    base = list(range(0, 30000, 7))
    config = make_config("resnet", names=names, base_label_ids=base, **HYPER_PARAMETERS)
    config.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    for loaded in (AutoConfig.from_pretrained(tmp_path), LarvSegConfig.from_pretrained(tmp_path)):
        assert loaded.model_type == "larvseg"
        assert loaded.num_labels == 30000
        assert loaded.id2label == dict(enumerate(names))
        assert loaded.label2id == {name: i for i, name in enumerate(names)}
        assert list(loaded.base_label_ids) == base
        for key, value in HYPER_PARAMETERS.items():
            assert getattr(loaded, key) == value, key
        assert loaded.backbone_config.model_type == "resnet"
        assert loaded.backbone_config.out_features == TINY_RESNET["out_features"]
        assert list(loaded.backbone_config.hidden_sizes) == TINY_RESNET["hidden_sizes"]


def test_config_defaults_round_trip(tmp_path):
    config = LarvSegConfig(id2label={0: "a", 1: "b"})
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    for key in ("memory_bank_size", "memory_bank_topk", "attentive_loss_weight", "image_loss_weight"):
        assert getattr(loaded, key) == getattr(config, key)
    assert loaded.base_label_ids is None
    assert loaded.backbone_config.hidden_size == 768 and loaded.backbone_config.patch_size == 16


# ------------------------------------------------------------------------------------------- from_backbone


def _tiny_vit_checkpoint(folder):
    torch.manual_seed(11)
    config = ViTConfig(**{k: v for k, v in TINY_VIT.items() if k != "model_type"})
    backbone = ViTModel(config)  # with a pooler, as hub ViT checkpoints have; LarvSeg drops it
    backbone.save_pretrained(folder)
    return {k: v for k, v in backbone.state_dict().items() if not k.startswith("pooler.")}


def _tiny_resnet_checkpoint(folder):
    torch.manual_seed(12)
    config = ResNetConfig(**{k: v for k, v in TINY_RESNET.items() if k != "model_type"})
    backbone = ResNetBackbone(config)
    backbone.save_pretrained(folder)
    return backbone.state_dict()


@pytest.mark.parametrize(
    ("make_checkpoint", "size", "channels"),
    [(_tiny_vit_checkpoint, (32, 48), 32), (_tiny_resnet_checkpoint, (64, 48), 96)],
)
def test_from_backbone_loads_the_saved_backbone_weights(tmp_path, make_checkpoint, size, channels):
    expected = make_checkpoint(tmp_path / "backbone")
    model = LarvSegForSemanticSegmentation.from_backbone(
        tmp_path / "backbone", vocabulary=NAMES, base_label_ids=BASE_IDS, memory_bank_size=4
    )
    state = model.backbone.model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    assert model.config.id2label == dict(enumerate(NAMES))
    assert model.config.base_label_ids == BASE_IDS and model.config.memory_bank_size == 4
    assert model.base_mask.nonzero().flatten().tolist() == BASE_IDS
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, *size))
    assert out.features.shape[1] == channels and out.logits.shape[1] == len(NAMES)

    # Save and reload: the backbone weights are still the checkpoint's.
    model.save_pretrained(tmp_path / "larvseg")
    reloaded = AutoModel.from_pretrained(tmp_path / "larvseg")
    for key, value in expected.items():
        assert torch.equal(reloaded.backbone.model.state_dict()[key], value), key


def test_from_backbone_out_features_and_vocabulary_checks(tmp_path):
    _tiny_resnet_checkpoint(tmp_path / "resnet")
    model = LarvSegForSemanticSegmentation.from_backbone(
        tmp_path / "resnet", ["a", "b"], out_features=["stage3"]
    )
    assert model.config.backbone_config.out_features == ["stage3"]
    assert model.backbone.channels == 64
    with pytest.raises(ValueError, match=r"duplicate names: \['a'\]"):
        LarvSegForSemanticSegmentation.from_backbone(tmp_path / "resnet", ["a", "b", "a"])
    with pytest.raises(ValueError, match="vocabulary is empty"):
        LarvSegForSemanticSegmentation.from_backbone(tmp_path / "resnet", [])


# ------------------------------------------------------------------------------------------- corrupt files


@pytest.mark.parametrize("keep", [0.5, 0.001])
@pytest.mark.parametrize(
    "loader", [AutoModel.from_pretrained, LarvSegForSemanticSegmentation.from_pretrained]
)
def test_truncated_checkpoint_names_the_file(tmp_path, keep, loader):
    model = make_model("vit", names=NAMES)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: max(int(len(data) * keep), 4)])
    with pytest.raises(OSError, match="corrupt or truncated") as caught:
        loader(tmp_path)
    assert str(weights) in str(caught.value)
    assert isinstance(caught.value.__cause__, SafetensorError)


@pytest.mark.parametrize("key", ["backbone_config", "id2label"])
def test_config_without_backbone_or_vocabulary_is_an_error_naming_the_file(tmp_path, key):
    make_model("vit", names=NAMES).save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    del saved[key]
    if key == "id2label":
        saved.pop("label2id", None)
    config_file.write_text(json.dumps(saved))
    # Installed route: AutoConfig hands from_dict no path, so the message names config.json and the problem.
    for loader in (AutoModel.from_pretrained, AutoConfig.from_pretrained):
        with pytest.raises(ValueError, match=rf"config.json has no '{key}'"):
            loader(tmp_path)
    # Direct classes (and the remote-code route, which goes through them) name the whole path.
    for loader in (LarvSegForSemanticSegmentation.from_pretrained, LarvSegConfig.from_pretrained):
        with pytest.raises(ValueError, match=rf"has no '{key}'") as caught:
            loader(tmp_path)
        assert str(config_file) in str(caught.value)


def test_invalid_json_names_the_file(tmp_path):
    make_model("vit", names=NAMES).save_pretrained(tmp_path)
    LarvSegImageProcessor(size={"height": 32, "width": 32}, size_divisor=8).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "larvseg", ')
    for loader in (AutoModel.from_pretrained, LarvSegForSemanticSegmentation.from_pretrained):
        with pytest.raises(OSError, match="not a valid JSON file") as caught:
            loader(tmp_path)
        assert str(tmp_path / "config.json") in str(caught.value)
    (tmp_path / "preprocessor_config.json").write_text("{oops")
    with pytest.raises(OSError, match="not a valid JSON file") as caught:
        LarvSegImageProcessor.from_pretrained(tmp_path)
    assert str(tmp_path / "preprocessor_config.json") in str(caught.value)


def test_missing_weights_file_raises(tmp_path):
    make_model("vit", names=NAMES).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(OSError, match=r"(?i)model\.safetensors|pytorch_model\.bin|no file named"):
        AutoModel.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------- pipeline

PIPELINE_CHILD = textwrap.dedent(
    """
    import builtins, sys
    if sys.argv[2] == "remote":
        sys.modules["larvseg_hf"] = None  # only the saved code may run
    else:
        import larvseg_hf  # noqa: F401  (the installed-package route)


    def no_prompt(*args, **kwargs):
        raise SystemExit("transformers asked whether to trust remote code")


    builtins.input = no_prompt
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    kwargs = {"trust_remote_code": True} if sys.argv[2] == "remote" else {}
    segmenter = pipeline("image-segmentation", model=sys.argv[1], **kwargs)
    segments = segmenter(Image.fromarray(np.load(sys.argv[1] + "/image.npy")))
    coverage = sum(np.asarray(s["mask"]) > 0 for s in segments)
    print("SEGMENTS", sorted(s["label"] for s in segments), int(coverage.min()), int(coverage.max()))
    """
)


@pytest.mark.parametrize("route", ["installed", "remote"])
def test_pipeline_runs_without_a_prompt_or_a_not_supported_error(saved, hf_offline_env, tmp_path, route):
    folder, _, _ = saved
    script = tmp_path / "pipeline_child.py"
    script.write_text(PIPELINE_CHILD)
    proc = subprocess.run(
        [sys.executable, str(script), str(folder), route],
        env=hf_offline_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not supported" not in proc.stderr, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("SEGMENTS"))
    labels, low, high = line.split(" ", 1)[1].rsplit(" ", 2)
    assert set(ast.literal_eval(labels)) <= set(NAMES)
    assert (int(low), int(high)) == (1, 1)  # the segments tile the image: every pixel in exactly one
