"""The Gradio demo (demo/app.py): segmentation logic on a tiny random model, messages, and the /segment API."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parent.parent
NUM_CLASSES = 400  # > 300, so label maps hold ids above 255


def load_app():
    """demo/app.py as a module (it is a Space's entry point, not part of the package)."""
    if "larvseg_demo_app" in sys.modules:
        return sys.modules["larvseg_demo_app"]
    spec = importlib.util.spec_from_file_location("larvseg_demo_app", REPO_ROOT / "demo" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["larvseg_demo_app"] = module
    spec.loader.exec_module(module)
    return module


def make_tiny_model(directory: Path, names: list[str]) -> Path:
    from larvseg_hf import LarvSegConfig, LarvSegForSemanticSegmentation, LarvSegImageProcessor

    torch.manual_seed(0)
    config = LarvSegConfig(
        backbone_config=dict(
            model_type="vit",
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=8,
            image_size=64,
        ),
        id2label=dict(enumerate(names)),
        base_label_ids=list(range(len(names) // 2)),
    )
    LarvSegForSemanticSegmentation(config).save_pretrained(directory)
    LarvSegImageProcessor(size={"height": 64, "width": 64}, size_divisor=8).save_pretrained(directory)
    return directory


def scene(width: int = 96, height: int = 72, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    array[: height // 2, : width // 2] = (220, 40, 40)
    return Image.fromarray(array)


@pytest.fixture(scope="module")
def app():
    return load_app()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(
        tmp_path_factory.mktemp("larvseg-tiny"), [f"class {i:04d}" for i in range(NUM_CLASSES)]
    )


@pytest.fixture(scope="module")
def demo(app, model_dir):
    return app.LarvSegDemo.load(model_dir)


@pytest.fixture()
def png(tmp_path):
    path = tmp_path / "scene.png"
    scene().save(path)
    return path


def test_segment_all_classes(app, demo, png, tmp_path):
    result = demo.segment(str(png), app.MODE_ALL)
    assert result.label_map.shape == (72, 96)
    assert result.image.size == (96, 72)
    vocabulary = set(demo.names)
    areas = result.areas()
    annotations = result.annotations(max_entries=len(areas))  # one entry per class present
    assert [label for _, label in annotations] == [demo.names[i] for i, _ in areas]
    assert all(label in vocabulary for _, label in annotations)
    for mask, _ in annotations:
        assert mask.shape == (72, 96) and 0.0 <= mask.min() and mask.max() <= 1.0
    covered = sum((mask > 0).sum() for mask, _ in annotations)
    assert covered == result.label_map.size  # the legend's masks partition the image
    # A random model finds many classes: the legend keeps the largest and groups the rest.
    assert len(areas) > app.MAX_LEGEND
    capped = result.annotations()
    assert len(capped) == app.MAX_LEGEND
    assert all(label in vocabulary for _, label in capped[:-1])
    assert capped[-1][1] == f"{len(areas) - app.MAX_LEGEND + 1} smaller classes"
    assert sum((mask > 0).sum() for mask, _ in capped) == result.label_map.size

    table = result.area_table()
    assert list(table.columns) == ["class", "id", "pixels", "% of image"]
    assert table["pixels"].sum() == result.label_map.size
    assert table["% of image"].sum() == pytest.approx(100.0, abs=1e-9)
    assert set(table["class"]) <= vocabulary
    assert list(table["pixels"]) == sorted(table["pixels"], reverse=True)


def test_label_map_png_keeps_ids_above_255(app, demo, png, tmp_path):
    result = demo.segment(str(png), app.MODE_SOME, ["class 0300", "class 0399"])
    assert set(np.unique(result.label_map)) <= {300, 399}
    path = result.save_label_map(tmp_path)
    assert path.suffix == ".png"
    with Image.open(path) as saved:
        assert saved.mode.startswith("I")  # 16-bit
    np.testing.assert_array_equal(app.read_label_map(path), result.label_map)


def test_unknown_names_report_closest(app, demo, png, tmp_path):
    with pytest.raises(app.DemoError) as err:
        demo.segment(str(png), app.MODE_SOME, ["class 0300", "clas 0301", "zebra"])
    message = str(err.value)
    assert "'clas 0301'" in message and "class 0301" in message and "Closest known names" in message
    assert "'zebra'" in message
    # Through the UI handler: a readable status, no exception, no traceback.
    overlay, table, file, status = app.segment_request(
        demo, None, tmp_path, str(png), app.MODE_SOME, ["clas 0301"], 5, False, False, notify=False
    )
    assert overlay is None and file is None and table.empty
    assert "Closest known names" in status and "Traceback" not in status
    # Comma-separated names typed as one custom value work too; an empty selection is a message.
    assert demo.resolve(["class 0001, class 0002"]) == [1, 2]
    with pytest.raises(app.DemoError, match="at least one class"):
        demo.resolve([])


def test_top_k_mode(app, demo, png):
    full = demo.segment(str(png), app.MODE_ALL)
    result = demo.segment(str(png), app.MODE_TOPK, top_k=3)
    found = [i for i, _ in full.areas()]
    assert 1 <= len(result.areas()) <= 3
    assert {i for i, _ in result.areas()} <= set(found[:3])
    assert any("Top-3" in note for note in result.notes)


@pytest.mark.parametrize("coseg,sliding", [(True, False), (False, True), (True, True)])
def test_coseg_and_sliding_toggles(app, demo, coseg, sliding):
    image = scene(200, 90, seed=1)  # wider than the 64 px window: several windows slide
    result = demo.segment(image, app.MODE_ALL, coseg=coseg, sliding=sliding)
    assert result.label_map.shape == (90, 200)
    assert result.label_map.min() >= 0 and result.label_map.max() < NUM_CLASSES
    restricted = demo.segment(
        image, app.MODE_SOME, ["class 0007", "class 0350"], coseg=coseg, sliding=sliding
    )
    assert set(np.unique(restricted.label_map)) <= {7, 350}


def test_large_image_is_downscaled_with_a_note(app, demo):
    result = demo.segment(scene(1500, 300), app.MODE_ALL)
    assert result.image.size == (1024, 205)
    assert result.label_map.shape == (205, 1024)
    assert any("downscaled from 1500x300" in note for note in result.notes)


def test_bad_uploads_become_messages(app, demo, tmp_path, png):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png.read_bytes()[:200])
    for path, expected in ((text, "not an image"), (truncated, "corrupt or truncated")):
        overlay, _, file, status = app.segment_request(
            demo, None, tmp_path, {"path": str(path)}, app.MODE_ALL, [], 5, False, False, notify=False
        )
        assert overlay is None and file is None
        assert expected in status and "Traceback" not in status
    _, _, _, status = app.segment_request(
        demo, None, tmp_path, None, app.MODE_ALL, [], 5, False, False, notify=False
    )
    assert "Upload an image" in status


def test_missing_model_message(app, tmp_path, caplog, png):
    missing = tmp_path / "no-model-here"
    with pytest.raises(app.ModelNotFoundError, match="bash scripts/run_main.sh"):
        app.LarvSegDemo.load(missing)
    with caplog.at_level("WARNING", logger="larvseg_demo"):
        blocks = app.build_demo(missing)  # builds, does not crash
    assert "bash scripts/run_main.sh" in caplog.text
    texts = [getattr(block, "value", None) for block in blocks.blocks.values()]
    assert any(isinstance(t, str) and "bash scripts/run_main.sh" in t and str(missing) in t for t in texts)
    buttons = [b for b in blocks.blocks.values() if type(b).__name__ == "Button"]
    assert buttons and not buttons[0].interactive
    *_, status = app.segment_request(None, "no model", tmp_path, str(png), app.MODE_ALL, [], 5, False, False)
    assert "Model not loaded" in status


def test_examples_are_benchmark_eval_scenes(app, tmp_path):
    root = tmp_path / "bench"
    (root / "eval").mkdir(parents=True)
    for name in ("scene_0.png", "scene_1.png", "scene_0_seg.png", "scene_1_label.png"):
        scene(8, 8).save(root / "eval" / name)
    rows = [{"file_name": f"scene_{i}.png", "label_file_name": f"scene_{i}_seg.png"} for i in range(2)]
    (root / "eval" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    model = tmp_path / "model"
    model.mkdir()
    assert app.find_examples(model) == []
    (model / "larvseg_training.json").write_text(json.dumps({"root": str(root)}))
    assert [Path(p).name for p in app.find_examples(model)] == ["scene_0.png", "scene_1.png"]


def test_cli_defaults(app, monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.delenv("LARVSEG_MODEL", raising=False)
    args = app.parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    assert Path(args.model) == REPO_ROOT / "outputs" / "larvseg-emoji"
    monkeypatch.setenv("LARVSEG_MODEL", "org/model")
    assert app.parse_args([]).model == "org/model"
    assert app.parse_args(["--model", "x", "--port", "8000"]).port == 8000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_segment_api_through_gradio_client(app, model_dir, png, tmp_path):
    from gradio_client import Client, handle_file

    blocks = app.build_demo(model_dir)
    blocks.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(blocks.local_url, verbose=False)
        assert "/segment" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        overlay, table, label_file, status = client.predict(
            handle_file(str(png)),
            app.MODE_SOME,
            ["class 0300", "class 0399"],
            5,
            False,
            False,
            api_name="/segment",
        )
        labels = [a["label"] for a in overlay["annotations"]]
        assert labels and set(labels) <= {"class 0300", "class 0399"}
        with Image.open(overlay["image"]) as base:
            assert base.size == (96, 72)
        assert table["headers"] == ["class", "id", "pixels", "% of image"]
        assert sum(row[3] for row in table["data"]) == pytest.approx(100.0)
        label_map = app.read_label_map(label_file)
        assert label_map.shape == (72, 96) and set(np.unique(label_map)) <= {300, 399}
        assert "classes" in status

        bad = tmp_path / "bad.png"
        bad.write_bytes(b"\x89PNG but not really")
        overlay, _, label_file, status = client.predict(
            handle_file(str(bad)), app.MODE_ALL, [], 5, False, False, api_name="/segment"
        )
        assert overlay is None and label_file is None and "not an image" in status
    finally:
        blocks.close()
