"""Mask checks and helpers. `mask: HxW uint8, 255 = repaint, 0 = keep`."""

from __future__ import annotations

import numpy as np

from fillframe.errors import InvalidInput
from fillframe.imaging.decode import decode_mask


def check_same_size(rgb: np.ndarray, mask: np.ndarray) -> None:
    """Raise InvalidInput unless `rgb` (HxWx3) and `mask` (HxW) have the same width and height."""
    (img_h, img_w), (mask_h, mask_w) = rgb.shape[:2], mask.shape[:2]
    if (img_h, img_w) != (mask_h, mask_w):
        raise InvalidInput(
            f"The mask is {mask_w}x{mask_h} but the image is {img_w}x{img_h}; they must be the same size."
        )


def check_something_to_fill(mask: np.ndarray) -> None:
    """Raise InvalidInput for an all-black mask: the job would charge for the image unchanged."""
    if not mask.any():
        raise InvalidInput(
            "The mask is all black, so nothing would be repainted: paint the area to fill white "
            "(white = repaint, black = keep)."
        )


def check_mask_bytes(data: bytes, max_pixels: int) -> None:
    """Decode a mask (blocking) and raise InvalidInput if it is unreadable or repaints nothing."""
    check_something_to_fill(decode_mask(data, max_pixels=max_pixels))


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the non-zero pixels, x1/y1 exclusive; None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """The mask grown by `px` pixels in every direction (a disc), HxW uint8 {0, 255}.

    Engines grow the mask a little so a fill blends over the seam instead of stopping at it.
    """
    if px <= 0:
        return mask.copy()
    # OpenCV here only: the API process checks masks at submit and should not map OpenCV (~25 MB).
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask, kernel)
