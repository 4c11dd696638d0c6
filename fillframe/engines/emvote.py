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
    DESCRIPTOR_SIZE,
    Field,
    SearchPlan,
    improve_field,
    refresh_descriptors,
    rescore,
    whole_patch_sources,
)

# Propagation distances once a field is carried up from a coarser level: the long steps let a
# match found at the hole's border (where known pixels pin it) spread inwards within a round.
_REFINE_STEPS = (4, 1)
_REFINE_RADIUS = 8  # random search around each carried match, halving down to 1 pixel

_ANCHOR_WEIGHT = 4.0
_MIRROR_BLEND = (0.6, 0.35, 0.15)  # share of the mirrored known pixel at depth 1, 2, 3
_SEAM_RING = 2  # known pixels this close to the hole measure the vote's error there


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


def vote(
    level: Level,
    targets: Targets,
    radius: int,
    sharpness: float = 1.0,
    seam: float = 0.0,
    box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """The level's image with every hole pixel replaced by the weighted vote of the patches
    within `radius` of it. Weights fall with a match's distance (exp(-sharpness d / s), s its
    median), so a patch that found no good match barely counts. With `box` (rows y0:y1,
    columns x0:x1) only the hole pixels inside it are voted again.

    With `seam` > 0 the vote is also taken on the known pixels next to the hole, and what it
    gets wrong there (the known pixel minus the vote) is added to the hole, fading with depth
    over about `seam` pixels: the fill then meets the known side without a step.
    """
    hole = level.known == 0
    ring = _SEAM_RING if seam > 0 else 0
    y0, y1, x0, x1 = _grown_box(hole, ring, box)
    mean, total = _voted(level, targets, radius, sharpness, (y0, y1, x0, x1))
    inside = hole[y0:y1, x0:x1]
    if seam > 0:
        mean += _seam_offset(level.img[y0:y1, x0:x1], mean, inside, total > 0, seam)
    out = level.img.copy()
    crop = out[y0:y1, x0:x1]
    fill = inside & (total > 0)
    crop[fill] = np.clip(mean[fill] + 0.5, 0, 255).astype(np.uint8)
    return out


def _grown_box(
    hole: np.ndarray, grow: int, within: tuple[int, int, int, int] | None = None
) -> tuple[int, int, int, int]:
    """Rows y0:y1, columns x0:x1 of the hole's bounding box (cut to `within`), grown by `grow`,
    inside the frame."""
    x, y, w, h = cv2.boundingRect(hole.astype(np.uint8))
    y0, y1, x0, x1 = y, y + h, x, x + w
    if within is not None:
        y0, y1 = max(y0, within[0]), min(y1, within[1])
        x0, x1 = max(x0, within[2]), min(x1, within[3])
    height, width = hole.shape
    return max(0, y0 - grow), min(height, y1 + grow), max(0, x0 - grow), min(width, x1 + grow)


def _voted(
    level: Level, targets: Targets, radius: int, sharpness: float, box: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The vote (hxwx3 float32) and its total weight (hxw) on every pixel of `box`.

    Image-space: for each offset d within `radius`, the patches centred at p - d say that pixel
    p is their match's pixel shifted by d; one remap per offset gathers that for the whole box.
    """
    height, width = level.known.shape
    field = targets.field
    finite = np.isfinite(field.d)
    scale = max(float(np.median(field.d[finite])), 1e-3) if finite.any() else 1.0
    weight = np.exp(-sharpness * field.d / scale).astype(np.float32)
    # Patches centred on a known pixel are pinned by what is really there: they carry the known
    # side's texture across the border, which keeps the seam from showing.
    weight[level.known[targets.ty, targets.tx] != 0] *= _ANCHOR_WEIGHT
    # Maps padded by the radius, so that every shifted window stays inside them.
    shape = (height + 2 * radius, width + 2 * radius)
    sy_map = np.zeros(shape, np.float32)
    sx_map = np.zeros(shape, np.float32)
    w_map = np.zeros(shape, np.float32)
    sy_map[targets.ty + radius, targets.tx + radius] = field.sy
    sx_map[targets.ty + radius, targets.tx + radius] = field.sx
    w_map[targets.ty + radius, targets.tx + radius] = weight
    y0, y1, x0, x1 = box
    acc = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    total = np.zeros((y1 - y0, x1 - x0), np.float32)
    term = np.empty_like(acc)  # reused: a fresh temporary per offset costs its page faults
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            # The patch centred at p - d, in the padded maps.
            rows = slice(y0 + radius - dy, y1 + radius - dy)
            cols = slice(x0 + radius - dx, x1 + radius - dx)
            wq = w_map[rows, cols]
            got = cv2.remap(
                level.img,
                sx_map[rows, cols] + dx,
                sy_map[rows, cols] + dy,
                cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_REPLICATE,
            )
            np.multiply(got, wq[:, :, None], out=term)
            acc += term
            total += wq
    # Weights may all be tiny (every match far off) but still say which match is nearest.
    mean = np.divide(acc, total[:, :, None], out=np.zeros_like(acc), where=total[:, :, None] > 0)
    return mean, total


def _seam_offset(
    img: np.ndarray, mean: np.ndarray, inside: np.ndarray, voted: np.ndarray, seam: float
) -> np.ndarray:
    """hxwx3 float32 correction for the hole, so that the fill meets the known pixels.

    img: the crop (known pixels true); mean: the vote on it; inside: hole pixels of the crop.
    Two parts: the vote's error on the known ring, smoothed and spread inwards over `seam`
    pixels (a shift of colour or light), and, over the first pixels, a blend towards the known
    pixels mirrored through the nearest border pixel (the grain, pixel for pixel).
    """
    near = cv2.dilate(inside.astype(np.uint8), np.ones((2 * _SEAM_RING + 1,) * 2, np.uint8)) != 0
    ring = (near & ~inside & voted).astype(np.float32)
    error = (img.astype(np.float32) - mean) * ring[:, :, None]
    sigma = max(seam / 2, 1.0)
    spread = (
        cv2.GaussianBlur(error, (0, 0), sigma)
        / np.maximum(cv2.GaussianBlur(ring, (0, 0), sigma), 1e-3)[:, :, None]
    )
    depth, labels = cv2.distanceTransformWithLabels(
        inside.astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )
    fade = np.exp(-((depth / seam) ** 2)) * inside
    offset: np.ndarray = spread * fade[:, :, None]
    # The first pixels: towards the mirror image of the known side (a step like the one inside).
    py, px = np.nonzero(inside & (depth <= len(_MIRROR_BLEND)))
    ky, kx = np.nonzero(~inside)  # label k is the k-th known pixel in raster order
    nearest = labels[py, px] - 1
    my, mx = 2 * ky[nearest] - py, 2 * kx[nearest] - px
    height, width = inside.shape
    fits = (my >= 0) & (my < height) & (mx >= 0) & (mx < width)
    fits[fits] = ~inside[my[fits], mx[fits]]
    py, px, my, mx = py[fits], px[fits], my[fits], mx[fits]
    blend = np.asarray(_MIRROR_BLEND, np.float32)[
        np.minimum(np.rint(depth[py, px]).astype(int), len(_MIRROR_BLEND)) - 1
    ]
    now = mean[py, px] + offset[py, px]
    offset[py, px] += blend[:, None] * (img[my, mx].astype(np.float32) - now)
    return offset


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
    seam: float = 0.0,
) -> tuple[np.ndarray, Targets]:
    """EM at one level: `iterations` times, search from the current matches on the current
    image, then vote. With `band`, only the patches within that many pixels of a known pixel
    are searched again (the seam) and voted again, the rest keep their carried matches; `seam`
    goes to the last vote. Returns the voted image and the matches."""
    sources = whole_patch_sources(level.ok, level.known, radius)
    # Vote the carried matches first: real fine pixels, not the upsampled coarse blur, are then
    # what the search compares patches on.
    img = vote(level, targets, vote_radius, sharpness, seam if iterations == 0 else 0.0)
    pick = _near_known(level.known, targets, band)
    searched = _box_of(targets.ty, targets.tx, pick, radius + vote_radius)
    # Descriptors only where the search reads them: the searched patches and the sources.
    src_y, src_x = np.nonzero(sources)
    window = _union(searched, _box_of(src_y, src_x, None, radius))
    desc = np.zeros((*img.shape[:2], DESCRIPTOR_SIZE), np.float32)  # untouched pages cost nothing
    for iteration in range(iterations):
        refresh_descriptors(desc, img, window, radius)
        _search(targets, desc, sources, rng, steps, pick)
        last = iteration == iterations - 1
        img = vote(
            Level(img, level.known, level.ok),
            targets,
            vote_radius,
            sharpness,
            seam if last else 0.0,
            None if pick is None else searched,
        )
    return img, targets


def _box_of(ys: np.ndarray, xs: np.ndarray, pick: np.ndarray | None, grow: int) -> tuple[int, int, int, int]:
    """Rows y0:y1, columns x0:x1 around the points (ys, xs)[pick], grown by `grow` (may overhang)."""
    if pick is not None:
        ys, xs = ys[pick], xs[pick]
    if ys.size == 0:
        return (0, 0, 0, 0)
    return int(ys.min()) - grow, int(ys.max()) + 1 + grow, int(xs.min()) - grow, int(xs.max()) + 1 + grow


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


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
    # The others keep their carried matches, whose distances were measured one octave coarser,
    # where patches have less detail (many are 0): weighed by those, the searched seam patches
    # counted next to nothing and the seam showed. They count as a typical searched one instead.
    finite = np.isfinite(part.d)
    typical = float(np.median(part.d[finite])) if finite.any() else 1.0
    field.d[np.isfinite(field.d)] = typical
    field.sy[pick], field.sx[pick], field.d[pick] = part.sy, part.sx, part.d
