"""Weight-free measures of how much a fill looks like a photo, shared by `bench/quality.py` and the
classic engine's tests. Each is computed inside the hole; the bench divides by the same measure of
the true photo, so 1.0 means "like the real photo".

- `blockiness`: pasted blocks leave steps on a grid. The mean luma step between neighbouring hole
  pixels is taken per position modulo 32 (along rows and along columns); a grid of any power-of-
  two pitch up to 32 raises some phases above the others. Peak phase over median phase, the worse
  axis. A photo scores about 1.0-1.1.
- `coherence_p95`: every 7x7 patch overlapping the hole should look like some patch of the known
  area. RMS distance (0-255 scale, per channel value) to the nearest 7x7 patch wholly known, 95th
  percentile. The nearest patch is found by a PatchMatch search in a PCA projection of the patches
  of this image (not the engine's DCT descriptor), then measured exactly on the full patches.
- `texture_energy`: mean Sobel magnitude; a blurred fill scores low.
- `psnr_in`, `ssim_in`: against the truth, inside the hole (they reward blur; kept as a check).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fillframe.engines.nnfield import nearest_field, whole_patch_sources

GRID = 32
PATCH_RADIUS = 3
_PCA_DIMS = 16
_SAMPLE = 4000


def luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def blockiness(rgb: np.ndarray, hole: np.ndarray, grid: int = GRID) -> float:
    """Peak over median of the mean |luma step| by position modulo `grid`, the worse axis.

    rgb: HxWx3 uint8; hole: HxW bool. Steps count only between two hole pixels.
    """
    g = luma(rgb)
    worst = 1.0
    for axis in (0, 1):
        step = np.abs(np.diff(g, axis=axis))
        both = hole[1:, :] & hole[:-1, :] if axis == 0 else hole[:, 1:] & hole[:, :-1]
        ys, xs = np.nonzero(both)
        if ys.size < 4 * grid:
            continue
        phase = (ys if axis == 0 else xs) % grid
        sums = np.bincount(phase, weights=step[ys, xs], minlength=grid)
        counts = np.bincount(phase, minlength=grid)
        means = sums[counts > 0] / counts[counts > 0]
        median = float(np.median(means))
        if median > 1e-6:
            worst = max(worst, float(means.max() / median))
    return worst


def texture_energy(rgb: np.ndarray, hole: np.ndarray) -> float:
    g = luma(rgb)
    mag = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    return float(mag[hole].mean())


def psnr_in(out: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    err = out[hole].astype(np.float64) - truth[hole]
    return float(10 * np.log10(255.0**2 / max(float(np.mean(err**2)), 1e-9)))


def ssim_in(out: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    """Mean of the luma SSIM map (Gaussian window) over the hole's pixels."""
    # scikit-image is a test and bench dependency, not the server's: imported only here.
    from skimage.metrics import structural_similarity

    _, ssim_map = structural_similarity(
        luma(out), luma(truth), data_range=255.0, gaussian_weights=True, sigma=1.5, full=True
    )
    return float(ssim_map[hole].mean())


def patch_targets(hole: np.ndarray, radius: int = PATCH_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """Centres (ys, xs) of the patches that overlap the hole and lie wholly inside the frame."""
    size = 2 * radius + 1
    near = cv2.dilate(hole.astype(np.uint8), np.ones((size, size), np.uint8)) > 0
    height, width = hole.shape
    inner = np.zeros_like(near)
    inner[radius : height - radius, radius : width - radius] = True
    ys, xs = np.nonzero(near & inner)
    return ys.astype(np.int32), xs.astype(np.int32)


def _patches(rgb: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: int) -> np.ndarray:
    """Nx(size²·3) float32 patches centred on (ys, xs), all inside the frame."""
    offs = np.arange(-radius, radius + 1)
    yy = ys[:, None, None] + offs[None, :, None]
    xx = xs[:, None, None] + offs[None, None, :]
    return rgb[yy, xx].reshape(ys.size, -1).astype(np.float32)


def _pca_descriptors(rgb: np.ndarray, known: np.ndarray, radius: int, seed: int) -> np.ndarray:
    """HxWxD projection of every pixel's patch on the top principal axes of known patches."""
    size = 2 * radius + 1
    height, width = known.shape
    rng = np.random.default_rng(seed)
    ys = rng.integers(radius, height - radius, _SAMPLE).astype(np.int32)
    xs = rng.integers(radius, width - radius, _SAMPLE).astype(np.int32)
    sample = _patches(rgb, ys, xs, radius)
    sample -= sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    axes = vt[:_PCA_DIMS].reshape(_PCA_DIMS, size, size, 3)
    planes = [np.ascontiguousarray(rgb[:, :, c], dtype=np.float32) for c in range(3)]
    out = np.zeros((height, width, _PCA_DIMS), np.float32)
    for k in range(_PCA_DIMS):
        for c in range(3):
            # filter2D correlates: the kernel is the axis itself, anchored at the centre.
            out[:, :, k] += cv2.filter2D(
                planes[c], cv2.CV_32F, axes[k, :, :, c], borderType=cv2.BORDER_REFLECT
            )
    return out


@dataclass(frozen=True)
class PatchMatches:
    """Patch centres (ys, xs) overlapping the hole, their nearest known patch (sy, sx), RMS apart."""

    ys: np.ndarray
    xs: np.ndarray
    sy: np.ndarray
    sx: np.ndarray
    rms: np.ndarray


def nearest_known_patches(
    rgb: np.ndarray, hole: np.ndarray, radius: int = PATCH_RADIUS, seed: int = 0, rounds: int = 5
) -> PatchMatches:
    """Every patch overlapping the hole and its nearest wholly known patch, anywhere in the frame."""
    known = (~hole).astype(np.uint8)
    ys, xs = patch_targets(hole, radius)
    desc = _pca_descriptors(rgb, known > 0, radius, seed)
    sources = whole_patch_sources(known, known, radius)
    field = nearest_field(desc, ys, xs, sources, np.random.default_rng(seed), rounds)
    diff = _patches(rgb, ys, xs, radius) - _patches(rgb, field.sy, field.sx, radius)
    return PatchMatches(ys, xs, field.sy, field.sx, np.sqrt(np.mean(diff * diff, axis=1)))


def coherence_p95(rgb: np.ndarray, hole: np.ndarray, radius: int = PATCH_RADIUS, seed: int = 0) -> float:
    return float(np.percentile(nearest_known_patches(rgb, hole, radius, seed).rms, 95))


def subject_copies(matches: PatchMatches, hole: np.ndarray, subject: np.ndarray, min_side: int = 24) -> float:
    """Share of the hole covered by large verbatim copies of the subject: a clone measure.

    A verbatim copy is a connected run of hole pixels whose nearest known patches keep the same
    offset (within one pixel of their neighbours'); it counts when it covers at least
    min_side² pixels and most of its sources lie in `subject` (HxW bool, e.g. the original's
    centre). A second saucer pasted beside the first is such a copy; continued table grain,
    copied from the border band, is not.
    """
    height, width = hole.shape
    inside = hole[matches.ys, matches.xs]
    ys, xs = matches.ys[inside], matches.xs[inside]
    oy, ox = matches.sy[inside] - ys, matches.sx[inside] - xs
    # Quantise offsets to 2 px cells so that neighbours within a pixel share a label.
    key = ((oy + 2 * height) // 2) * (2 * width) + (ox + 2 * width) // 2
    from_subject = subject[matches.sy[inside], matches.sx[inside]]
    covered = 0
    for value in np.unique(key):
        pick = key == value
        if np.count_nonzero(pick) < min_side * min_side:
            continue
        layer = np.zeros((height, width), np.uint8)
        layer[ys[pick], xs[pick]] = 1
        count, labels, stats, _ = cv2.connectedComponentsWithStats(layer, connectivity=8)
        sub_label = labels[ys[pick], xs[pick]]
        for label in range(1, count):
            if stats[label, cv2.CC_STAT_AREA] < min_side * min_side:
                continue
            if from_subject[pick][sub_label == label].mean() > 0.5:
                covered += int(stats[label, cv2.CC_STAT_AREA])
    return covered / max(int(np.count_nonzero(hole)), 1)


def source_copies(matches: PatchMatches, hole: np.ndarray, cell: int = GRID) -> float:
    """How many times the most copied piece of the known area appears in the fill: a clone measure.

    The known area is cut into cell x cell squares; each hole pixel counts for the square that
    holds its nearest known patch. A square's count over its known pixels is how many copies of
    it the fill holds; the 99.9th percentile over squares is returned. At 512² zoom out 1.5x the
    true photo scores 8.0 (coffee) and 4.0 (astronaut), the classic fill 18.4 and 11.6,
    PyPatchMatch 10.2 and 9.6: a piece pasted again and again round the frame raises it.
    """
    inside = hole[matches.ys, matches.xs]
    width = hole.shape[1]
    cells_x = -(-width // cell)
    used = (matches.sy[inside] // cell) * cells_x + matches.sx[inside] // cell
    ky, kx = np.nonzero(~hole)
    area = np.bincount((ky // cell) * cells_x + kx // cell, minlength=used.max(initial=0) + 1)
    counts = np.bincount(used, minlength=area.size)
    full = area >= cell * cell // 2  # squares mostly known, not slivers at the border
    if not full.any():
        return 0.0
    return float(np.percentile(counts[full] / area[full], 99.9))
