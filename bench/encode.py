"""PNG output: encode time and size per zlib level, as ratios to level 6 (Pillow's default),
over six real photos at 512² and 1024², measured in the same run. JPEG (quality 95) beside it.

Usage: .venv/bin/python -m bench.encode [--runs 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

from PIL import Image

from fillframe.imaging.encode import PNG_LEVEL, encode_image
from tests.utils.images import PHOTOS, photo

LEVELS = (1, 3, 6)


def png_cost(image: Image.Image, level: int, runs: int) -> tuple[float, int]:
    """(median seconds, bytes) of one PNG encode at `level`."""
    times = []
    for _ in range(runs):
        buffer = io.BytesIO()
        start = time.perf_counter()
        image.save(buffer, "PNG", compress_level=level)
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"fillframe encodes PNG at zlib level {PNG_LEVEL}")
    for side in (512, 1024):
        rgbs = [photo(name, (side, side)) for name in PHOTOS]
        costs = {
            level: [png_cost(Image.fromarray(rgb), level, args.runs) for rgb in rgbs] for level in LEVELS
        }
        base_ms = statistics.fmean(t for t, _ in costs[6]) * 1000
        base_kib = statistics.fmean(b for _, b in costs[6]) / 1024
        for level in LEVELS:
            ms = statistics.fmean(t for t, _ in costs[level]) * 1000
            kib = statistics.fmean(b for _, b in costs[level]) / 1024
            print(
                f"{side}² PNG level {level}: {ms:6.1f} ms ({ms / base_ms:4.2f}x level 6), "
                f"{kib:6.0f} KiB ({kib / base_kib:4.2f}x)"
            )
        jpeg = []
        for rgb in rgbs:
            start = time.perf_counter()
            encode_image(rgb, "jpg")
            jpeg.append(time.perf_counter() - start)
        jpeg_ms = statistics.fmean(jpeg) * 1000
        print(f"{side}² JPEG q95:    {jpeg_ms:6.1f} ms ({jpeg_ms / base_ms:4.2f}x)")


if __name__ == "__main__":
    main()
