"""Outpaint geometry: a preset turns an image into a larger canvas plus a mask of the new area,
so every engine only ever fills a masked canvas.

Rules (`plan_outpaint`):
- Zoom out 1.5x / 2x: the canvas is 1.5x / 2x the image in each dimension, image centred.
- Make square: the canvas is a square whose side is the image's longer side, image centred.
- Left / Right / Top / Bottom outpaint: that side grows by half the image's size along that
  axis; the image sits flush against the opposite side and is centred on the other axis.
- Canvas sides are multiples of 16 (FLUX works on 16-pixel patches): the target is rounded to
  the nearest multiple, never below the image's own side rounded up, and on an axis that is
  meant to grow, always strictly larger than the image. So an axis that is not meant to grow
  (the height for Left outpaint) may still gain up to 15 pixels, split around the image.
- If the canvas would exceed `max_pixels`, the image and its canvas are scaled down uniformly
  (image sides rounded, at least 1 pixel) until the 16-multiple canvas fits; the image is
  never scaled up, and at scale 1 its pixels are placed unchanged.
- Make square on a square image whose side is already a multiple of 16 adds nothing: the plan
  is valid and its mask is empty; engines return such a canvas as it is.

Free expansion (`plan_expand`, the request's `expand: {left, right, top, bottom}` in pixels):
- Each axis is the image plus the two requested strips, rounded to the nearest multiple of 16
  by the same rule as the presets (holding the image, strictly larger when that axis grows;
  an axis with nothing requested only rounds up to 16).
- The rounding's slack (at most 8 pixels either way, or the round-up of an axis that does not
  grow) is shared between the two sides in proportion to what each asked for, so a side that
  asked for 0 stays flush with the canvas edge; with neither side asking, the image is centred.
- Over `max_pixels`, the image and the strips are scaled down together, as for the presets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fillframe.contract import OUTPAINT_PRESETS

PRESETS = OUTPAINT_PRESETS  # the wire's names, defined once in the contract
DEFAULT_PRESET = "Zoom out 1.5x"
_ZOOM = {"Zoom out 1.5x": 1.5, "Zoom out 2x": 2.0}
_SIDE_GROWTH = 1.5
PATCH = 16
# The smallest canvas is one 16x16 patch holding a 1x1 image.
MIN_MAX_PIXELS = PATCH * PATCH


@dataclass(frozen=True)
class CanvasPlan:
    """Where an image goes on an outpaint canvas (all in canvas pixels).

    width, height: the canvas; x, y: the image's top-left corner on it;
    image_width, image_height: the image's size on the canvas, after any scaling.
    """

    width: int
    height: int
    x: int
    y: int
    image_width: int
    image_height: int

    @property
    def adds_area(self) -> bool:
        """False when the image covers the whole canvas (the mask is empty)."""
        return (self.image_width, self.image_height) != (self.width, self.height)


def _round16(value: float) -> int:
    return math.floor(value / PATCH + 0.5) * PATCH


def _ceil16(n: int) -> int:
    return -(-n // PATCH) * PATCH


def _canvas_side(target: float, image_side: int, grow: bool) -> int:
    """Nearest multiple of 16 to `target`, but holding the image, and larger if `grow`."""
    side = max(_round16(target), _ceil16(image_side))
    if grow and side <= image_side:
        side += PATCH
    return side


def _layout(width: int, height: int, preset: str, scale: float) -> CanvasPlan:
    iw, ih = max(1, round(width * scale)), max(1, round(height * scale))
    if preset in _ZOOM:
        factor = _ZOOM[preset]
        cw, ch = _canvas_side(factor * iw, iw, True), _canvas_side(factor * ih, ih, True)
        return CanvasPlan(cw, ch, (cw - iw) // 2, (ch - ih) // 2, iw, ih)
    if preset == "Make square":
        side = _ceil16(max(iw, ih))
        return CanvasPlan(side, side, (side - iw) // 2, (side - ih) // 2, iw, ih)
    if preset in ("Left outpaint", "Right outpaint"):
        cw, ch = _canvas_side(_SIDE_GROWTH * iw, iw, True), _ceil16(ih)
        x = cw - iw if preset == "Left outpaint" else 0
        return CanvasPlan(cw, ch, x, (ch - ih) // 2, iw, ih)
    cw, ch = _ceil16(iw), _canvas_side(_SIDE_GROWTH * ih, ih, True)
    y = ch - ih if preset == "Top outpaint" else 0
    return CanvasPlan(cw, ch, (cw - iw) // 2, y, iw, ih)


def plan_outpaint(width: int, height: int, preset: str, max_pixels: int) -> CanvasPlan:
    """The canvas for outpainting a `width`x`height` image with `preset` (rules: module doc).

    Raises ValueError for an unknown preset, a non-positive size, or `max_pixels` < 256.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown outpaint preset {preset!r}; use one of: {', '.join(PRESETS)}.")
    return _fit(width, height, max_pixels, lambda scale: _layout(width, height, preset, scale))


def _fit(width: int, height: int, max_pixels: int, layout: Callable[[float], CanvasPlan]) -> CanvasPlan:
    """The layout at full size when it fits `max_pixels`, else at the largest scale that does."""
    if width < 1 or height < 1:
        raise ValueError(f"The image size {width}x{height} is not valid.")
    if max_pixels < MIN_MAX_PIXELS:
        raise ValueError(f"max_pixels must be at least {MIN_MAX_PIXELS}, not {max_pixels}.")
    # Shrink by the area ratio and retry, since rounding to 16 can still overshoot. Each try
    # shrinks by at least 2%, and at the tiniest scale the canvas is one 16x16 patch (strips
    # scale to nothing with the image), so this ends (a few dozen cheap tries at worst).
    scale = 1.0
    while True:
        plan = layout(scale)
        area = plan.width * plan.height
        if area <= max_pixels:
            return plan
        scale *= min(0.98, math.sqrt(max_pixels / area))


@dataclass(frozen=True)
class Expansion:
    """Pixels to add on each side of the image (before any scaling to the pixel budget)."""

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0

    @classmethod
    def of(cls, sides: Mapping[str, Any]) -> Expansion:
        return cls(*(int(sides.get(name) or 0) for name in ("left", "right", "top", "bottom")))


def _offset(canvas_side: int, image_side: int, before: float, after: float) -> int:
    """Where the image starts on an axis: the slack split in proportion to the two strips."""
    room = canvas_side - image_side
    if before + after <= 0:
        return room // 2
    slack = canvas_side - (image_side + before + after)
    return min(room, max(0, round(before + slack * before / (before + after))))


def _expand_layout(width: int, height: int, sides: Expansion, scale: float) -> CanvasPlan:
    iw, ih = max(1, round(width * scale)), max(1, round(height * scale))
    left, right, top, bottom = (scale * v for v in (sides.left, sides.right, sides.top, sides.bottom))
    grow_x, grow_y = sides.left + sides.right > 0, sides.top + sides.bottom > 0
    cw = _canvas_side(iw + left + right, iw, grow_x) if grow_x else _ceil16(iw)
    ch = _canvas_side(ih + top + bottom, ih, grow_y) if grow_y else _ceil16(ih)
    return CanvasPlan(cw, ch, _offset(cw, iw, left, right), _offset(ch, ih, top, bottom), iw, ih)


def plan_expand(width: int, height: int, sides: Expansion, max_pixels: int) -> CanvasPlan:
    """The canvas for growing a `width`x`height` image by `sides` (rules: module doc).

    Raises ValueError for negative sides, a non-positive size, or `max_pixels` < 256.
    """
    if min(sides.left, sides.right, sides.top, sides.bottom) < 0:
        raise ValueError(f"Expansion sides must be >= 0, not {sides}.")
    return _fit(width, height, max_pixels, lambda scale: _expand_layout(width, height, sides, scale))


OutpaintSpec = str | Expansion


def outpaint_spec(params: Mapping[str, Any]) -> OutpaintSpec:
    """What a request's fluxFillParams ask the canvas to be: its `expand`, else its preset."""
    expand = params.get("expand")
    if expand:
        return Expansion.of(expand)
    return str(params.get("outpaint") or DEFAULT_PRESET)


def plan_canvas(width: int, height: int, spec: OutpaintSpec, max_pixels: int) -> CanvasPlan:
    """`plan_expand` for an Expansion, `plan_outpaint` for a preset name."""
    if isinstance(spec, Expansion):
        return plan_expand(width, height, spec, max_pixels)
    return plan_outpaint(width, height, spec, max_pixels)


def build_canvas(rgb: np.ndarray, plan: CanvasPlan) -> tuple[np.ndarray, np.ndarray]:
    """Place `rgb` (HxWx3 uint8 RGB) on the planned canvas.

    Returns (canvas HxWx3 uint8 RGB, mask HxW uint8): the image is resized with INTER_AREA
    when the plan scales it, the new area is filled by replicating the image's edge pixels
    (a neutral start that keeps engines from inventing a border), and the mask is 255
    exactly on the new area and 0 exactly on the image.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"Expected an HxWx3 uint8 image, got {rgb.shape} {rgb.dtype}.")
    # OpenCV only here, when a canvas is built: an API process (and an idle worker) imports this
    # module for the plan alone and should not map OpenCV (about 25 MB).
    import cv2

    iw, ih = plan.image_width, plan.image_height
    image = np.ascontiguousarray(rgb)
    if (image.shape[1], image.shape[0]) != (iw, ih):
        image = cv2.resize(image, (iw, ih), interpolation=cv2.INTER_AREA)
    canvas = cv2.copyMakeBorder(
        image,
        plan.y,
        plan.height - plan.y - ih,
        plan.x,
        plan.width - plan.x - iw,
        cv2.BORDER_REPLICATE,
    )
    mask = np.full((plan.height, plan.width), 255, dtype=np.uint8)
    mask[plan.y : plan.y + ih, plan.x : plan.x + iw] = 0
    return canvas, mask


def outpaint_canvas(
    rgb: np.ndarray, spec: OutpaintSpec, max_pixels: int
) -> tuple[np.ndarray, np.ndarray, CanvasPlan]:
    """`plan_canvas` + `build_canvas` for an HxWx3 uint8 RGB image: (canvas, mask, plan)."""
    plan = plan_canvas(rgb.shape[1], rgb.shape[0], spec, max_pixels)
    canvas, mask = build_canvas(rgb, plan)
    return canvas, mask, plan
