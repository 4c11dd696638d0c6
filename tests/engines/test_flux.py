"""The flux engine against a tiny FluxFillPipeline built, saved and loaded in this test run.

The pipeline has FLUX.1 Fill [dev]'s wiring at toy size (tests/utils/tiny_flux.py) and random
weights, so pixels are noise-like: the tests check what the engine guarantees (determinism,
sizes, untouched pixels, what reaches the pipeline, progress, cancel, start-up checks), not
picture quality.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# Before anything imports huggingface_hub: a code path that tries to download must fail.
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from fillframe.engines.base import FillJob, FillOutput, engine_class
from fillframe.engines.flux import (
    COMFY_PREFIX,
    FILL_IN_CHANNELS,
    FluxEngine,
    auto_device,
    composite,
    pad_to_multiple,
    pipeline_guidance,
    weights_problem,
)
from fillframe.errors import Cancelled
from fillframe.imaging.canvas import outpaint_canvas
from fillframe.settings import Settings
from tests.utils.images import box_mask, photo
from tests.utils.jobs import wait_job

ROOT = Path(__file__).resolve().parents[2]


def needs_flux() -> None:
    """The flux extra is part of the test environment: a missing torch fails, never skips."""
    import diffusers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401


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
            view = wait_job(client, job_id, timeout=60)
            assert view["status"] == "COMPLETED", view
            stored = client.get(view["result"]["images"][0]).content
        out = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"))
        assert out.shape == rgb.shape
        assert np.array_equal(out[mask == 0], rgb[mask == 0])
    finally:
        server.stop()


# --- crops: the model sees at most FLUX_MAX_PIXELS -----------------------------------------

CAP = 64 * 64  # the tiny model's budget in these tests: a 64x64 work canvas


@pytest.fixture(scope="module")
def cropping(tiny_folder: Path) -> FluxEngine:
    eng = FluxEngine(
        Settings(flux_model=tiny_folder, flux_device="cpu", flux_max_pixels=CAP, crop_min_context=16)
    )
    eng.load()
    return eng


def seen_sizes(eng: FluxEngine, fill_job: FillJob) -> tuple[FillOutput, list[int]]:
    """Fill, recording the image tokens (one per 16x16 pixels) of every transformer call."""
    assert eng.pipe is not None
    tokens: list[int] = []

    def record(_module: object, _args: object, kwargs: dict[str, object]) -> None:
        hidden = kwargs["hidden_states"]
        tokens.append(int(hidden.shape[1]))  # type: ignore[attr-defined]

    handle = eng.pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        out = eng.fill(fill_job, lambda _p: None, lambda: False)
    finally:
        handle.remove()
    return out, tokens


def test_large_canvas_small_mask_runs_the_pipeline_at_the_capped_size(cropping: FluxEngine) -> None:
    rgb = photo("astronaut", (320, 240))
    mask = np.zeros((240, 320), np.uint8)
    mask[100:140, 150:210] = 255
    out, tokens = seen_sizes(cropping, job(rgb, mask))
    assert tokens and max(tokens) <= CAP // 256
    assert_untouched(out.rgb, rgb, mask)
    hole = mask == 255
    assert not np.array_equal(out.rgb[hole], rgb[hole])
    (crop,) = out.notes["crops"]
    assert out.notes["maxPixels"] == CAP and crop["size"][0] * crop["size"][1] <= CAP
    x, y, w, h = crop["box"]
    assert x <= 150 and y <= 100 and x + w >= 210 and y + h >= 140
    assert crop["scale"] < 1


def two_holes() -> tuple[np.ndarray, np.ndarray]:
    """A 400x300 photo with two small holes in opposite corners (HxWx3 uint8, HxW uint8)."""
    mask = np.zeros((300, 400), np.uint8)
    mask[20:36, 20:40] = 255
    mask[250:270, 350:380] = 255
    return photo("coffee", (400, 300)), mask


def test_two_distant_holes_are_two_crops(cropping: FluxEngine) -> None:
    rgb, mask = two_holes()
    seen: list[int] = []
    out = cropping.fill(job(rgb, mask, steps=2), seen.append, lambda: False)
    assert len(out.notes["crops"]) == 2
    assert_untouched(out.rgb, rgb, mask)
    assert seen == sorted(seen) and len(seen) == 4 and seen[-1] < 100  # two crops, two steps each


def test_a_canvas_that_fits_runs_whole_as_before(cropping: FluxEngine) -> None:
    rgb = photo("rocket", (64, 48))
    out, tokens = seen_sizes(cropping, job(rgb, box_mask(48, 64, 0.2)))
    assert "crops" not in out.notes and set(tokens) == {(64 // 16) * (48 // 16)}


def test_outpaint_over_the_cap_goes_through_the_crops(cropping: FluxEngine) -> None:
    rgb = photo("chelsea", (96, 64))
    canvas, mask, plan = outpaint_canvas(rgb, "Zoom out 2x", 1_000_000)
    assert canvas.shape[0] * canvas.shape[1] > CAP
    out, tokens = seen_sizes(cropping, job(canvas, mask, steps=2))
    assert out.notes["crops"] and max(tokens) <= CAP // 256
    placed = out.rgb[plan.y : plan.y + plan.image_height, plan.x : plan.x + plan.image_width]
    assert np.array_equal(placed, rgb)
    assert_untouched(out.rgb, canvas, mask)


def test_crop_cancel_stops_the_job(cropping: FluxEngine) -> None:
    rgb, mask = two_holes()
    seen: list[int] = []
    with pytest.raises(Cancelled):
        cropping.fill(job(rgb, mask, steps=3), seen.append, lambda: len(seen) >= 4)
    assert len(seen) == 4  # the second crop's first step saw the cancel


# --- throughput options ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def batching(tiny_folder: Path) -> FluxEngine:
    eng = FluxEngine(Settings(flux_model=tiny_folder, flux_device="cpu", flux_max_batch=4))
    eng.load()
    return eng


def test_a_batched_call_gives_each_job_its_unbatched_image(batching: FluxEngine, engine: FluxEngine) -> None:
    jobs = [
        job(photo(name, (64, 48)), box_mask(48, 64, 0.3), seed=seed, prompt=prompt)
        for name, seed, prompt in [
            ("astronaut", 1, "a red cat"),
            ("coffee", 2, "the sea"),
            ("rocket", 3, "a tree"),
        ]
    ]
    seen: list[list[int]] = [[], [], []]
    results = batching.fill_batch(jobs, [s.append for s in seen], [lambda: False] * 3)
    for fill_job, result, progress in zip(jobs, results, seen, strict=True):
        assert isinstance(result, FillOutput), result
        alone, _, _ = run(engine, fill_job)
        assert np.array_equal(result.rgb, alone)
        assert result.notes["runtime"]["batch"] == 3
        assert progress == [25, 50, 75]
        assert_untouched(result.rgb, fill_job.rgb, fill_job.mask)
    assert results[0].rgb.tobytes() != results[1].rgb.tobytes()  # type: ignore[union-attr]


def test_a_cancelled_job_in_a_batch_leaves_the_others_running(batching: FluxEngine) -> None:
    rgb, mask = photo("astronaut", (64, 48)), box_mask(48, 64, 0.3)
    seen: list[int] = []
    results = batching.fill_batch(
        [job(rgb, mask, seed=1), job(rgb, mask, seed=2), job(photo("coffee", (32, 32)), box_mask(32, 32))],
        [seen.append, lambda _p: None, lambda _p: None],
        [lambda: len(seen) >= 1, lambda: False, lambda: False],
    )
    assert isinstance(results[0], Cancelled) and len(seen) == 1
    assert isinstance(results[1], FillOutput) and isinstance(results[2], FillOutput)
    assert results[2].notes["runtime"]["batch"] == 1  # another size: its own call


def test_a_batch_through_the_engine_host_is_one_call_with_each_jobs_own_image(
    tiny_folder: Path, engine: FluxEngine
) -> None:
    """The worker's path: the engine host's child loads the flux engine, says it batches up to
    FILLFRAME_FLUX_MAX_BATCH, and fills a run of three in one pipeline call."""
    from fillframe.engines.host import EngineHost

    jobs = [job(photo(name, (64, 48)), box_mask(48, 64, 0.3), seed=seed) for name, seed in [
        ("astronaut", 1), ("coffee", 2), ("rocket", 3)]]  # fmt: skip
    seen: list[list[int]] = [[], [], []]

    async def through_host() -> tuple[int, list[FillOutput | BaseException]]:
        host = EngineHost(
            Settings(engine="flux", flux_model=tiny_folder, flux_device="cpu", flux_max_batch=3)
        )
        try:
            await host.start()
            stopped = [lambda: False] * 3
            results = await host.fill_batch(jobs, [s.append for s in seen], stopped, 120, ["a", "b", "c"])
            return host.max_batch, results
        finally:
            await host.close()

    max_batch, results = asyncio.run(through_host())
    assert max_batch == 3
    for fill_job, result, progress in zip(jobs, results, seen, strict=True):
        assert isinstance(result, FillOutput), result
        assert result.notes["runtime"]["batch"] == 3  # one pipeline call of three
        assert progress == [25, 50, 75]
        alone, _, _ = run(engine, fill_job)
        assert np.array_equal(result.rgb, alone)


def test_first_block_cache_on_completes(tiny_folder: Path, cat: tuple[np.ndarray, np.ndarray]) -> None:
    eng = FluxEngine(Settings(flux_model=tiny_folder, flux_device="cpu", flux_cache_threshold=0.5))
    eng.load()
    rgb, mask = cat
    cached, notes, _ = run(eng, job(rgb, mask, steps=6))
    assert notes["runtime"]["cacheThreshold"] == 0.5
    assert_untouched(cached, rgb, mask)
    again, _, _ = run(eng, job(rgb, mask, steps=6))
    assert np.array_equal(cached, again)  # the cache is reset between jobs
    seen: list[int] = []
    with pytest.raises(Cancelled):
        eng.fill(job(rgb, mask, steps=6, seed=99), seen.append, lambda: len(seen) >= 3)
    after_cancel, _, _ = run(eng, job(rgb, mask, steps=6))
    assert np.array_equal(cached, after_cancel)  # a cancelled job leaves nothing behind for the next


def test_vae_tiling_and_warm_up(tiny_folder: Path, cat: tuple[np.ndarray, np.ndarray]) -> None:
    settings = Settings(
        flux_model=tiny_folder, flux_device="cpu", flux_vae_tiling=True, flux_warmup_sizes=["32x32", "64x48"]
    )
    eng = FluxEngine(settings)
    eng.load()
    assert eng.warmed == [(32, 32), (64, 48)]
    rgb, mask = cat
    out, notes, _ = run(eng, job(rgb, mask))
    assert notes["runtime"]["vaeTiling"] is True
    assert_untouched(out, rgb, mask)
    with pytest.raises(RuntimeError, match="multiples of 16"):
        FluxEngine(Settings(flux_model=tiny_folder, flux_device="cpu", flux_warmup_sizes=["30x30"])).load()


def test_runtime_notes_and_clip_truncation(engine: FluxEngine, cat: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, mask = cat
    _, notes, _ = run(engine, job(rgb, mask))
    expected = {"fp8": False, "compile": False, "offload": "none", "cacheThreshold": None}
    assert notes["runtime"] == {**expected, "vaeTiling": False, "batch": 1}
    assert "promptTruncated" not in notes
    _, notes, _ = run(engine, job(rgb, mask, prompt="a red cat in the garden " * 20))
    assert "CLIP read the first 77" in notes["promptTruncated"]


# --- memory options and start-up refusals -------------------------------------------------


def test_fp8_is_refused_clearly_off_bfloat16_and_off_fp8_gpus(tiny_folder: Path) -> None:
    with pytest.raises(RuntimeError, match="bfloat16 weights, but the dtype is float32"):
        FluxEngine(Settings(flux_model=tiny_folder, flux_device="cpu", flux_fp8=True)).load()
    eng = FluxEngine(
        Settings(flux_model=tiny_folder, flux_device="cpu", flux_fp8=True, flux_dtype="bfloat16")
    )
    with pytest.raises(RuntimeError, match="FP8 support"):
        eng.load()
    assert eng.pipe is None  # refused before any weight was read


def test_offload_on_cpu_is_refused(tiny_folder: Path) -> None:
    for offload in ("model", "group", "sequential"):
        with pytest.raises(RuntimeError, match=f"OFFLOAD={offload} needs a CUDA GPU"):
            FluxEngine(Settings(flux_model=tiny_folder, flux_device="cpu", flux_offload=offload)).load()


def test_auto_device_gives_one_gpu_per_worker() -> None:
    assert auto_device(0, 3) == "cpu"
    assert auto_device(1, 3) == "cuda:0"  # CUDA_VISIBLE_DEVICES gave this worker one GPU
    assert [auto_device(4, i) for i in range(6)] == [
        "cuda:0",
        "cuda:1",
        "cuda:2",
        "cuda:3",
        "cuda:0",
        "cuda:1",
    ]
    assert auto_device(8, None) == "cuda:0"


def _header_file(path: Path, shapes: dict[str, list[int]]) -> Path:
    """A safetensors file with these tensors (zeros): enough for the start-up check."""
    from safetensors.numpy import save_file

    save_file({k: np.zeros(v, np.float16) for k, v in shapes.items()}, str(path))
    return path


@pytest.mark.parametrize("prefix", ["", COMFY_PREFIX])
def test_original_and_comfyui_key_layouts_pass_the_start_up_check(
    tiny_folder: Path, tmp_path: Path, prefix: str
) -> None:
    fill = _header_file(tmp_path / "fill.safetensors", {prefix + "img_in.weight": [8, FILL_IN_CHANNELS]})
    assert weights_problem(tiny_folder, fill) is None
    plain = _header_file(tmp_path / "plain.safetensors", {prefix + "img_in.weight": [8, 64]})
    assert "takes 64 input channels" in str(weights_problem(tiny_folder, plain))
