"""Exemplar (PatchMatch) hole filling on the hole's neighbourhood only: layout solved coarse,
then searched and voted octave by octave up to full scale.

The plan for one canvas:
1. `plan_regions` cuts the mask into regions: each hole component's bounding box plus a context
   margin (overlapping boxes merged). Cost then grows with the holes, not the frame.
2. Thin holes (scratches, text) go to OpenCV's Telea diffusion, which is faster and as good there.
3. Thick holes go to `fill_region`: PyPatchMatch solves the region at a reduced scale (its cost
   grows steeply with size), `nnfield` finds which allowed source patch each coarse patch over
   the hole now looks like, and `emvote` carries those matches up one octave at a time: vote
   (every hole pixel the weighted mean of what the overlapping patches' matches say), search
   again on the voted image, vote again. At full scale the carried matches are voted and only
   the seam band is searched again. PyPatchMatch cannot return its field, hence our search.
   An earlier version copied every full-scale pixel through the coarse field, block by block:
   sharp, but a mosaic of 2^L-pixel squares (grid blockiness 1.5-4x a photo's).

Only known pixels within `context` of the hole are used as a source. For outpainting (a wide
band of new canvas) that is an outer band of the original, which keeps the fill from copying the
subject (a second face, a second motorbike). A narrower context also keeps PyPatchMatch's layout
closer to what surrounds the hole: 0.6 of the hole's inscribed radius measured best.

No JIT: everything is numpy and OpenCV, so importing the engine costs a few MB (numba and LLVM,
which an earlier version used, cost about 125 MB of every process's memory).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from fillframe.engines.emvote import Level, Targets, carried_up, patch_targets, refine
from fillframe.engines.nnfield import nearest_field, patch_descriptors, whole_patch_sources

try:
    from patchmatch import patch_match as _pm
except ImportError:  # reported by `patchmatch_ready`
    _pm = None

StepFn = Callable[[float], None]

# PyPatchMatch reads one process-global seed at the start of every call. Every call here stores
# the same constant first, so concurrent fills never race on it; the job's seed drives our own
# field search instead.
_PM_SEED = 1212
# Progress through one region after the coarse solve and after the field search (rough cost shares).
_SOLVED = 0.7
_MATCHED = 0.85


@dataclass(frozen=True)
class PatchParams:
    """Tuning knobs. Defaults were set with `bench/quality.py`."""

    patch_radius: int = 3  # 7x7 patches: PyPatchMatch's sweet spot for speed and structure
    work_hole_pixels: int = 3000  # hole size (pixels) at which PyPatchMatch solves the layout
    min_work_radius: float = 4.0  # the hole's inscribed radius must stay this big when solved
    thin_radius: float = 3.0  # holes no thicker than 2x this go to Telea diffusion
    context_factor: float = 0.6  # context margin as a multiple of the hole's inscribed radius
    context_min: int = 48
    context_max_fraction: float = 0.25  # of the known area's short side (outpaint source band)
    search_rounds: int = 3  # rounds of the coarse field search (nnfield.nearest_field)
    em_iterations: int = 2  # search + vote rounds at each octave between the layout and full scale
    # An octave with more patches over the hole than this gets one round: a 2x zoom-out of a
    # 1024x768 photo (595k there) took 5 of its 13 s in the second (bench/quality.py --extras).
    em_round_patches: int = 200_000
    # At full scale the carried matches are voted and only the patches within `seam_band` of
    # the known pixels searched again: searching all of them (measured with bench/quality.py
    # --quick) cost 40% more time and did not improve coherence (1.08 vs 1.03x PyPatchMatch's),
    # but without the band's search the seam of a right outpaint is 1.67x the step inside.
    seam_band: int = 6
    vote_radius: int = 2  # patches within this many pixels of a hole pixel vote for it (full scale)
    coarse_vote_radius: int = 3  # the same on the coarser octaves
    vote_sharpness: float = 1.0  # vote weight exp(-sharpness d / median d)
    # The final vote's error on the known pixels at the hole's border, spread this deep into
    # the fill, so that it meets them without a step (emvote.vote).
    seam_fade: float = 8.0
    # Pixels of source band left at the scale the layout is solved at. At 8 px (1/8 of an
    # outpaint's 85 px band at 512²) PyPatchMatch had too little to copy: the brick wall's
    # joints came out as noise and the fill went flat grey (bench/quality.py --only brick).
    min_band: int = 12


DEFAULT_PARAMS = PatchParams()


@dataclass(frozen=True)
class Region:
    """A crop of the canvas filled on its own: rows y0:y1, columns x0:x1.

    `context`: known pixels farther than this from the hole are not copied from.
    `thin`: every hole in it is a thin stroke, filled by diffusion.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    context: int
    thin: bool
    hole_pixels: int


def patchmatch_ready() -> bool:
    """Whether PyPatchMatch's prebuilt native library loaded."""
    return _pm is not None and bool(_pm.patchmatch_available)


# ---------------------------------------------------------------------------------------------
# Planning


def plan_regions(mask: np.ndarray, params: PatchParams = DEFAULT_PARAMS) -> list[Region]:
    """Cut a mask into independently filled regions.

    mask: HxW uint8, nonzero = fill. Returns [] for an empty mask. Work is done on the mask's
    bounding box, plus two cheap whole-frame passes in OpenCV (bounding rectangles).
    """
    bx, by, bw, bh = cv2.boundingRect(mask)
    if bw == 0 or bh == 0:
        return []
    height, width = mask.shape
    # OpenCV's stubs lack compare()'s scalar form, which it has.
    _, _, kw, kh = cv2.boundingRect(cv2.compare(mask, 0, cv2.CMP_EQ))  # type: ignore[call-overload]
    context_cap = max(params.context_min, int(params.context_max_fraction * min(kw, kh)))

    sub = (mask[by : by + bh, bx : bx + bw] > 0).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8)
    radii = _component_radii(sub, labels, stats, (by, bx), (height, width))

    boxes: list[list[int]] = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        radius = radii[label - 1]
        thin = radius <= params.thin_radius
        if thin:
            context = int(2 * radius) + 8  # Telea only reads a few pixels around the stroke
        else:
            context = int(np.clip(params.context_factor * radius, params.context_min, context_cap))
        y0, x0 = by + y, bx + x
        boxes.append(
            [
                max(0, y0 - context),
                min(height, y0 + h + context),
                max(0, x0 - context),
                min(width, x0 + w + context),
                context,
                int(thin),
                area,
            ]
        )
    return [
        Region(y0, y1, x0, x1, context, bool(thin), area)
        for y0, y1, x0, x1, context, thin, area in _merge_boxes(boxes)
    ]


def _component_radii(
    sub: np.ndarray,
    labels: np.ndarray,
    stats: np.ndarray,
    origin: tuple[int, int],
    frame: tuple[int, int],
) -> list[float]:
    """Inscribed radius (pixels) of each component: how far its farthest pixel is from known ones.

    The canvas border is not a known pixel: a band along it is as thick as its full depth.
    """
    by, bx = origin
    bh, bw = sub.shape
    height, width = frame
    # Pad with known (0) where the bbox edge is inside the canvas, with hole where it is the edge.
    top, bottom = int(by == 0), int(by + bh == height)
    left, right = int(bx == 0), int(bx + bw == width)
    padded = cv2.copyMakeBorder(sub, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    if top:
        padded[0, 1:-1] = sub[0]
    if bottom:
        padded[-1, 1:-1] = sub[-1]
    if left:
        padded[1:-1, 0] = sub[:, 0]
    if right:
        padded[1:-1, -1] = sub[:, -1]
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    radii = []
    for label in range(1, len(stats)):
        x, y, w, h = (int(v) for v in stats[label][:4])
        inside = labels[y : y + h, x : x + w] == label
        radii.append(float(dist[y : y + h, x : x + w][inside].max()))
    return radii


def _merge_boxes(boxes: list[list[int]]) -> list[list[int]]:
    """Union overlapping boxes [y0, y1, x0, x1, context, thin, area] until none overlap."""
    merged = [list(b) for b in boxes]
    changed = True
    while changed and len(merged) > 1:
        changed = False
        arr = np.array([b[:4] for b in merged])
        out: list[list[int]] = []
        used = np.zeros(len(merged), bool)
        for i, box in enumerate(merged):
            if used[i]:
                continue
            used[i] = True
            cur = list(box)
            while True:
                hit = (
                    ~used
                    & (arr[:, 0] < cur[1])
                    & (arr[:, 1] > cur[0])
                    & (arr[:, 2] < cur[3])
                    & (arr[:, 3] > cur[2])
                )
                idx = np.flatnonzero(hit)
                if idx.size == 0:
                    break
                changed = True
                for j in idx:
                    used[j] = True
                    o = merged[j]
                    cur = [
                        min(cur[0], o[0]),
                        max(cur[1], o[1]),
                        min(cur[2], o[2]),
                        max(cur[3], o[3]),
                        max(cur[4], o[4]),
                        cur[5] & o[5],
                        cur[6] + o[6],
                    ]
            out.append(cur)
        merged = out
    return merged


# ---------------------------------------------------------------------------------------------
# Filling


def fill_canvas(
    rgb: np.ndarray,
    mask: np.ndarray,
    *,
    seed: int,
    params: PatchParams = DEFAULT_PARAMS,
    on_step: StepFn | None = None,
) -> tuple[np.ndarray, list[Region]]:
    """Fill every masked pixel of a canvas; the others come back bit-identical.

    rgb: HxWx3 uint8 (any channel order). mask: HxW uint8, nonzero = fill; at least one pixel
    must be known. on_step(fraction in [0, 1]) is called between regions and stages and may
    raise to stop. Returns (filled HxWx3 uint8 copy, the regions it filled).
    """
    out = rgb.copy()
    regions = plan_regions(mask, params)
    total = float(sum(r.hole_pixels for r in regions)) or 1.0
    done = 0.0
    for index, region in enumerate(regions):
        base = done / total
        share = region.hole_pixels / total
        if on_step is not None:
            on_step(base)
        box = (slice(region.y0, region.y1), slice(region.x0, region.x1))
        crop = np.ascontiguousarray(rgb[box])
        hole = mask[box] > 0
        if region.thin:
            filled = fill_thin(crop, hole)
        else:
            filled = fill_region(
                crop,
                hole,
                context=region.context,
                seed=seed + 7919 * index,
                params=params,
                on_step=None if on_step is None else _scaled(on_step, base, share),
            )
        np.copyto(out[box], filled, where=hole[:, :, None])
        done += region.hole_pixels
    if on_step is not None:
        on_step(1.0)
    return out, regions


def _scaled(on_step: StepFn, base: float, share: float) -> StepFn:
    return lambda fraction: on_step(base + share * fraction)


def _allowed_sources(hole: np.ndarray, context: int) -> np.ndarray:
    """Known pixels within `context` of the hole: what may be copied. hole: HxW bool."""
    dist = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 3)
    return (~hole) & (dist <= context)


def fill_thin(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Telea diffusion for thin holes. rgb: HxWx3 uint8; hole: HxW bool. Returns HxWx3 uint8."""
    return cv2.inpaint(rgb, hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)


def fill_region(
    rgb: np.ndarray,
    hole: np.ndarray,
    *,
    context: int,
    seed: int,
    params: PatchParams = DEFAULT_PARAMS,
    on_step: StepFn | None = None,
) -> np.ndarray:
    """Fill `hole` in one crop by exemplar patches: layout solved coarse, copied at full scale.

    rgb: HxWx3 uint8 crop. hole: HxW bool, True = fill; at least one known pixel must lie within
    `context` pixels of it (those are the only ones copied). on_step(fraction) is called between
    stages and may raise to stop the fill.
    Returns HxWx3 uint8: the crop with hole pixels filled, others unchanged.
    """
    allowed = _allowed_sources(hole, context)
    if not allowed.any():
        raise ValueError("no known pixel may be copied into the hole")
    pyramid = _build_pyramid(rgb, hole, allowed, _levels_for(hole, context, params))
    while len(pyramid) > 1 and not pyramid[-1][2].any():  # a thin source band vanished there
        pyramid.pop()
    levels = len(pyramid) - 1
    pr = params.patch_radius
    img, known, ok = pyramid[-1]
    est = _solve_layout(img, known, ok, pr)
    if levels == 0:  # small hole: solved at full scale, the library's fill is final
        _report(on_step, 1.0)
        return est
    _report(on_step, _SOLVED)
    rng = np.random.default_rng(seed % 2**64)
    ty, tx = patch_targets(known, pr)
    sources = whole_patch_sources(ok, known, pr)
    field = nearest_field(patch_descriptors(est, pr), ty, tx, sources, rng, params.search_rounds)
    targets = Targets(ty, tx, field)
    _report(on_step, _MATCHED)
    for level in range(levels - 1, -1, -1):
        img, known, ok = pyramid[level]
        start = _upsampled_into(est, img, known)
        coarse_shape = est.shape[:2]
        targets = carried_up(targets, coarse_shape, Level(start, known, ok), pr, rng)
        iterations = params.em_iterations if level > 0 else 1
        if targets.ty.size > params.em_round_patches:
            iterations = 1
        band = None if level > 0 else params.seam_band
        est, targets = refine(
            Level(start, known, ok),
            targets,
            pr,
            rng,
            iterations,
            params.vote_radius if level == 0 else params.coarse_vote_radius,
            params.vote_sharpness,
            band=band,
            seam=0.0 if level > 0 else params.seam_fade,
        )
        _report(on_step, _MATCHED + (1.0 - _MATCHED) * (levels - level) / levels)
    return est


def _upsampled_into(coarse: np.ndarray, img: np.ndarray, known: np.ndarray) -> np.ndarray:
    """img with its hole pixels taken from the coarse image upsampled 2x (the vote's start)."""
    h, w = known.shape
    up = cv2.resize(coarse, (2 * coarse.shape[1], 2 * coarse.shape[0]), interpolation=cv2.INTER_LINEAR)[
        :h, :w
    ]
    out = img.copy()
    hole = known == 0
    out[hole] = up[hole]
    return out


def _report(on_step: StepFn | None, fraction: float) -> None:
    if on_step is not None:
        on_step(fraction)


def _levels_for(hole: np.ndarray, context: int, params: PatchParams) -> int:
    """Octaves below full scale at which the layout is solved.

    Enough to bring the hole down to `work_hole_pixels`, but never so many that the hole gets
    thinner than `min_work_radius` there (a brush stroke shrunk to a line loses its layout), nor
    the source band narrower than `min_band` (an outpainted border would copy noise).
    """
    pixels = int(np.count_nonzero(hole))
    levels = max(0, math.ceil(0.5 * math.log2(max(pixels, 1) / params.work_hole_pixels)))
    # Typical half-thickness: twice the mean distance to the border (a stroke's half width; the
    # max would be set by the thickest blob where strokes cross).
    dist = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
    radius = 2.0 * float(dist[hole].mean())
    levels = min(levels, max(0, math.floor(math.log2(max(radius, 1.0) / params.min_work_radius))))
    levels = min(levels, max(0, math.floor(math.log2(max(context, 1) / params.min_band))))
    # Keep the solved crop big enough to hold a few patches.
    while levels > 0 and min(hole.shape) >> levels < 8 * params.patch_radius:
        levels -= 1
    return levels


def _build_pyramid(
    rgb: np.ndarray, hole: np.ndarray, allowed: np.ndarray, levels: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """[(rgb, known, allowed)] from full scale down `levels` octaves (2x2 means / all-of-4)."""
    known = ~hole
    out = [(np.ascontiguousarray(rgb), known, allowed)]
    for _ in range(levels):
        img, known, allowed = out[-1]
        out.append((_down_rgb(img), _down_all(known), _down_all(allowed)))
    return [(img, k.astype(np.uint8), a.astype(np.uint8)) for img, k, a in out]


def _down_rgb(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        img = cv2.copyMakeBorder(img, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    return cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _down_all(flags: np.ndarray) -> np.ndarray:
    """A coarse pixel is set only when all of its (edge-replicated) fine pixels are."""
    h, w = flags.shape
    padded = np.pad(flags, ((0, h % 2), (0, w % 2)), mode="edge")
    return np.asarray(padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).all(axis=(1, 3)))


def _solve_layout(rgb: np.ndarray, known: np.ndarray, ok: np.ndarray, pr: int) -> np.ndarray:
    """PyPatchMatch on the coarsest octave; known pixels outside `ok` are neither filled nor copied."""
    if _pm is None:
        raise RuntimeError("PyPatchMatch is not installed")
    hole = (known == 0).astype(np.uint8)
    blocked = ((known != 0) & (ok == 0)).astype(np.uint8)
    _pm.set_random_seed(_PM_SEED)
    if blocked.any():
        out = _pm.inpaint(rgb, hole, global_mask=blocked, patch_size=pr)
    else:
        out = _pm.inpaint(rgb, hole, patch_size=pr)
    return np.ascontiguousarray(out)
