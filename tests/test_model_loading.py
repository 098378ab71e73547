"""larvseg_hf.load_model_and_processor: a model that is missing or corrupt is named as such."""

from __future__ import annotations

import shutil

import pytest
from conftest import make_model

from larvseg_hf import (
    LarvSegImageProcessor,
    ModelCorruptError,
    ModelLoadError,
    ModelNotFoundError,
    load_model_and_processor,
    model_loading,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    make_model("vit", 5).save_pretrained(folder)
    LarvSegImageProcessor(size=32, size_divisor=8).save_pretrained(folder)
    return folder


def test_loads_a_saved_model(saved):
    model, processor = load_model_and_processor(saved)
    assert not model.training and model.config.num_labels == 5
    assert isinstance(processor, LarvSegImageProcessor) and processor.size == {"height": 32, "width": 32}


def test_missing_model_or_files(saved, tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such folder") as err:
        load_model_and_processor(tmp_path / "nowhere")
    assert err.value.heading == "Model not found" and isinstance(err.value, OSError)
    assert model_loading.TRAIN_COMMAND in str(err.value)
    assert str(err.value).endswith("then load it again, or load another model folder or Hub id.")
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(saved / "config.json", config_only / "config.json")
    with pytest.raises(ModelNotFoundError, match="has no model weights .*, preprocessor_config.json"):
        load_model_and_processor(config_only)
    assert model_loading.missing_model_files(saved) == []
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="a file, not a model folder"):
        load_model_and_processor(a_file)


@pytest.mark.parametrize(
    "name,damage,problem",
    [
        ("config.json", lambda data: b'{"model_type": "larvseg", ', "`config.json` is not valid JSON"),
        ("model.safetensors", lambda data: data[: len(data) // 2], "`model.safetensors` is truncated"),
        ("model.safetensors", lambda data: data[:5], "not even a header"),
    ],
)
def test_corrupt_files_are_named(saved, tmp_path, name, damage, problem):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    (folder / name).write_bytes(damage((folder / name).read_bytes()))
    advice = model_loading.LoadAdvice(retry="restart", switch="pick another")
    with pytest.raises(ModelCorruptError) as err:
        load_model_and_processor(folder, advice=advice)
    assert err.value.heading == "Model files are corrupt"
    assert problem in str(err.value) and str(err.value).endswith("or pick another.")
    assert model_loading.find_corrupt_files(folder)


def test_hub_ids_unreachable_or_broken(monkeypatch):
    def offline(path, trust_remote_code):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.")

    monkeypatch.setattr(model_loading, "_from_pretrained", offline)
    with pytest.raises(ModelNotFoundError, match="as a Hub id it could not be found or reached"):
        load_model_and_processor("some-org/some-model")
    monkeypatch.setattr(model_loading, "_from_pretrained", lambda path, remote: {}["weights"])
    with pytest.raises(ModelCorruptError, match="KeyError") as err:
        load_model_and_processor("some-org/some-model")
    assert isinstance(err.value, ModelLoadError)
