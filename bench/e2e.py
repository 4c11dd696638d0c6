"""End to end on the default install: submit -> COMPLETED -> downloaded, for real photos with a
10% box mask, through a live `fillframe serve` (SQLite, classic engine, worker beside the API,
its engine in an engine host process).

Baselines in the same run:
- the synchronous OpenCV Telea call IOPaint's `cv2` model makes for the same image and mask, in
  this process (no HTTP, no queue, no encoding). Target at 512x512: under 150 ms median;
- the same server with the engine in the API's own process, filled in a thread, as before engine
  hosts (`bench/serve_in_thread.py`); requests alternate between the two servers, so both see the
  same machine. The ratio is the end-to-end cost of the process hop;
- the hop alone, per job: the same no-op engine filled through an engine host and in a thread
  of this process, for the canvas sizes used here and by `bench/queue.py` (8x8).
Also prints the start-up time (target: answering within 2 s) and the idle memory of the API's
process (target: under 150 MB) and of the engine host beside it.

Usage: .venv/bin/python -m bench.e2e [--runs 15] [--engine classic]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

from fillframe.engines.base import FillJob, create_engine
from fillframe.engines.host import EngineHost
from fillframe.jobs.worker import InThread, Runner
from fillframe.settings import Settings
from tests.utils.images import PHOTOS, box_mask, decode, encode, photo
from tests.utils.procs import engine_hosts, rss_mb
from tests.utils.servers import ImageServer, LiveServer, create_key, fillframe_env, free_port, wait_until_up


def telea_ms(rgb: np.ndarray, mask: np.ndarray) -> float:
    start = time.perf_counter()
    cv2.inpaint(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, 3, cv2.INPAINT_TELEA)
    return (time.perf_counter() - start) * 1000


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/readyz").json()["worker"] != "ready":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: the engine never loaded")
        time.sleep(0.1)


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def p90_ms(times: list[float]) -> float:
    return sorted(times)[int(0.9 * (len(times) - 1))] * 1000


async def fill_ms(runner: Runner, side: int, runs: int) -> float:
    rgb = np.full((side, side, 3), 90, np.uint8)
    mask = box_mask(side, side, 0.1)
    job = FillJob(rgb=rgb, mask=mask, prompt="", seed=0)
    await runner.fill(job, lambda _: None, lambda: False, 60)  # warm: the segment grows once
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await runner.fill(job, lambda _: None, lambda: False, 60)
        times.append(time.perf_counter() - start)
    return median_ms(times)


async def hop_cost(data_dir: Path, runs: int) -> None:
    """The same no-op engine through an engine host and in a thread: the difference is the hop."""
    settings = Settings(data_dir=data_dir, engine="tests.utils.engines:NoopEngine")
    host = EngineHost(settings)
    await host.start()
    in_thread = InThread(create_engine(settings))
    try:
        for side in (8, 512, 1024):
            hosted, threaded = await fill_ms(host, side, runs), await fill_ms(in_thread, side, runs)
            print(
                f"hop cost at {side}x{side} (no-op engine, median of {runs}): engine host {hosted:.2f} ms, "
                f"in a thread {threaded:.2f} ms; the hop costs {hosted - threaded:+.2f} ms per job"
            )
    finally:
        await host.close()


class InThreadServer:
    """`bench/serve_in_thread.py` on a free port: the engine in the API's process."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.serve_in_thread", "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.startup_seconds = wait_until_up(f"{self.url}/healthz", self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--engine", default="classic", help="e.g. tests.utils.engines:NoopEngine to see the pipeline alone"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        images = ImageServer(root / "images")
        hosted_env = fillframe_env(root / "hosted", rate_limit_per_minute="0", engine=args.engine)
        threaded_env = fillframe_env(root / "threaded", rate_limit_per_minute="0", engine=args.engine)
        hosted = LiveServer(hosted_env)
        (root / "threaded").mkdir()
        threaded = InThreadServer(threaded_env, root / "threaded" / "serve.log")
        try:
            wait_ready(hosted.url)
            wait_ready(threaded.url)
            time.sleep(3)
            [host_pid] = engine_hosts(hosted.proc.pid)
            print(f"start-up: answering after {hosted.startup_seconds:.2f} s (target < 2 s)")
            print(
                f"idle RSS: API process of `fillframe serve` {rss_mb(hosted.proc.pid):.0f} MB "
                "(target < 150 MB), "
                f"its engine host {rss_mb(host_pid):.0f} MB; "
                f"before (engine in the API's process) {rss_mb(threaded.proc.pid):.0f} MB"
            )
            servers = {"host": hosted, "thread": threaded}
            keys = {"host": create_key(hosted_env, "bench"), "thread": create_key(threaded_env, "bench")}
            downloads = httpx.Client(timeout=120)  # a client keeps its connection (and TLS setup)
            clients = {
                name: httpx.Client(base_url=s.url, headers={"X-API-Key": keys[name]}, timeout=120)
                for name, s in servers.items()
            }
            for side in (512, 1024):
                e2e: dict[str, list[float]] = {"host": [], "thread": []}
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
                    order = ("host", "thread") if i % 2 == 0 else ("thread", "host")
                    for which in order:
                        start = time.perf_counter()
                        job = clients[which].post("/v2/images/edit", json=body, headers={"Prefer": "wait=60"})
                        out = downloads.get(job.json()["result"]["images"][0]).content
                        e2e[which].append(time.perf_counter() - start)
                        assert decode(out).shape == rgb.shape
                    baseline.append(telea_ms(rgb, mask))
                ours, before, base = (
                    median_ms(e2e["host"]),
                    median_ms(e2e["thread"]),
                    statistics.median(baseline),
                )
                print(
                    f"{side}x{side} box 10%: end to end median {ours:7.1f} ms "
                    f"(p90 {p90_ms(e2e['host']):.1f} ms); "
                    f"engine in a thread {before:7.1f} ms (p90 {p90_ms(e2e['thread']):.1f} ms), "
                    f"hop ratio {ours / before:.2f}; in-process Telea {base:6.1f} ms, ratio {ours / base:.2f}"
                )
            print(
                f"RSS after the runs: API process {rss_mb(hosted.proc.pid):.0f} MB, engine host "
                f"{rss_mb(host_pid):.0f} MB; before {rss_mb(threaded.proc.pid):.0f} MB"
            )
            for client in clients.values():
                client.close()
        finally:
            hosted.stop()
            threaded.stop()
            images.close()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(hop_cost(Path(tmp), max(20, args.runs * 4)))


if __name__ == "__main__":
    main()
