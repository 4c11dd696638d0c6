"""The default server's footprint, and torch never loaded outside the flux engine.

The target is 150 MB idle for the API's process of `fillframe serve`. The engine lives in the
worker's engine host, a child process (tests/jobs/test_engine_host.py shows an engine's crash
there leaves the API up), so the API's process meets the target with the worker running; the host
is held to a regression bound and its memory is on /metrics.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.utils.poll import until
from tests.utils.procs import engine_hosts, rss_mb
from tests.utils.servers import LiveServer, fillframe_env


def loads_torch(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps or "/torch/" in maps


def wait_for_worker(url: str) -> None:
    until(lambda: httpx.get(f"{url}/readyz").json()["worker"] == "ready", "the classic engine loaded")


def served(url: str) -> None:
    """Requests an idle server answers (a probe, a scrape): memory is measured after them, not
    at a quiet moment picked by a sleep."""
    assert httpx.get(f"{url}/readyz").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 200


def test_api_process_idles_under_150_mb(tmp_path: Path, backend: str) -> None:
    server = LiveServer(fillframe_env(tmp_path / "data", backend), "--no-worker")
    try:
        served(server.url)
        assert httpx.get(f"{server.url}/readyz").json()["worker"] == "none"
        assert rss_mb(server.proc.pid) < 150
        assert not loads_torch(server.proc.pid)
    finally:
        server.stop()


def test_serve_keeps_the_engine_out_of_the_api_process(live: LiveServer) -> None:
    wait_for_worker(live.url)
    served(live.url)
    [host] = engine_hosts(live.proc.pid)
    assert rss_mb(live.proc.pid) < 150
    assert rss_mb(host) < 400
    assert not loads_torch(live.proc.pid) and not loads_torch(host)
    metrics = httpx.get(f"{live.url}/metrics").text
    [memory] = [m for m in metrics.splitlines() if m.startswith("fillframe_engine_host_memory_bytes{")]
    assert float(memory.rsplit(" ", 1)[1]) > 50 * 2**20
