#!/usr/bin/env python3
"""The image's HEALTHCHECK: `GET /readyz` of the `fillframe serve` running in this container.

One image plays every role, so the probe first finds which command the container runs: `serve`
is probed on its `--port`; a `worker` has no HTTP server unless FILLFRAME_WORKER_METRICS_PORT is
set (then its /metrics is probed); anything else (migrate, keys ...) is healthy while it runs.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path


def fillframe_command() -> list[str]:
    """The arguments after `fillframe` of the first process running it, else []."""
    for cmdline in sorted(Path("/proc").glob("[0-9]*/cmdline")):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for i, arg in enumerate(args):
            if Path(arg).name == "fillframe" and i + 1 < len(args):
                return args[i + 1 :]
    return []


def option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def probe_url(args: list[str]) -> str | None:
    if args[:1] == ["serve"]:
        return f"http://127.0.0.1:{option(args, '--port') or 8000}/readyz"
    metrics_port = os.environ.get("FILLFRAME_WORKER_METRICS_PORT")
    if args[:1] == ["worker"] and metrics_port:
        return f"http://127.0.0.1:{metrics_port}/metrics"
    return None


def main() -> int:
    url = probe_url(fillframe_command())
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
