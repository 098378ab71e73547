"""One image path: training (datasets cell -> TrainTransform / EvalTransform) and inference
(LarvSegImageProcessor) decode, resize and normalise every image the same way, with the processor's
settings; `LarvSegImageProcessor.from_backbone` takes them from the backbone checkpoint; the shared module
travels with saved checkpoints."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import pytest
import torch
from conftest import TINY_VIT, make_model
from fixtures_data import build_tiny_datasets
from PIL import Image
from transformers import ViTConfig, ViTImageProcessor, ViTModel
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from larvseg_hf import LarvSegImageProcessor
from larvseg_hf.data.decoding import to_rgb
from larvseg_hf.data.loaders import load_segmentation_dataset
from larvseg_hf.data.transforms import EvalTransform, TrainTransform
from larvseg_hf.image_utils_larvseg import (
    InvalidImageError,
    InvalidLabelMapError,
    to_label_array,
    to_rgb_array,
)
from larvseg_hf.training.arguments import parse_train_args
from larvseg_hf.training.setup import (
    build_image_processor,
    build_model,
    build_train_dataset,
    load_training_data,
)

datasets.disable_progress_bars()

H, W = 15, 25


def _photo(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _exact(processor: LarvSegImageProcessor, h: int, w: int, **fields) -> TrainTransform:
    """A training transform without randomness that keeps an h x w image whole (and unpadded, unless
    `size_divisor` is given)."""
    fields = {"ratio_range": (1.0, 1.0), "flip_prob": 0.0, "photometric": False, "size_divisor": 1, **fields}
    return TrainTransform.from_processor(processor, crop_size=(h, w), **fields)


PROCESSORS = {
    "imagenet": LarvSegImageProcessor(size={"height": 32, "width": 48}, size_divisor=8),
    "vit in21k (0.5 / 0.5)": LarvSegImageProcessor(
        size={"height": 32, "width": 48}, size_divisor=8, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ),
    "shortest edge, no normalisation": LarvSegImageProcessor(
        size={"shortest_edge": 24}, size_divisor=4, do_normalize=False
    ),
    "no rescale": LarvSegImageProcessor(
        size={"height": 16, "width": 16},
        size_divisor=1,
        do_rescale=False,
        image_mean=[100.0] * 3,
        image_std=[50.0] * 3,
    ),
}


# ------------------------------------------------------------------------------------------- train == eval == inference


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_train_and_eval_transforms_give_the_processors_pixel_values(name):
    processor = PROCESSORS[name]
    image = _photo(1, 40, 56)
    unresized = processor(image, do_resize=False)["pixel_values"][0]
    transform = _exact(processor, 40, 56, size_divisor=processor.size_divisor)
    pixel_values, labels = transform(image, None, np.random.default_rng(0))
    assert labels is None and torch.equal(pixel_values, unresized)
    assert torch.equal(EvalTransform.from_processor(processor)(image)[0], processor(image)["pixel_values"][0])
    assert torch.equal(
        EvalTransform.from_processor(processor, size=(24, 40), short_side=None)(image)[0],
        processor(image, size={"height": 24, "width": 40})["pixel_values"][0],
    )
    assert torch.equal(
        EvalTransform.from_processor(processor, size=None, short_side=20)(image)[0],
        processor(image, size={"shortest_edge": 20})["pixel_values"][0],
    )
    assert torch.equal(
        EvalTransform.from_processor(processor, size=None, short_side=None)(image)[0], unresized
    )


def test_a_half_std_processor_trains_with_half_std():
    processor = PROCESSORS["vit in21k (0.5 / 0.5)"]
    image = _photo(2)
    pixel_values, _ = _exact(processor, H, W)(image, None, np.random.default_rng(0))
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(pixel_values, expected, rtol=0, atol=1e-6)
    # The defaults, without a processor, are a default processor's (ImageNet's, from transformers).
    default = TrainTransform(crop_size=(H, W))
    assert tuple(default.mean) == tuple(IMAGENET_DEFAULT_MEAN) and tuple(default.std) == tuple(
        IMAGENET_DEFAULT_STD
    )
    assert torch.equal(
        _exact(LarvSegImageProcessor(), H, W)(image, None, np.random.default_rng(0))[0],
        TrainTransform(crop_size=(H, W), ratio_range=(1.0, 1.0), flip_prob=0.0, photometric=False)(image)[0],
    )


def test_train_rescale_resizes_like_the_processor():
    """Ratio 0.5 takes 15 x 25 to 8 x 13 (rounded half up), ratio 2 to 30 x 50: bilinear pixels and nearest
    labels (ids far above 255) equal the processor's at that size."""
    processor = PROCESSORS["vit in21k (0.5 / 0.5)"]
    image = _photo(3)
    ids = np.random.default_rng(4).choice([0, 300, 4000, 70000], (H, W)).astype(np.int64)
    for ratio, size in ((0.5, (8, 13)), (2.0, (30, 50))):
        transform = TrainTransform.from_processor(
            processor,
            crop_size=size,
            ratio_range=(ratio, ratio),
            flip_prob=0.0,
            photometric=False,
            size_divisor=1,
        )
        pixel_values, labels = transform(image, ids, np.random.default_rng(0))
        expected = processor(
            image, segmentation_maps=ids, size={"height": size[0], "width": size[1]}, size_divisor=1
        )
        assert torch.equal(pixel_values, expected["pixel_values"][0])
        assert torch.equal(labels, expected["labels"][0])
    assert torch.equal(labels, torch.from_numpy(np.kron(ids, np.ones((2, 2), dtype=np.int64))))


def test_train_crops_pad_up_to_the_size_divisor():
    processor = LarvSegImageProcessor(size_divisor=8)
    transform = TrainTransform.from_processor(processor, crop_size=(20, 30), ratio_range=(1.0, 1.0))
    assert transform.padded_size == (24, 32)
    pixel_values, labels = transform(
        _photo(5, 40, 40), np.zeros((40, 40), np.int64), np.random.default_rng(0)
    )
    assert pixel_values.shape == (3, 24, 32) and labels.shape == (24, 32)
    assert (labels[20:] == -100).all() and (labels[:, 30:] == -100).all() and (labels[:20, :30] == 0).all()
    assert TrainTransform(crop_size=(20, 30)).padded_size == (20, 30)  # without a processor: exactly the crop


# ------------------------------------------------------------------------------------------- image modes


def _encoded(image: Image.Image, fmt: str) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return {"bytes": buffer.getvalue(), "path": None}


def _mode_images() -> dict[str, tuple[Image.Image, str]]:
    rng = np.random.default_rng(6)
    rgb = _photo(7)
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
    alpha[0, :5] = 0  # fully transparent: white, whatever colour is hidden there
    palette = Image.fromarray(rgb).quantize(16)
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    grey16 = (rng.integers(0, 65536, (H, W))).astype(np.uint16)
    grey16[0, 0], grey16[0, 1] = 65535, 0
    big = rng.integers(-1000, 200000, (H, W)).astype(np.int32)  # mode I beyond 16 bits: clipped
    small = rng.integers(0, 256, (H, W)).astype(np.int32)  # mode I with 8-bit values: still the 16-bit scale
    unit = rng.random((H, W)).astype(np.float32)
    return {
        "RGBA": (Image.fromarray(np.dstack([rgb, alpha])), "PNG"),
        "LA": (Image.fromarray(np.dstack([rgb[..., 0], alpha]), mode="LA"), "PNG"),
        "P with transparency": (palette, "PNG"),
        "I;16": (Image.fromarray(grey16), "PNG"),
        "I": (Image.fromarray(big), "TIFF"),
        "I, small values": (Image.fromarray(small), "TIFF"),
        "F in [0, 1]": (Image.fromarray(unit), "TIFF"),
        "F in [0, 255]": (Image.fromarray(unit * 300 - 20), "TIFF"),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), "TIFF"),
    }


def test_every_mode_converts_identically_on_the_training_and_inference_paths():
    images = _mode_images()
    cells = {name: _encoded(image, fmt) for name, (image, fmt) in images.items()}
    label = _encoded(Image.fromarray(np.zeros((H, W), np.uint8)), "PNG")
    table = datasets.Dataset.from_dict(
        {"image": list(cells.values()), "label": [label] * len(cells)},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Image()}),
    )
    source = load_segmentation_dataset(table, class_names=["background"], dataset_name="modes")
    processor = PROCESSORS["vit in21k (0.5 / 0.5)"]
    train = _exact(processor, H, W)
    for index, (name, cell) in enumerate(cells.items()):
        decoded = Image.open(io.BytesIO(cell["bytes"]))  # what a user, the demo or a pipeline would open
        assert decoded.mode == images[name][0].mode, name
        example = source.get_example(index)
        assert np.array_equal(example["image"], to_rgb_array(decoded)), name
        training, _ = train(example["image"], example["mask"], np.random.default_rng(0))
        inference = processor(decoded, do_resize=False)["pixel_values"][0]
        assert torch.equal(training, inference), name


def test_the_documented_rules():
    images = {name: image for name, (image, _) in _mode_images().items()}
    assert (to_rgb_array(images["RGBA"])[0, :5] == 255).all()  # transparent: white
    assert (to_rgb_array(images["LA"])[0, :5] == 255).all()
    palette = images["P with transparency"]
    transparent = np.asarray(palette) == palette.info["transparency"]
    assert (to_rgb_array(palette)[transparent] == 255).all()
    grey16 = np.asarray(images["I;16"])
    assert np.array_equal(to_rgb_array(images["I;16"])[..., 1], np.rint(grey16 / 257).astype(np.uint8))
    assert tuple(to_rgb_array(images["I;16"])[0, :2, 0]) == (255, 0)
    big = np.asarray(images["I"])
    assert np.array_equal(
        to_rgb_array(images["I"])[..., 2], np.rint(np.clip(big / 257, 0, 255)).astype(np.uint8)
    )
    small = np.asarray(images["I, small values"])
    assert np.array_equal(
        to_rgb_array(images["I, small values"])[..., 0], np.rint(small / 257).astype(np.uint8)
    )
    unit = np.asarray(images["F in [0, 1]"])
    assert np.array_equal(to_rgb_array(images["F in [0, 1]"])[..., 0], np.rint(unit * 255).astype(np.uint8))
    wide = np.asarray(images["F in [0, 255]"])
    assert np.array_equal(
        to_rgb_array(images["F in [0, 255]"])[..., 0], np.rint(np.clip(wide, 0, 255)).astype(np.uint8)
    )
    # Arrays and tensors follow the same rules as the PIL modes holding them, where the dtype says as much.
    assert np.array_equal(to_rgb_array(grey16), to_rgb_array(images["I;16"]))
    # A mode-I image is 16-bit by its mode; an int32 array with the same values has no mode to say so.
    with pytest.raises(InvalidImageError, match="pass uint16"):
        to_rgb_array(torch.from_numpy(big.copy()))
    assert np.array_equal(to_rgb_array(np.asarray(images["RGBA"])), to_rgb_array(images["RGBA"]))
    assert np.array_equal(to_rgb_array(unit), to_rgb_array(images["F in [0, 1]"]))
    # The data path's to_rgb is the same conversion.
    for image in images.values():
        assert np.array_equal(to_rgb(image), to_rgb_array(image))


def test_conversion_errors_are_value_errors_naming_the_image():
    with pytest.raises(InvalidImageError, match=r"C in 1, 3, 4 \(image 2\)"):
        to_rgb_array(np.zeros((5, 6, 2), np.uint8), 2)
    with pytest.raises(InvalidImageError, match=r"dtype complex128 \(x\.png\)"):
        to_rgb_array(np.zeros((4, 4), complex), "x.png")
    assert issubclass(InvalidImageError, ValueError) and issubclass(InvalidLabelMapError, ValueError)


# ------------------------------------------------------------------------------------------- label maps


def test_one_label_map_rule_for_training_and_inference():
    """Grey RGB / RGBA and LA / PA maps are accepted on both paths (their first channel); colour maps are
    refused on both, naming the map (and, in training, the dataset, row and file)."""
    ids = np.random.default_rng(8).integers(0, 4, (H, W)).astype(np.uint8)
    grey = {
        "L": Image.fromarray(ids),
        "grey RGB": Image.fromarray(np.repeat(ids[..., None], 3, 2)),
        "grey RGBA": Image.fromarray(np.dstack([ids, ids, ids, np.full_like(ids, 9)])),
        "LA": Image.fromarray(np.dstack([ids, np.full_like(ids, 9)]), mode="LA"),
    }
    colour = Image.fromarray(_photo(9) % 4)
    cells = [_encoded(image, "PNG") for image in [*grey.values(), colour]]
    table = datasets.Dataset.from_dict(
        {"image": [_encoded(Image.fromarray(_photo(0)), "PNG")] * len(cells), "label": cells},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Image()}),
    )
    source = load_segmentation_dataset(table, class_names=list("abcd"), dataset_name="maps")
    processor = LarvSegImageProcessor(do_resize=False)
    for index, (name, image) in enumerate(grey.items()):
        assert np.array_equal(source.get_example(index)["mask"], ids), name
        assert np.array_equal(processor(_photo(0), segmentation_maps=image)["labels"][0].numpy(), ids), name
    with pytest.raises(
        ValueError, match=r"mode 'RGB' with colours.*not a colour image \(dataset 'maps', row 4"
    ):
        source.get_example(len(grey))
    with pytest.raises(InvalidLabelMapError, match=r"Label map 0 has mode 'RGB' with colours"):
        processor(_photo(0), segmentation_maps=colour)
    with pytest.raises(InvalidLabelMapError, match=r"Label map m\.png has mode 'CMYK'"):
        to_label_array(colour.convert("CMYK"), "m.png")
    with pytest.raises(InvalidLabelMapError, match="non-integer"):
        to_label_array(np.array([[0.0, np.inf]]))


def test_label_maps_above_255_resize_exactly_on_both_paths():
    ids = np.random.default_rng(10).choice([0, 300, 4000, 66000], (H, W)).astype(np.int32)
    names = [f"c{i}" for i in range(66001)]
    table = datasets.Dataset.from_dict(
        {
            "image": [_encoded(Image.fromarray(_photo(11)), "PNG")],
            "label": [_encoded(Image.fromarray(ids), "TIFF")],
        },
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Image()}),
    )
    example = load_segmentation_dataset(table, class_names=names, dataset_name="big").get_example(0)
    assert np.array_equal(example["mask"], ids)
    processor = LarvSegImageProcessor(size={"height": 2 * H, "width": 2 * W}, size_divisor=1)
    double = TrainTransform.from_processor(
        processor, crop_size=(2 * H, 2 * W), ratio_range=(2.0, 2.0), flip_prob=0.0, photometric=False
    )
    pixel_values, labels = double(example["image"], example["mask"], np.random.default_rng(0))
    expected = processor(Image.fromarray(example["image"]), segmentation_maps=Image.fromarray(ids))
    assert torch.equal(labels, torch.from_numpy(np.kron(ids, np.ones((2, 2), dtype=np.int64))))
    assert torch.equal(labels, expected["labels"][0]) and torch.equal(
        pixel_values, expected["pixel_values"][0]
    )


# ------------------------------------------------------------------------------------------- from_backbone


def _vit_backbone(folder, **processor_kwargs):
    config = ViTConfig(**{k: v for k, v in TINY_VIT.items() if k != "model_type"})
    ViTModel(config).save_pretrained(folder)
    if processor_kwargs:
        ViTImageProcessor(**processor_kwargs).save_pretrained(folder)
    return folder


def test_from_backbone_reads_the_backbones_preprocessor_config(tmp_path, caplog):
    folder = _vit_backbone(tmp_path / "vit", image_mean=[0.5] * 3, image_std=[0.5] * 3)
    with caplog.at_level(logging.WARNING):
        processor = LarvSegImageProcessor.from_backbone(folder, size=64)
    assert not caplog.records
    assert processor.image_mean == [0.5] * 3 and processor.image_std == [0.5] * 3
    assert processor.do_rescale and processor.rescale_factor == pytest.approx(1 / 255)
    assert processor.size_divisor == TINY_VIT["patch_size"] and processor.size == {"height": 64, "width": 64}
    overridden = LarvSegImageProcessor.from_backbone(folder, size_divisor=4, image_std=[0.25] * 3)
    assert (
        overridden.size_divisor == 4
        and overridden.image_std == [0.25] * 3
        and overridden.image_mean == [0.5] * 3
    )


def test_from_backbone_without_a_preprocessor_config_warns_and_uses_imagenet(tmp_path, caplog):
    folder = _vit_backbone(tmp_path / "vit")
    with caplog.at_level(logging.WARNING):
        processor = LarvSegImageProcessor.from_backbone(folder)
    assert processor.image_mean == list(IMAGENET_DEFAULT_MEAN) and processor.image_std == list(
        IMAGENET_DEFAULT_STD
    )
    assert "no preprocessor_config.json" in caplog.text and str(folder) in caplog.text
    (folder / "preprocessor_config.json").write_text("{oops")
    with pytest.raises(OSError, match="not a valid JSON file"):
        LarvSegImageProcessor.from_backbone(folder)


def test_a_run_from_a_backbone_trains_and_saves_with_its_processor(tmp_path):
    """setup.py: the processor of a run built from a backbone is `from_backbone`'s, and the training
    transforms normalise as it does."""
    backbone = _vit_backbone(tmp_path / "vit", image_mean=[0.5] * 3, image_std=[0.5] * 3)
    data_dir = build_tiny_datasets(tmp_path / "tiny", num_mask=2, num_cls=2, num_eval=1)
    model_args, data_args, *_ = parse_train_args(
        [
            "--mask_datasets", f"{data_dir}/mask:train", "--image_datasets", f"{data_dir}/cls:train",
            "--backbone_name_or_path", str(backbone), "--mask_crop_size", "32", "--image_crop_size", "32",
            "--eval_size", "48", "--output_dir", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    data = load_training_data(data_args, show_progress=False)
    model = build_model(model_args, data)
    processor = build_image_processor(model_args, data_args, model)
    assert processor.image_mean == [0.5] * 3 and processor.image_std == [0.5] * 3
    assert processor.size == {"height": 48, "width": 48} and processor.size_divisor == TINY_VIT["patch_size"]
    train = build_train_dataset(data, data_args, seed=0, length=4, rank=0, world=1, processor=processor)
    for part in train.datasets:
        assert tuple(part.transform.mean) == (0.5,) * 3 and tuple(part.transform.std) == (0.5,) * 3
        assert part.transform.size_divisor == TINY_VIT["patch_size"]


# ------------------------------------------------------------------------------------------- saved checkpoints

CHILD = textwrap.dedent(
    """
    import sys
    sys.modules["larvseg_hf"] = None  # only the code saved next to the weights may run
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor

    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    image = Image.open(folder / "image.png")
    labels = Image.open(folder / "labels.tiff")
    inputs = processor(image, segmentation_maps=labels)
    utils = [name for name in sys.modules if name.endswith(".image_utils_larvseg")]
    torch.save({"pixel_values": inputs["pixel_values"], "labels": inputs["labels"]}, out / "inputs.pt")
    (out / "modules.txt").write_text(type(processor).__module__ + "\\n" + "\\n".join(utils))
    """
)


def test_saved_checkpoint_ships_the_image_module_and_loads_without_the_package(tmp_path, hf_offline_env):
    folder = tmp_path / "saved"
    make_model("vit", names=["background", "cat", "dog"]).save_pretrained(folder)
    processor = LarvSegImageProcessor(size={"height": 32, "width": 48}, size_divisor=8, image_mean=[0.5] * 3)
    processor.save_pretrained(folder)
    assert {"image_processing_larvseg.py", "image_utils_larvseg.py"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "preprocessor_config.json").read_text())["image_mean"] == [0.5] * 3
    rgba = np.dstack([_photo(12), np.random.default_rng(13).integers(0, 256, (H, W), dtype=np.uint8)])
    ids = np.random.default_rng(14).choice([0, 300, 70000], (H, W)).astype(np.int32)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    Image.fromarray(rgba).save(copy / "image.png")
    Image.fromarray(ids).save(copy / "labels.tiff")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(copy), str(tmp_path)],
        cwd=tmp_path,
        env=hf_offline_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    module, *utils = (tmp_path / "modules.txt").read_text().splitlines()
    assert module.startswith("transformers_modules.") and module.endswith("image_processing_larvseg")
    assert utils and all(name.startswith("transformers_modules.") for name in utils)
    child = torch.load(tmp_path / "inputs.pt")
    expected = processor(Image.open(copy / "image.png"), segmentation_maps=Image.open(copy / "labels.tiff"))
    assert torch.equal(child["pixel_values"], expected["pixel_values"])
    assert torch.equal(child["labels"], expected["labels"])
    assert set(child["labels"].unique().tolist()) == {0, 300, 70000}


def test_integer_arrays_are_8_bit_or_an_error_never_a_guess():
    """np.array(image, dtype=int) holds 8-bit values: used as they are. Wider values are an error naming the
    fix, never silently rescaled or clipped; uint16 arrays are 16-bit."""
    values = np.random.default_rng(21).integers(0, 256, (6, 7, 3))
    for dtype in (np.int16, np.int32, np.int64):
        assert np.array_equal(to_rgb_array(values.astype(dtype)), values.astype(np.uint8))
        assert np.array_equal(to_rgb_array(torch.from_numpy(values.astype(dtype))), values.astype(np.uint8))
    with pytest.raises(ValueError, match=r"int32 range over 0\.\.4000 \(image 2\).*uint16"):
        to_rgb_array(np.full((4, 4), 4000, np.int32), 2)
    with pytest.raises(ValueError, match="-1..255"):
        to_rgb_array(np.array([[-1, 255]], np.int64))
    sixteen = np.array([[0, 257, 65535]], np.uint16)
    assert to_rgb_array(sixteen)[0, :, 0].tolist() == [0, 1, 255]
