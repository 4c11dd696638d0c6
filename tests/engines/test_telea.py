"""The telea engine: fills only the hole, deterministically, and does change the hole."""

from __future__ import annotations

import numpy as np

from fillframe.engines.base import FillJob
from fillframe.engines.telea import TeleaEngine
from fillframe.settings import Settings
from tests.utils.images import box_mask, photo


def run(rgb: np.ndarray, mask: np.ndarray, seed: int = 1) -> np.ndarray:
    engine = TeleaEngine(Settings())
    seen: list[int] = []
    out = engine.fill(FillJob(rgb=rgb, mask=mask, prompt="", seed=seed), seen.append, lambda: False).rgb
    assert seen == [100]
    return out


def test_fills_the_hole_only_and_deterministically() -> None:
    rgb = photo("astronaut", (256, 256))
    mask = box_mask(256, 256, 0.05)
    out = run(rgb, mask)
    keep = mask == 0
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.array_equal(out[keep], rgb[keep])
    assert np.abs(out[~keep].astype(int) - rgb[~keep]).mean() > 5
    assert np.array_equal(out, run(rgb, mask, seed=2))


def test_hole_at_the_border_and_empty_mask() -> None:
    rgb = photo("coffee", (120, 80))
    mask = np.zeros((80, 120), np.uint8)
    assert np.array_equal(run(rgb, mask), rgb)
    mask[:10, :30] = 255
    out = run(rgb, mask)
    assert np.array_equal(out[mask == 0], rgb[mask == 0])
