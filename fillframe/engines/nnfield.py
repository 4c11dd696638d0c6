"""Nearest-neighbour fields between image patches, in vectorised numpy and OpenCV (no JIT).

A field maps each target pixel to the source pixel whose patch looks most like the target's.
Patches are compared through a short descriptor instead of all their pixels: the low-frequency
2-D DCT coefficients of each patch, more for luma than for chroma, after an orthonormal colour
transform. The basis is orthonormal, so the descriptor distance is the patch SSD of what the
basis keeps; 24 numbers stand for a 7x7x3 patch, and every pixel's descriptor is a handful of
separable OpenCV filters.

The search is PatchMatch done for all targets at once: each round offers every target the
matches of its neighbours at 8, 4, 2 and 1 pixels (shifted by the same step, as PatchMatch
propagation does) and then random candidates around its own match at halving radii.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Orthonormal opponent colour transform: rows give luma, red-blue and green-magenta; SSD is kept.
_OPPONENT = np.array(
    [
        [1 / np.sqrt(3), 1 / np.sqrt(3), 1 / np.sqrt(3)],
        [1 / np.sqrt(2), 0.0, -1 / np.sqrt(2)],
        [1 / np.sqrt(6), -2 / np.sqrt(6), 1 / np.sqrt(6)],
    ],
    np.float32,
)
# DCT frequencies kept per axis for each opponent channel: 4x4 for luma, 2x2 for each chroma.
_FREQUENCIES = (4, 2, 2)
DESCRIPTOR_SIZE = sum(c * c for c in _FREQUENCIES)
_STEPS = (8, 4, 2, 1)  # propagation distances per round
_DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))


@dataclass
class Field:
    """A field on `count` targets: target i matches source pixel (sy[i], sx[i]) at distance d[i]."""

    sy: np.ndarray  # int32
    sx: np.ndarray  # int32
    d: np.ndarray  # float32


def _dct_basis(taps: int, count: int) -> np.ndarray:
    """count x taps orthonormal DCT-II rows."""
    k = np.arange(taps) + 0.5
    rows = [np.cos(np.pi * k * u / taps) * np.sqrt((1 if u == 0 else 2) / taps) for u in range(count)]
    return np.array(rows, np.float32)


def patch_descriptors(rgb: np.ndarray, radius: int) -> np.ndarray:
    """HxWxD float32 descriptor of the (2 radius + 1)² patch centred on every pixel.

    rgb: HxWx3 uint8. Patches that cross the edge see it reflected.
    """
    opponent = rgb.reshape(-1, 3).astype(np.float32) @ _OPPONENT.T
    planes = opponent.reshape(*rgb.shape[:2], 3)
    taps = 2 * radius + 1
    basis = _dct_basis(taps, max(_FREQUENCIES))
    one = np.ones(1, np.float32)
    out = np.empty((*rgb.shape[:2], DESCRIPTOR_SIZE), np.float32)
    k = 0
    for channel, count in enumerate(_FREQUENCIES):
        plane = np.ascontiguousarray(planes[:, :, channel])
        for u in range(count):
            # Separable: filter the rows once per horizontal frequency, then the columns.
            rows = cv2.sepFilter2D(plane, cv2.CV_32F, basis[u], one, borderType=cv2.BORDER_REFLECT)
            for v in range(count):
                out[:, :, k] = cv2.sepFilter2D(rows, cv2.CV_32F, one, basis[v], borderType=cv2.BORDER_REFLECT)
                k += 1
    return out


def refresh_descriptors(
    desc: np.ndarray, rgb: np.ndarray, box: tuple[int, int, int, int], radius: int
) -> None:
    """Recompute `desc` (from `patch_descriptors`) in rows y0:y1, columns x0:x1 after `rgb` changed
    there; the patches read `radius` pixels around the box, so it is computed on that window."""
    height, width = rgb.shape[:2]
    y0, y1, x0, x1 = max(0, box[0]), min(height, box[1]), max(0, box[2]), min(width, box[3])
    wy0, wx0 = max(0, y0 - radius), max(0, x0 - radius)
    wy1, wx1 = min(height, y1 + radius), min(width, x1 + radius)
    part = patch_descriptors(np.ascontiguousarray(rgb[wy0:wy1, wx0:wx1]), radius)
    desc[y0:y1, x0:x1] = part[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]


def whole_patch_sources(ok: np.ndarray, known: np.ndarray, radius: int) -> np.ndarray:
    """HxW bool: pixels of `ok` whose whole patch is known and inside the crop.

    Falls back to `ok` itself when no pixel qualifies (a source band thinner than a patch).
    """
    size = 2 * radius + 1
    whole = cv2.erode(
        (known != 0).astype(np.uint8),
        np.ones((size, size), np.uint8),
        borderType=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    sources: np.ndarray = (ok != 0) & (whole != 0)
    return sources if sources.any() else np.asarray(ok != 0)


def nearest_field(
    desc: np.ndarray,
    ty: np.ndarray,
    tx: np.ndarray,
    sources: np.ndarray,
    rng: np.random.Generator,
    rounds: int,
) -> Field:
    """PatchMatch from targets (ty, tx) to the `sources` (HxW bool) over descriptors HxWxD.

    Starts from random sources; each round propagates neighbours' matches and then searches
    randomly around each match, over the whole crop first, then at halving radii. Deterministic
    for a given generator state.
    """
    height, width = desc.shape[:2]
    src_y, src_x = (a.astype(np.int32) for a in np.nonzero(sources))
    pick = rng.integers(0, src_y.size, ty.size)
    field = Field(src_y[pick], src_x[pick], np.zeros(ty.size, np.float32))
    rescore(field, desc, ty, tx)
    improve_field(field, desc, (ty, tx), sources, rng, SearchPlan(rounds, _STEPS, max(height, width)))
    return field


def rescore(field: Field, desc: np.ndarray, ty: np.ndarray, tx: np.ndarray) -> None:
    """Recompute every match's distance over new descriptors (the target image changed)."""
    width, depth = desc.shape[1], desc.shape[2]
    flat = desc.reshape(-1, depth)
    field.d = _distance(flat[ty * width + tx], flat, field.sy * width + field.sx)


@dataclass(frozen=True)
class SearchPlan:
    """Rounds of propagation at `steps` pixels, each followed by random search around every
    match from `radius` down to 1 pixel."""

    rounds: int
    steps: tuple[int, ...]
    radius: int


def improve_field(
    field: Field,
    desc: np.ndarray,
    targets: tuple[np.ndarray, np.ndarray],
    sources: np.ndarray,
    rng: np.random.Generator,
    plan: SearchPlan,
) -> None:
    """PatchMatch on an existing field, as `plan` says. Matches only ever get closer."""
    ty, tx = targets
    rounds, steps, radius = plan.rounds, plan.steps, plan.radius
    height, width, depth = desc.shape
    flat = desc.reshape(-1, depth)
    want = flat[ty * width + tx]
    slot = np.full((height, width), -1, np.int32)  # target index of each pixel, -1 = not a target
    slot[ty, tx] = np.arange(ty.size, dtype=np.int32)
    everyone = np.arange(ty.size)
    for _ in range(rounds):
        for step in steps:
            for dy, dx in _DIRECTIONS:
                _propagate(field, want, flat, sources, slot, ty, tx, dy * step, dx * step)
        r = radius
        while r >= 1:
            cy = field.sy + rng.integers(-r, r + 1, ty.size, dtype=np.int32)
            cx = field.sx + rng.integers(-r, r + 1, ty.size, dtype=np.int32)
            _offer(field, want, flat, sources, everyone, cy, cx)
            r //= 2


def _distance(want: np.ndarray, flat: np.ndarray, index: np.ndarray) -> np.ndarray:
    diff = flat[index] - want
    squared: np.ndarray = np.einsum("ij,ij->i", diff, diff)
    return squared


def _propagate(
    field: Field,
    want: np.ndarray,
    flat: np.ndarray,
    sources: np.ndarray,
    slot: np.ndarray,
    ty: np.ndarray,
    tx: np.ndarray,
    dy: int,
    dx: int,
) -> None:
    """Offer each target the match of its neighbour at (dy, dx), moved back by the same step."""
    height, width = slot.shape
    ny, nx = ty + dy, tx + dx
    inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
    who = np.flatnonzero(inside)
    neighbour = slot[ny[who], nx[who]]
    has = neighbour >= 0
    who, neighbour = who[has], neighbour[has]
    _offer(field, want, flat, sources, who, field.sy[neighbour] - dy, field.sx[neighbour] - dx)


def _offer(
    field: Field,
    want: np.ndarray,
    flat: np.ndarray,
    sources: np.ndarray,
    who: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
) -> None:
    """Targets `who` take candidate sources (cy, cx) that are allowed and closer than their match."""
    height, width = sources.shape
    fits = (cy >= 0) & (cy < height) & (cx >= 0) & (cx < width)
    fits[fits] = sources[cy[fits], cx[fits]]
    who, cy, cx = who[fits], cy[fits], cx[fits]
    d = _distance(want[who], flat, cy * width + cx)
    better = d < field.d[who]
    who = who[better]
    field.sy[who] = cy[better]
    field.sx[who] = cx[better]
    field.d[who] = d[better]
