"""The image's entry point and HEALTHCHECK pick what to run from the container's command.

The HEALTHCHECK's search of /proc runs in scripts/image.sh, in the image's own PID namespace (here
the host's processes would answer)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize(
    ("args", "runs"),
    [
        ([], ["serve", "--host", "0.0.0.0"]),
        (["serve"], ["serve", "--host", "0.0.0.0"]),
        (["serve", "--no-worker"], ["serve", "--host", "0.0.0.0", "--no-worker"]),
        (
            ["serve", "--host", "127.0.0.1", "--port", "9000"],
            ["serve", "--host", "127.0.0.1", "--port", "9000"],
        ),
        (["serve", "--host=::"], ["serve", "--host=::"]),
        (["worker"], ["worker"]),
        (["fillframe", "keys", "create", "--name", "me"], ["keys", "create", "--name", "me"]),
        (["migrate"], ["migrate"]),
    ],
)
def test_the_entrypoint_passes_the_command_to_fillframe(
    tmp_path: Path, args: list[str], runs: list[str]
) -> None:
    # What the entry point execs is the subject here, so `fillframe` is a script that prints it.
    fake = tmp_path / "fillframe"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), *args], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == runs


def healthcheck():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("args", "metrics_port", "url"),
    [
        (["serve", "--host", "0.0.0.0"], None, "http://127.0.0.1:8000/readyz"),
        (["serve", "--host", "0.0.0.0", "--port", "9000"], None, "http://127.0.0.1:9000/readyz"),
        (["serve", "--port=9001", "--no-worker"], None, "http://127.0.0.1:9001/readyz"),
        (["worker"], "9100", "http://127.0.0.1:9100/metrics"),
        (["worker"], None, None),
        (["migrate"], None, None),
    ],
)
def test_the_healthcheck_probes_the_role(
    monkeypatch: pytest.MonkeyPatch, args: list[str], metrics_port: str | None, url: str | None
) -> None:
    if metrics_port:
        monkeypatch.setenv("FILLFRAME_WORKER_METRICS_PORT", metrics_port)
    else:
        monkeypatch.delenv("FILLFRAME_WORKER_METRICS_PORT", raising=False)
    assert healthcheck().probe_url(args) == url
