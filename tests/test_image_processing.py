"""LarvSegImageProcessor and inference helpers: exact pruned upsampled argmax, post-processing to
vocabulary ids, label maps with ids above 255, image modes, clear errors, sliding windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_model
from PIL import Image

from larvseg_hf import LarvSegImageProcessor, inference_larvseg
from larvseg_hf.inference_larvseg import candidate_classes, sliding_window_logits, upsampled_argmax

RNG_SEED = 1234


def _full_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(logits[None], size, mode="bilinear", align_corners=False)[0].argmax(0)


# ------------------------------------------------------------------------------------------- argmax


CASES = [  # (K, h, w, H, W)
    (1, 4, 5, 17, 23),
    (7, 1, 5, 9, 31),
    (7, 5, 1, 31, 9),
    (7, 1, 1, 8, 8),
    (13, 8, 8, 8, 8),  # no resize
    (13, 8, 8, 5, 3),  # downsampling
    (3, 9, 13, 64, 64),
    (500, 6, 7, 48, 56),
]


@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize(("num_classes", "h", "w", "height", "width"), CASES)
def test_upsampled_argmax_equals_full_interpolate_argmax(num_classes, h, w, height, width, kind):
    generator = torch.Generator().manual_seed(RNG_SEED + num_classes * 100 + h * 10 + w)
    if kind == "random":
        logits = torch.randn(num_classes, h, w, generator=generator)
    else:  # few distinct values: many exact ties, which must resolve to the lowest index as argmax does
        logits = torch.randint(0, 3, (num_classes, h, w), generator=generator).float()
    expected = _full_argmax(logits, (height, width))
    for chunk_size in (1, 5, 64) if num_classes <= 13 else (7, 64):
        result = upsampled_argmax(logits, (height, width), chunk_size=chunk_size)
        assert result.shape == (height, width) and result.dtype == torch.long
        assert torch.equal(result, expected)


def test_upsampled_argmax_all_tied_picks_first_class():
    logits = torch.full((9, 4, 4), 0.25)
    assert torch.equal(
        upsampled_argmax(logits, (13, 11), chunk_size=4), torch.zeros(13, 11, dtype=torch.long)
    )


def test_candidate_classes_prune_most_classes_on_peaked_logits():
    generator = torch.Generator().manual_seed(RNG_SEED)
    num_classes, h, w = 500, 16, 16
    logits = torch.randn(num_classes, h, w, generator=generator) * 0.5
    present = [3, 77, 401]
    region = torch.zeros(h, w, dtype=torch.long)
    region[:, 8:] = 1
    region[10:, :5] = 2
    for index, class_id in enumerate(present):  # plausible everywhere, winning in its own region
        logits[class_id] += 3 + 7 * (region == index).float()
    assert candidate_classes(logits).tolist() == present
    assert torch.equal(upsampled_argmax(logits, (128, 128)), _full_argmax(logits, (128, 128)))


PER_CELL_CASES = [  # (K, h, w, H, W, dtype)
    (1, 4, 5, 17, 23, torch.float32),
    (2, 1, 1, 8, 8, torch.float32),
    (7, 1, 5, 9, 31, torch.float32),
    (7, 5, 1, 31, 9, torch.float32),
    (13, 8, 8, 8, 8, torch.float32),  # no resize
    (13, 8, 8, 5, 3, torch.float32),  # downsampling: cells without output pixels
    (300, 3, 4, 200, 150, torch.float32),  # ~50 x 38 pixels per cell: several refinement steps
    (2000, 7, 9, 61, 83, torch.float32),
    (2000, 1, 9, 5, 70, torch.float32),
    (500, 6, 7, 48, 56, torch.float64),
    (500, 6, 7, 48, 56, torch.float16),  # F.interpolate rounds to the input dtype: many exact ties
    (500, 6, 7, 48, 56, torch.bfloat16),
]


@pytest.mark.parametrize("pairs_per_step", [None, 50])  # 50: batches of cells and blocks halved often
@pytest.mark.parametrize(("num_classes", "h", "w", "height", "width", "dtype"), PER_CELL_CASES)
def test_per_cell_argmax_equals_interpolate_argmax_except_near_ties(
    num_classes, h, w, height, width, dtype, pairs_per_step, monkeypatch
):
    if pairs_per_step is not None:
        monkeypatch.setattr(inference_larvseg, "_PAIRS_PER_STEP", pairs_per_step)
    generator = torch.Generator().manual_seed(RNG_SEED + num_classes + h * 10 + w)
    logits = (torch.randn(num_classes, h, w, generator=generator) * 3).to(dtype)
    resized = F.interpolate(logits[None], (height, width), mode="bilinear", align_corners=False)[0]
    expected = resized.argmax(0)
    top2 = resized.float().topk(min(2, num_classes), 0).values
    # Near-tie: float rounding apart (below 1e-4 for float32 / float64; for float16 / bfloat16, one
    # rounding step of the output, where exact ties resolve to the lowest channel).
    tie = max(1e-4, 2 * torch.finfo(dtype).eps * top2[0].abs().max().item())
    near_tie = (
        (top2[0] - top2[-1] <= tie) if num_classes > 1 else torch.zeros_like(expected, dtype=torch.bool)
    )

    result = inference_larvseg._per_cell_argmax(logits, (height, width))
    assert result.shape == (height, width) and result.dtype == torch.long
    mismatch = result != expected
    assert not (mismatch & ~near_tie).any(), "mismatch away from a near-tie"
    if dtype in (torch.float32, torch.float64):
        assert near_tie.float().mean() < 0.01  # near-ties are rare: the path is exact almost everywhere
    assert mismatch.float().mean() < 1e-3
    # Where it differs, it picked a channel whose upsampled value is within the near-tie of the best.
    picked = resized.float().gather(0, result[None])[0]
    assert (top2[0] - picked)[mismatch].le(tie).all()


def _pixel_cells(h: int, w: int, height: int, width: int) -> torch.Tensor:
    """(H, W) index i * w + j of the cell whose corners (i, j) .. (i + 1, j + 1) every output pixel
    interpolates, from PyTorch's align_corners=False convention written out here."""
    rows = ((torch.arange(height) + 0.5) * h / height - 0.5).clamp_min(0).floor().long().clamp_max(h - 1)
    cols = ((torch.arange(width) + 0.5) * w / width - 0.5).clamp_min(0).floor().long().clamp_max(w - 1)
    return rows[:, None] * w + cols[None]


@pytest.mark.parametrize(
    ("num_classes", "h", "w", "height", "width"), [(40, 5, 6, 37, 50), (9, 3, 1, 20, 7), (13, 8, 8, 5, 3)]
)
def test_reference_floor_is_the_smallest_best_reference_value_of_each_cell(num_classes, h, w, height, width):
    generator = torch.Generator().manual_seed(RNG_SEED + num_classes)
    logits = torch.randn(num_classes, h, w, generator=generator)
    references = torch.randint(0, num_classes, (3, h * w), generator=generator)
    cells = inference_larvseg._all_cells(h, w, logits.device)
    offsets = inference_larvseg._corner_offsets(*cells, h, w)
    floor = inference_larvseg._reference_floor(logits, (height, width), references, cells, offsets)

    resized = F.interpolate(logits[None], (height, width), mode="bilinear", align_corners=False)[0]
    cells = _pixel_cells(h, w, height, width)
    per_pixel = resized.gather(0, references[:, cells]).amax(0)  # each pixel's best of its cell's references
    expected = torch.full((h * w,), float("inf"))  # inf: cells with no output pixel
    expected.scatter_reduce_(0, cells.flatten(), per_pixel.flatten(), "amin")
    torch.testing.assert_close(floor, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_floored_cell_bounds_prune_more_and_keep_every_winner(dtype):
    generator = torch.Generator().manual_seed(RNG_SEED)
    num_classes, h, w, height, width = 3000, 6, 7, 60, 70
    logits = torch.randn(num_classes, h, w, generator=generator).to(dtype)
    eps = inference_larvseg._SLACK_EPS
    plain_union, plain_mask, plain_counts, _ = inference_larvseg._cell_bounds(logits, eps)
    union, mask, counts, _ = inference_larvseg._cell_bounds(logits, eps, (height, width))
    assert torch.equal(counts, mask.sum(0, dtype=torch.int32))
    assert counts.sum() < 0.8 * plain_counts.sum()  # the floor raises the threshold on flat logits
    assert not (mask & ~plain_mask).any() and not (union & ~plain_union).any()  # and only ever prunes more
    # Every output pixel's winner (PyTorch's interpolate, then argmax) passes in its cell and the union.
    winner = _full_argmax(logits, (height, width))
    cells = _pixel_cells(h, w, height, width)
    assert mask[winner, cells].all() and union[winner].all()


def test_per_cell_argmax_exact_ties_go_to_the_lowest_channel():
    logits = torch.full((300, 4, 4), 0.25)
    logits[[7, 11, 250]] = 1.5  # three identical channels tie exactly everywhere
    expected = torch.full((13, 11), 7, dtype=torch.long)
    assert torch.equal(inference_larvseg._per_cell_argmax(logits, (13, 11)), expected)
    # Below the work it needs, it gives up (upsampled_argmax then runs the exact path: masses of
    # exact ties make the per-cell path slower than the exact one).
    assert inference_larvseg._per_cell_argmax(logits, (13, 11), work_limit=100) is None
    assert torch.equal(upsampled_argmax(logits, (13, 11)), expected)


def test_upsampled_argmax_dispatch_exact_path_for_small_unions(monkeypatch):
    calls = []
    per_cell = inference_larvseg._per_cell_argmax

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return per_cell(*args, **kwargs)

    monkeypatch.setattr(inference_larvseg, "_per_cell_argmax", spy)
    generator = torch.Generator().manual_seed(RNG_SEED)

    # Peaked logits of a large vocabulary (trained-model like): a small union, so the exact path,
    # bit-identical to the full argmax.
    num_classes, h, w = 5000, 12, 12
    logits = torch.randn(num_classes, h, w, generator=generator) * 0.5
    region = (torch.arange(h)[:, None] // 4 * 3 + torch.arange(w)[None] // 4).flatten()  # 9 regions
    present = torch.randperm(num_classes, generator=generator)[:9]
    logits.view(num_classes, -1)[present] += 3 + 7 * (region[None] == torch.arange(9)[:, None]).float()
    assert candidate_classes(logits).numel() <= inference_larvseg._EXACT_PATH_CHANNELS
    assert torch.equal(upsampled_argmax(logits, (96, 80)), _full_argmax(logits, (96, 80)))
    # Smooth logits of many classes: the preferred class drifts across the image.
    centre = 1000 + 2 * (torch.arange(10)[:, None] + torch.arange(10)[None])
    smooth = -(torch.arange(2000.0)[:, None, None] - centre).abs() / 40
    assert candidate_classes(smooth).numel() <= inference_larvseg._EXACT_PATH_CHANNELS
    assert torch.equal(upsampled_argmax(smooth, (77, 64)), _full_argmax(smooth, (77, 64)))
    assert calls == []

    # Random logits of 2,000 classes: nearly all are candidates somewhere, so the per-cell path.
    noisy = torch.randn(2000, 8, 8, generator=generator)
    assert candidate_classes(noisy).numel() > inference_larvseg._EXACT_PATH_CHANNELS
    result = upsampled_argmax(noisy, (64, 64))
    assert calls == [(2000, 8, 8)]
    assert (result != _full_argmax(noisy, (64, 64))).float().mean() < 1e-3


# ------------------------------------------------------------------------------------------- post-processing


class _Outputs:
    def __init__(self, logits, class_ids=None):
        self.logits, self.class_ids = logits, class_ids


def test_post_process_returns_vocabulary_ids_with_and_without_target_sizes():
    processor = LarvSegImageProcessor()
    generator = torch.Generator().manual_seed(RNG_SEED)
    logits = torch.randn(2, 3, 4, 6, generator=generator)
    class_ids = torch.tensor([700, 12, 21000])
    outputs = _Outputs(logits, class_ids)

    plain = processor.post_process_semantic_segmentation(outputs)
    for image in range(2):
        assert plain[image].shape == (4, 6)
        assert torch.equal(plain[image], class_ids[logits[image].argmax(0)])

    sizes = [(32, 48), (17, 9)]
    resized = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
    for image, size in enumerate(sizes):
        assert resized[image].shape == size
        assert torch.equal(resized[image], class_ids[_full_argmax(logits[image], size)])
    # Tensor target sizes work too; a wrong count raises.
    again = processor.post_process_semantic_segmentation(outputs, target_sizes=torch.tensor(sizes))
    assert all(torch.equal(a, b) for a, b in zip(again, resized, strict=True))
    with pytest.raises(ValueError, match="as many target sizes"):
        processor.post_process_semantic_segmentation(outputs, target_sizes=[(8, 8)])
    # Without class_ids the columns are the ids.
    columns = processor.post_process_semantic_segmentation(_Outputs(logits), target_sizes=sizes)
    assert torch.equal(columns[1], _full_argmax(logits[1], sizes[1]))


def test_post_process_of_a_restricted_model_forward():
    model = make_model("vit", 6)
    processor = LarvSegImageProcessor(size={"height": 32, "width": 40}, size_divisor=8)
    image = Image.fromarray(np.random.default_rng(RNG_SEED).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    inputs = processor(image)
    with torch.no_grad():
        outputs = model(**inputs, class_ids=[5, 2])
    (segmentation,) = processor.post_process_semantic_segmentation(outputs, target_sizes=[(30, 50)])
    assert segmentation.shape == (30, 50)
    assert set(segmentation.unique().tolist()) <= {2, 5}


# ------------------------------------------------------------------------------------------- label maps


def _ids(shape, high, seed=RNG_SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, high, shape)
    ids.flat[:3] = [0, high - 1, 4242 % high]
    return ids


def _label_inputs():
    ids = _ids((15, 25), 30000)
    palette_ids = _ids((15, 25), 200)
    palette_image = Image.fromarray(palette_ids.astype(np.uint8), mode="P")
    palette_image.putpalette(np.random.default_rng(0).integers(0, 256, 768).astype(np.uint8).tolist())
    return {
        "I;16 PIL": (Image.fromarray(ids.astype(np.uint16)), ids),
        "int32 numpy": (ids.astype(np.int32), ids),
        "int64 tensor": (torch.from_numpy(ids), ids),
        "P palette indices": (palette_image, palette_ids),
    }


@pytest.mark.parametrize("kind", list(_label_inputs()))
def test_label_maps_with_large_ids_survive_resizing_exactly(kind):
    label_map, ids = _label_inputs()[kind]
    if kind == "I;16 PIL":
        assert label_map.mode == "I;16"
    image = np.zeros((15, 25, 3), dtype=np.uint8)

    same = LarvSegImageProcessor(size={"height": 15, "width": 25}, size_divisor=1)(
        image, segmentation_maps=label_map
    )
    assert same["labels"].dtype == torch.long
    assert torch.equal(same["labels"][0], torch.from_numpy(ids))

    # Exact 2x nearest upsampling: every id repeated, the set of ids preserved.
    double = LarvSegImageProcessor(size={"height": 30, "width": 50}, size_divisor=1)(
        image, segmentation_maps=label_map
    )
    assert torch.equal(double["labels"][0], torch.from_numpy(np.repeat(np.repeat(ids, 2, 0), 2, 1)))

    # Arbitrary resize: nearest only ever copies ids.
    odd = LarvSegImageProcessor(size={"height": 40, "width": 64}, size_divisor=8)(
        image, segmentation_maps=label_map
    )
    assert odd["labels"].shape == (1, 40, 64)
    assert set(odd["labels"].unique().tolist()) <= set(np.unique(ids).tolist())
    assert odd["pixel_values"].shape == (1, 3, 40, 64)


def test_batch_of_label_maps():
    ids = _ids((15, 25), 5000)
    processor = LarvSegImageProcessor(size={"height": 30, "width": 50}, size_divisor=1)
    images = [np.zeros((15, 25, 3), dtype=np.uint8)] * 2
    out = processor(images, segmentation_maps=[ids, ids.astype(np.uint16)])
    assert out["pixel_values"].shape == (2, 3, 30, 50) and out["labels"].shape == (2, 30, 50)
    assert torch.equal(out["labels"][0], out["labels"][1])
    with pytest.raises(ValueError, match="2 images but 1 segmentation maps"):
        processor(images, segmentation_maps=[ids])


# ------------------------------------------------------------------------------------------- image modes


def _rgb(seed=RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (15, 25, 3), dtype=np.uint8)


def _raw(processor_input) -> torch.Tensor:
    """Pixel values in [0, 1] at the input size (no resize, no normalisation)."""
    processor = LarvSegImageProcessor(size={"height": 15, "width": 25}, size_divisor=1, do_normalize=False)
    return processor(processor_input)["pixel_values"][0]


def test_image_modes_convert_to_rgb():
    rgb = _rgb()
    reference = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    gray = rgb[..., 0]

    # L and I;16: grey in all three channels.
    for image, expected in [
        (Image.fromarray(gray), gray / 255),
        (Image.fromarray(gray.astype(np.uint16) * 257), gray / 255),  # 16-bit: full range 0..65535
    ]:
        values = _raw(image)
        for channel in range(3):
            torch.testing.assert_close(
                values[channel], torch.from_numpy(expected).float(), rtol=0, atol=1 / 255
            )
    assert Image.fromarray(gray.astype(np.uint16) * 257).mode == "I;16"

    # RGBA (opaque) and CHW float arrays equal the RGB image.
    torch.testing.assert_close(_raw(Image.fromarray(np.dstack([rgb, np.full_like(gray, 255)]))), reference)
    torch.testing.assert_close(_raw(rgb.transpose(2, 0, 1).astype(np.float32) / 255), reference)
    torch.testing.assert_close(
        _raw(torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255)), reference
    )

    # Transparent RGBA composites on white.
    transparent = _raw(Image.fromarray(np.dstack([rgb, np.zeros_like(gray)])))
    torch.testing.assert_close(transparent, torch.ones_like(reference))

    # P and CMYK go through PIL's own RGB conversion.
    palette = Image.fromarray(rgb).convert("P")
    torch.testing.assert_close(
        _raw(palette), torch.from_numpy(np.array(palette.convert("RGB"))).permute(2, 0, 1) / 255
    )
    cmyk = Image.fromarray(rgb).convert("CMYK")
    torch.testing.assert_close(
        _raw(cmyk), torch.from_numpy(np.array(cmyk.convert("RGB"))).permute(2, 0, 1) / 255
    )

    # Every mode gives normalised (1, 3, H, W) float32 at the processor's size.
    processor = LarvSegImageProcessor(size={"height": 24, "width": 40}, size_divisor=8)
    for image in [
        Image.fromarray(gray),
        palette,
        cmyk,
        Image.fromarray(gray.astype(np.uint16) * 257),
        rgb[..., 0],
    ]:
        values = processor(image)["pixel_values"]
        assert values.shape == (1, 3, 24, 40) and values.dtype == torch.float32


@pytest.mark.parametrize("shape", [(15, 25, 2), (2, 15, 25), (15, 25, 5), (1, 15, 25, 3)])
def test_unsupported_channel_counts_raise(shape):
    with pytest.raises(ValueError, match=r"Expected an image of shape .* with C in 1, 3, 4"):
        LarvSegImageProcessor()(np.zeros(shape, dtype=np.float32))


def test_unsupported_image_type_raises():
    with pytest.raises(TypeError, match="Unsupported image type"):
        LarvSegImageProcessor()("not an image")


def test_colour_label_maps_and_size_mismatches_raise():
    processor = LarvSegImageProcessor(size={"height": 16, "width": 24}, size_divisor=8)
    image = Image.fromarray(_rgb())
    with pytest.raises(ValueError, match=r"mode 'RGB'.*not a colour image"):
        processor(image, segmentation_maps=Image.fromarray(_rgb(1)))
    with pytest.raises(ValueError, match=r"must be 2-D \(height, width\)"):
        processor(image, segmentation_maps=_rgb(1))
    with pytest.raises(ValueError, match=r"Label map 0 is \(14, 25\) but its image is \(15, 25\)"):
        processor(image, segmentation_maps=np.zeros((14, 25), dtype=np.int64))
    with pytest.raises(ValueError, match="non-integer"):
        processor(image, segmentation_maps=np.full((15, 25), 0.5))


def test_mixed_sizes_with_shortest_edge_raise():
    processor = LarvSegImageProcessor(size={"shortest_edge": 32}, size_divisor=8)
    assert processor.output_size(15, 25) == (32, 56)
    with pytest.raises(ValueError, match="different sizes"):
        processor([np.zeros((15, 25, 3), np.uint8), np.zeros((25, 15, 3), np.uint8)])


def test_processor_save_and_reload(tmp_path):
    processor = LarvSegImageProcessor(
        size={"shortest_edge": 48}, size_divisor=8, ignore_index=-1, image_mean=[0.5] * 3
    )
    processor.save_pretrained(tmp_path)
    loaded = LarvSegImageProcessor.from_pretrained(tmp_path)
    assert loaded.size == {"shortest_edge": 48} and loaded.size_divisor == 8 and loaded.ignore_index == -1
    image = _rgb()
    assert torch.equal(loaded(image)["pixel_values"], processor(image)["pixel_values"])


# ------------------------------------------------------------------------------------------- sliding windows


def test_sliding_window_equal_to_image_is_a_plain_forward():
    model = make_model("vit", 5)
    pixels = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        expected = model(pixels)
    logits, class_ids = sliding_window_logits(model, pixels, (32, 48))
    assert torch.equal(logits, expected.logits) and torch.equal(class_ids, expected.class_ids)
    # A window larger than the image is clipped to it.
    logits, _ = sliding_window_logits(model, pixels, 64)
    assert torch.equal(logits, expected.logits)


def test_sliding_window_overlapping_shapes_and_class_ids():
    model = make_model("vit", 5)
    pixels = torch.randn(1, 3, 32, 48)
    logits, class_ids = sliding_window_logits(model, pixels, 32, 16)
    assert logits.shape == (1, 5, 4, 6) and class_ids.tolist() == list(range(5))
    assert torch.isfinite(logits).all()
    # Restricted classes pass through to every window.
    logits, class_ids = sliding_window_logits(model, pixels, 16, 8, class_ids=[4, 1])
    assert logits.shape == (1, 2, 4, 6) and class_ids.tolist() == [4, 1]
    # Non-overlapping windows: each window's logits land unchanged in place.
    logits, _ = sliding_window_logits(model, pixels, 16, 16)
    with torch.no_grad():
        corner = model(pixels[:, :, 16:32, 32:48]).logits
    assert torch.equal(logits[:, :, 2:4, 4:6], corner)


def test_sliding_window_resnet_backbone():
    model = make_model("resnet", 4)
    logits, _ = sliding_window_logits(model, torch.randn(1, 3, 64, 48), 32, 16)
    assert logits.shape == (1, 4, 8, 6)


@pytest.mark.parametrize(
    ("size", "window", "stride", "message"),
    [
        ((36, 48), 32, 16, r"image height 36 is not a multiple of the model's output stride 8"),
        ((32, 44), 32, 16, r"image width 44 is not a multiple of the model's output stride 8"),
        ((32, 48), 32, 12, r"sliding stride along the width puts windows at \[0, 12, 16\]"),
        ((64, 32), (32, 32), (20, 16), r"sliding stride along the height puts windows at \[0, 20, 32\]"),
    ],
)
def test_sliding_window_rejects_sides_not_multiple_of_the_stride(size, window, stride, message):
    model = make_model("vit", 3)
    with pytest.raises(ValueError, match=message):
        sliding_window_logits(model, torch.randn(1, 3, *size), window, stride)


# ------------------------------------------------------------------------------------------- call-time settings


def _photo(height: int = 40, width: int = 56) -> Image.Image:
    return Image.fromarray(np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"do_rescale": False, "do_normalize": False},
        {"do_normalize": False},
        {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.25, 2.0]},
        {"image_mean": 0.5, "image_std": 0.5},
        {"do_rescale": False, "image_mean": [100.0, 110.0, 120.0], "image_std": [50.0, 60.0, 70.0]},
    ],
)
def test_call_time_settings_match_segformer(kwargs):
    """Without resizing, rescale and normalise are the same arithmetic as SegFormer's processor, so it is
    an independent reference for how the call-time settings are honoured."""
    from transformers import SegformerImageProcessor

    image = _photo()
    ours = LarvSegImageProcessor(do_resize=False)(image, **kwargs)["pixel_values"]
    reference = SegformerImageProcessor(do_resize=False)(image, return_tensors="pt", **kwargs)["pixel_values"]
    torch.testing.assert_close(ours, reference.float(), rtol=1e-5, atol=1e-4)


def test_call_time_size_and_do_resize_override_the_configured_ones():
    processor = LarvSegImageProcessor(size={"height": 32, "width": 32}, size_divisor=8)
    image = _photo(40, 56)
    assert processor(image)["pixel_values"].shape[-2:] == (32, 32)
    assert processor(image, size={"height": 16, "width": 24})["pixel_values"].shape[-2:] == (16, 24)
    assert processor(image, size=48)["pixel_values"].shape[-2:] == (48, 48)
    assert processor(image, size={"shortest_edge": 16})["pixel_values"].shape[-2:] == (16, 24)
    assert processor(image, do_resize=False)["pixel_values"].shape[-2:] == (40, 56)
    assert processor(image, size={"height": 30, "width": 30}, size_divisor=10)["pixel_values"].shape[-2:] == (
        30,
        30,
    )
    # A call never changes the processor.
    assert (
        processor.size == {"height": 32, "width": 32} and processor.do_resize and processor.size_divisor == 8
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"resample": 2}, TypeError, r"unknown argument\(s\) \['resample'\]"),
        ({"do_reduce_labels": True, "foo": 1}, TypeError, r"\['do_reduce_labels', 'foo'\]"),
        ({"size": {"h": 3}}, ValueError, r"size must be an int"),
        ({"size": -4}, ValueError, r"size must be an int"),
        ({"image_mean": [0.5, 0.5]}, ValueError, r"image_mean needs one value or three"),
        ({"image_std": [1.0, 0.0, 1.0]}, ValueError, r"image_std must be positive"),
    ],
)
def test_unknown_or_invalid_call_time_settings_are_rejected(kwargs, error, message):
    with pytest.raises(error, match=message):
        LarvSegImageProcessor()(_photo(), **kwargs)
