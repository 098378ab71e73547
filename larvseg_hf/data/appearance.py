# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Appearance augmentations for the built-in benchmark's TRAINING scenes.

Why: trained on the default scenes, the model learned the one Twemoji artwork style (and the 15 background
photographs) rather than the categories: each emoji always had the same colours, line weight and sharpness.
These functions vary the appearance of each pasted emoji and of the composited scene so that what stays
constant, and so what is learned, is the category. Pure numpy/PIL, every draw from the passed
``numpy.random.Generator`` (deterministic), no Python loops over pixels.

``augment_sprite`` (premultiplied uint8 (h, w, 4) RGBa in, same format out; each effect independently, in
this order, with the probability and range of the module constants below):

* a small hue rotation (``P_HUE``, ``HUE_RANGE_DEG``: many emoji are named by their colour, so colour
  identity is kept), never near 120/240 degrees (``HUE_EXCLUDE_DEG``);
* saturation and brightness (value) scaling (``P_SAT_VAL``, ``SATURATION_RANGE``, ``VALUE_RANGE``);
* colour cast, a per-channel gain (``P_CAST``, ``CAST_GAIN_RANGE``);
* posterisation to 3-6 levels per channel (``P_POSTERIZE``, ``POSTERIZE_LEVELS``);
* outline thickening by 1-2 px, dark or random colour (``P_THICKEN``, ``THICKEN_WIDTHS``, ``P_DARK_OUTLINE``),
  or else thinning by eroding alpha 1 px (``P_THIN``);
* aspect change, width or height by 0.75-1.33 (``P_STRETCH``, ``STRETCH_RANGE``);
* blur of colours and alpha together (``P_BLUR``, ``BLUR_RADIUS_RANGE``);
* partial transparency, alpha scaled by 0.6-0.95 (``P_FADE``, ``FADE_RANGE``; >= ``MIN_FADE`` so a fully
  opaque pixel stays above the mask threshold 128).

Colour changes work on straight (un-premultiplied) colours and re-premultiply; geometric changes (thicken,
thin, stretch, blur) apply to colours and alpha alike, so the output alpha (which defines the mask
downstream, alpha >= 128) matches the drawing. Thickening and stretching change the sprite's shape.

``augment_scene`` (float32 (S, S, 3) in [0, 255], same out) is photometric only, so masks are unchanged: blur
(``P_SCENE_BLUR``), Gaussian noise (``P_NOISE``), JPEG re-encoding (``P_JPEG``), posterisation
(``P_SCENE_POSTERIZE``).

RESERVED styles, owned by ``larvseg_hf/data/shift_scenes.py`` (the held-out ``eval_shift`` split), must
never be produced here: pixelation, ordered or error-diffusion dithering, watercolour flattening, inked
inner edges, emboss / relief shading; nor channel permutations (they would swap colour-named emoji). Hence
the hue angle avoids 120/240 degrees
(HSV rotations by those are exact channel permutations).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from .transforms import hsv_to_rgb, rgb_to_hsv

# sprite effects: probability, then range
P_HUE = 0.5
HUE_RANGE_DEG = (-15.0, 15.0)  # small: many emoji are named by their colour (red / blue heart)
HUE_EXCLUDE_DEG = 15.0  # no angle within this of 120 or 240 (near palette swaps, a reserved style)
P_SAT_VAL = 0.5
SATURATION_RANGE = (0.7, 1.3)
VALUE_RANGE = (0.8, 1.15)
P_CAST = 0.3
CAST_GAIN_RANGE = (0.9, 1.1)
P_POSTERIZE = 0.15
POSTERIZE_LEVELS = (3, 6)  # inclusive
P_THICKEN = 0.25
THICKEN_WIDTHS = (1, 2)  # px, inclusive
P_DARK_OUTLINE = 0.7  # else a random outline colour
DARK_OUTLINE_MAX = 60  # dark outline: each channel in [0, this]
P_THIN = 0.15  # when not thickened
P_STRETCH = 0.3
STRETCH_RANGE = (0.75, 1.33)
P_BLUR = 0.2
BLUR_RADIUS_RANGE = (0.5, 1.5)
P_FADE = 0.2
FADE_RANGE = (0.6, 0.95)
MIN_FADE = 0.55  # 255 * 0.55 > 128: opaque interiors stay in the mask
# scene effects
P_SCENE_BLUR = 0.2
SCENE_BLUR_RADIUS_RANGE = (0.3, 1.2)
P_NOISE = 0.3
NOISE_SIGMA_RANGE = (2.0, 10.0)
P_JPEG = 0.3
JPEG_QUALITY_RANGE = (30, 90)  # inclusive
P_SCENE_POSTERIZE = 0.1
SCENE_POSTERIZE_LEVELS = (4, 6)  # inclusive


# --------------------------------------------------------------------------- premultiplied helpers


def straight_colours(sprite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Straight colours (float, [0, 255]) and alpha (float, [0, 255]) of a premultiplied sprite; with
    `premultiplied`, the one conversion every sprite restyling (here and in shift_scenes.py) goes through."""
    a = sprite[..., 3].astype(np.float32)
    rgb = sprite[..., :3].astype(np.float32) * (255.0 / np.maximum(a, 1.0))[..., None]
    return np.clip(rgb, 0.0, 255.0), a


def premultiplied(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Premultiplied uint8 sprite; colour is clamped to alpha so the invariant holds after rounding."""
    a = np.clip(np.rint(alpha), 0, 255)
    c = np.rint(np.clip(rgb, 0.0, 255.0) * (a / 255.0)[..., None])
    return np.concatenate([np.minimum(c, a[..., None]), a[..., None]], axis=-1).astype(np.uint8)


def _clamp(sprite: np.ndarray) -> np.ndarray:
    """Enforce colour <= alpha (resampling and rounding can overshoot by one)."""
    out = sprite.copy()
    out[..., :3] = np.minimum(out[..., :3], out[..., 3:4])
    return out


def _per_channel(arr: np.ndarray, op: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    """Apply one PIL op to every channel (as "L" images): the same geometry for colours and alpha."""
    return np.stack([np.asarray(op(Image.fromarray(arr[..., k]))) for k in range(arr.shape[-1])], axis=-1)


# --------------------------------------------------------------------------- sprite effects


def hue_rotate(sprite: np.ndarray, degrees: float, saturation: float = 1.0, value: float = 1.0) -> np.ndarray:
    """Rotate hue (HSV) and scale saturation/brightness of the straight colours: new colours, same shape."""
    rgb, a = straight_colours(sprite)
    h, s, v = np.moveaxis(rgb_to_hsv(rgb / 255.0), -1, 0)
    out = hsv_to_rgb(
        np.stack([h + degrees / 360.0, np.clip(s * saturation, 0, 1), np.clip(v * value, 0, 1)], -1)
    )
    return premultiplied(out * 255.0, a)


def colour_cast(sprite: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Per-channel gain on the straight colours (a tint, as another palette or white balance gives)."""
    rgb, a = straight_colours(sprite)
    return premultiplied(rgb * np.asarray(gains, np.float32), a)


def posterize(sprite: np.ndarray, levels: int) -> np.ndarray:
    """Quantise the straight colours to ``levels`` per channel (flat-colour artwork), no dithering."""
    rgb, a = straight_colours(sprite)
    step = 255.0 / (levels - 1)
    return premultiplied(np.rint(rgb / step) * step, a)


def thicken_outline(sprite: np.ndarray, width: int, colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Heavier line weight: alpha dilated by ``width`` px (sprite padded by it), ring filled with ``colour``."""
    padded = np.pad(sprite, ((width, width), (width, width), (0, 0)))
    art = padded.astype(np.float32) / 255.0
    ring = np.asarray(Image.fromarray(padded[..., 3]).filter(ImageFilter.MaxFilter(2 * width + 1)))
    ring = ring.astype(np.float32) / 255.0
    under = 1.0 - art[..., 3:4]  # the artwork is composited over an outline layer of alpha ``ring``
    c = art[..., :3] + (np.asarray(colour, np.float32) / 255.0) * ring[..., None] * under
    alpha = art[..., 3:4] + ring[..., None] * under
    return _clamp(np.rint(np.concatenate([c, alpha], -1) * 255.0).clip(0, 255).astype(np.uint8))


def thin_outline(sprite: np.ndarray) -> np.ndarray:
    """Lighter line weight: alpha eroded by 1 px, straight colours kept."""
    rgb, _ = straight_colours(sprite)
    eroded = np.asarray(Image.fromarray(sprite[..., 3]).filter(ImageFilter.MinFilter(3)))
    return premultiplied(rgb, eroded.astype(np.float32))


def stretch(sprite: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """Change the aspect ratio: width by ``fx``, height by ``fy`` (colours and alpha resampled alike)."""
    h, w = sprite.shape[:2]
    size = (max(1, round(w * fx)), max(1, round(h * fy)))
    return _clamp(_per_channel(sprite, lambda im: im.resize(size, Image.Resampling.BILINEAR)))


def blur_sprite(sprite: np.ndarray, radius: float) -> np.ndarray:
    """Soft artwork: Gaussian blur of premultiplied colours and alpha together (correct for premultiplied)."""
    return _clamp(_per_channel(sprite, lambda im: im.filter(ImageFilter.GaussianBlur(radius))))


def fade(sprite: np.ndarray, scale: float) -> np.ndarray:
    """Partial transparency: alpha (and premultiplied colour) scaled by ``scale`` >= ``MIN_FADE``."""
    if scale < MIN_FADE:
        raise ValueError(f"fade scale {scale} < {MIN_FADE} would drop opaque pixels out of the mask")
    return _clamp(np.rint(sprite.astype(np.float32) * scale).astype(np.uint8))


def _hue_angle(rng: np.random.Generator) -> float:
    """Uniform over ``HUE_RANGE_DEG``, never within ``HUE_EXCLUDE_DEG`` of 120 / 240 degrees (palette swaps)."""
    return float(rng.uniform(*HUE_RANGE_DEG)) % 360.0


def augment_sprite(sprite: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random appearance of one emoji's artwork (premultiplied uint8 (h, w, 4) in and out)."""
    p = [P_HUE, P_SAT_VAL, P_CAST, P_POSTERIZE, P_THICKEN, P_THIN, P_STRETCH, P_BLUR, P_FADE]
    hue, satval, cast, post, thick, thin, strt, blur, fad = rng.random(len(p)) < np.array(p)
    out = sprite
    if hue or satval:
        sat = float(rng.uniform(*SATURATION_RANGE)) if satval else 1.0
        val = float(rng.uniform(*VALUE_RANGE)) if satval else 1.0
        out = hue_rotate(out, _hue_angle(rng) if hue else 0.0, sat, val)
    if cast:
        out = colour_cast(out, rng.uniform(*CAST_GAIN_RANGE, size=3))
    if post:
        out = posterize(out, int(rng.integers(POSTERIZE_LEVELS[0], POSTERIZE_LEVELS[1] + 1)))
    if thick:
        width = int(rng.integers(THICKEN_WIDTHS[0], THICKEN_WIDTHS[1] + 1))
        top = DARK_OUTLINE_MAX if rng.random() < P_DARK_OUTLINE else 255
        out = thicken_outline(out, width, tuple(int(c) for c in rng.integers(0, top + 1, size=3)))
    elif thin:
        out = thin_outline(out)
    if strt:
        factor = float(np.exp(rng.uniform(np.log(STRETCH_RANGE[0]), np.log(STRETCH_RANGE[1]))))
        out = stretch(out, factor, 1.0) if rng.random() < 0.5 else stretch(out, 1.0, factor)
    if blur:
        out = blur_sprite(out, float(rng.uniform(*BLUR_RADIUS_RANGE)))
    if fad:
        out = fade(out, float(rng.uniform(*FADE_RANGE)))
    return out


# --------------------------------------------------------------------------- scene effects (photometric only)


def _to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))


def blur_scene(image: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of the whole scene (camera defocus)."""
    return np.asarray(_to_pil(image).filter(ImageFilter.GaussianBlur(radius)), np.float32)


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian pixel noise (sensor noise)."""
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.float32)


def jpeg_recompress(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG re-encoding in memory (compression artefacts, as user pictures have)."""
    buf = io.BytesIO()
    _to_pil(image).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32)


def posterize_scene(image: np.ndarray, levels: int) -> np.ndarray:
    """Quantise the scene to ``levels`` per channel, no dithering."""
    step = 255.0 / (levels - 1)
    return (np.rint(np.clip(image, 0, 255) / step) * step).astype(np.float32)


def augment_scene(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random photometric change of a composited scene (float32 (S, S, 3) in [0, 255]); masks unchanged."""
    p = [P_SCENE_BLUR, P_NOISE, P_JPEG, P_SCENE_POSTERIZE]
    blur, noise, jpeg, post = rng.random(len(p)) < np.array(p)
    out = np.asarray(image, np.float32)
    if blur:
        out = blur_scene(out, float(rng.uniform(*SCENE_BLUR_RADIUS_RANGE)))
    if noise:
        out = add_noise(out, float(rng.uniform(*NOISE_SIGMA_RANGE)), rng)
    if jpeg:
        out = jpeg_recompress(out, int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1)))
    if post:
        out = posterize_scene(
            out, int(rng.integers(SCENE_POSTERIZE_LEVELS[0], SCENE_POSTERIZE_LEVELS[1] + 1))
        )
    return out.astype(np.float32, copy=False)
