"""End to end on the default install: submit -> COMPLETED -> downloaded, for real photos with a
10% box mask, through a live `fillframe serve` (SQLite, classic engine, in-process worker).

Baseline in the same run: the synchronous OpenCV Telea call IOPaint's `cv2` model makes for the
same image and mask, in this process (no HTTP, no queue, no encoding). Target at 512x512: under
150 ms median end to end. Also prints the server's start-up time (target: answering within 2 s)
and its idle memory (target: under 150 MB).

Usage: .venv/bin/python -m bench.e2e [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

from tests.utils.images import PHOTOS, box_mask, decode, encode, photo
from tests.utils.servers import ImageServer, LiveServer, create_key, fillframe_env


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def telea_ms(rgb: np.ndarray, mask: np.ndarray, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        cv2.inpaint(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, 3, cv2.INPAINT_TELEA)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--engine", default="classic", help="e.g. tests.utils.engines:NoopEngine to see the pipeline alone"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images = ImageServer(Path(tmp) / "images")
        (Path(tmp) / "images").mkdir(exist_ok=True)
        env = fillframe_env(Path(tmp) / "data", rate_limit_per_minute="0", engine=args.engine)
        server = LiveServer(env)
        try:
            time.sleep(3)
            idle = rss_mb(server.proc.pid)
            print(f"start-up: answering after {server.startup_seconds:.2f} s (target < 2 s)")
            print(f"idle RSS of `fillframe serve`: {idle:.0f} MB (target < 150 MB)")
            key = create_key(env, "bench")
            downloads = httpx.Client(timeout=120)  # a client keeps its connection (and TLS setup)
            with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=120) as client:
                for side in (512, 1024):
                    e2e: list[float] = []
                    baseline: list[float] = []
                    for i in range(args.runs):
                        name = PHOTOS[i % len(PHOTOS)]
                        rgb = photo(name, (side, side))
                        mask = box_mask(side, side, 0.1)
                        image_url = images.add(f"{name}-{side}.jpg", encode(rgb, "JPEG", quality=95))
                        mask_url = images.add(f"mask-{side}.png", encode(mask))
                        body = {
                            "prompt": "fill",
                            "model": "flux-fill-pro",
                            "fluxFillParams": {"image": image_url, "mask": mask_url, "seed": i},
                        }
                        start = time.perf_counter()
                        job = client.post("/v2/images/edit", json=body, headers={"Prefer": "wait=60"}).json()
                        out = downloads.get(job["result"]["images"][0]).content
                        e2e.append(time.perf_counter() - start)
                        assert decode(out).shape == rgb.shape
                        baseline.append(telea_ms(rgb, mask, 1))
                    ours = statistics.median(e2e) * 1000
                    base = statistics.median(baseline)
                    print(
                        f"{side}x{side} box 10%: end to end median {ours:7.1f} ms "
                        f"(p90 {sorted(e2e)[int(0.9 * (len(e2e) - 1))] * 1000:.1f} ms); "
                        f"in-process Telea {base:6.1f} ms; ratio {ours / base:.2f}"
                    )
            print(f"RSS after the runs: {rss_mb(server.proc.pid):.0f} MB")
        finally:
            server.stop()
            images.close()


if __name__ == "__main__":
    main()
