"""The Gradio demo (demo/app.py): segmentation logic on a tiny random model, messages, and the /segment API."""

from __future__ import annotations

import ast
import colorsys
import importlib.util
import itertools
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_README = REPO_ROOT / "demo" / "README.md"
NUM_CLASSES = 400  # > 300, so label maps hold ids above 255
WINDOW = 64  # the tiny model's processor size: the sliding window
NAMES = ["background"] + [f"class {i:04d}" for i in range(1, NUM_CLASSES)]


def load_app(path: Path = REPO_ROOT / "demo" / "app.py", name: str = "larvseg_demo_app"):
    """demo/app.py as a module (it is a Space's entry point; the package ships a copy as demo_app)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_tiny_model(
    directory: Path, names: list[str], fill_bank: bool = True, background_scene: Image.Image | None = None
) -> Path:
    """A random 1-layer ViT LarvSeg model saved to `directory`.

    fill_bank: every class's memory bank is warmed up (random slot means), so attentive (coseg) inference
    really changes the prediction. background_scene: "background" (id 0) gets the class embedding of the
    class covering most of that scene, so it ties with that class everywhere and wins the argmax (first
    index): background is then certainly present, and the largest class, in that scene."""
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
            image_size=WINDOW,
        ),
        id2label=dict(enumerate(names)),
        base_label_ids=list(range(len(names) // 2)),
    )
    model = LarvSegForSemanticSegmentation(config).eval()
    processor = LarvSegImageProcessor(size={"height": WINDOW, "width": WINDOW}, size_divisor=8)
    if fill_bank:
        bank = model.memory_bank
        writes = max(bank.warmup * bank.size, 1)  # LarvSegMemoryBank.usable: the ring wrapped `warmup` times
        ids = torch.arange(bank.num_classes).repeat_interleave(writes)
        generator = torch.Generator().manual_seed(1)
        bank.enqueue(
            ids, F.normalize(torch.randn(len(ids), bank.slots.shape[-1], generator=generator), dim=-1)
        )
        assert bool(bank.usable(torch.arange(bank.num_classes)).all())
    if background_scene is not None:
        assert names[0] == "background"
        with torch.no_grad():
            outputs = model(processor(background_scene)["pixel_values"])
            label_map = processor.post_process_semantic_segmentation(
                outputs, target_sizes=[background_scene.size[::-1]]
            )[0]
            ids, counts = label_map.unique(return_counts=True)
            largest = int(ids[counts.argmax()])
            model.head.class_embeddings.data[0] = model.head.class_embeddings.data[largest]
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def scene(width: int = 96, height: int = 72, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    array[: height // 2, : width // 2] = (220, 40, 40)
    return Image.fromarray(array)


def default_vocabulary() -> list[str]:
    """The vocabulary of the default model: what `bash scripts/run_main.sh` (train.py without arguments,
    so the emoji-scenes preset) trains on, computed without rendering the benchmark."""
    from larvseg_hf.data.emoji_scenes import BACKGROUND, select_vocabulary
    from larvseg_hf.training.arguments import parse_train_args

    _, data_args, _, _ = parse_train_args([])
    assert data_args.uses_builtin
    infos, _, _ = select_vocabulary(
        data_args.builtin_num_categories, data_args.builtin_novel_fraction, data_args.builtin_seed
    )
    return [BACKGROUND] + [info.name for info in infos]


def readme_api_block() -> str:
    """The Python block of demo/README.md's API section, as written."""
    api = DEMO_README.read_text(encoding="utf-8").split("\n## API", 1)[1]
    return re.search(r"```python\n(.*?)```", api, re.DOTALL).group(1)


def readme_predict_call(block: str) -> ast.Call:
    calls = [
        node
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "predict"
    ]
    assert len(calls) == 1, "the README's API block should call client.predict once"
    return calls[0]


def cielab(rgb: tuple[int, int, int]) -> np.ndarray:
    """sRGB (0-255) -> CIELAB under D65, for perceptual colour distances."""
    linear = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(linear <= 0.04045, linear / 12.92, ((linear + 0.055) / 1.055) ** 2.4)
    matrix = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = matrix @ linear / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app():
    return load_app()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("larvseg-tiny"), NAMES)


@pytest.fixture(scope="module")
def demo(app, model_dir):
    return app.LarvSegDemo.load(model_dir)


@pytest.fixture(scope="module")
def emoji_model_dir(tmp_path_factory):
    """A tiny model with the default model's vocabulary; background is the largest class in scene()."""
    return make_tiny_model(
        tmp_path_factory.mktemp("larvseg-emoji-tiny"), default_vocabulary(), background_scene=scene()
    )


@pytest.fixture(scope="module")
def emoji_demo(app, emoji_model_dir):
    return app.LarvSegDemo.load(emoji_model_dir)


@pytest.fixture()
def png(tmp_path):
    path = tmp_path / "scene.png"
    scene().save(path)
    return path


def synthetic(app, areas: dict[int, int], names: dict[int, str]):
    """A Segmentation whose label map has exactly `areas` pixels per id (in one row)."""
    label_map = np.concatenate([np.full(count, i) for i, count in areas.items()])[None, :].astype(np.int64)
    image = Image.new("RGB", (label_map.shape[1], 1))
    return app.Segmentation(image, label_map, names)


# ------------------------------------------------------------------------------------------- overlay


def test_segment_all_classes(app, demo, png, tmp_path):
    result = demo.segment(str(png), app.MODE_ALL)
    assert result.label_map.shape == (72, 96)
    assert result.image.size == (96, 72)
    vocabulary = set(demo.names)
    areas = result.areas()
    painted = [(i, c) for i, c in areas if i != 0]  # id 0 is "background"
    annotations = app.annotations(result, max_entries=len(areas))  # one entry per class present
    assert [label for _, label in annotations] == [demo.names[i] for i, _ in painted]
    for mask, _ in annotations:
        assert mask.shape == (72, 96) and 0.0 <= mask.min() and mask.max() <= 1.0
    covered = sum((mask > 0).sum() for mask, _ in annotations)
    assert covered == (result.label_map != 0).sum()  # the masks partition the non-background pixels
    # A random model finds many classes: the legend keeps the largest and groups the rest.
    assert len(painted) > app.MAX_LEGEND
    capped = app.annotations(result)
    assert len(capped) == app.MAX_LEGEND
    assert all(label in vocabulary for _, label in capped[:-1])
    assert capped[-1][1] == f"{len(painted) - app.MAX_LEGEND + 1} smaller classes"
    assert sum((mask > 0).sum() for mask, _ in capped) == (result.label_map != 0).sum()

    table = app.area_table(result)
    assert list(table.columns) == ["class", "id", "pixels", "% of image"]
    assert table["pixels"].sum() == result.label_map.size
    assert table["% of image"].sum() == pytest.approx(100.0, abs=1e-9)
    assert set(table["class"]) <= vocabulary
    assert list(table["pixels"]) == sorted(table["pixels"], reverse=True)


def test_background_is_not_painted_unless_asked(app, tmp_path):
    names = {0: "Sky", 1: "cat", 2: "Background", 3: "dog", 4: "tree"}  # matched in normalised form
    result = synthetic(app, {0: 30, 1: 20, 2: 100, 3: 10, 4: 5}, names)
    assert [label for _, label in app.annotations(result)] == ["Sky", "cat", "dog", "tree"]
    assert [label for _, label in app.annotations(result, show_background=True)][0] == "Background"
    hidden = sum((mask > 0).sum() for mask, _ in app.annotations(result))
    assert hidden == result.label_map.size - 100
    # Still in the area table and the label map, and the status says how to paint it.
    assert "Background" in list(app.area_table(result)["class"])
    status = app._status(result)
    assert "Background (60.6% of the image) is not painted" in status and "Show background" in status
    assert "not painted" not in app._status(result, show_background=True)
    # The label-map file keeps the background pixels.
    saved = app.prediction.read_label_map(result.save_label_map(tmp_path))
    assert (saved == 2).sum() == 100


def test_largest_classes_get_the_distinct_palette_colours(app):
    names = {i: f"c{i}" for i in range(40)}
    names[7] = "background"
    areas = {i: 1000 - 10 * i for i in range(40)}  # id order == size order
    result = synthetic(app, areas, names)
    colors = app.color_map(result)
    labels = [label for _, label in app.annotations(result)]
    assert list(colors) == labels and "background" not in colors
    classes = [name for name in labels if not name.endswith("smaller classes")]
    assert [colors[name] for name in classes] == list(app.PALETTE[: len(classes)])
    assert colors[labels[-1]] == app.OTHERS_COLOR and labels[-1] == f"{40 - 1 - 19} smaller classes"
    shown = app.color_map(result, show_background=True)
    assert shown["background"] == app.BACKGROUND_COLOR
    assert shown["c8"] == app.PALETTE[7]  # background takes no palette colour: the order is unchanged
    # The palette: distinct hex colours, the first eight saturated and far apart from each other.
    rgb = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in app.PALETTE]
    assert len(set(app.PALETTE)) == len(app.PALETTE) >= app.MAX_LEGEND - 1
    for r, g, b in rgb[:8]:
        _, saturation, value = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        assert saturation > 0.6 and value > 0.6
    lab = [cielab(color) for color in rgb]
    # CIE76 delta E between palette entries (2.3 is just noticeable).
    distance = [[float(np.linalg.norm(a - b)) for b in lab] for a in lab]
    assert min(distance[a][b] for a, b in itertools.combinations(range(6), 2)) > 50
    assert min(distance[a][b] for a, b in itertools.combinations(range(8), 2)) > 25
    assert min(distance[a][b] for a, b in itertools.combinations(range(len(lab)), 2)) > 15


def test_page_gets_colours_and_api_plain_values(app, emoji_demo, png, tmp_path):
    args = (emoji_demo, None, tmp_path, str(png), app.MODE_ALL)
    update, table, file, status, state = app.segment_ui(*args, [], "", 5, False, False, False, notify=False)
    assert update["__type__"] == "update"
    image, annotations = update["value"]
    assert image.size == (96, 72)
    labels = [label for _, label in annotations]
    assert table["class"][0] == "background"  # the largest class, by construction of the model
    painted = [name for name in table["class"] if name != "background"]
    assert len(painted) > app.MAX_LEGEND  # so the grouped entry is exercised too
    grouped = f"{len(painted) - app.MAX_LEGEND + 1} smaller classes"
    assert labels == [*painted[: app.MAX_LEGEND - 1], grouped]
    colors = {name: app.PALETTE[rank] for rank, name in enumerate(painted[: app.MAX_LEGEND - 1])}
    assert update["color_map"] == {**colors, grouped: app.OTHERS_COLOR}
    assert isinstance(state, app.Segmentation) and Path(file).is_file() and "Show background" in status
    # "Show background" redraws the kept result, background included, without segmenting again.
    redrawn, redrawn_status = app.redraw(state, True)
    regrouped = f"{len(painted) - app.MAX_LEGEND + 2} smaller classes"  # background takes a named place
    assert [label for _, label in redrawn["value"][1]] == [
        "background",
        *painted[: app.MAX_LEGEND - 2],
        regrouped,
    ]
    assert redrawn["color_map"]["background"] == app.BACKGROUND_COLOR
    assert redrawn["color_map"][painted[0]] == app.PALETTE[0]  # background takes no palette colour
    assert "Show background" not in redrawn_status
    assert app.redraw(None, True) == ({"__type__": "update"}, {"__type__": "update"})
    # The API handler returns the overlay as a plain (image, annotations) value, no update dict.
    overlay, api_table, _, api_status = app.segment_request(*args, [], 5, False, False, notify=False)
    assert isinstance(overlay, tuple) and [label for _, label in overlay[1]] == labels
    assert api_status.split(" s (")[1] == status.split(" s (")[1]  # the same status, timing aside
    overlay, *_ = app.segment_request(*args, [], 5, False, False, notify=False, show_background=True)
    assert [label for _, label in overlay[1]] == [label for _, label in redrawn["value"][1]]


# ------------------------------------------------------------------------------------------- vocabulary


def test_label_map_png_keeps_ids_above_255(app, demo, png, tmp_path):
    result = demo.segment(str(png), app.MODE_SOME, ["class 0300", "class 0399"])
    assert set(np.unique(result.label_map)) <= {300, 399}
    path = result.save_label_map(tmp_path)
    assert path.suffix == ".png"
    with Image.open(path) as saved:
        assert saved.mode.startswith("I")  # 16-bit
    np.testing.assert_array_equal(app.prediction.read_label_map(path), result.label_map)


def test_unknown_names_report_closest(app, demo, png, tmp_path):
    with pytest.raises(app.DemoError) as err:
        demo.segment(str(png), app.MODE_SOME, ["class 0300", "clas 0301", "zebra"])
    message = str(err.value)
    assert "'clas 0301'" in message and "class 0301" in message and "closest" in message.lower()
    assert "'zebra'" in message
    # Typed into the page's text box: a readable status, no exception, no traceback.
    overlay, table, file, status, state = app.segment_ui(
        demo, None, tmp_path, str(png), app.MODE_SOME, [], "clas 0301", 5, False, False, False, notify=False
    )
    assert overlay is None and file is None and state is None and table.empty
    assert "closest" in status.lower() and "class 0301" in status and "Traceback" not in status
    # Comma-separated names (text box or API) work, with the dropdown's picks; empty is a message.
    assert demo.resolve(["class 0001, class 0002"]) == [1, 2]
    assert demo.resolve(app.merge_classes(["class 0003"], "class 0001, class 0002")) == [3, 1, 2]
    *_, state = app.segment_ui(
        demo, None, tmp_path, str(png), app.MODE_SOME, ["class 0003"], "class 0300", 5, False, False, False
    )
    assert set(np.unique(state.label_map)) <= {3, 300}
    with pytest.raises(app.DemoError, match="at least one class"):
        demo.resolve([])


def test_top_k_mode(app, demo, png):
    full = demo.segment(str(png), app.MODE_ALL)
    result = demo.segment(str(png), app.MODE_TOPK, top_k=3)
    found = [i for i, _ in full.areas()]
    assert 1 <= len(result.areas()) <= 3
    assert {i for i, _ in result.areas()} <= set(found[:3])
    assert any("Top-3" in note for note in result.notes)
    assert demo.segment(str(png), app.MODE_TOPK, top_k=1.0).areas()[0][0] == found[0]


@pytest.mark.parametrize("top_k", [0, -1, 2.5, None, "many", True])
def test_top_k_must_be_a_positive_whole_number(app, demo, png, tmp_path, top_k):
    with pytest.raises(app.DemoError, match="k \\(top-k found\\) must"):
        demo.segment(str(png), app.MODE_TOPK, top_k=top_k)
    overlay, _, file, status = app.segment_request(
        demo, None, tmp_path, str(png), app.MODE_TOPK, [], top_k, False, False, notify=False
    )
    assert overlay is None and file is None and "k (top-k found) must" in status
    *_, status, state = app.segment_ui(
        demo, None, tmp_path, str(png), app.MODE_TOPK, [], "", top_k, False, False, False, notify=False
    )
    assert state is None and "k (top-k found) must" in status


def test_modes_are_the_package_predict(app, demo, png):
    """The page's vocabulary modes are larvseg_hf.predict with `classes` or `top_k`: the same results."""
    from larvseg_hf import predict

    for mode, options in (
        (app.MODE_ALL, {}),
        (app.MODE_SOME, {"classes": ["class 0007", "class 0350"]}),
        (app.MODE_TOPK, {"top_k": 3}),
    ):
        expected = predict(demo.model, demo.processor, str(png), **options)
        result = demo.segment(str(png), mode, options.get("classes"), options.get("top_k", 5))
        np.testing.assert_array_equal(result.label_map, expected.label_map)
        assert result.notes == expected.notes and app.mode_of(result) == mode


# ------------------------------------------------------------------------------------------- inference


def reference_label_map(model_dir: Path, image: Image.Image, coseg: bool, sliding: bool, class_ids=None):
    """The package's own inference, with the demo's documented rule for sliding windows: the image keeps
    its aspect ratio with its short side at the processor's size; windows of that size, stride 2/3 of it
    rounded down to a multiple of the processor's size_divisor."""
    from larvseg_hf import LarvSegForSemanticSegmentation, LarvSegImageProcessor
    from larvseg_hf.inference_larvseg import sliding_window_logits

    model = LarvSegForSemanticSegmentation.from_pretrained(model_dir).eval()
    processor = LarvSegImageProcessor.from_pretrained(model_dir)
    columns = None if class_ids is None else torch.tensor(class_ids)
    with torch.no_grad():
        if sliding:
            resized = LarvSegImageProcessor.from_pretrained(model_dir, size={"shortest_edge": WINDOW})
            pixel_values = resized(image)["pixel_values"]
            stride = (WINDOW * 2 // 3) // processor.size_divisor * processor.size_divisor
            logits, ids = sliding_window_logits(
                model, pixel_values, (WINDOW, WINDOW), (stride, stride), class_ids=columns, coseg=coseg
            )
            outputs = type("Outputs", (), {"logits": logits, "class_ids": ids})()
        else:
            outputs = model(processor(image)["pixel_values"], class_ids=columns, coseg=coseg)
        label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
    return label_map.numpy()


def test_test_model_has_a_usable_memory_bank(demo):
    bank = demo.model.memory_bank
    assert bool(bank.usable(torch.arange(bank.num_classes)).all())  # saved with the weights


@pytest.mark.parametrize("coseg,sliding", [(True, False), (False, True), (True, True)])
def test_coseg_and_sliding_toggles(app, demo, model_dir, coseg, sliding):
    image = scene(200, 90, seed=1)  # wider than the 64 px window: several windows slide
    plain = demo.segment(image, app.MODE_ALL).label_map
    result = demo.segment(image, app.MODE_ALL, coseg=coseg, sliding=sliding)
    assert result.label_map.shape == (90, 200)
    np.testing.assert_array_equal(result.label_map, reference_label_map(model_dir, image, coseg, sliding))
    assert (result.label_map != plain).mean() > 0.05  # the toggle changes the prediction
    if coseg and sliding:  # both toggles count
        assert (result.label_map != demo.segment(image, app.MODE_ALL, sliding=True).label_map).any()
    restricted = demo.segment(
        image, app.MODE_SOME, ["class 0007", "class 0350"], coseg=coseg, sliding=sliding
    )
    assert set(np.unique(restricted.label_map)) <= {7, 350}
    np.testing.assert_array_equal(
        restricted.label_map, reference_label_map(model_dir, image, coseg, sliding, class_ids=[7, 350])
    )
    assert f"({app.MODE_ALL}, " in app._status(result)


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


# ------------------------------------------------------------------------------------------- the page


def page_markdown(blocks) -> list[tuple[str | None, str]]:
    return [
        (block.elem_id, block.value)
        for block in blocks.blocks.values()
        if type(block).__name__ == "Markdown" and isinstance(block.value, str)
    ]


def test_missing_model_message(app, tmp_path, caplog, png):
    missing = tmp_path / "no-model-here"
    with pytest.raises(app.model_loading.ModelNotFoundError, match="bash scripts/run_main.sh"):
        app.LarvSegDemo.load(missing)
    with caplog.at_level("WARNING", logger="larvseg_demo"):
        blocks = app.build_demo(missing)  # builds, does not crash
    assert "bash scripts/run_main.sh" in caplog.text
    texts = page_markdown(blocks)
    assert any(
        elem_id == "model-missing" and text.startswith("### Model not found") and str(missing) in text
        for elem_id, text in texts
    )
    buttons = [b for b in blocks.blocks.values() if type(b).__name__ == "Button"]
    assert buttons and not buttons[0].interactive
    *_, status = app.segment_request(None, "no model", tmp_path, str(png), app.MODE_ALL, [], 5, False, False)
    assert "Model not loaded" in status


def test_not_found_and_corrupt_models_get_their_own_headings(app, model_dir, tmp_path, monkeypatch):
    # Not found: a folder without weights (the config alone), or a Hub id that cannot be reached.
    empty = tmp_path / "config-only"
    empty.mkdir()
    shutil.copy(model_dir / "config.json", empty / "config.json")
    with pytest.raises(app.model_loading.ModelNotFoundError, match="has no model weights") as err:
        app.LarvSegDemo.load(empty)
    assert err.value.heading == "Model not found"

    # Corrupt: the files are there but do not load; the message names the damaged file.
    bad_json = tmp_path / "bad-json"
    shutil.copytree(model_dir, bad_json)
    (bad_json / "config.json").write_text('{"model_type": "larvseg", ')
    truncated = tmp_path / "truncated"
    shutil.copytree(model_dir, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    for folder, name, problem in (
        (bad_json, "config.json", "not valid JSON"),
        (truncated, "model.safetensors", "truncated"),
    ):
        with pytest.raises(app.model_loading.ModelCorruptError) as err:
            app.LarvSegDemo.load(folder)
        assert err.value.heading == "Model files are corrupt"
        assert f"`{name}` is {problem}" in str(err.value)
        texts = page_markdown(app.build_demo(folder))
        assert any(
            elem_id == "model-corrupt" and text.startswith("### Model files are corrupt") and name in text
            for elem_id, text in texts
        )
        assert not any(elem_id == "model-missing" for elem_id, _ in texts)

    def offline(path, trust_remote_code):
        raise OSError(  # transformers' message for a Hub id while offline
            "We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the "
            "cached files. Check your internet connection or see how to run the library in offline mode."
        )

    monkeypatch.setattr(app.model_loading, "_from_pretrained", offline)
    with pytest.raises(app.model_loading.ModelNotFoundError, match="could not be found or reached") as err:
        app.LarvSegDemo.load("some-org/some-model")
    assert err.value.heading == "Model not found"
    # A Hub id whose download loads but fails otherwise is not called missing.
    monkeypatch.setattr(app.model_loading, "_from_pretrained", lambda path, remote: json.loads("{"))
    with pytest.raises(app.model_loading.ModelCorruptError):
        app.LarvSegDemo.load("some-org/some-model")


def dependencies(blocks, block, event: str):
    return [fn for fn in blocks.fns.values() if (block._id, event) in fn.targets]


def test_new_upload_or_example_clears_the_previous_result(app, model_dir, tmp_path):
    root = tmp_path / "bench"
    (root / "eval").mkdir(parents=True)
    scene(16, 16).save(root / "eval" / "scene_0.png")
    (root / "eval" / "metadata.jsonl").write_text(json.dumps({"file_name": "scene_0.png"}) + "\n")
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    (model / "larvseg_training.json").write_text(json.dumps({"root": str(root)}))
    blocks = app.build_demo(model)
    by_type = {}
    for block in blocks.blocks.values():
        by_type.setdefault(type(block).__name__, []).append(block)
    (image,) = by_type["Image"]
    (examples,) = by_type["Dataset"]  # gr.Examples: choosing one sets the image, a change like an upload
    example_fns = [fn for fn in blocks.fns.values() if (examples._id, "click") in fn.targets]
    assert example_fns and all(fn.outputs == [image] for fn in example_fns if fn.outputs)
    (clear,) = dependencies(blocks, image, "change")
    expected = {
        by_type["AnnotatedImage"][0]._id,
        by_type["Dataframe"][0]._id,
        by_type["File"][0]._id,
        next(b._id for b in by_type["Markdown"] if b.elem_id == "status"),
        by_type["State"][0]._id,
    }
    assert {block._id for block in clear.outputs} == expected
    overlay, table, file, status, state = clear.fn({"path": "new.png"})
    assert overlay is None and table.empty and file is None and state is None and "Segment" in status
    # The API endpoint has no trigger in the page; the page's events are not API endpoints.
    api = blocks.get_api_info()["named_endpoints"]
    assert list(api) == ["/segment"]
    assert [p["parameter_name"] for p in api["/segment"]["parameters"]] == [
        "image",
        "mode",
        "classes",
        "top_k",
        "coseg",
        "sliding",
        "show_background",
    ]


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
    monkeypatch.setenv("LARVSEG_MODEL", "org/model")
    assert app.parse_args([]).model == "org/model"
    assert app.parse_args(["--model", "x", "--port", "8000"]).port == 8000


def test_default_model_path_in_a_checkout_and_an_installed_package(app, tmp_path, monkeypatch):
    from larvseg_hf.training.arguments import parse_train_args

    monkeypatch.delenv("LARVSEG_MODEL", raising=False)
    assert parse_train_args([])[2].output_dir == str(app.DEFAULT_MODEL_DIR)  # where training saves it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # In a checkout, from any directory without its own model: the repository's outputs/larvseg-emoji.
    assert Path(app.default_model_path()) == REPO_ROOT / "outputs" / "larvseg-emoji"
    # A model trained here (larvseg-train saves it relative to the working directory) comes first.
    (elsewhere / "outputs" / "larvseg-emoji").mkdir(parents=True)
    assert Path(app.default_model_path()) == elsewhere / "outputs" / "larvseg-emoji"

    # An installed wheel: the file lives in site-packages/larvseg_hf; never a path in there.
    site = tmp_path / "site-packages" / "larvseg_hf"
    site.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "demo" / "app.py", site / "demo_app.py")
    installed = load_app(site / "demo_app.py", "larvseg_demo_app_installed")
    try:
        bare = tmp_path / "bare"
        bare.mkdir()
        monkeypatch.chdir(bare)
        assert Path(installed.default_model_path()) == bare / "outputs" / "larvseg-emoji"
        assert "site-packages" not in installed.parse_args([]).model
        monkeypatch.setenv("LARVSEG_MODEL", "org/model")
        assert installed.default_model_path() == "org/model"
    finally:
        sys.modules.pop("larvseg_demo_app_installed", None)


SPACE_SCRIPT = """
import sys
sys.modules["larvseg_hf"] = None  # a Space: the package is not installed, the model's own code is used
import importlib.util
import numpy as np
from PIL import Image
spec = importlib.util.spec_from_file_location("space_app", sys.argv[1])
app = importlib.util.module_from_spec(spec)
sys.modules["space_app"] = app
spec.loader.exec_module(app)
demo = app.LarvSegDemo.load(sys.argv[2])
assert type(demo.model).__module__.startswith("transformers_modules"), type(demo.model).__module__
image = Image.open(sys.argv[3])
np.save(sys.argv[4], demo.segment(image, app.MODE_ALL, coseg=True, sliding=True).label_map)
try:
    app.LarvSegDemo.load(sys.argv[5])
except app.model_loading.ModelCorruptError as err:
    print("CORRUPT", str(err).splitlines()[2])
"""


def test_space_without_the_package(app, demo, model_dir, tmp_path):
    """As in a Hugging Face Space: no larvseg_hf, the code saved next to the weights (trust_remote_code)."""
    import subprocess

    image_path = tmp_path / "wide.png"
    scene(200, 90, seed=1).save(image_path)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(model_dir, corrupt)
    (corrupt / "config.json").write_text("{")
    out = tmp_path / "label_map.npy"
    script = tmp_path / "space.py"
    script.write_text(SPACE_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    args = [REPO_ROOT / "demo" / "app.py", model_dir, image_path, out, corrupt]
    run = subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = demo.segment(Image.open(image_path), app.MODE_ALL, coseg=True, sliding=True).label_map
    np.testing.assert_array_equal(np.load(out), expected)
    assert "CORRUPT - `config.json` is not valid JSON" in run.stdout, run.stdout


# ------------------------------------------------------------------------------------------- API


def test_segment_api_through_gradio_client(app, model_dir, png, tmp_path):
    from gradio_client import Client, handle_file

    blocks = app.build_demo(model_dir)
    blocks.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(blocks.local_url, verbose=False)
        assert list(client.view_api(return_format="dict", print_info=False)["named_endpoints"]) == [
            "/segment"
        ]
        overlay, table, label_file, status = client.predict(
            handle_file(str(png)),
            app.MODE_SOME,
            ["class 0300", "class 0399"],
            5,
            False,
            False,
            api_name="/segment",
        )
        assert set(overlay) == {"image", "annotations"}  # a plain value: no "value"/"color_map" update
        labels = [a["label"] for a in overlay["annotations"]]
        assert labels and set(labels) <= {"class 0300", "class 0399"}
        with Image.open(overlay["image"]) as base:
            assert base.size == (96, 72)
        assert table["headers"] == ["class", "id", "pixels", "% of image"]
        assert sum(row[3] for row in table["data"]) == pytest.approx(100.0)
        label_map = app.prediction.read_label_map(label_file)
        assert label_map.shape == (72, 96) and set(np.unique(label_map)) <= {300, 399}
        assert "classes" in status

        # Unknown names and comma-separated names, as the README documents for the API.
        *_, status = client.predict(
            handle_file(str(png)), app.MODE_SOME, ["clas 0301"], 5, False, False, api_name="/segment"
        )
        assert "closest" in status.lower() and "class 0301" in status
        *_, label_file, status = client.predict(
            handle_file(str(png)),
            app.MODE_SOME,
            ["class 0300, class 0399"],
            5,
            False,
            False,
            api_name="/segment",
        )
        assert set(np.unique(app.prediction.read_label_map(label_file))) <= {300, 399}

        for k in (0, -2):
            overlay, table, label_file, status = client.predict(
                handle_file(str(png)), app.MODE_TOPK, [], k, False, False, api_name="/segment"
            )
            assert overlay is None and label_file is None and f"must be at least 1, got {k}" in status
            assert table["data"] == [] and table["headers"] == app.TABLE_COLUMNS

        bad = tmp_path / "bad.png"
        bad.write_bytes(b"\x89PNG but not really")
        overlay, _, label_file, status = client.predict(
            handle_file(str(bad)), app.MODE_ALL, [], 5, False, False, api_name="/segment"
        )
        assert overlay is None and label_file is None and "not an image" in status
    finally:
        blocks.close()


def test_readme_api_example_uses_the_default_vocabulary(app):
    call = readme_predict_call(readme_api_block())
    values = [ast.literal_eval(arg) for arg in call.args[1:]]
    mode, classes = values[0], values[1]
    assert mode in app.MODES
    assert isinstance(classes, list) and classes
    vocabulary = set(default_vocabulary())
    assert len(vocabulary) == 61
    unknown = [name for name in classes if name not in vocabulary]
    assert not unknown, f"demo/README.md's API example names classes the default model lacks: {unknown}"
    assert {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}["api_name"] == "/segment"


def test_readme_api_block_runs_as_written(app, emoji_model_dir, tmp_path, monkeypatch):
    block = readme_api_block()
    assert 'Client("http://127.0.0.1:7860/")' in block
    blocks = app.build_demo(emoji_model_dir)
    blocks.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        monkeypatch.chdir(tmp_path)
        scene().save("scene.png")
        namespace: dict = {}
        exec(
            compile(block.replace("http://127.0.0.1:7860/", blocks.local_url), "demo/README.md", "exec"),
            namespace,
        )
        classes = ast.literal_eval(readme_predict_call(block).args[2])
        labels = [a["label"] for a in namespace["overlay"]["annotations"]]
        assert set(labels) <= set(classes)
        assert {row[0] for row in namespace["table"]["data"]} <= set(classes)
        assert app.prediction.read_label_map(namespace["label_map_png"]).shape == (72, 96)
        assert "classes" in namespace["status"]

        # Background is in the table but not painted, unless show_background=True (as documented).
        from gradio_client import Client, handle_file

        client = Client(blocks.local_url, verbose=False)
        overlay, table, _, status = client.predict(
            handle_file("scene.png"), app.MODE_ALL, [], 5, False, False, api_name="/segment"
        )
        assert table["data"][0][0] == "background"  # the largest class in scene(), by construction
        assert (
            "background" not in [a["label"] for a in overlay["annotations"]] and "Show background" in status
        )
        overlay, *_ = client.predict(
            handle_file("scene.png"),
            app.MODE_ALL,
            [],
            5,
            False,
            False,
            show_background=True,
            api_name="/segment",
        )
        assert overlay["annotations"][0]["label"] == "background"
    finally:
        blocks.close()
