"""The client package on its own: a venv holding only `fillframe-client` and pytest pulls httpx and
nothing of the server's stack, and passes the package's tests (clients/python/tests) against a
live `fillframe serve`.

The venv is kept in .venv-client (gitignored) between runs: it is rebuilt from scratch whenever
the client's pyproject.toml or the Python version changes, and the client itself is reinstalled
from the checkout on every run, so a cached venv tests today's code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.utils.servers import ROOT, LiveServer

CLIENT = ROOT / "clients" / "python"
VENV = ROOT / ".venv-client"
HEAVY = {"fastapi", "numpy", "sqlalchemy", "pillow", "opencv-python", "opencv-python-headless", "pydantic"}
HEAVY |= {"uvicorn", "starlette", "fillframe", "torch", "pypatchmatch", "alembic", "asyncpg"}
LIVE_SETTINGS = {"engine": "tests.utils.engines:SleepEngine", "test_sleep": "0.5"}


@pytest.fixture(scope="module")
def backend() -> str:
    """The client never sees the database: one backend is enough."""
    return "sqlite"


def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout, cwd=CLIENT
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def isolated_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would let the venv see the repo's code."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


@pytest.fixture(scope="module")
def venv_python() -> Path:
    python = VENV / "bin" / "python"
    stamp = VENV / "client-pyproject.sha256"
    # Rebuilt when the client's dependencies or this Python change; reused otherwise.
    wanted = hashlib.sha256((CLIENT / "pyproject.toml").read_bytes() + sys.version.encode()).hexdigest()
    env = isolated_env()
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        shutil.rmtree(VENV, ignore_errors=True)
        run(sys.executable, "-m", "venv", VENV, env=env)
        run(python, "-m", "pip", "install", "-q", CLIENT, "pytest", env=env)
        stamp.write_text(wanted)
    else:  # the cached venv's dependencies stand; the client's code may have changed since
        run(python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", CLIENT, env=env)
    return python


def test_installing_the_client_pulls_httpx_and_nothing_heavy(venv_python: Path) -> None:
    env = isolated_env()
    listed = json.loads(run(venv_python, "-m", "pip", "list", "--format=json", env=env))
    names = {p["name"].lower().replace("_", "-") for p in listed}
    assert {"fillframe-client", "httpx", "pytest"} <= names
    assert not names & HEAVY, names & HEAVY
    script = "import importlib.metadata as m; print(m.requires('fillframe-client'))"
    requires = run(venv_python, "-c", script, env=env)
    # Required: httpx alone; pytest only under the `test` extra.
    assert requires.strip() == "['httpx>=0.27', 'pytest>=8; extra == \"test\"']", requires
    where = run(venv_python, "-c", "import fillframe_client; print(fillframe_client.__file__)", env=env)
    assert where.startswith(str(VENV)), where  # the installed copy, not the checkout's src/
    gone = subprocess.run([venv_python, "-c", "import fillframe"], capture_output=True, env=env, cwd=CLIENT)
    assert gone.returncode != 0


def test_the_client_package_tests_pass_against_a_live_server(
    venv_python: Path, live: LiveServer, api_key: str, tmp_path: Path
) -> None:
    report = tmp_path / "client-tests.xml"
    env = isolated_env(
        FILLFRAME_TEST_SERVER=live.url, FILLFRAME_TEST_API_KEY=api_key, FILLFRAME_TEST_REQUIRE_LIVE="1"
    )
    # -p no:cacheprovider: the run writes nothing into the checkout.
    run(venv_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", "tests", env=env)
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    names = {case.get("name", "") for case in suite.iter("testcase")}
    assert {"test_async_twin", "test_edit_and_wait_uploads_local_files_and_downloads"} <= names
    assert counts["tests"] >= 30, counts
