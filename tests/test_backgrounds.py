"""Procedural backgrounds of the training scenes: deterministic, in range, varied."""

from __future__ import annotations

import numpy as np
import pytest

from larvseg_hf.data.backgrounds import GENERATORS, procedural_background


@pytest.mark.parametrize("kind", list(GENERATORS))
def test_each_kind_is_deterministic_in_range_and_not_flat(kind):
    make = GENERATORS[kind]
    first = make(np.random.default_rng(3), 48)
    assert first.shape == (48, 48, 3)
    assert np.array_equal(first, make(np.random.default_rng(3), 48))
    assert not np.array_equal(first, make(np.random.default_rng(4), 48))
    clipped = procedural_background(np.random.default_rng(3), 48)
    assert clipped.dtype == np.float32 and clipped.min() >= 0 and clipped.max() <= 255


def test_backgrounds_differ_from_scene_to_scene():
    images = [procedural_background(np.random.default_rng(seed), 32) for seed in range(40)]
    means = np.array([image.mean((0, 1)) for image in images])
    assert means.std(0).min() > 15  # colours spread widely, not one look
    spatial = np.array([image.std((0, 1)).mean() for image in images])
    assert (spatial > 5).mean() > 0.5  # most have structure, not a flat fill
