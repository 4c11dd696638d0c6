"""Fill around the mask at the model's size: crop boxes, their work sizes, and the paste back.

A diffusion model such as FLUX.1 Fill works at about 1-2 MP. A small hole in a 24 MP photo
needs the model on the hole and its neighbourhood only, not on the whole frame (IOPaint's
"crop" strategy). The `flux` and `bfl` engines share these pure functions:

- `plan_crops`: the bounding box of each masked region, grown by context on every side
  (`context` x the box's side, at least `min_context` pixels, clipped to the canvas); boxes that
  overlap are merged into their union until none do. Each crop gets a work size: the box scaled
  uniformly so that width x height <= `max_pixels`, sides rounded down to multiples of 16 (never
  scaled up; a box that already fits is grown to multiples of 16 where the canvas allows).
- `crop_inputs`: the crop's pixels and mask at its work size (the mask is resized so that any
  pixel touched by the hole counts as fill, so the model repaints the whole hole).
- `paste`: the model's work-size output resized back to the box and blended into the canvas
  with weights that are 0 outside the mask (those pixels stay bit-identical) and ramp up to 1
  over `feather` pixels inside it, so the seam of the upscaled crop does not show.

Arrays: rgb HxWx3 uint8 RGB; fill HxW bool (True = repaint). Boxes are in canvas pixels,
x0/y0 inclusive, x1/y1 exclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

SIDE_MULTIPLE = 16
DEFAULT_CONTEXT = 0.5
DEFAULT_MIN_CONTEXT = 256
MAX_FEATHER = 32


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def overlaps(self, other: Box) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    def union(self, other: Box) -> Box:
        return Box(
            min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1), max(self.y1, other.y1)
        )


@dataclass(frozen=True)
class Crop:
    """A region of the canvas the model fills: `box` on the canvas, seen at `work_width`x`work_height`."""

    box: Box
    work_width: int
    work_height: int

    @property
    def scale(self) -> float:
        """Work size over box size (the smaller of the two axes'); 1.0 when not resized."""
        return min(self.work_width / self.box.width, self.work_height / self.box.height)

    def note(self) -> dict[str, Any]:
        """What the job's notes record: the box as [x, y, width, height], the work size, the scale."""
        b = self.box
        return {
            "box": [b.x0, b.y0, b.width, b.height],
            "size": [self.work_width, self.work_height],
            "scale": round(self.scale, 4),
        }


def fits(width: int, height: int, max_pixels: int) -> bool:
    """Whether a canvas, padded to multiples of 16, is within the model's pixel budget."""
    return _ceil(width) * _ceil(height) <= max_pixels


def _ceil(n: int) -> int:
    return -(-n // SIDE_MULTIPLE) * SIDE_MULTIPLE


def region_boxes(fill: np.ndarray) -> list[Box]:
    """The bounding box of each 8-connected masked region, top-left first."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(fill.astype(np.uint8), connectivity=8)
    boxes = [
        Box(int(x), int(y), int(x + w), int(y + h))
        for x, y, w, h, _area in stats[1:count]  # label 0 is the background
    ]
    return sorted(boxes, key=lambda b: (b.y0, b.x0))


def with_context(box: Box, width: int, height: int, context: float, min_context: int) -> Box:
    """`box` grown by max(min_context, context x its side) on each side, clipped to the canvas."""
    mx = max(min_context, math.ceil(context * box.width))
    my = max(min_context, math.ceil(context * box.height))
    return Box(max(0, box.x0 - mx), max(0, box.y0 - my), min(width, box.x1 + mx), min(height, box.y1 + my))


def merge_boxes(boxes: list[Box]) -> list[Box]:
    """Union overlapping boxes until no two overlap (a union can reach a third box)."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        out: list[Box] = []
        for box in merged:
            for i, kept in enumerate(out):
                if kept.overlaps(box):
                    out[i] = kept.union(box)
                    changed = True
                    break
            else:
                out.append(box)
        merged = out
    return sorted(merged, key=lambda b: (b.y0, b.x0))


def _grow_to_multiple(lo: int, hi: int, limit: int) -> tuple[int, int]:
    """Widen [lo, hi) to a multiple of 16 within [0, limit): right first, then left."""
    side = hi - lo
    want = min(_ceil(side), limit - limit % SIDE_MULTIPLE if limit >= SIDE_MULTIPLE else limit)
    if want <= side:
        return lo, hi
    hi2 = min(limit, lo + want)
    return max(0, hi2 - want), hi2


def work_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """`width`x`height` scaled uniformly (never up) to fit `max_pixels`, sides multiples of 16.

    Sides are rounded down (at least 16), so the area never exceeds the budget.
    """
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    w = max(SIDE_MULTIPLE, int(width * scale) // SIDE_MULTIPLE * SIDE_MULTIPLE)
    h = max(SIDE_MULTIPLE, int(height * scale) // SIDE_MULTIPLE * SIDE_MULTIPLE)
    # A thin box can be lifted to 16 on its short side; then trim the long one to fit.
    if w * h > max_pixels:
        if w >= h:
            w = max(SIDE_MULTIPLE, max_pixels // h // SIDE_MULTIPLE * SIDE_MULTIPLE)
        else:
            h = max(SIDE_MULTIPLE, max_pixels // w // SIDE_MULTIPLE * SIDE_MULTIPLE)
    return w, h


def plan_crops(
    fill: np.ndarray,
    max_pixels: int,
    context: float = DEFAULT_CONTEXT,
    min_context: int = DEFAULT_MIN_CONTEXT,
) -> list[Crop]:
    """The crops that cover every masked pixel of `fill` (HxW bool), each within `max_pixels`.

    An empty mask gives no crops. Rules: module docstring.
    """
    if max_pixels < SIDE_MULTIPLE * SIDE_MULTIPLE:
        raise ValueError(f"max_pixels must be at least {SIDE_MULTIPLE * SIDE_MULTIPLE}, not {max_pixels}.")
    height, width = fill.shape
    grown = [with_context(b, width, height, context, min_context) for b in region_boxes(fill)]
    crops: list[Crop] = []
    for box in merge_boxes(grown):
        if box.width * box.height <= max_pixels:
            x0, x1 = _grow_to_multiple(box.x0, box.x1, width)
            y0, y1 = _grow_to_multiple(box.y0, box.y1, height)
            if _ceil(x1 - x0) * _ceil(y1 - y0) <= max_pixels:
                box = Box(x0, y0, x1, y1)
        crops.append(Crop(box, *work_size(box.width, box.height, max_pixels)))
    return crops


def crop_inputs(rgb: np.ndarray, fill: np.ndarray, crop: Crop) -> tuple[np.ndarray, np.ndarray]:
    """The crop's rgb (HxWx3 uint8) and fill (HxW bool) at its work size."""
    b = crop.box
    part = np.ascontiguousarray(rgb[b.y0 : b.y1, b.x0 : b.x1, :3])
    hole = fill[b.y0 : b.y1, b.x0 : b.x1]
    size = (crop.work_width, crop.work_height)
    if size == (b.width, b.height):
        return part, hole.copy()
    shrink = crop.work_width * crop.work_height < b.width * b.height
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    small = cv2.resize(part, size, interpolation=interpolation)
    # Area-averaged: any work pixel the hole touches is repainted, so no sliver of the old
    # content survives at the hole's rim once the result is scaled back up.
    coverage = cv2.resize(hole.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return small, coverage > 0


def feather_width(crop: Crop) -> int:
    """Pixels of ramp inside the mask: about two work pixels, in canvas pixels (1 at full size)."""
    return int(min(MAX_FEATHER, max(1, round(2 / crop.scale)))) if crop.scale < 1 else 1


def paste(canvas: np.ndarray, fill: np.ndarray, crop: Crop, generated: np.ndarray) -> None:
    """Blend the model's output for `crop` (work size, HxWx3 uint8) into `canvas` in place.

    Weights are exactly 0 where `fill` is False, so unmasked pixels are never written.
    """
    b = crop.box
    if generated.shape[:2] != (b.height, b.width):
        generated = cv2.resize(generated, (b.width, b.height), interpolation=cv2.INTER_CUBIC)
    hole = fill[b.y0 : b.y1, b.x0 : b.x1]
    if not hole.any():
        return
    feather = feather_width(crop)
    region = canvas[b.y0 : b.y1, b.x0 : b.x1]
    if feather <= 1:
        region[hole] = generated[hole]
        return
    # Distance to the nearest kept pixel (the crop's border counts as far): 1 at the rim.
    distance = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    alpha = np.clip(distance / feather, 0.0, 1.0)[:, :, None]
    blended = region.astype(np.float32) * (1.0 - alpha) + generated.astype(np.float32) * alpha
    region[hole] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)[hole]
