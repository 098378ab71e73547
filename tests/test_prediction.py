"""larvseg_hf.predict and Segmentation: the inference policy of the demo, on a tiny random model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import make_model
from PIL import Image

import larvseg_hf
from larvseg_hf import LarvSegImageProcessor, PredictionError, Segmentation, predict
from larvseg_hf.inference_larvseg import sliding_window_logits
from larvseg_hf.prediction import open_image, predict_label_map, read_label_map, resolve_classes

WINDOW = 32
NAMES = ["background"] + [f"class {i:02d}" for i in range(1, 12)]


@pytest.fixture(scope="module")
def model():
    return make_model("vit", names=NAMES)


@pytest.fixture()
def processor():
    return LarvSegImageProcessor(size={"height": WINDOW, "width": WINDOW}, size_divisor=8)


def scene(width: int = 80, height: int = 40, seed: int = 0) -> Image.Image:
    array = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    array[: height // 2, : width // 2] = (220, 40, 40)
    return Image.fromarray(array)


def reference(model, processor, image, class_ids=None, sliding=False) -> np.ndarray:
    """The model and processor called by hand, as the README shows."""
    columns = None if class_ids is None else torch.tensor(class_ids)
    with torch.no_grad():
        if sliding:
            pixel_values = LarvSegImageProcessor(size={"shortest_edge": WINDOW}, size_divisor=8)(image)
            stride = (WINDOW * 2 // 3) // 8 * 8
            logits, ids = sliding_window_logits(
                model, pixel_values["pixel_values"], WINDOW, stride, class_ids=columns
            )
            outputs = type("Outputs", (), {"logits": logits, "class_ids": ids})()
        else:
            outputs = model(**processor(image), class_ids=columns)
    return processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0].numpy()


def test_exported_from_the_package():
    assert larvseg_hf.predict is predict and larvseg_hf.Segmentation is Segmentation
    assert issubclass(PredictionError, ValueError)


@pytest.mark.parametrize("sliding", [False, True])
def test_predict_matches_the_model_called_by_hand(model, processor, sliding):
    image = scene()
    before = processor.to_dict()
    result = predict(model, processor, image, sliding=sliding)
    assert processor.to_dict() == before  # per-call settings: the processor is not changed
    assert result.label_map.shape == (40, 80) and result.label_map.dtype == np.int64
    np.testing.assert_array_equal(result.label_map, reference(model, processor, image, sliding=sliding))
    assert result.classes is None and result.top_k is None and result.sliding is sliding
    np.testing.assert_array_equal(
        predict_label_map(model, processor, image, sliding=sliding), result.label_map
    )


def test_classes_restrict_the_vocabulary(model, processor):
    image = scene()
    result = predict(model, processor, image, classes=["Class_03", 7, "class 03"])  # matched as training does
    assert result.classes == [3, 7]
    assert set(np.unique(result.label_map)) <= {3, 7}
    np.testing.assert_array_equal(result.label_map, reference(model, processor, image, [3, 7]))
    with pytest.raises(PredictionError) as err:
        predict(model, processor, image, classes=["clas 04", "zebra", 99])
    message = str(err.value)
    assert "'clas 04'" in message and "class 04" in message and "'zebra'" in message and "99" in message
    with pytest.raises(PredictionError, match="at least one class"):
        resolve_classes(model, [])


def test_top_k_segments_again_with_the_largest_classes(model, processor):
    image = scene()
    found = [i for i, _ in predict(model, processor, image).areas()]
    result = predict(model, processor, image, top_k=2)
    assert result.top_k == 2 and {i for i, _ in result.areas()} <= set(found[:2])
    np.testing.assert_array_equal(result.label_map, reference(model, processor, image, found[:2]))
    assert any(
        note.startswith(f"Top-2: {len(found)} classes found over the whole vocabulary")
        for note in result.notes
    )
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(PredictionError, match="top_k must be a whole number"):
            predict(model, processor, image, top_k=bad)


def test_images_are_opened_converted_and_downscaled(model, processor, tmp_path):
    rgba = Image.new("RGBA", (1200, 300), (0, 0, 0, 0))  # transparent: composited over white
    image, notes = open_image(rgba)
    assert image.mode == "RGB" and image.size == (1024, 256) and image.getpixel((5, 5)) == (255, 255, 255)
    assert any("downscaled from 1200x300 to 1024x256" in note for note in notes)
    buffer = io.BytesIO()
    scene().save(buffer, format="PNG")
    result = predict(model, processor, buffer.getvalue(), max_side=40)
    assert result.image.size == (40, 20) and result.label_map.shape == (20, 40)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is not an image")
    with pytest.raises(PredictionError, match="not an image"):
        predict(model, processor, not_an_image)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(PredictionError, match="corrupt or truncated"):
        predict(model, processor, str(truncated))


def test_segmentation_areas_background_and_label_map_files(tmp_path):
    label_map = np.array([[0, 0, 0, 300], [300, 7, 0, 0], [0, 0, 300, 0]], dtype=np.int64)
    result = Segmentation(Image.new("RGB", (4, 3)), label_map, {0: "BackGround", 7: "cat", 300: "dog"})
    assert result.areas() == [(0, 8), (300, 3), (7, 1)]
    assert sum(result.area_percentages()) == pytest.approx(100.0, abs=1e-9)
    assert result.area_percentages() == [66.67, 25.0, 8.33]
    assert result.is_background(0) and not result.is_background(7)
    assert result.background_fraction() == pytest.approx(8 / 12)
    png = result.save_label_map(tmp_path, "scene")
    assert png.suffix == ".png" and png.name.startswith("scene-")
    np.testing.assert_array_equal(read_label_map(png), label_map)  # ids above 255 survive
    huge = Segmentation(result.image, label_map * 300, result.id2label)
    npy = huge.save_label_map(tmp_path)
    assert npy.suffix == ".npy"
    np.testing.assert_array_equal(read_label_map(npy), label_map * 300)
