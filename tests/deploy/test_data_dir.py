"""A data folder that cannot be written stops every command in one line with exit status 1.

In a container the data folder is a volume; a read-only or wrongly owned one must say so, not end
in a traceback from SQLite or the secret file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.utils.servers import drop_backend, fillframe_env, free_port


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fillframe", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only mount (what a read-only volume is), or one without write permission."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: only a read-only mount stops it
        mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], check=False)
        if mounted.returncode != 0:
            pytest.skip("root without mount privileges: cannot make a read-only folder")
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"], ["migrate"]])
def test_a_read_only_data_folder_is_one_line(read_only_dir: Path, command: list[str]) -> None:
    if command[0] == "serve":
        command = ["serve", "--port", str(free_port())]
    result = run(fillframe_env(read_only_dir), *command)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: The data folder {read_only_dir} is not writable (")
    assert lines[0].endswith("mount a writable volume there or point FILLFRAME_DATA_DIR at one.")


def test_a_data_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run(fillframe_env(blocker / "data"), "migrate")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: The data folder {blocker / 'data'} is not writable (Not a directory): "
        "mount a writable volume there or point FILLFRAME_DATA_DIR at one."
    )


def test_nothing_local_needs_no_data_folder(tmp_path: Path) -> None:
    """With the database, the files and the secret elsewhere, a read-only image is enough."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    storage = f"file://{tmp_path}/files"
    env = fillframe_env(blocker / "data", backend="postgresql", storage_url=storage, secret="s")
    try:
        result = run(env, "migrate")
    finally:
        drop_backend(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database is up to date"
