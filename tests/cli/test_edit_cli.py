"""`fillframe edit` (in-process and through a server) and `fillframe jobs`, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fillframe.imaging.canvas import plan_outpaint
from fillframe.settings import Settings
from tests.utils.fills import assert_kept_exactly, error_against_flat, repainted
from tests.utils.images import box_mask, decode, encode, photo
from tests.utils.servers import LiveServer, fillframe_env


@dataclass(frozen=True)
class Inputs:
    rgb: np.ndarray  # HxWx3 uint8
    mask: np.ndarray  # HxW uint8, 255 = repaint
    image: Path
    mask_path: Path
    small_mask: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("cli-inputs")
    rgb = photo("coffee", (160, 120))
    mask = box_mask(120, 160, 0.08)
    (root / "coffee.png").write_bytes(encode(rgb))
    (root / "mask.png").write_bytes(encode(mask))
    (root / "small.png").write_bytes(encode(box_mask(20, 20, 0.2)))
    return Inputs(rgb, mask, root / "coffee.png", root / "mask.png", root / "small.png")


@pytest.fixture
def local_env(tmp_path: Path) -> dict[str, str]:
    """No server anywhere: the classic engine runs inside the CLI process."""
    return fillframe_env(tmp_path / "data")


def run(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fillframe", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


def assert_inpainted(out: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> None:
    assert_kept_exactly(out, rgb, mask)
    # The classic engine on these inputs, measured: every hole pixel repainted, and 0.74 of a
    # flat fill's error against the photo under the hole.
    assert repainted(out, rgb, mask) == 1.0
    assert error_against_flat(out, rgb, mask) < 0.85


def test_local_inpaint(local_env: dict[str, str], inputs: Inputs, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    done = run(local_env, "edit", str(inputs.image), "--mask", str(inputs.mask_path), "--prompt", "x",
               "-o", str(out), "--seed", "5")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(out)
    assert "seed 5, classic engine, local" in done.stdout
    assert_inpainted(decode(out.read_bytes()), inputs.rgb, inputs.mask)
    again = tmp_path / "again.png"
    run(local_env, "edit", str(inputs.image), "--mask", str(inputs.mask_path), "--prompt", "y",
        "-o", str(again), "--seed", "5")  # fmt: skip
    assert again.read_bytes() == out.read_bytes()  # same seed and inputs, same file


def test_local_outpaint_default_name(local_env: dict[str, str], inputs: Inputs, tmp_path: Path) -> None:
    done = run(local_env, "edit", str(inputs.image), "--outpaint", "Bottom outpaint", "--prompt", "x",
               "--format", "png", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = tmp_path / "coffee-filled.png"
    assert done.stdout.strip().splitlines()[-1] == "coffee-filled.png" and written.exists()
    plan = plan_outpaint(160, 120, "Bottom outpaint", Settings().max_output_pixels)
    out = decode(written.read_bytes())
    assert out.shape == (plan.height, plan.width, 3) == (176, 160, 3)
    assert np.array_equal(out[: plan.image_height, plan.x : plan.x + 160], inputs.rgb)


def test_missing_file_and_usage_errors(local_env: dict[str, str], inputs: Inputs, tmp_path: Path) -> None:
    missing = run(
        local_env, "edit", str(tmp_path / "nope.png"), "--mask", str(inputs.mask_path), "--prompt", "x"
    )
    assert missing.returncode == 2
    assert f"Invalid value for 'IMAGE': the file '{tmp_path / 'nope.png'}' does not exist." in missing.stderr
    no_mask = run(local_env, "edit", str(inputs.image), "--mask", "gone.png", "--prompt", "x")
    assert no_mask.returncode == 2 and "Invalid value for '--mask'" in no_mask.stderr
    both = run(local_env, "edit", str(inputs.image), "--mask", str(inputs.mask_path),
               "--outpaint", "Make square", "--prompt", "x")  # fmt: skip
    assert both.returncode == 2
    assert "Give exactly one of --mask (inpaint), --outpaint PRESET and --expand SIDE=PX." in both.stderr
    clash = run(local_env, "edit", str(inputs.image), "--outpaint", "Make square", "--prompt", "x",
                "-o", "a.png", "--format", "jpg")  # fmt: skip
    assert clash.returncode == 2 and "--format jpg contradicts the output file name a.png" in clash.stderr


def test_local_mask_of_the_wrong_size(local_env: dict[str, str], inputs: Inputs, tmp_path: Path) -> None:
    done = run(local_env, "edit", str(inputs.image), "--mask", str(inputs.small_mask), "--prompt", "x",
               "-o", str(tmp_path / "o.jpg"))  # fmt: skip
    assert done.returncode == 1
    assert "Error: The mask is 20x20 but the image is 160x120; they must be the same size." in done.stderr
    assert not (tmp_path / "o.jpg").exists()


# --- through a server ------------------------------------------------------------------------


def server_args(live: LiveServer, api_key: str) -> list[str]:
    return ["--server", live.url, "--key", api_key]


def test_server_edit_matches_local(
    live: LiveServer, api_key: str, inputs: Inputs, local_env: dict[str, str], tmp_path: Path
) -> None:
    remote, local = tmp_path / "remote.png", tmp_path / "local.png"
    common = ["edit", str(inputs.image), "--mask", str(inputs.mask_path), "--prompt", "x", "--seed", "9"]
    done = run(live.env, *common, "-o", str(remote), *server_args(live, api_key))
    assert done.returncode == 0, done.stderr
    assert "seed 9, job " in done.stdout and done.stdout.strip().splitlines()[-1] == str(remote)
    assert_inpainted(decode(remote.read_bytes()), inputs.rgb, inputs.mask)
    assert run(local_env, *common, "-o", str(local)).returncode == 0
    # One pipeline: the server's worker and the local run store the same bytes.
    assert local.read_bytes() == remote.read_bytes()


def test_server_errors(live: LiveServer, api_key: str, inputs: Inputs, tmp_path: Path) -> None:
    wrong = run(live.env, "edit", str(inputs.image), "--mask", str(inputs.small_mask), "--prompt", "x",
                "-o", str(tmp_path / "o.jpg"), *server_args(live, api_key))  # fmt: skip
    assert wrong.returncode == 1
    assert "failed (invalid_input): The mask is 20x20 but the image is 160x120" in wrong.stderr
    missing = run(live.env, "edit", "nope.png", "--outpaint", "Make square", "--prompt", "x",
                  *server_args(live, api_key))  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_key = run(live.env, "edit", str(inputs.image), "--outpaint", "Make square", "--prompt", "x",
                  "--server", live.url, "--key", "afk_wrong")  # fmt: skip
    assert bad_key.returncode == 1 and "Error: 401 Invalid API key" in bad_key.stderr


def test_jobs_list_and_get(live: LiveServer, api_key: str, inputs: Inputs, tmp_path: Path) -> None:
    done = run(live.env, "edit", str(inputs.image), "--outpaint", "Make square", "--prompt", "x",
               "-o", str(tmp_path / "sq.jpg"), *server_args(live, api_key))  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split("job ")[1].split(")")[0]

    env = {**live.env, "FILLFRAME_SERVER": live.url, "FILLFRAME_API_KEY": api_key}
    listed = run(env, "jobs", "list", "--limit", "1")
    assert listed.returncode == 0, listed.stderr
    header, row, *more = listed.stdout.splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "PROG"]
    assert row.split()[:3] == [job_id, "COMPLETED", "100%"]
    assert more and more[0].startswith("More: --cursor ")

    as_json = run(env, "jobs", "list", "--limit", "1", "--json")
    assert json.loads(as_json.stdout.splitlines()[0])["id"] == job_id
    got = run(live.env, "jobs", "get", job_id, *server_args(live, api_key))
    job = json.loads(got.stdout)
    assert (job["id"], job["status"], job["input"]["fluxFillParams"]["outpaint"]) == (
        job_id,
        "COMPLETED",
        "Make square",
    )

    unknown = run(env, "jobs", "get", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 1 and "Error: 404 Job not found." in unknown.stderr
    no_server = run(live.env, "jobs", "list")
    assert no_server.returncode == 2
    assert "Give --server and --key, or set FILLFRAME_SERVER and FILLFRAME_API_KEY." in no_server.stderr
    cancelled = run(env, "jobs", "cancel", job_id)
    assert cancelled.returncode == 1 and "409" in cancelled.stderr
