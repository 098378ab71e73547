# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Tests for the training-scene appearance augmentations (larvseg_hf.data.appearance)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from larvseg_hf.data import appearance as ap


def _solid(size: int = 40, pad: int = 6, colour: tuple[int, int, int] = (200, 40, 40)) -> np.ndarray:
    """A premultiplied sprite: an opaque square of one colour inside a transparent border."""
    s = np.zeros((size, size, 4), np.uint8)
    s[pad:-pad, pad:-pad, :3] = colour
    s[pad:-pad, pad:-pad, 3] = 255
    return s


def _multicolour(size: int = 48) -> np.ndarray:
    """Four coloured quadrants, an anti-aliased (half-alpha) border, a transparent margin."""
    s = np.zeros((size, size, 4), np.uint8)
    h = size // 2
    for (y, x), c in zip(
        itertools.product((0, h), (0, h)),
        [(230, 30, 30), (30, 200, 60), (40, 60, 220), (240, 200, 20)],
        strict=True,
    ):
        s[y : y + h, x : x + h, :3] = c
        s[y : y + h, x : x + h, 3] = 255
    s[:4], s[-4:], s[:, :4], s[:, -4:] = 0, 0, 0, 0
    s[4, 4:-4, 3] = 128
    s[4, 4:-4, :3] = s[5, 4:-4, :3] // 2
    return s


def _mask(sprite: np.ndarray) -> np.ndarray:
    return sprite[..., 3] >= 128


def _check_sprite(out: np.ndarray) -> None:
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 4
    assert (out[..., :3] <= out[..., 3:4]).all(), "premultiplied colour exceeds alpha"


def test_augment_sprite_deterministic() -> None:
    s = _multicolour()
    a = ap.augment_sprite(s, np.random.default_rng(3))
    b = ap.augment_sprite(s, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    outs = [ap.augment_sprite(s, np.random.default_rng(seed)) for seed in range(10)]
    assert any(o.shape != a.shape or not np.array_equal(o, a) for o in outs[1:])
    assert len({o.tobytes() + bytes(o.shape) for o in outs}) > 5


def test_augment_sprite_invariants_over_seeds() -> None:
    s = _multicolour()
    changed = 0
    for seed in range(200):
        out = ap.augment_sprite(s, np.random.default_rng(seed))
        _check_sprite(out)
        changed += out.shape != s.shape or not np.array_equal(out, s)
        # the sprite's mask survives: most of it remains, shapes stay within the documented growth
        assert _mask(out).sum() >= 0.5 * _mask(s).sum()
        assert max(out.shape[:2]) <= round(s.shape[0] * ap.STRETCH_RANGE[1]) + 2 * ap.THICKEN_WIDTHS[1]
    assert changed > 150


def test_augment_sprite_never_permutes_channels() -> None:
    """Channel permutations would swap colour-named emoji (red / blue heart): never produced."""
    s = _multicolour()
    perms = [p for p in itertools.permutations(range(3)) if p != (0, 1, 2)]
    for seed in range(50):
        out = ap.augment_sprite(s, np.random.default_rng(seed))
        for p in perms:
            swapped = s[..., list(p) + [3]]
            assert out.shape != swapped.shape or not np.array_equal(out, swapped), (seed, p)
    angles = np.array([ap._hue_angle(np.random.default_rng(i)) for i in range(2000)])
    for centre in (120.0, 240.0):
        assert (np.abs(angles - centre) >= ap.HUE_EXCLUDE_DEG).all()
    assert angles.min() >= 0 and angles.max() < 360 and np.ptp(angles) > 300


def test_hue_rotate_identity_and_half_turn() -> None:
    s = _multicolour()
    same = ap.hue_rotate(s, 0.0)
    assert np.abs(same.astype(int) - s.astype(int)).max() <= 1
    red = _solid(colour=(255, 0, 0))
    cyan = ap.hue_rotate(red, 180.0)
    _check_sprite(cyan)
    px = cyan[20, 20].astype(int)
    assert px[0] < 30 and px[1] > 220 and px[2] > 220 and px[3] == 255
    np.testing.assert_array_equal(cyan[..., 3], red[..., 3])
    dull = ap.hue_rotate(red, 0.0, saturation=0.5, value=0.8)
    assert dull[20, 20, 0] < 255 and dull[20, 20, 1] > 0


@pytest.mark.parametrize(
    "effect",
    [
        lambda s: ap.hue_rotate(s, 77.0, 1.3, 0.8),
        lambda s: ap.colour_cast(s, np.array([1.2, 0.8, 1.0])),
        lambda s: ap.posterize(s, 3),
        lambda s: ap.blur_sprite(s, 1.5),
        lambda s: ap.fade(s, 0.6),
    ],
    ids=["hue", "cast", "posterize", "blur", "fade"],
)
def test_non_geometric_effects_keep_mask(effect) -> None:
    s = _solid()
    out = effect(s)
    _check_sprite(out)
    assert out.shape == s.shape
    diff = (_mask(out) != _mask(s)).sum()
    assert diff <= 8, diff  # blur may round off the four corners only


def test_posterize_levels() -> None:
    s = _multicolour()
    out = ap.posterize(s, 3)
    opaque = out[..., 3] == 255
    assert set(np.unique(out[opaque][:, :3])) <= {0, 128, 255}


def test_fade_keeps_opaque_in_mask_and_rejects_low_scale() -> None:
    s = _solid()
    out = ap.fade(s, ap.MIN_FADE)
    np.testing.assert_array_equal(_mask(out), _mask(s))
    with pytest.raises(ValueError):
        ap.fade(s, 0.5)


@pytest.mark.parametrize("width", [1, 2])
def test_thicken_outline_grows_mask_by_width(width: int) -> None:
    s = _solid(pad=6)
    out = ap.thicken_outline(s, width, (10, 20, 30))
    _check_sprite(out)
    assert out.shape == (s.shape[0] + 2 * width, s.shape[1] + 2 * width, 4)
    side = s.shape[0] - 12
    assert _mask(out).sum() == (side + 2 * width) ** 2
    # the original artwork is untouched (shifted by the padding); the ring has the outline colour
    np.testing.assert_array_equal(out[width:-width, width:-width][_mask(s)], s[_mask(s)])
    np.testing.assert_array_equal(out[6, 6 + width], [10, 20, 30, 255])


def test_thin_outline_erodes_mask_by_one() -> None:
    s = _solid(pad=6)
    out = ap.thin_outline(s)
    _check_sprite(out)
    side = s.shape[0] - 12
    assert out.shape == s.shape and _mask(out).sum() == (side - 2) ** 2
    np.testing.assert_array_equal(out[20, 20], s[20, 20])


def test_stretch_changes_aspect_consistently() -> None:
    s = _solid(size=40, pad=8)
    out = ap.stretch(s, 1.25, 1.0)
    _check_sprite(out)
    assert out.shape == (40, 50, 4)
    m = _mask(out)
    cols = np.flatnonzero(m.any(0))
    rows = np.flatnonzero(m.any(1))
    assert abs(len(cols) - 30) <= 1 and abs(len(rows) - 24) <= 1
    # colours follow alpha: every masked pixel keeps the artwork's straight colour
    straight = out[m][:, :3] * 255.0 / out[m][:, 3:4]
    assert (np.abs(straight - [200, 40, 40]) <= 3).all()


def test_augment_scene() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (64, 64, 3)).astype(np.float32)
    a = ap.augment_scene(image, np.random.default_rng(5))
    np.testing.assert_array_equal(a, ap.augment_scene(image, np.random.default_rng(5)))
    changed = 0
    for seed in range(40):
        out = ap.augment_scene(image, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.shape == image.shape
        assert out.min() >= 0 and out.max() <= 255
        changed += not np.array_equal(out, image)
    assert changed >= 15
    for out in (
        ap.blur_scene(image, 1.0),
        ap.add_noise(image, 5.0, np.random.default_rng(1)),
        ap.jpeg_recompress(image, 30),
        ap.posterize_scene(image, 4),
    ):
        assert out.dtype == np.float32 and out.shape == image.shape
        assert out.min() >= 0 and out.max() <= 255 and np.abs(out - image).mean() > 1.0
