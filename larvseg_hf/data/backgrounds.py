# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Procedurally generated backgrounds for the training scenes of the built-in benchmark.

Fifteen photographs seen thousands of times are memorised (the default model scored far lower on other
photographs); 30% of the training scenes are therefore drawn on a background made here, new at every
scene: colour gradients, fractal noise textures, stripes and checks, clutter of random shapes and
blurred colour noise. Each comes from the scene's own numpy Generator, so the benchmark stays deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: Share of training scenes drawn on a procedural background instead of a photograph crop.
PROCEDURAL_FRACTION = 0.3


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random RGB colours (float32, 0-255), from dull to vivid."""
    return rng.uniform(0.0, 255.0, size=(n, 3)).astype(np.float32)


def _ramp(values: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (S, S) through a piecewise-linear palette of colours (k, 3)."""
    stops = np.linspace(0.0, 1.0, len(colours))
    return np.stack([np.interp(values, stops, colours[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear (any angle) or radial gradient through 2-3 colours."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    if rng.random() < 0.5:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        values = x * np.cos(angle) + y * np.sin(angle)
    else:
        cy, cx = rng.uniform(0.0, 1.0, size=2)
        values = np.hypot(x - cx, y - cy)
    values = (values - values.min()) / max(float(np.ptp(values)), 1e-6)
    return _ramp(values, _colours(rng, int(rng.integers(2, 4))))


def fractal_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Value noise summed over octaves (clouds, stone, bark-like textures) through a random palette."""
    total = np.zeros((size, size), np.float32)
    weight = 1.0
    persistence = rng.uniform(0.4, 0.7)
    for cells in (2, 4, 8, 16, 32)[: int(rng.integers(3, 6))]:
        grid = Image.fromarray(rng.random((cells, cells)).astype(np.float32), "F")
        total += weight * np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC))
        weight *= persistence
    total = (total - total.min()) / max(float(np.ptp(total)), 1e-6)
    return _ramp(total, _colours(rng, int(rng.integers(2, 5))))


def stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Stripes at any angle, or checks, of 2-3 colours with a random period."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(4.0, size / 3.0)
    angle = rng.uniform(0.0, np.pi)
    u = (x * np.cos(angle) + y * np.sin(angle)) / period
    colours = _colours(rng, int(rng.integers(2, 4)))
    if rng.random() < 0.35:  # checks
        v = (-x * np.sin(angle) + y * np.cos(angle)) / period
        index = (np.floor(u) + np.floor(v)).astype(np.int64) % len(colours)
    else:
        index = np.floor(u).astype(np.int64) % len(colours)
    return colours[index]


def clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random rectangles, ellipses and lines over a flat or gradient ground: a busy, object-like scene."""
    ground = (
        gradient(rng, size) if rng.random() < 0.5 else np.broadcast_to(_colours(rng, 1)[0], (size, size, 3))
    )
    canvas = Image.fromarray(np.rint(ground).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(8, 40))):
        x0, y0 = rng.uniform(-0.2, 1.0, size=2) * size
        w, h = rng.uniform(0.03, 0.4, size=2) * size
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        kind = rng.random()
        box = (float(x0), float(y0), float(x0 + w), float(y0 + h))
        if kind < 0.4:
            draw.rectangle(box, fill=colour)
        elif kind < 0.8:
            draw.ellipse(box, fill=colour)
        else:
            draw.line(box, fill=colour, width=int(rng.integers(1, max(2, size // 16))))
    radius = float(rng.uniform(0.0, 1.5))
    if radius > 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(canvas, dtype=np.float32)


def colour_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blurred random colour noise: no structure at all, only colour and grain."""
    grain = rng.uniform(0.0, 255.0, size=(size, size, 3)).astype(np.uint8)
    radius = float(rng.uniform(0.5, size / 16.0))
    blurred = np.asarray(Image.fromarray(grain).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
    # Blurring averages towards grey: restore contrast around a random base colour.
    spread = (blurred - blurred.mean((0, 1))) / np.maximum(blurred.std((0, 1)), 1e-3)
    return _colours(rng, 1)[0] + spread * rng.uniform(20.0, 60.0)


GENERATORS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "gradient": gradient,
    "fractal_noise": fractal_noise,
    "stripes": stripes,
    "clutter": clutter,
    "colour_noise": colour_noise,
}


def procedural_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """One background of a kind drawn uniformly from `GENERATORS`: float32 (size, size, 3) in [0, 255]."""
    kinds = list(GENERATORS.values())
    image = kinds[int(rng.integers(len(kinds)))](rng, size)
    return np.clip(np.ascontiguousarray(image, dtype=np.float32), 0.0, 255.0)


__all__ = ["GENERATORS", "PROCEDURAL_FRACTION", "procedural_background"]
