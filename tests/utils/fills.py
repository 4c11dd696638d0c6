"""Pixel checks for a fill: outside the mask the output is the input exactly; inside, two
measures a test holds to bounds measured on its own engine and inputs."""

from __future__ import annotations

import cv2
import numpy as np


def repainted(out: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> float:
    """Share of the pixels under `mask` (HxW uint8, 255 = repaint) that differ from `rgb`."""
    hole = mask >= 128
    return float((out != rgb).any(axis=2)[hole].mean())


def error_against_flat(out: np.ndarray, truth: np.ndarray, mask: np.ndarray, ring: int = 4) -> float:
    """Mean absolute error of `out` against `truth` under the mask, over that of a flat fill with
    the mean colour of a `ring`-pixel band around it: under 1, the fill follows the picture
    better than the colour around the hole does."""
    hole = mask >= 128
    band = (cv2.dilate(hole.astype(np.uint8), np.ones((2 * ring + 1,) * 2, np.uint8)) > 0) & ~hole
    truth_i = truth.astype(int)
    flat = np.abs(truth_i[hole] - truth_i[band].mean(axis=0)).mean()
    return float(np.abs(out.astype(int)[hole] - truth_i[hole]).mean() / flat)


def assert_kept_exactly(out: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> None:
    keep = mask < 128
    assert out.shape == rgb.shape and out.dtype == rgb.dtype
    assert np.array_equal(out[keep], rgb[keep]), "pixels outside the mask changed"
