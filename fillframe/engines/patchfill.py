"""Exemplar (PatchMatch) hole filling, coarse to fine, on the hole's neighbourhood only.

The plan for one canvas:
1. `plan_regions` cuts the mask into regions: each hole component's bounding box plus a context
   margin (overlapping boxes merged). Cost then grows with the holes, not the frame.
2. Thin holes (scratches, text) go to OpenCV's Telea diffusion, which is faster and as good there.
3. Thick holes go to `fill_region`: PyPatchMatch solves the region at a reduced scale (its cost
   grows steeply with size), then our own kernel upsamples its nearest-neighbour field one octave
   at a time and refines it with a few PatchMatch passes (propagation + local random search) and
   a vote, so the full-scale fill is copied from real pixels instead of being an upsampled blur.
   PyPatchMatch cannot be given a starting field, hence the separate refinement kernel. Measured
   (bench/quality.py, one core): PyPatchMatch alone takes 1.05-1.25 s on a whole 512² frame with
   a 10% box and 560-720 ms on just the box plus its context (target 250 ms); solved at half or
   quarter scale and upsampled it keeps only 0.3-0.6 of the truth's texture (target 0.75).
4. A residual measured across the hole's border through the final field is spread a short way
   into the hole, which removes the seam without touching known pixels.

Only known pixels within `context` of the hole are used as a source. For outpainting (a wide
band of new canvas) that is an outer band of the original, which keeps the fill from copying the
subject (a second face, a second motorbike).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from numba import njit

try:
    from patchmatch import patch_match as _pm
except ImportError:  # reported by `patchmatch_ready`
    _pm = None

StepFn = Callable[[float], None]

# PyPatchMatch reads one process-global seed at the start of every call. Every call here stores
# the same constant first, so concurrent fills never race on it; the job's seed drives our own
# refinement kernel instead.
_PM_SEED = 1212
# Cost of a source pixel that is unknown or off the crop, per pixel: the worst possible RGB error.
_PENALTY = 3 * 255 * 255
_FAR = 2**62  # "no match yet" distance


@dataclass(frozen=True)
class PatchParams:
    """Tuning knobs. Defaults were set with `bench/quality.py`."""

    patch_radius: int = 3  # 7x7 patches: PyPatchMatch's sweet spot for speed and structure
    work_hole_pixels: int = 3000  # hole size (pixels) at which PyPatchMatch solves the layout
    min_work_radius: float = 4.0  # the hole's inscribed radius must stay this big when solved
    thin_radius: float = 3.0  # holes no thicker than 2x this go to Telea diffusion
    context_factor: float = 1.0  # context margin as a multiple of the hole's inscribed radius
    context_min: int = 48
    context_max_fraction: float = 0.25  # of the known area's short side (outpaint source band)
    coarse_passes: int = 6  # PatchMatch passes that recover the field at the solved scale
    em_iterations: int = 1  # search + vote rounds on each intermediate octave
    passes: int = 2  # PatchMatch passes per round
    search_radius: int = 8  # random-search radius (pixels of that octave) during refinement
    # Votes take the best-matching overlapping patch, never a mean: a blurred estimate would draw
    # flat source patches on the next octave.
    vote_radius: int = 0  # overlapping patches that vote on intermediate octaves
    final_vote_radius: int = 1  # ... and on the full-scale one
    # Search work per octave, in target pixels x passes: huge outpaint octaves get fewer passes,
    # and past it none (the copy through the upsampled field still keeps their texture).
    octave_budget: int = 1_500_000
    seam_sigma: float = 8.0  # pixels over which the border residual fades into the hole
    seam_smooth: float = 0.5  # pixels along the border over which the residual is averaged


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
    _, _, kw, kh = cv2.boundingRect(cv2.compare(mask, 0, cv2.CMP_EQ))
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
    must be known. on_step(fraction in [0, 1]) is called between regions and octaves and may
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
    """Fill `hole` in one crop by exemplar patches, coarse to fine.

    rgb: HxWx3 uint8 crop. hole: HxW bool, True = fill; at least one known pixel must lie within
    `context` pixels of it (those are the only ones copied). on_step(fraction) is called between
    octaves and may raise to stop the fill.
    Returns HxWx3 uint8: the crop with hole pixels filled, others unchanged.
    """
    allowed = _allowed_sources(hole, context)
    if not allowed.any():
        raise ValueError("no known pixel may be copied into the hole")
    pyramid = _build_pyramid(rgb, hole, allowed, _levels_for(hole, context, params))
    while len(pyramid) > 1 and not pyramid[-1][2].any():  # a thin source band vanished there
        pyramid.pop()
    rng = np.array([_seed_state(seed)], dtype=np.uint64)
    pr = params.patch_radius
    top = len(pyramid) - 1
    weights = [float(level[1].size) for level in pyramid]  # progress by octave area
    done, total = 0.0, sum(weights)

    est, known, ok = pyramid[top]
    est = _solve_layout(est, known, ok, pr)
    if top == 0:  # small hole: solved at full scale, the library's fill is final
        if on_step is not None:
            on_step(1.0)
        return est
    ys, xs = _targets(known, pr)
    nnf = np.full((*known.shape, 2), -1, np.int32)
    nnfd = np.full(known.shape, _FAR, np.int64)
    _random_init(est, known, ok, ys, xs, nnf, nnfd, pr, rng)
    _search(est, known, ok, ys, xs, nnf, nnfd, pr, params.coarse_passes, max(est.shape[:2]), rng)

    for level in range(top - 1, -1, -1):
        done += weights[level + 1]
        if on_step is not None:
            on_step(done / total)
        est, nnf, src = _refine_octave(pyramid[level], est, nnf, params, rng, final=level == 0)

    out = _blend_seam(est, pyramid[0][1], src, params.seam_sigma, params.seam_smooth)
    if on_step is not None:
        on_step(1.0)
    return out


def _refine_octave(
    octave: tuple[np.ndarray, np.ndarray, np.ndarray],
    prev_est: np.ndarray,
    prev_nnf: np.ndarray,
    params: PatchParams,
    rng: np.ndarray,
    *,
    final: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One octave finer: upsample the field, copy through it, then search and vote.

    The first estimate copies real pixels of this octave through the upsampled field, not an
    upsampled (blurred) image: matching against a blur would pick flat source patches. Huge
    octaves get the passes `octave_budget` affords, possibly none.
    """
    img, known, ok = octave
    pr = params.patch_radius
    hole_ys, hole_xs = (a.astype(np.int32) for a in np.nonzero(known == 0))
    rounds = 1 if final else params.em_iterations
    affordable = params.octave_budget // max(hole_ys.size, 1)
    passes = min(params.passes, affordable)
    rounds = min(rounds, max(1, affordable // max(passes, 1)))
    ys, xs = (hole_ys, hole_xs) if passes == 0 else _targets(known, pr)
    nnf = np.full((*known.shape, 2), -1, np.int32)
    nnfd = np.full(known.shape, _FAR, np.int64)
    _upsample_nnf(ok, ys, xs, prev_nnf, nnf, rng)
    est = img.copy()
    _seed_estimate(prev_est, hole_ys, hole_xs, est)  # for pixels that get no vote
    src = np.full((*known.shape, 2), -1, np.int32)  # where each hole pixel's value came from
    _vote(est, known, hole_ys, hole_xs, nnf, nnfd, 0, est, src)
    if passes == 0:
        return est, nnf, src
    _evaluate(est, known, ys, xs, nnf, nnfd, pr)
    for i in range(rounds):
        _search(est, known, ok, ys, xs, nnf, nnfd, pr, passes, params.search_radius, rng)
        last = final and i == rounds - 1
        radius = params.final_vote_radius if last else params.vote_radius
        _vote(est, known, hole_ys, hole_xs, nnf, nnfd, radius, est, src)
    return est, nnf, src


def _levels_for(hole: np.ndarray, context: int, params: PatchParams) -> int:
    """Octaves below full scale at which the layout is solved.

    Enough to bring the hole down to `work_hole_pixels`, but never so many that the hole gets
    thinner than `min_work_radius` there (a brush stroke shrunk to a line loses its layout), nor
    the source band narrower than a patch (an outpainted border would copy blobs).
    """
    pixels = int(np.count_nonzero(hole))
    levels = max(0, math.ceil(0.5 * math.log2(max(pixels, 1) / params.work_hole_pixels)))
    # Typical half-thickness: twice the mean distance to the border (a stroke's half width; the
    # max would be set by the thickest blob where strokes cross).
    dist = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
    radius = 2.0 * float(dist[hole].mean())
    levels = min(levels, max(0, math.floor(math.log2(max(radius, 1.0) / params.min_work_radius))))
    band = 2 * params.patch_radius + 1
    levels = min(levels, max(0, math.floor(math.log2(max(context, 1) / band))))
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
    return padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).all(axis=(1, 3))


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


def _targets(known: np.ndarray, pr: int) -> tuple[np.ndarray, np.ndarray]:
    """Raster-ordered (ys, xs) of pixels whose patch overlaps the hole: they get a field entry."""
    hole = (known == 0).astype(np.uint8)
    near = cv2.dilate(hole, np.ones((2 * pr + 1, 2 * pr + 1), np.uint8))
    ys, xs = np.nonzero(near)
    return ys.astype(np.int32), xs.astype(np.int32)


def _blend_seam(
    est: np.ndarray, known: np.ndarray, src: np.ndarray, fade: float, smooth: float
) -> np.ndarray:
    """Spread the colour step found across the hole's border a few pixels into the hole.

    For a hole pixel next to a known one, `src` says which source pixel the fill copied; the
    source pixel's neighbour in the same direction is what the fill "expects" the known pixel to
    be. Their difference, averaged over `smooth` pixels along the border and faded over `fade`
    pixels into the hole, is added to the fill: the step across the border then equals the step
    inside the copied source. Cost grows with the band along the border, not with the hole.
    """
    hole_u8 = (known == 0).astype(np.uint8)
    ys, xs = (a.astype(np.int32) for a in np.nonzero(hole_u8))
    resid = np.zeros((*known.shape, 3), np.float32)
    count = np.zeros(known.shape, np.float32)
    _border_residual(est, known, ys, xs, src, resid, count)
    dist = cv2.distanceTransform(hole_u8, cv2.DIST_L2, 3)
    out = est.copy()
    _spread_residual(resid, count, dist, ys, xs, fade, smooth, out)
    return out


# ---------------------------------------------------------------------------------------------
# Numba kernels. Images are HxWx3 uint8; `known`/`ok` HxW uint8 flags; the field `nnf` is
# HxWx2 int32 (source y, x; -1 = none) with its patch distance in `nnfd` (int64).


def _seed_state(seed: int) -> int:
    """A nonzero 64-bit xorshift state from any integer seed (splitmix64 finaliser)."""
    z = (seed + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) or 1


@njit(cache=True, nogil=True)
def _randint(state: np.ndarray, n: int) -> int:
    x = state[0]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    state[0] = x
    r = (x * np.uint64(2685821657736338717)) >> np.uint64(33)
    return int(r % np.uint64(n))


@njit(cache=True, nogil=True)
def _dist(img, known, ty, tx, sy, sx, pr, cutoff):  # type: ignore[no-untyped-def]
    """SSD between the patch at target (ty, tx) and source (sy, sx); stops early past cutoff."""
    h, w = known.shape
    d = 0
    if pr <= ty < h - pr and pr <= tx < w - pr and pr <= sy < h - pr and pr <= sx < w - pr:
        # Both patches inside the crop (the common case): no bounds checks.
        for dy in range(-pr, pr + 1):
            for dx in range(-pr, pr + 1):
                if known[sy + dy, sx + dx] == 0:
                    d += _PENALTY
                    continue
                for c in range(3):
                    e = np.int32(img[ty + dy, tx + dx, c]) - np.int32(img[sy + dy, sx + dx, c])
                    d += e * e
            if d >= cutoff:
                return d
        return d
    for dy in range(-pr, pr + 1):
        yt = ty + dy
        if yt < 0 or yt >= h:
            continue
        ys = sy + dy
        for dx in range(-pr, pr + 1):
            xt = tx + dx
            if xt < 0 or xt >= w:
                continue
            xs = sx + dx
            if ys < 0 or ys >= h or xs < 0 or xs >= w or known[ys, xs] == 0:
                d += _PENALTY
                continue
            for c in range(3):
                e = np.int64(img[yt, xt, c]) - np.int64(img[ys, xs, c])
                d += e * e
        if d >= cutoff:
            return d
    return d


@njit(cache=True, nogil=True)
def _random_init(img, known, ok, ys, xs, nnf, nnfd, pr, state):  # type: ignore[no-untyped-def]
    """Point every target at a random allowed source pixel."""
    srcy, srcx = np.nonzero(ok)
    n = srcy.size
    for i in range(ys.size):
        k = _randint(state, n)
        sy, sx = srcy[k], srcx[k]
        nnf[ys[i], xs[i], 0] = sy
        nnf[ys[i], xs[i], 1] = sx
        nnfd[ys[i], xs[i]] = _dist(img, known, ys[i], xs[i], sy, sx, pr, _FAR)


@njit(cache=True, nogil=True)
def _try(img, known, ok, nnf, nnfd, ty, tx, sy, sx, pr):  # type: ignore[no-untyped-def]
    h, w = known.shape
    if sy < 0 or sy >= h or sx < 0 or sx >= w or ok[sy, sx] == 0:
        return
    if sy == nnf[ty, tx, 0] and sx == nnf[ty, tx, 1]:
        return
    d = _dist(img, known, ty, tx, sy, sx, pr, nnfd[ty, tx])
    if d < nnfd[ty, tx]:
        nnf[ty, tx, 0] = sy
        nnf[ty, tx, 1] = sx
        nnfd[ty, tx] = d


@njit(cache=True, nogil=True)
def _search(img, known, ok, ys, xs, nnf, nnfd, pr, passes, radius, state):  # type: ignore[no-untyped-def]
    """PatchMatch passes over the targets: propagation from the previous neighbours (alternating
    scan direction) and a random search around the current match with halving radius."""
    h, w = known.shape
    n = ys.size
    for p in range(passes):
        step = 1 if p % 2 == 0 else -1
        for k in range(n):
            i = k if step == 1 else n - 1 - k
            ty, tx = ys[i], xs[i]
            if nnfd[ty, tx] == 0:
                continue
            ny = ty - step
            if 0 <= ny < h and nnf[ny, tx, 0] >= 0:
                _try(img, known, ok, nnf, nnfd, ty, tx, nnf[ny, tx, 0] + step, nnf[ny, tx, 1], pr)
            nx = tx - step
            if 0 <= nx < w and nnf[ty, nx, 0] >= 0:
                _try(img, known, ok, nnf, nnfd, ty, tx, nnf[ty, nx, 0], nnf[ty, nx, 1] + step, pr)
            r = radius
            while r >= 1:
                cy = nnf[ty, tx, 0] + _randint(state, 2 * r + 1) - r
                cx = nnf[ty, tx, 1] + _randint(state, 2 * r + 1) - r
                cy = min(max(cy, 0), h - 1)
                cx = min(max(cx, 0), w - 1)
                _try(img, known, ok, nnf, nnfd, ty, tx, cy, cx, pr)
                r //= 2


@njit(cache=True, nogil=True)
def _upsample_nnf(ok, ys, xs, coarse, nnf, state):  # type: ignore[no-untyped-def]
    """Fine field from the coarse one: twice the coarse match plus the offset inside the 2x2 block."""
    h, w = ok.shape
    ch, cw = coarse.shape[0], coarse.shape[1]
    srcy, srcx = np.nonzero(ok)
    n = srcy.size
    for i in range(ys.size):
        ty, tx = ys[i], xs[i]
        cy, cx = min(ty // 2, ch - 1), min(tx // 2, cw - 1)
        sy, sx = -1, -1
        if coarse[cy, cx, 0] >= 0:
            sy = min(2 * coarse[cy, cx, 0] + (ty - 2 * cy), h - 1)
            sx = min(2 * coarse[cy, cx, 1] + (tx - 2 * cx), w - 1)
            if ok[sy, sx] == 0:
                sy = -1
        if sy < 0:
            k = _randint(state, n)
            sy, sx = srcy[k], srcx[k]
        nnf[ty, tx, 0] = sy
        nnf[ty, tx, 1] = sx


@njit(cache=True, nogil=True)
def _evaluate(img, known, ys, xs, nnf, nnfd, pr):  # type: ignore[no-untyped-def]
    """Patch distance of every target's current match."""
    for i in range(ys.size):
        ty, tx = ys[i], xs[i]
        nnfd[ty, tx] = _dist(img, known, ty, tx, nnf[ty, tx, 0], nnf[ty, tx, 1], pr, _FAR)


@njit(cache=True, nogil=True)
def _vote(img, known, ys, xs, nnf, nnfd, radius, out, src):  # type: ignore[no-untyped-def]
    """Each hole pixel takes its value from the best-matching patch within `radius` that covers
    it (a copy, never a mean, so the fill stays sharp) and records its origin in `src`.
    `out` may be `img`: only known pixels are read."""
    h, w = known.shape
    for i in range(ys.size):
        ty, tx = ys[i], xs[i]
        found = False
        bestd = _FAR
        by, bx = 0, 0
        for dy in range(-radius, radius + 1):
            qy = ty + dy
            if qy < 0 or qy >= h:
                continue
            for dx in range(-radius, radius + 1):
                qx = tx + dx
                if qx < 0 or qx >= w or nnf[qy, qx, 0] < 0:
                    continue
                sy = nnf[qy, qx, 0] - dy
                sx = nnf[qy, qx, 1] - dx
                if sy < 0 or sy >= h or sx < 0 or sx >= w or known[sy, sx] == 0:
                    continue
                if not found or nnfd[qy, qx] < bestd:
                    found = True
                    bestd = nnfd[qy, qx]
                    by, bx = sy, sx
        if found:
            src[ty, tx, 0] = by
            src[ty, tx, 1] = bx
            for c in range(3):
                out[ty, tx, c] = img[by, bx, c]


@njit(cache=True, nogil=True)
def _border_residual(img, known, ys, xs, src, resid, count):  # type: ignore[no-untyped-def]
    """For hole pixels beside known ones: known value minus the value the copied source continues with."""
    h, w = known.shape
    for i in range(ys.size):
        ty, tx = ys[i], xs[i]
        sy0, sx0 = src[ty, tx, 0], src[ty, tx, 1]
        if sy0 < 0:
            continue
        for k in range(4):
            dy = (-1, 1, 0, 0)[k]
            dx = (0, 0, -1, 1)[k]
            ky, kx = ty + dy, tx + dx
            if ky < 0 or ky >= h or kx < 0 or kx >= w or known[ky, kx] == 0:
                continue
            sy, sx = sy0 + dy, sx0 + dx
            if sy < 0 or sy >= h or sx < 0 or sx >= w or known[sy, sx] == 0:
                continue
            for c in range(3):
                resid[ty, tx, c] += np.float32(img[ky, kx, c]) - np.float32(img[sy, sx, c])
            count[ty, tx] += 1.0


@njit(cache=True, nogil=True)
def _seed_estimate(coarse, ys, xs, out):  # type: ignore[no-untyped-def]
    """Hole pixels take their coarse pixel (nearest upsampling)."""
    ch, cw = coarse.shape[0], coarse.shape[1]
    for i in range(ys.size):
        cy, cx = min(ys[i] // 2, ch - 1), min(xs[i] // 2, cw - 1)
        for c in range(3):
            out[ys[i], xs[i], c] = coarse[cy, cx, c]


@njit(cache=True, nogil=True)
def _spread_residual(resid, count, dist, ys, xs, fade, smooth, out):  # type: ignore[no-untyped-def]
    """Add to each hole pixel near the border the border residual around it, faded by its distance
    from the border. Normalised convolution with a narrow Gaussian: its common factor cancels, so
    at any depth it averages the nearest stretch of border over about `smooth` pixels."""
    h, w = count.shape
    for i in range(ys.size):
        ty, tx = ys[i], xs[i]
        depth = max(dist[ty, tx] - 1.0, 0.0)
        if depth > 3.0 * fade:
            continue
        # Border pixels farther than depth + 3 * smooth weigh nothing after normalising.
        reach = math.ceil(depth + 3.0 * smooth) + 2
        r0 = 0.0
        r1 = 0.0
        r2 = 0.0
        wsum = 0.0
        for y in range(max(0, ty - reach), min(h, ty + reach + 1)):
            for x in range(max(0, tx - reach), min(w, tx + reach + 1)):
                n = count[y, x]
                if n == 0.0:
                    continue
                # Offset by the depth so the nearest border pixels weigh about 1 (no underflow).
                d2 = (y - ty) ** 2 + (x - tx) ** 2 - depth * depth
                wt = math.exp(-0.5 * d2 / (smooth * smooth))
                r0 += wt * resid[y, x, 0]
                r1 += wt * resid[y, x, 1]
                r2 += wt * resid[y, x, 2]
                wsum += wt * n
        if wsum <= 1e-12:
            continue
        k = math.exp(-0.5 * (depth / fade) ** 2) / wsum
        out[ty, tx, 0] = np.uint8(min(max(out[ty, tx, 0] + r0 * k + 0.5, 0.0), 255.0))
        out[ty, tx, 1] = np.uint8(min(max(out[ty, tx, 1] + r1 * k + 0.5, 0.0), 255.0))
        out[ty, tx, 2] = np.uint8(min(max(out[ty, tx, 2] + r2 * k + 0.5, 0.0), 255.0))
