"""The default server's footprint: idle memory under 150 MB, and torch never loaded."""

from __future__ import annotations

import time
from pathlib import Path

from tests.utils.servers import LiveServer


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def test_idle_server_is_small_and_never_loads_torch(live: LiveServer) -> None:
    time.sleep(1.0)
    assert rss_mb(live.proc.pid) < 150
    maps = Path(f"/proc/{live.proc.pid}/maps").read_text()
    assert "libtorch" not in maps and "/torch/" not in maps
