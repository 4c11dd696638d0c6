"""The default server's footprint, and torch never loaded outside the flux engine.

The issue's target is 150 MB idle for `fillframe serve`. The API process alone meets it; with the
classic engine loaded in-process it does not (numba's LLVM alone is about 116 MB; about 270 MB
with numba's cache warm, about 340 MB when the kernels were just compiled on a fresh checkout),
so that case is held to a regression bound here and reported as a miss in the README.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.utils.servers import LiveServer, fillframe_env


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def loads_torch(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps or "/torch/" in maps


def wait_for_worker(url: str) -> None:
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/readyz").json()["worker"] != "ready":
        assert time.monotonic() < deadline, "the classic engine never finished loading"
        time.sleep(0.1)


def test_api_process_idles_under_150_mb(tmp_path: Path, backend: str) -> None:
    server = LiveServer(fillframe_env(tmp_path / "data", backend), "--no-worker")
    try:
        time.sleep(1.0)
        assert httpx.get(f"{server.url}/readyz").json()["worker"] == "none"
        assert rss_mb(server.proc.pid) < 150
        assert not loads_torch(server.proc.pid)
    finally:
        server.stop()


def test_serve_with_the_classic_engine_stays_bounded_and_never_loads_torch(live: LiveServer) -> None:
    wait_for_worker(live.url)
    time.sleep(1.0)
    assert rss_mb(live.proc.pid) < 400
    assert not loads_torch(live.proc.pid)
