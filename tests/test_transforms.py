"""Augmentations keep mask ids exact, move image and mask together, and are seedable."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from transformers.image_utils import IMAGENET_DEFAULT_STD as IMAGENET_STD

from larvseg_hf.data.transforms import (
    EvalTransform,
    TrainTransform,
    hsv_to_rgb,
    normalize,
    photometric_distortion,
    random_crop,
    random_flip,
    random_rescale,
    rescaled_size,
    rgb_to_hsv,
)
from larvseg_hf.image_utils_larvseg import resize_labels_nearest as resize_mask


def blocky(h: int = 24, w: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image whose red channel encodes the mask (id 4000 -> red 255) in 8x8 blocks."""
    rng = np.random.default_rng(seed)
    ids = np.array([3, 300, 4000, 70000], dtype=np.int64)
    mask = np.kron(rng.choice(ids, (h // 8, w // 8)), np.ones((8, 8), dtype=np.int64))
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.where(mask == 4000, 255, 0)
    image[..., 1] = rng.integers(0, 256, (h, w))
    return image, mask


def unnormalize(pv: torch.Tensor) -> np.ndarray:
    mean = np.asarray(IMAGENET_MEAN)[:, None, None]
    std = np.asarray(IMAGENET_STD)[:, None, None]
    return ((pv.numpy() * std + mean) * 255).transpose(1, 2, 0)


def test_resize_mask_copies_ids_exactly():
    mask = np.arange(12, dtype=np.int64).reshape(3, 4) * 10007  # ids far above 255 and 65535
    up = resize_mask(mask, (6, 8))
    assert (up == np.kron(mask, np.ones((2, 2), dtype=np.int64))).all()
    down = resize_mask(up, (3, 4))
    assert (down == mask).all()
    odd = resize_mask(mask, (5, 7))
    assert set(np.unique(odd)) <= set(np.unique(mask)) and odd.dtype == np.int64


def test_rescale_ratio_and_mmseg_scale():
    assert rescaled_size(100, 200, 0.5) == (50, 100)
    assert rescaled_size(100, 400, 1.0, scale=(2048, 512)) == (512, 2048)
    assert rescaled_size(400, 400, 0.5, scale=(2048, 512)) == (256, 256)
    rng = np.random.default_rng(0)
    image, mask = blocky()
    sizes = set()
    for _ in range(20):
        im, m = random_rescale(image, mask, rng, (0.5, 2.0))
        assert im.shape[:2] == m.shape and 12 <= m.shape[0] <= 48
        assert set(np.unique(m)) <= set(np.unique(mask))
        sizes.add(m.shape)
    assert len(sizes) > 5


def test_rescale_keeps_image_and_mask_aligned():
    image, mask = blocky()
    im, m = random_rescale(image, mask, np.random.default_rng(1), (2.0, 2.0))
    assert m.shape == (48, 64)
    inner = np.ones_like(m, dtype=bool)  # away from block edges bilinear equals the block value
    edge = np.zeros_like(m, dtype=bool)
    edge[:, 1:] |= m[:, 1:] != m[:, :-1]
    edge[1:, :] |= m[1:, :] != m[:-1, :]
    inner &= ~np.logical_or.reduce([np.roll(edge, s, a) for s in (-1, 0, 1) for a in (0, 1)])
    assert ((im[..., 0] > 127) == (m == 4000))[inner].all()


def test_train_transform_ids_subset_and_pad_with_ignore():
    image, mask = blocky()
    before = set(np.unique(mask).tolist())
    t = TrainTransform(crop_size=20)
    small = TrainTransform(crop_size=64, ratio_range=(0.5, 0.5))  # 12x16 image into a 64 crop
    for seed in range(15):
        pv, labels = t(image, mask, np.random.default_rng(seed))
        assert pv.shape == (3, 20, 20) and pv.dtype == torch.float32
        assert labels.shape == (20, 20) and labels.dtype == torch.int64
        assert set(np.unique(labels.numpy()).tolist()) <= before | {-100}
    pv, labels = small(image, mask, np.random.default_rng(0))
    assert pv.shape == (3, 64, 64) and (labels[12:] == -100).all() and (labels[:, 16:] == -100).all()
    assert (labels[:12, :16] != -100).all() and (pv[:, 12:] == 0).all()
    pv, labels = TrainTransform(crop_size=30, ignore_index=255)(image, None, np.random.default_rng(0))
    assert labels is None and pv.shape == (3, 30, 30)


def test_flip_moves_image_and_mask_together():
    image, mask = blocky()
    flipped_im, flipped_m = random_flip(image, mask, np.random.default_rng(0), prob=1.0)
    assert (flipped_m == mask[:, ::-1]).all() and (flipped_im == image[:, ::-1]).all()
    t = TrainTransform(crop_size=(24, 32), ratio_range=(1.0, 1.0), flip_prob=0.5, photometric=False)
    outcomes = set()
    for seed in range(12):
        pv, labels = t(image, mask, np.random.default_rng(seed))
        red = unnormalize(pv)[..., 0] > 127
        assert (red == (labels.numpy() == 4000)).all()
        if (labels.numpy() == mask).all():
            outcomes.add("kept")
        elif (labels.numpy() == mask[:, ::-1]).all():
            outcomes.add("flipped")
    assert outcomes == {"kept", "flipped"}


def test_crop_cat_max_ratio_prefers_mixed_crops():
    mask = np.zeros((40, 40), dtype=np.int64)
    mask[:, 30:] = 5
    image = np.zeros((40, 40, 3), np.uint8)
    hits = 0
    for seed in range(20):
        _, m = random_crop(image, mask, 12, np.random.default_rng(seed), cat_max_ratio=0.75)
        hits += len(np.unique(m)) > 1
    assert hits >= 15


def test_hsv_round_trip_matches_colorsys():
    rgb = np.random.default_rng(0).random((50, 3))
    hsv = rgb_to_hsv(rgb)
    ref = np.array([colorsys.rgb_to_hsv(*px) for px in rgb])
    assert np.allclose(hsv, ref, atol=1e-6)
    assert np.allclose(hsv_to_rgb(hsv), rgb, atol=1e-6)


def test_photometric_distortion_range_and_seed():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    outs = [photometric_distortion(image, np.random.default_rng(s)) for s in range(8)]
    assert all(
        o.dtype == np.float32 and o.shape == image.shape and o.min() >= 0 and o.max() <= 255 for o in outs
    )
    assert sum(not np.allclose(o, image) for o in outs) >= 5
    again = photometric_distortion(image, np.random.default_rng(3))
    assert np.array_equal(again, outs[3])


def test_normalize_values_and_layout():
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 1] = 255
    pv = normalize(image, IMAGENET_MEAN, IMAGENET_STD)
    assert pv.shape == (3, 2, 3)
    assert torch.allclose(pv[0], torch.tensor(-IMAGENET_MEAN[0] / IMAGENET_STD[0]))
    assert torch.allclose(pv[1], torch.tensor((1 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]))


def test_train_transform_is_seedable():
    image, mask = blocky()
    t = TrainTransform(crop_size=16)
    a = t(image, mask, np.random.default_rng(7))
    b = t(image, mask, np.random.default_rng(7))
    c = t(image, mask, np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("resize_mask_flag", [False, True])
def test_eval_transform(resize_mask_flag):
    image, mask = blocky(24, 32)
    pv, labels = EvalTransform(short_side=12, resize_mask=resize_mask_flag)(image, mask)
    assert pv.shape == (3, 12, 16)
    if resize_mask_flag:
        assert labels.shape == (12, 16) and set(labels.unique().tolist()) <= set(np.unique(mask).tolist())
    else:
        assert torch.equal(labels, torch.from_numpy(mask))
    pv, _ = EvalTransform(size=(10, 20))(image)
    assert pv.shape == (3, 10, 20)
