"""Search and vote, level by level up to full scale (Wexler, Shechtman and Irani's EM fill).

Every patch that overlaps the hole (its centre may be known) has a match among the wholly known
source patches. A hole pixel is the weighted mean of what every patch covering it says it should
be: the pixel at the same place in that patch's match. The fill is then made of overlapping
real patches, with no block grid; searching again on the voted image and voting again pulls the
matches and the pixels together.

Going one octave finer, a match at (sy, sx) becomes (2 sy + a, 2 sx + b) for the four fine
pixels (a, b) under the coarse one, so the layout solved coarse carries up. All of it is
vectorised numpy and OpenCV over the hole's targets only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fillframe.engines.nnfield import (
    Field,
    SearchPlan,
    improve_field,
    patch_descriptors,
    refresh_descriptors,
    rescore,
    whole_patch_sources,
)

# Propagation distances once a field is carried up from a coarser level: the long steps let a
# match found at the hole's border (where known pixels pin it) spread inwards within a round.
_REFINE_STEPS = (4, 1)
_REFINE_RADIUS = 8  # random search around each carried match, halving down to 1 pixel

_ANCHOR_WEIGHT = 4.0


@dataclass(frozen=True)
class Level:
    """One octave of a crop: its image (hole pixels are whatever the last vote made them), which
    pixels are known, and which known pixels may be copied (HxW uint8 each)."""

    img: np.ndarray
    known: np.ndarray
    ok: np.ndarray


@dataclass
class Targets:
    """The centres (ty, tx) of the patches overlapping the hole, and their matches."""

    ty: np.ndarray
    tx: np.ndarray
    field: Field


def patch_targets(known: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres of patches of `radius` that overlap the hole (known == 0): the hole dilated."""
    size = 2 * radius + 1
    near = cv2.dilate((known == 0).astype(np.uint8), np.ones((size, size), np.uint8))
    ys, xs = np.nonzero(near)
    return ys.astype(np.int32), xs.astype(np.int32)


def carried_up(
    coarse: Targets, coarse_shape: tuple[int, int], level: Level, radius: int, rng: np.random.Generator
) -> Targets:
    """The coarse field moved one octave finer; a fine target whose carried match is not a
    source takes a random source (the search replaces it)."""
    height, width = level.known.shape
    ty, tx = patch_targets(level.known, radius)
    ch, cw = coarse_shape
    sy_map = np.full((ch, cw), -1, np.int32)
    sx_map = np.full((ch, cw), -1, np.int32)
    d_map = np.zeros((ch, cw), np.float32)
    sy_map[coarse.ty, coarse.tx] = coarse.field.sy
    sx_map[coarse.ty, coarse.tx] = coarse.field.sx
    d_map[coarse.ty, coarse.tx] = coarse.field.d
    py, px = np.minimum(ty >> 1, ch - 1), np.minimum(tx >> 1, cw - 1)
    sy = 2 * sy_map[py, px] + (ty & 1)
    sx = 2 * sx_map[py, px] + (tx & 1)
    sources = whole_patch_sources(level.ok, level.known, radius)
    fits = (sy_map[py, px] >= 0) & (sy >= 0) & (sy < height) & (sx >= 0) & (sx < width)
    fits[fits] = sources[sy[fits], sx[fits]]
    src_y, src_x = np.nonzero(sources)
    pick = rng.integers(0, src_y.size, int(np.count_nonzero(~fits)))
    sy[~fits], sx[~fits] = src_y[pick], src_x[pick]
    # Until searched again, a carried match keeps its coarse distance; a random one weighs nothing.
    d = np.where(fits, d_map[py, px], np.inf).astype(np.float32)
    return Targets(ty, tx, Field(sy.astype(np.int32), sx.astype(np.int32), d))


def vote(level: Level, targets: Targets, radius: int, sharpness: float = 1.0) -> np.ndarray:
    """The level's image with every hole pixel replaced by the weighted vote of the patches
    within `radius` of it. Weights fall with a match's distance (exp(-sharpness d / s), s its
    median), so a patch that found no good match barely counts."""
    height, width = level.known.shape
    field = targets.field
    finite = np.isfinite(field.d)
    scale = max(float(np.median(field.d[finite])), 1e-3) if finite.any() else 1.0
    weight = np.exp(-sharpness * field.d / scale).astype(np.float32)
    # Patches centred on a known pixel are pinned by what is really there: they carry the known
    # side's texture across the border, which keeps the seam from showing.
    weight[level.known[targets.ty, targets.tx] != 0] *= _ANCHOR_WEIGHT
    # Maps padded by the radius, so that every shifted read stays inside them.
    pw = width + 2 * radius
    src = np.zeros((height + 2 * radius) * pw, np.int64)
    w_map = np.zeros(src.size, np.float32)
    at = (targets.ty + radius).astype(np.int64) * pw + targets.tx + radius
    src[at] = field.sy.astype(np.int64) * width + field.sx
    w_map[at] = weight
    hy, hx = np.nonzero(level.known == 0)
    here = (hy + radius).astype(np.int64) * pw + hx + radius
    # One 32-bit word per pixel: a gather then moves one element, not three.
    packed = np.ascontiguousarray(np.pad(level.img, ((0, 0), (0, 0), (0, 1)))).view(np.uint32).reshape(-1)
    acc = np.zeros((hy.size, 4), np.float32)
    total = np.zeros(hy.size, np.float32)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            q = here - (dy * pw + dx)
            wq = w_map[q]
            # A pixel that is not a target has weight 0; its clipped read is harmless.
            index = np.clip(src[q] + (dy * width + dx), 0, packed.size - 1)
            acc += wq[:, None] * packed[index].view(np.uint8).reshape(-1, 4)
            total += wq
    out = level.img.copy()
    voted = total > 0
    value = acc[voted, :3] / total[voted, None]
    out[hy[voted], hx[voted]] = np.clip(value + 0.5, 0, 255).astype(np.uint8)
    return out


def refine(
    level: Level,
    targets: Targets,
    radius: int,
    rng: np.random.Generator,
    iterations: int,
    vote_radius: int,
    sharpness: float,
    steps: tuple[int, ...] = _REFINE_STEPS,
    band: int | None = None,
) -> tuple[np.ndarray, Targets]:
    """EM at one level: `iterations` times, search from the current matches on the current
    image, then vote. With `band`, only the patches within that many pixels of a known pixel
    are searched again (the seam), the rest keep their carried matches. Returns the voted image
    and the matches."""
    sources = whole_patch_sources(level.ok, level.known, radius)
    # Vote the carried matches first: real fine pixels, not the upsampled coarse blur, are then
    # what the search compares patches on.
    img = vote(level, targets, vote_radius, sharpness)
    desc = patch_descriptors(img, radius)
    x, y, w, h = cv2.boundingRect((level.known == 0).astype(np.uint8))
    for iteration in range(iterations):
        if iteration:  # only patches near the hole changed with the last vote
            refresh_descriptors(desc, img, (y - radius, y + h + radius, x - radius, x + w + radius), radius)
        _search(targets, desc, sources, rng, steps, _near_known(level.known, targets, band))
        img = vote(Level(img, level.known, level.ok), targets, vote_radius, sharpness)
    return img, targets


def _near_known(known: np.ndarray, targets: Targets, band: int | None) -> np.ndarray | None:
    """Indices of the targets within `band` pixels of a known pixel (None: all of them)."""
    if band is None:
        return None
    depth = cv2.distanceTransform((known == 0).astype(np.uint8), cv2.DIST_L2, 3)
    return np.flatnonzero(depth[targets.ty, targets.tx] <= band)


def _search(
    targets: Targets,
    desc: np.ndarray,
    sources: np.ndarray,
    rng: np.random.Generator,
    steps: tuple[int, ...],
    pick: np.ndarray | None,
) -> None:
    """Rescore and improve the matches of targets `pick` (None: all) over new descriptors."""
    field = targets.field
    if pick is None:
        rescore(field, desc, targets.ty, targets.tx)
        improve_field(
            field, desc, (targets.ty, targets.tx), sources, rng, SearchPlan(1, steps, _REFINE_RADIUS)
        )
        return
    ty, tx = targets.ty[pick], targets.tx[pick]
    part = Field(field.sy[pick], field.sx[pick], field.d[pick])
    rescore(part, desc, ty, tx)
    improve_field(part, desc, (ty, tx), sources, rng, SearchPlan(1, steps, _REFINE_RADIUS))
    # The others keep their carried distances, measured one octave coarser on a patch of the
    # same size: close enough to weigh the vote.
    field.sy[pick], field.sx[pick], field.d[pick] = part.sy, part.sx, part.d
