"""The README's "First job" works as written on a machine with no internet: the block under its
`first-job` marker is run by bash against a live `fillframe serve`, and the result is checked."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.utils.servers import ROOT, own_server

MARKER = "<!-- first-job:"


def first_job_block() -> str:
    readme = (ROOT / "README.md").read_text()
    after = readme[readme.index(MARKER) :]
    match = re.search(r"```bash\n(.*?)```", after, re.S)
    assert match is not None, "the first-job marker must be followed by a bash block"
    return match.group(1)


def test_readme_first_job_runs_as_written(tmp_path: Path) -> None:
    # The block's relative paths (.venv/bin/fillframe, docs/samples/...) resolve in a work folder
    # that looks like the repository root; only the port differs from the README's.
    work = tmp_path / "checkout"
    (work / ".venv" / "bin").mkdir(parents=True)
    (work / "docs").symlink_to(ROOT / "docs")
    shim = work / ".venv" / "bin" / "fillframe"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fillframe "$@"\n')
    shim.chmod(0o755)
    with own_server(tmp_path / "data", "sqlite", allow_private_urls="false") as server:
        script = first_job_block().replace("http://127.0.0.1:8000", server.url)
        script += '\necho "$JOB" > job.json\n'
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=work,
            env=server.env | {"PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr + done.stdout
    job = json.loads((work / "job.json").read_text())
    assert job["status"] == "COMPLETED", job
    photo = np.asarray(Image.open(ROOT / "docs/samples/photo.jpg").convert("RGB")).astype(int)
    mask = np.asarray(Image.open(ROOT / "docs/samples/mask.png").convert("L")) > 127
    result = np.asarray(Image.open(io.BytesIO((work / "result.jpg").read_bytes())).convert("RGB")).astype(int)
    assert result.shape == photo.shape
    # Outside the mask only JPEG re-encoding differs; inside, the silver spoon is gone: grey, bright
    # pixels were 12% of the masked area and 4% after a fill by the classic engine (measured).
    assert np.abs(result[~mask] - photo[~mask]).mean() < 2.0
    assert silver_share(result[mask]) < 0.5 * silver_share(photo[mask])


def silver_share(rgb: np.ndarray) -> float:
    """The share of grey (max - min channel < 40) and bright (mean > 110) pixels: the spoon."""
    return float(((rgb.max(1) - rgb.min(1) < 40) & (rgb.mean(1) > 110)).mean())
