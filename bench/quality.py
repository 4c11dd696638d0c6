"""Fill quality and speed of the classic engine against OpenCV Telea, measured in the same run.

    .venv/bin/python bench/quality.py            # full run, about two minutes on one core
    .venv/bin/python bench/quality.py --quick    # 512 px only, no large-image figures
    .venv/bin/python bench/quality.py --library  # also PyPatchMatch alone (slow), for reference

Over six scikit-image photos at 512² and 1024² with box 10%, box 25% and brush 15% masks (fixed
seeds) it prints, per method: median CPU milliseconds, median PSNR inside the hole and median
texture energy (mean Sobel magnitude inside the hole over the truth's). Then outpaint and
large-image timings. Contact sheets go to bench/out/. Timings use one OpenCV thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import data

# The repository root instead of bench/ itself, whose queue.py would shadow the standard library's.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from fillframe.engines.patchfill import fill_canvas
from fillframe.imaging.canvas import outpaint_canvas

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick")
MASKS = ("box10", "box25", "brush15")
OUT = Path(__file__).resolve().parent / "out"

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]


def photo(name: str, width: int, height: int) -> np.ndarray:
    """A scikit-image photo centre-cropped to the aspect and resized: HxWx3 uint8 RGB."""
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
    return np.ascontiguousarray(cv2.resize(img, (width, height), interpolation=interp))


def make_mask(kind: str, size: int, seed: int) -> np.ndarray:
    """box10 / box25: a square of that share of the frame at a seeded place; brush15: strokes."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    if kind.startswith("box"):
        side = round(size * (int(kind[3:]) / 100) ** 0.5)
        y, x = rng.integers(size // 16, size - side - size // 16, 2)
        mask[y : y + side, x : x + side] = 255
        return mask
    scale = size / 512
    while np.count_nonzero(mask) < 0.15 * mask.size:
        pts = [rng.uniform(0.1, 0.9, 2) * size]
        for _ in range(int(rng.integers(3, 7))):
            step = rng.normal(0, 60 * scale, 2)
            pts.append(np.clip(pts[-1] + step, 0, size - 1))
        width = int(rng.integers(12, 36) * scale)
        poly = np.array(pts, np.int32).reshape(-1, 1, 2)
        cv2.polylines(mask, [poly], False, 255, width, lineType=cv2.LINE_8)
    return mask


def sobel(rgb: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))


def psnr_in(out: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    err = out[hole].astype(np.float64) - truth[hole]
    return float(10 * np.log10(255.0**2 / max(float(np.mean(err**2)), 1e-9)))


def texture_in(out: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    return float(sobel(out)[hole].mean() / max(float(sobel(truth)[hole].mean()), 1e-6))


def telea(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return cv2.inpaint(rgb, mask, 3, cv2.INPAINT_TELEA)


def ours(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return fill_canvas(rgb, mask, seed=1)[0]


def library_whole_frame(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from patchmatch import patch_match

    return patch_match.inpaint(rgb, mask, patch_size=3)


def timed(fn: Method, rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """CPU milliseconds of this (single-threaded) process: steady while other jobs share the
    machine, and equal to wall time on an idle core."""
    start = time.process_time()
    out = fn(rgb, mask)
    return out, (time.process_time() - start) * 1000


@dataclass
class Cell:
    ms: list[float]
    psnr: list[float]
    texture: list[float]


def run_grid(methods: dict[str, Method], sizes: list[int]) -> dict[tuple[str, int, str], Cell]:
    cells: dict[tuple[str, int, str], Cell] = {}
    sheet_rows: list[np.ndarray] = []
    for size in sizes:
        for photo_index, name in enumerate(PHOTOS):
            truth = photo(name, size, size)
            for mask_index, kind in enumerate(MASKS):
                mask = make_mask(kind, size, seed=100 * photo_index + mask_index)
                hole = mask > 0
                outs = []
                for label, fn in methods.items():
                    out, ms = timed(fn, truth, mask)
                    cell = cells.setdefault((label, size, kind), Cell([], [], []))
                    cell.ms.append(ms)
                    cell.psnr.append(psnr_in(out, truth, hole))
                    cell.texture.append(texture_in(out, truth, hole))
                    outs.append(out)
                if size == 512:
                    shown = truth.copy()
                    shown[hole] = (255, 0, 255)
                    sheet_rows.append(np.hstack([shown, truth, *outs]))
    if sheet_rows:
        write_sheet("inpaint_512.png", sheet_rows, ["input", "truth", *methods])
    return cells


def write_sheet(name: str, rows: list[np.ndarray], labels: list[str]) -> None:
    """Rows of equal-height tiles, downscaled to 256 px tall, labelled on top."""
    scaled = []
    for row in rows:
        f = 256 / row.shape[0]
        scaled.append(cv2.resize(row, (round(row.shape[1] * f), 256), interpolation=cv2.INTER_AREA))
    width = max(r.shape[1] for r in scaled)  # narrower rows are padded white
    sheet = np.full((24 + sum(r.shape[0] + 4 for r in scaled), width, 3), 255, np.uint8)
    y = 24
    for r in scaled:
        sheet[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + 4
    tile = scaled[0].shape[1] // max(len(labels), 1)
    for i, label in enumerate(labels):
        cv2.putText(sheet, label, (i * tile + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
    OUT.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(OUT / name), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def print_grid(cells: dict[tuple[str, int, str], Cell], methods: list[str], sizes: list[int]) -> None:
    print(f"{'method':<10}{'size':>6} {'mask':<8}{'median ms':>10}{'PSNR dB':>9}{'texture':>9}")
    for size in sizes:
        for kind in MASKS:
            for label in methods:
                c = cells[(label, size, kind)]
                print(
                    f"{label:<10}{size:>6} {kind:<8}{statistics.median(c.ms):>10.0f}"
                    f"{statistics.median(c.psnr):>9.2f}{statistics.median(c.texture):>9.2f}"
                )
    print("\nall masks and sizes (median over cells):")
    for label in methods:
        keys = [k for k in cells if k[0] == label]
        psnr = statistics.median(statistics.median(cells[k].psnr) for k in keys)
        tex = statistics.median(statistics.median(cells[k].texture) for k in keys)
        print(f"  {label:<10} PSNR {psnr:6.2f} dB  texture {tex:5.2f}")


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
    rows = []
    print("\noutpaint (coffee 1024x768; seam = step across the original's border / step inside):")
    src = photo("coffee", 1024, 768)
    for preset in ("Zoom out 2x", "Make square", "Right outpaint"):
        canvas, mask, plan = outpaint_canvas(src, preset, max_pixels=4 * 1024 * 1024)
        placed = (plan.y, plan.x, plan.image_height, plan.image_width)
        out, ms = timed(ours, canvas, mask)
        t_out, t_ms = timed(telea, canvas, mask)
        print(
            f"  {preset:<15} canvas {canvas.shape[1]}x{canvas.shape[0]}: ours {ms:6.0f} ms "
            f"(seam {seam_ratio(out, placed):.2f}), telea {t_ms:5.0f} ms "
            f"(seam {seam_ratio(t_out, placed):.2f})"
        )
        f = 384 / out.shape[0]
        size = (round(out.shape[1] * f), 384)
        pair = [cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (t_out, out)]
        rows.append(np.hstack(pair))
    write_sheet("outpaint.png", rows, ["telea", "ours"])


def run_scaling() -> None:
    print("\ncost grows with the hole, not the frame (same 316x316 hole = 100k pixels):")
    big = photo("astronaut", 4096, 4096)
    mask_big = np.zeros((4096, 4096), np.uint8)
    mask_big[1890:2206, 1890:2206] = 255
    # The 1024 photo is the centre of the 4096 one: same content around the same hole.
    small, mask_small = big[1536:2560, 1536:2560].copy(), mask_big[1536:2560, 1536:2560].copy()
    times = {}
    for size, rgb, mask in ((1024, small, mask_small), (4096, big, mask_big)):
        times[size] = statistics.median(timed(ours, rgb, mask)[1] for _ in range(3))
        print(f"  {size}x{size}: {times[size]:6.0f} ms")
    print(f"  ratio 4096/1024: {times[4096] / times[1024]:.2f} (target <= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512 px only, skip large images")
    parser.add_argument("--library", action="store_true", help="also PyPatchMatch whole-frame")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    methods: dict[str, Method] = {"telea": telea, "ours": ours}
    if args.library:
        methods["pypm-full"] = library_whole_frame
    ours(photo("astronaut", 256, 256), make_mask("box10", 256, 0))  # first-call set-up, untimed
    sizes = [512] if args.quick else [512, 1024]
    cells = run_grid(methods, sizes)
    print_grid(cells, list(methods), sizes)
    if not args.quick:
        run_outpaint()
        run_scaling()
    print(f"\ncontact sheets: {OUT}/inpaint_512.png, {OUT}/outpaint.png")


if __name__ == "__main__":
    main()
