"""Fill realism and speed of the classic engine against PyPatchMatch (patch size 5, whole frame)
and OpenCV Telea, all measured in the same run.

    .venv/bin/python bench/quality.py            # 8 photos, 512² and 1024² (about 20 min, 1 core)
    .venv/bin/python bench/quality.py --quick    # 3 photos at 512² (about a minute)
    .venv/bin/python bench/quality.py --extras   # outpaint seams, cost in a 4096² photo
    .venv/bin/python bench/quality.py --only brick gravel > b.log; ... --from-log a.log b.log
    .venv/bin/python bench/quality.py --truth-windows  # how far a real photo's own blockiness strays

Cases: box 10% and 25%, brush 15% (fixed seeds), outpaint right by 50% (the right third of the
photo is new canvas) and zoom out 1.5x (only the central 1/1.5 of the photo is kept); the truth
is always the whole photo. Measures, inside the hole, each over the truth's own (1.0 = like the
real photo), from `fillframe.engines.fillquality`: grid blockiness, patch coherence p95 (lower is
better), texture energy; then PSNR and SSIM against the truth. For zoom out, `clones` is the
share of the new canvas that is a large verbatim copy of the subject (the original's centre),
and `copies` how many times the most copied 32x32 piece of the original appears in the fill
(99.9th percentile over pieces, each hole pixel counted for the piece holding its nearest known
patch), over the truth's own.
Prints medians per case type and size, and over all cases; CPU ms use one OpenCV thread.
Contact sheets (a window at the hole's border, zoomed 2x; whole frames for zoom out) go to
bench/out/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from skimage import data

# The repository root instead of bench/ itself, whose queue.py would shadow the standard library's.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from fillframe.engines import fillquality as fq
from fillframe.engines.patchfill import fill_canvas
from fillframe.imaging.canvas import outpaint_canvas

PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "brick",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
)
QUICK_PHOTOS = ("chelsea", "coffee", "gravel")
CASES = ("box10", "box25", "brush15", "outright50", "zoomout15")
OUT = Path(__file__).resolve().parent / "out"
ZOOM_WINDOW = 96  # px of the canvas shown per contact-sheet tile, then zoomed 2x

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]


def photo(name: str, width: int, height: int | None = None) -> np.ndarray:
    """A scikit-image photo centre-cropped to the aspect and resized: HxWx3 uint8 RGB."""
    height = height or width
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    h, w = img.shape[:2]
    if w * height > h * width:
        cw = h * width // height
        img = img[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = w * height // width
        img = img[(h - ch) // 2 : (h - ch) // 2 + ch]
    interp = cv2.INTER_AREA if img.shape[1] > width else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(img[:, :, :3], (width, height), interpolation=interp))


def make_mask(kind: str, size: int, seed: int) -> np.ndarray:
    """size x size uint8 mask, 255 = fill, for one of CASES."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    if kind.startswith("box"):
        side = round(size * (int(kind[3:]) / 100) ** 0.5)
        y, x = rng.integers(size // 16, size - side - size // 16, 2)
        mask[y : y + side, x : x + side] = 255
    elif kind == "outright50":
        mask[:, round(size / 1.5) :] = 255
    elif kind == "zoomout15":
        mask[:] = 255
        inner = round(size / 1.5)
        start = (size - inner) // 2
        mask[start : start + inner, start : start + inner] = 0
    else:
        scale = size / 512
        while np.count_nonzero(mask) < 0.15 * mask.size:
            pts = [rng.uniform(0.1, 0.9, 2) * size]
            for _ in range(int(rng.integers(3, 7))):
                pts.append(np.clip(pts[-1] + rng.normal(0, 60 * scale, 2), 0, size - 1))
            width = int(rng.integers(12, 36) * scale)
            poly = np.array(pts, np.int32).reshape(-1, 1, 2)
            cv2.polylines(mask, [poly], False, 255, width, lineType=cv2.LINE_8)
    return mask


def subject_of(hole: np.ndarray) -> np.ndarray:
    """The original's centre: known pixels farther than a quarter of its short side from its edge."""
    known = (~hole).astype(np.uint8)
    _, _, w, h = cv2.boundingRect(known)
    dist = cv2.distanceTransform(
        cv2.copyMakeBorder(known, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0), cv2.DIST_L2, 3
    )
    return dist[1:-1, 1:-1] > 0.25 * min(w, h)


def classic(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return fill_canvas(rgb, mask, seed=1)[0]


def pypatchmatch(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from patchmatch import patch_match

    patch_match.set_random_seed(1212)
    return patch_match.inpaint(rgb, mask, patch_size=5)


def telea(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return cv2.inpaint(rgb, mask, 3, cv2.INPAINT_TELEA)


METHODS: dict[str, Method] = {"classic": classic, "pypm5": pypatchmatch, "telea": telea}
MEASURES = ("ms", "block", "coher", "texture", "psnr", "ssim", "clones", "copies")


def timed(fn: Method, rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """CPU milliseconds of this process: steady while other jobs share the machine."""
    start = time.process_time()
    out = fn(rgb, mask)
    return out, (time.process_time() - start) * 1000


@dataclass
class Truth:
    block: float
    coher: float
    texture: float
    copies: float  # zoom out only (nan otherwise)


@dataclass
class Cells:
    """Measures per (method, size, case): lists over photos."""

    values: dict[tuple[str, int, str, str], list[float]] = field(default_factory=dict)

    def add(self, method: str, size: int, case: str, measure: str, value: float) -> None:
        self.values.setdefault((method, size, case, measure), []).append(value)

    def median(self, method: str, measure: str, size: int | None = None, case: str | None = None) -> float:
        got = [
            v
            for (m, s, c, k), vs in self.values.items()
            if m == method and k == measure and size in (None, s) and case in (None, c)
            for v in vs
        ]
        return statistics.median(got) if got else float("nan")

    def worst(self, method: str, measure: str) -> float:
        got = [v for (m, _, _, k), vs in self.values.items() if m == method and k == measure for v in vs]
        return max(got) if got else float("nan")


def measure(
    cells: Cells,
    label: str,
    size: int,
    case: str,
    out: np.ndarray,
    truth: np.ndarray,
    hole: np.ndarray,
    ref: Truth,
    ms: float,
) -> None:
    matches = fq.nearest_known_patches(out, hole)
    cells.add(label, size, case, "ms", ms)
    cells.add(label, size, case, "block", fq.blockiness(out, hole) / ref.block)
    cells.add(label, size, case, "coher", float(np.percentile(matches.rms, 95)) / ref.coher)
    cells.add(label, size, case, "texture", fq.texture_energy(out, hole) / ref.texture)
    cells.add(label, size, case, "psnr", fq.psnr_in(out, truth, hole))
    cells.add(label, size, case, "ssim", fq.ssim_in(out, truth, hole))
    if case == "zoomout15":
        cells.add(label, size, case, "clones", fq.subject_copies(matches, hole, subject_of(hole)))
        cells.add(label, size, case, "copies", fq.source_copies(matches, hole) / ref.copies)
    # One line per fill as it is measured, so that a cut-short run still says what it saw.
    got = {
        k: cells.values[(label, size, case, k)][-1]
        for k in MEASURES
        if (label, size, case, k) in cells.values
    }
    print(f"case {label} {size} {case} " + " ".join(f"{k}={v:.4f}" for k, v in got.items()), flush=True)


def cells_from_log(paths: list[Path]) -> Cells:
    """The measures printed as `case METHOD SIZE CASE k=v ...` lines by earlier runs."""
    cells = Cells()
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.startswith("case "):
                continue
            _, label, size, case, *pairs = line.split()
            for pair in pairs:
                key, value = pair.split("=")
                cells.add(label, int(size), case, key, float(value))
    return cells


def window(img: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """ZOOM_WINDOW² around a hole pixel about a third of a window deep, zoomed 2x (nearest)."""
    depth = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
    want = min(ZOOM_WINDOW / 3, float(depth.max()))
    ys, xs = np.nonzero(np.abs(depth - want) <= 1.5)
    cy, cx = np.mean(np.nonzero(hole), axis=1)
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    half = ZOOM_WINDOW // 2
    y0 = int(np.clip(ys[i] - half, 0, img.shape[0] - ZOOM_WINDOW))
    x0 = int(np.clip(xs[i] - half, 0, img.shape[1] - ZOOM_WINDOW))
    crop = img[y0 : y0 + ZOOM_WINDOW, x0 : x0 + ZOOM_WINDOW]
    return cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)


def run_cases(photos: tuple[str, ...], sizes: list[int], sheets_on: bool = True) -> Cells:
    cells = Cells()
    sheets: dict[str, list[list[np.ndarray]]] = {}
    for size in sizes:
        for photo_index, name in enumerate(photos):
            truth = photo(name, size)
            for case_index, case in enumerate(CASES):
                mask = make_mask(case, size, seed=100 * photo_index + case_index)
                hole = mask > 0
                copies = (
                    fq.source_copies(fq.nearest_known_patches(truth, hole), hole)
                    if case == "zoomout15"
                    else float("nan")
                )
                ref = Truth(
                    fq.blockiness(truth, hole),
                    fq.coherence_p95(truth, hole),
                    fq.texture_energy(truth, hole),
                    copies,
                )
                shown = truth.copy()
                shown[hole] = (255, 0, 255)
                tiles = [window(shown, hole), window(truth, hole)]
                frames = [truth]
                for label, fn in METHODS.items():
                    out, ms = timed(fn, truth, mask)
                    measure(cells, label, size, case, out, truth, hole, ref, ms)
                    tiles.append(window(out, hole))
                    frames.append(out)
                if sheets_on and size == sizes[0]:
                    sheets.setdefault(case, []).append(tiles)
                    if case == "zoomout15":
                        sheets.setdefault("zoomout15-frames", []).append(
                            [cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in frames]
                        )
                print(f"  {size} {name:<22} {case:<11} done", file=sys.stderr, flush=True)
    for case, rows in sheets.items():
        labels = ["truth", *METHODS] if case.endswith("frames") else ["input", "truth", *METHODS]
        write_sheet(f"quality-{case}.jpg", rows, labels)
    return cells


def write_sheet(name: str, rows: list[list[np.ndarray]], labels: list[str]) -> None:
    """A grid of equal tiles with a label row on top, as JPEG (kept small for the repository)."""
    tile = rows[0][0].shape[0]
    sheet = np.full((22 + len(rows) * (tile + 4), len(labels) * (tile + 4), 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = 22 + r * (tile + 4), c * (tile + 4)
            sheet[y : y + tile, x : x + tile] = img
    for c, label in enumerate(labels):
        cv2.putText(sheet, label, (c * (tile + 4) + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
    OUT.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(OUT / name), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])


def row(cells: Cells, method: str, size: int | None = None, case: str | None = None) -> str:
    m = {k: cells.median(method, k, size, case) for k in MEASURES}
    clones = "" if np.isnan(m["clones"]) else f"{m['clones']:>8.3f}{m['copies']:>8.2f}"
    return (
        f"{m['ms']:>8.0f}{m['block']:>7.2f}{m['coher']:>7.2f}{m['texture']:>8.2f}"
        f"{m['psnr']:>7.2f}{m['ssim']:>7.3f}{clones}"
    )


def report(cells: Cells, sizes: list[int]) -> None:
    print(f"{'method':<9}{'size':>5} {'case':<11}{'ms':>8}{'block':>7}{'coher':>7}", end="")
    print(f"{'texture':>8}{'PSNR':>7}{'SSIM':>7}{'clones':>8}{'copies':>8}")
    for size in sizes:
        for case in CASES:
            for method in METHODS:
                print(f"{method:<9}{size:>5} {case:<11}" + row(cells, method, size, case))
    print("\nper case type, both sizes:")
    for case in CASES:
        for method in METHODS:
            print(f"{method:<9}{'all':>5} {case:<11}" + row(cells, method, None, case))
    print("\nall cases (medians; block/coher/texture over the truth's):")
    for method in METHODS:
        print(f"{method:<9}{'all':>5} {'all':<11}" + row(cells, method))
    print("\ntargets for classic:")
    block, worst = cells.median("classic", "block"), cells.worst("classic", "block")
    print(f"  blockiness median {block:.2f} (<= 1.1), worst case {worst:.2f} (<= 1.25)")
    coher = cells.median("classic", "coher") / cells.median("pypm5", "coher")
    print(f"  coherence p95 median {coher:.2f}x PyPatchMatch's (<= 1.1)")
    print(f"  texture median {cells.median('classic', 'texture'):.2f} (>= 0.6)")
    for size in sizes:
        ratio = cells.median("classic", "ms", size) / cells.median("pypm5", "ms", size)
        print(f"  time at {size}²: {ratio:.2f}x PyPatchMatch's (<= 0.2)")


def seam_ratio(out: np.ndarray, placed: tuple[int, int, int, int]) -> float:
    """Mean |step| across the original's border over the mean |step| one pixel inside it.

    placed: (top, left, height, width) of the original on the canvas; sides on the canvas edge
    are skipped. About 1 when the border cannot be seen.
    """
    g = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32)
    top, left, h, w = placed
    bottom, right = top + h - 1, left + w - 1
    across, inside = [], []
    if top > 0:
        across.append(np.abs(g[top, left : right + 1] - g[top - 1, left : right + 1]))
        inside.append(np.abs(g[top, left : right + 1] - g[top + 1, left : right + 1]))
    if bottom < g.shape[0] - 1:
        across.append(np.abs(g[bottom, left : right + 1] - g[bottom + 1, left : right + 1]))
        inside.append(np.abs(g[bottom, left : right + 1] - g[bottom - 1, left : right + 1]))
    if left > 0:
        across.append(np.abs(g[top : bottom + 1, left] - g[top : bottom + 1, left - 1]))
        inside.append(np.abs(g[top : bottom + 1, left] - g[top : bottom + 1, left + 1]))
    if right < g.shape[1] - 1:
        across.append(np.abs(g[top : bottom + 1, right] - g[top : bottom + 1, right + 1]))
        inside.append(np.abs(g[top : bottom + 1, right] - g[top : bottom + 1, right - 1]))
    return float(np.concatenate(across).mean() / max(float(np.concatenate(inside).mean()), 1e-6))


def run_outpaint() -> None:
    """Outpaint presets on a 1024x768 photo: time and how visible the original's border is."""
    print("\noutpaint (coffee 1024x768; seam = step across the original's border / step inside):")
    src = photo("coffee", 1024, 768)
    for preset in ("Zoom out 2x", "Make square", "Right outpaint"):
        canvas, mask, plan = outpaint_canvas(src, preset, max_pixels=4 * 1024 * 1024)
        placed = (plan.y, plan.x, plan.image_height, plan.image_width)
        out, ms = timed(classic, canvas, mask)
        t_out, t_ms = timed(telea, canvas, mask)
        copies = fq.source_copies(fq.nearest_known_patches(out, mask > 0), mask > 0)
        print(
            f"  {preset:<15} canvas {canvas.shape[1]}x{canvas.shape[0]}: ours {ms:6.0f} ms "
            f"(seam {seam_ratio(out, placed):.2f}, copies {copies:.1f}), telea {t_ms:5.0f} ms "
            f"(seam {seam_ratio(t_out, placed):.2f})"
        )


def run_scaling() -> None:
    """The same 100k-pixel hole in a 1024² and a 4096² photo: cost follows the hole."""
    print("\ncost grows with the hole, not the frame (same 316x316 hole = 100k pixels):")
    big = photo("astronaut", 4096, 4096)
    mask_big = np.zeros((4096, 4096), np.uint8)
    mask_big[1890:2206, 1890:2206] = 255
    # The 1024 photo is the centre of the 4096 one: same content around the same hole.
    small, mask_small = big[1536:2560, 1536:2560].copy(), mask_big[1536:2560, 1536:2560].copy()
    times = {}
    for size, rgb, mask in ((1024, small, mask_small), (4096, big, mask_big)):
        times[size] = statistics.median(timed(classic, rgb, mask)[1] for _ in range(3))
        print(f"  {size}x{size}: {times[size]:6.0f} ms")
    print(f"  ratio 4096/1024: {times[4096] / times[1024]:.2f} (target <= 2)")


def run_truth_windows(photos: tuple[str, ...], size: int) -> None:
    """The true photo's blockiness over its hole's mask shifted across the frame, over the
    hole's own: what a fill that copied the photo faithfully from elsewhere would score."""
    print(f"\ntruth's own blockiness, hole moved across the frame ({size}², over the hole's truth):")
    print(f"  {'photo':<22}{'case':<12}{'min':>6}{'median':>8}{'max':>6}")
    for photo_index, name in enumerate(photos):
        truth = photo(name, size)
        for case_index, case in enumerate(CASES):
            if case in ("zoomout15", "brush15"):  # a frame or strokes: no shifted copy of the same shape
                continue
            hole = make_mask(case, size, seed=100 * photo_index + case_index) > 0
            ref = fq.blockiness(truth, hole)
            shifts = range(0, size, size // 16)
            got = [fq.blockiness(truth, np.roll(hole, shift, axis=1)) / ref for shift in shifts]
            print(f"  {name:<22}{case:<12}{min(got):>6.2f}{statistics.median(got):>8.2f}{max(got):>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 photos at 512² only")
    parser.add_argument("--sizes", type=int, nargs="*", help="override the frame sizes")
    parser.add_argument("--photos", type=int, help="only the first N photos")
    parser.add_argument(
        "--only", nargs="*", choices=PHOTOS, help="only these photos (join split runs with --from-log)"
    )
    parser.add_argument("--extras", action="store_true", help="only outpaint seams and 4096² scaling")
    parser.add_argument(
        "--from-log", nargs="*", help="summarise the `case` lines of earlier runs' output instead of running"
    )
    parser.add_argument(
        "--truth-windows", action="store_true", help="only the truth's own blockiness, hole moved across"
    )
    parser.add_argument("--no-sheets", action="store_true", help="leave bench/out/ as it is")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    classic(photo("astronaut", 256), make_mask("box10", 256, 0))  # first-call set-up, untimed
    if args.from_log:
        cells = cells_from_log([Path(p) for p in args.from_log])
        report(cells, sorted({s for (_, s, _, _) in cells.values}))
        return
    photos = tuple(args.only) if args.only else (QUICK_PHOTOS if args.quick else PHOTOS)[: args.photos]
    if args.truth_windows:
        for size in args.sizes or [512]:
            run_truth_windows(photos, size)
        return
    if args.extras:
        run_outpaint()
        run_scaling()
        return
    sizes = args.sizes or ([512] if args.quick else [512, 1024])
    cells = run_cases(photos, sizes, not args.no_sheets)
    report(cells, sizes)
    print(f"\ncontact sheets: {OUT}/quality-*.jpg")


if __name__ == "__main__":
    main()
