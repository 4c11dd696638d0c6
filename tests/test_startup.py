"""An engine that cannot start stops the process with one clear line and exit status 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.utils.servers import fillframe_env, free_port


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fillframe", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_serve_stops_when_its_engine_cannot_load(tmp_path: Path) -> None:
    env = fillframe_env(tmp_path / "data", engine="bfl")
    result = run(env, "serve", "--port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: The worker could not start: The bfl engine needs FILLFRAME_BFL_API_KEY "
        "(a key from Black Forest Labs)."
    )


def test_worker_refuses_an_unknown_engine(tmp_path: Path) -> None:
    env = fillframe_env(tmp_path / "data", engine="nope")
    result = run(env, "worker")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: The worker could not start: Unknown engine 'nope'")
    assert "Traceback" not in result.stderr


def test_invalid_settings_are_named(tmp_path: Path) -> None:
    env = fillframe_env(tmp_path / "data", worker_concurrency="zero")
    result = run(env, "worker")
    assert result.returncode == 1
    assert "FILLFRAME_WORKER_CONCURRENCY" in result.stderr and "Traceback" not in result.stderr
