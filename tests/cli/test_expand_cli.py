"""`fillframe edit --expand SIDE=PX,...`: free expansion from the command line, in-process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from fillframe.imaging.canvas import Expansion, plan_expand
from fillframe.settings import Settings
from tests.utils.images import box_mask, decode, encode, photo
from tests.utils.servers import fillframe_env


def fillframe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fillframe", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_expand_outpaints_locally_to_the_planned_canvas(tmp_path: Path) -> None:
    env = fillframe_env(tmp_path / "data")
    rgb = photo("coffee", (160, 120))
    (tmp_path / "coffee.png").write_bytes(encode(rgb))
    out_path = tmp_path / "wide.png"
    done = fillframe(
        env, "edit", str(tmp_path / "coffee.png"), "--expand", "left=64, right=96", "--prompt", "more table",
        "-o", str(out_path), "--seed", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = plan_expand(160, 120, Expansion(left=64, right=96), Settings().limits.max_output_pixels)
    out = decode(out_path.read_bytes())
    assert out.shape == (plan.height, plan.width, 3) == (128, 320, 3)
    assert np.array_equal(out[plan.y : plan.y + 120, plan.x : plan.x + 160], rgb)


def test_bad_expand_is_a_usage_error(tmp_path: Path) -> None:
    env = fillframe_env(tmp_path / "data")
    (tmp_path / "a.png").write_bytes(encode(photo("coffee", (64, 48))))
    (tmp_path / "m.png").write_bytes(encode(box_mask(48, 64)))
    image = str(tmp_path / "a.png")
    bad = fillframe(env, "edit", image, "--expand", "sideways=10", "--prompt", "x")
    assert bad.returncode == 2 and "SIDE=PIXELS" in bad.stderr
    both = fillframe(
        env, "edit", image, "--expand", "left=10", "--mask", str(tmp_path / "m.png"), "--prompt", "x"
    )
    assert both.returncode == 2 and "exactly one of" in both.stderr
    too_far = fillframe(env, "edit", image, "--expand", "left=5000", "--prompt", "x")
    assert (
        too_far.returncode == 2
        and "fluxFillParams.expand.left" in too_far.stderr
        and "2048" in too_far.stderr
    )
