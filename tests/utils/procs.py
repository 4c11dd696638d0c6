"""Processes as the kernel sees them (Linux /proc): resident memory, and a server's engine hosts."""

from __future__ import annotations

from pathlib import Path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def engine_hosts(pid: int) -> list[int]:
    """The engine host processes of `pid`: its spawned multiprocessing children (not the resource
    tracker, which multiprocessing also starts)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def gone(pid: int) -> bool:
    """Whether `pid` has stopped running: exited and reaped, or a zombie waiting to be. A killed
    process's main thread turns zombie before its other threads have exited, and until they have
    its parent cannot reap it, so every thread of it must be a zombie (or gone)."""
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return True
    for thread in threads:
        try:
            stat = (thread / "stat").read_text()
        except FileNotFoundError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            return False
    return True
