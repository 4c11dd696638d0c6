"""The flux engine against a tiny FluxFillPipeline built, saved and loaded in this test run.

The pipeline has FLUX.1 Fill [dev]'s wiring at toy size (tests/utils/tiny_flux.py) and random
weights, so pixels are noise-like: the tests check what the engine guarantees (determinism,
sizes, untouched pixels, what reaches the pipeline, progress, cancel, start-up checks), not
picture quality.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# Before anything imports huggingface_hub: a code path that tries to download must fail.
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from fillframe.engines.base import FillJob, engine_class
from fillframe.engines.flux import (
    FILL_IN_CHANNELS,
    FluxEngine,
    composite,
    pad_to_multiple,
    pipeline_guidance,
    weights_problem,
)
from fillframe.errors import Cancelled
from fillframe.imaging.canvas import outpaint_canvas
from fillframe.settings import Settings
from tests.utils.images import box_mask, photo

ROOT = Path(__file__).resolve().parents[2]


def needs_flux() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    needs_flux()
    import torch

    torch.set_num_threads(1)
    from tests.utils.tiny_flux import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("flux") / "FLUX.1-Fill-dev-tiny")


@pytest.fixture(scope="session")
def engine(tiny_folder: Path) -> Iterator[FluxEngine]:
    """Loaded once through the engine's real path: registry -> load() -> from_pretrained."""
    cls = engine_class("flux")
    eng = cls(Settings(engine="flux", flux_model=tiny_folder, flux_device="cpu"))
    assert isinstance(eng, FluxEngine)
    eng.load()
    yield eng


def job(rgb: np.ndarray, mask: np.ndarray, **kw: object) -> FillJob:
    params: dict[str, object] = {"prompt": "a red cat on the sea", "seed": 7, "steps": 3}
    params.update(kw)
    return FillJob(rgb=rgb, mask=mask, **params)  # type: ignore[arg-type]


def run(eng: FluxEngine, fill_job: FillJob) -> tuple[np.ndarray, dict[str, object], list[int]]:
    seen: list[int] = []
    out = eng.fill(fill_job, seen.append, lambda: False)
    return out.rgb, out.notes, seen


@pytest.fixture(scope="module")
def cat() -> tuple[np.ndarray, np.ndarray]:
    rgb = photo("chelsea", (96, 64))
    return rgb, box_mask(64, 96, 0.25)


def assert_untouched(out: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> None:
    keep = mask == 0
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.array_equal(out[keep], rgb[keep])


# --- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("guidance", "factor", "expected"),
    [(3.0, 10.0, 30.0), (2.0, 10.0, 20.0), (5.0, 10.0, 50.0), (5.0, 40.0, 100.0), (2.0, 0.5, 1.5)],
)
def test_pipeline_guidance_is_clamped_factor_times_guidance(
    guidance: float, factor: float, expected: float
) -> None:
    assert pipeline_guidance(guidance, factor) == expected


def test_pad_to_multiple_marks_padding_as_fill() -> None:
    rgb = photo("coffee", (37, 21))
    fill = np.zeros((21, 37), bool)
    rgb_p, fill_p = pad_to_multiple(rgb, fill)
    assert rgb_p.shape == (32, 48, 3) and fill_p.shape == (32, 48)
    assert np.array_equal(rgb_p[:21, :37], rgb)
    assert not fill_p[:21, :37].any() and fill_p[21:].all() and fill_p[:, 37:].all()
    assert np.array_equal(rgb_p[25, 40], rgb[20, 36])  # edge replicated


def test_composite_takes_generated_only_where_filled() -> None:
    a, b = photo("astronaut", (32, 16)), photo("rocket", (32, 16))
    fill = box_mask(16, 32, 0.3) == 255
    out = composite(a, b, fill)
    assert np.array_equal(out[fill], b[fill]) and np.array_equal(out[~fill], a[~fill])


def test_importing_the_engines_does_not_import_torch() -> None:
    code = (
        "import sys, fillframe.engines.base, fillframe.engines.flux, fillframe.engines.bfl, "
        "fillframe.settings; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- start-up checks ------------------------------------------------------------------------


def test_no_model_folder_is_refused_with_what_to_set(tmp_path: Path) -> None:
    assert "FILLFRAME_FLUX_MODEL" in str(weights_problem(None, None))
    assert "not a folder" in str(weights_problem(tmp_path / "missing", None))
    assert "diffusers layout" in str(weights_problem(tmp_path, None))
    eng = FluxEngine(Settings(flux_model=tmp_path))
    with pytest.raises(RuntimeError, match=r"model_index\.json"):
        eng.load()


def test_plain_flux_dev_folder_is_refused_at_start_up(tiny_folder: Path, tmp_path: Path) -> None:
    from tests.utils.tiny_flux import save_plain_dev_copy

    plain = save_plain_dev_copy(tiny_folder, tmp_path / "FLUX.1-dev-tiny")
    eng = FluxEngine(Settings(flux_model=plain, flux_device="cpu"))
    with pytest.raises(RuntimeError) as info:
        eng.load()
    message = str(info.value)
    assert "takes 64 input channels" in message and str(FILL_IN_CHANNELS) in message
    assert "FLUX.1-Fill-dev" in message
    assert eng.pipe is None


def test_single_transformer_file_loads_and_matches_the_folder(
    tiny_folder: Path, tmp_path: Path, engine: FluxEngine, cat: tuple[np.ndarray, np.ndarray]
) -> None:
    from tests.utils.tiny_flux import save_plain_dev_copy, save_single_transformer_file

    single = save_single_transformer_file(tiny_folder, tmp_path / "flux1-fill-dev.safetensors")
    eng = FluxEngine(Settings(flux_model=tiny_folder, flux_transformer_file=single, flux_device="cpu"))
    eng.load()
    rgb, mask = cat
    from_file, _, _ = run(eng, job(rgb, mask))
    from_folder, _, _ = run(engine, job(rgb, mask))
    assert np.array_equal(from_file, from_folder)

    plain = save_plain_dev_copy(tiny_folder, tmp_path / "plain")
    plain_file = save_single_transformer_file(plain, tmp_path / "flux1-dev.safetensors")
    refused = FluxEngine(Settings(flux_model=tiny_folder, flux_transformer_file=plain_file))
    with pytest.raises(RuntimeError, match=r"FLUX_TRANSFORMER_FILE.*takes 64 input channels"):
        refused.load()


def test_loaded_pipeline_is_fill_float32_on_cpu(engine: FluxEngine) -> None:
    assert engine.pipe is not None
    assert type(engine.pipe).__name__ == "FluxFillPipeline"
    assert engine.pipe.transformer.config.in_channels == FILL_IN_CHANNELS
    import torch

    dtypes = {
        m.dtype
        for m in (
            engine.pipe.transformer,
            engine.pipe.vae,
            engine.pipe.text_encoder,
            engine.pipe.text_encoder_2,
        )
    }
    assert dtypes == {torch.float32}
    assert engine.device == "cpu" and engine.dtype_name == "float32"


# --- filling --------------------------------------------------------------------------------


def test_same_seed_same_bytes_different_seed_different_bytes(
    engine: FluxEngine, cat: tuple[np.ndarray, np.ndarray]
) -> None:
    rgb, mask = cat
    first, _, _ = run(engine, job(rgb, mask, seed=11))
    again, _, _ = run(engine, job(rgb, mask, seed=11))
    other, _, _ = run(engine, job(rgb, mask, seed=12))
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()
    hole = mask == 255
    assert not np.array_equal(first[hole], rgb[hole])  # the hole really was repainted
    assert_untouched(first, rgb, mask)
    assert_untouched(other, rgb, mask)


@pytest.mark.parametrize(("width", "height"), [(64, 48), (53, 70), (33, 17)])
def test_sizes_are_kept_including_sides_not_multiple_of_16(
    engine: FluxEngine, width: int, height: int
) -> None:
    rgb = photo("astronaut", (width, height))
    mask = box_mask(height, width, 0.3)
    out, notes, _ = run(engine, job(rgb, mask))
    assert out.shape == (height, width, 3)
    assert_untouched(out, rgb, mask)
    padded = [-(-height // 16) * 16, -(-width // 16) * 16]
    if padded != [height, width]:
        assert notes["paddedTo"] == padded
    else:
        assert "paddedTo" not in notes


def test_outpaint_canvas_keeps_the_original_pixels(engine: FluxEngine) -> None:
    rgb = photo("rocket", (40, 56))
    canvas, mask, plan = outpaint_canvas(rgb, "Zoom out 1.5x", 1_000_000)
    out, _, _ = run(engine, job(canvas, mask))
    assert out.shape == canvas.shape
    assert_untouched(out, canvas, mask)
    placed = out[plan.y : plan.y + plan.image_height, plan.x : plan.x + plan.image_width]
    assert np.array_equal(placed, rgb)


def test_rgba_canvas_is_filled_as_rgb(engine: FluxEngine, cat: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, mask = cat
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    from_rgba, _, _ = run(engine, job(rgba, mask))
    from_rgb, _, _ = run(engine, job(rgb, mask))
    assert from_rgba.shape == rgb.shape
    assert np.array_equal(from_rgba, from_rgb)


@pytest.mark.parametrize(("guidance", "expected"), [(3.0, 30.0), (2.0, 20.0), (5.0, 50.0)])
def test_guidance_reaches_the_pipeline_mapped(
    engine: FluxEngine, cat: tuple[np.ndarray, np.ndarray], guidance: float, expected: float
) -> None:
    rgb, mask = cat
    _, notes, _ = run(engine, job(rgb, mask, guidance=guidance))
    assert engine.pipe is not None
    assert engine.pipe.guidance_scale == expected  # what the pipeline was called with
    assert notes["pipelineGuidance"] == expected and notes["guidanceFactor"] == 10.0


def test_guidance_changes_the_picture(engine: FluxEngine, cat: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, mask = cat
    low, _, _ = run(engine, job(rgb, mask, guidance=2.0))
    high, _, _ = run(engine, job(rgb, mask, guidance=5.0))
    assert low.tobytes() != high.tobytes()


def test_guidance_factor_setting(tiny_folder: Path, cat: tuple[np.ndarray, np.ndarray]) -> None:
    eng = FluxEngine(Settings(flux_model=tiny_folder, flux_device="cpu", flux_guidance_factor=30.0))
    eng.load()
    rgb, mask = cat
    _, notes, _ = run(eng, job(rgb, mask, guidance=5.0))
    assert eng.pipe is not None and eng.pipe.guidance_scale == 100.0
    assert notes["pipelineGuidance"] == 100.0 and notes["guidanceFactor"] == 30.0


def test_progress_is_reported_each_step(engine: FluxEngine, cat: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, mask = cat
    _, notes, seen = run(engine, job(rgb, mask, steps=5))
    assert len(seen) == 5 and notes["stepsUsed"] == 5
    assert seen == sorted(seen) and seen[0] > 0 and seen[-1] < 100


def test_cancel_is_honoured_between_steps(engine: FluxEngine, cat: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, mask = cat
    seen: list[int] = []
    with pytest.raises(Cancelled):
        engine.fill(job(rgb, mask, steps=8), seen.append, lambda: len(seen) >= 2)
    assert len(seen) == 2  # stopped right after the step that saw the cancel
    with pytest.raises(Cancelled):
        engine.fill(job(rgb, mask), seen.append, lambda: True)
    assert len(seen) == 2  # cancelled before the first step
    # The pipeline is still usable after a cancel.
    out, _, _ = run(engine, job(rgb, mask))
    assert_untouched(out, rgb, mask)


def test_local_engine_says_what_it_does_not_do(
    engine: FluxEngine, cat: tuple[np.ndarray, np.ndarray]
) -> None:
    rgb, mask = cat
    plain, notes, _ = run(engine, job(rgb, mask, prompt_upsampling=False, safety_tolerance=2))
    assert "promptUpsampling" not in notes
    assert "no safety checker" in str(notes["moderation"])
    asked, notes, _ = run(engine, job(rgb, mask, prompt_upsampling=True, safety_tolerance=6))
    assert "not available" in str(notes["promptUpsampling"])
    assert np.array_equal(plain, asked)  # neither option changes the pixels locally


def test_empty_mask_returns_the_canvas(engine: FluxEngine) -> None:
    rgb = photo("coffee", (48, 32))
    out, notes, seen = run(engine, job(rgb, np.zeros((32, 48), np.uint8)))
    assert np.array_equal(out, rgb) and "skipped" in notes and seen == []


def test_live_service_with_flux_engine(tiny_folder: Path, tmp_path: Path) -> None:
    """`fillframe serve` on the flux engine with the tiny weights: a job completes, pixels kept."""
    import base64
    import io
    import time

    import httpx
    from PIL import Image

    from tests.utils.images import encode
    from tests.utils.servers import LiveServer, create_key, fillframe_env

    env = fillframe_env(tmp_path / "data", engine="flux", flux_model=str(tiny_folder), flux_device="cpu")
    env["HF_HUB_OFFLINE"] = "1"
    server = LiveServer(env, log_path=tmp_path / "serve.log")
    try:
        key = create_key(env, "flux-live")
        rgb, mask = photo("chelsea", (80, 48)), box_mask(48, 80, 0.25)
        params = {
            "image": "data:image/png;base64," + base64.b64encode(encode(rgb)).decode(),
            "mask": "data:image/png;base64," + base64.b64encode(encode(mask)).decode(),
            "prompt": "a red cat",
            "steps": 3,
            "seed": 5,
            "output_format": "png",
        }
        body = {"model": "flux-fill-pro", "fluxFillParams": params}
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as client:
            job_id = client.post("/v2/images/edit", json=body).json()["jobId"]
            for _ in range(1200):
                view = client.get(f"/v2/jobs/{job_id}").json()
                if view["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    break
                time.sleep(0.05)
            assert view["status"] == "COMPLETED", view
            stored = client.get(view["result"]["images"][0]).content
        out = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"))
        assert out.shape == rgb.shape
        assert np.array_equal(out[mask == 0], rgb[mask == 0])
    finally:
        server.stop()
