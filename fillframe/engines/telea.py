"""`telea`: OpenCV's Telea inpainting (what IOPaint's `cv2` model runs), on the hole's bounding box.

The fastest engine and the lightest (no PatchMatch): it smears the border inwards, so it
suits scratches, text and small blemishes; large holes come out blurred, where `classic` keeps the
texture. Ignores the prompt; deterministic.
"""

from __future__ import annotations

import cv2
import numpy as np

from fillframe.engines.base import CancelledFn, Engine, FillJob, FillOutput, ProgressFn
from fillframe.imaging.masks import mask_bbox

RADIUS = 3
# Telea reads pixels within RADIUS of the hole; a wider margin keeps the crop's edge out of reach.
MARGIN = 4 * RADIUS


def telea_fill(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """rgb: HxWx3 uint8 RGB; mask: HxW uint8, 255 = fill. Returns a filled copy (HxWx3 uint8)."""
    box = mask_bbox(mask)
    if box is None:
        return rgb.copy()
    x0, y0, x1, y1 = box
    h, w = mask.shape
    x0, y0, x1, y1 = max(0, x0 - MARGIN), max(0, y0 - MARGIN), min(w, x1 + MARGIN), min(h, y1 + MARGIN)
    out = rgb.copy()
    out[y0:y1, x0:x1] = cv2.inpaint(
        np.ascontiguousarray(rgb[y0:y1, x0:x1]), mask[y0:y1, x0:x1], RADIUS, cv2.INPAINT_TELEA
    )
    return out


class TeleaEngine(Engine):
    name = "telea"
    settings_part = "none"

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        out = telea_fill(job.rgb, job.mask)
        progress(100)
        return FillOutput(out)
