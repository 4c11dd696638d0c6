"""Real photos (scikit-image ships them) as files, and masks to go with them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from skimage import data as skdata

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field")


def photo(name: str = "astronaut", size: tuple[int, int] | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB; resized (width, height) when `size` is given."""
    rgb = getattr(skdata, name)()
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    rgb = np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)
    if size is not None:
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
    return rgb


def box_mask(height: int, width: int, fraction: float = 0.1) -> np.ndarray:
    """HxW uint8, a centred box covering about `fraction` of the image, 255 = repaint."""
    mask = np.zeros((height, width), np.uint8)
    side = fraction**0.5
    h, w = int(height * side), int(width * side)
    y, x = (height - h) // 2, (width - w) // 2
    mask[y : y + h, x : x + w] = 255
    return mask


def encode(array: np.ndarray, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
