"""The bfl engine against a faithful fake of Black Forest Labs' API on loopback.

The engine runs with a fake clock (tests/utils/fake_bfl.py): its waits (poll interval,
Retry-After) are recorded instead of slept, so the tests are fast and can check them exactly.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from fillframe.engines.base import FillJob, engine_class
from fillframe.engines.bfl import (
    BflEngine,
    backoff_seconds,
    build_payload,
    registrable_domain,
    retry_after_seconds,
    same_site,
    upstream_guidance,
    upstream_steps,
)
from fillframe.errors import (
    Cancelled,
    ContentModerated,
    EngineFailed,
    InvalidInput,
    RequestModerated,
    TimedOut,
)
from fillframe.settings import Settings
from tests.utils.fake_bfl import FakeBfl, FakeClock, fill_colour, rate_limited, running_fake, server_error
from tests.utils.images import box_mask, encode, photo
from tests.utils.jobs import wait_job
from tests.utils.servers import LiveServer, create_key, fillframe_env


@pytest.fixture
def fake() -> Iterator[FakeBfl]:
    yield from running_fake()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_engine(fake: FakeBfl, clock: FakeClock, **settings: Any) -> BflEngine:
    values: dict[str, Any] = {
        "engine": "bfl",
        "bfl_api_key": fake.api_key,
        "bfl_base_url": fake.url,
        "allow_private_urls": True,  # the fake lives on loopback
        "bfl_poll_seconds": 0.5,
    }
    values.update(settings)
    engine = BflEngine(Settings(**values), clock=clock)
    engine.load()
    return engine


@pytest.fixture
def engine(fake: FakeBfl, clock: FakeClock) -> BflEngine:
    return make_engine(fake, clock)


@pytest.fixture(scope="module")
def canvas() -> tuple[np.ndarray, np.ndarray]:
    return photo("astronaut", (96, 64)), box_mask(64, 96, 0.2)


def job(canvas: tuple[np.ndarray, np.ndarray], **kw: Any) -> FillJob:
    rgb, mask = canvas
    params: dict[str, Any] = {"prompt": "a bunch of flowers", "seed": 42}
    params.update(kw)
    return FillJob(rgb=rgb, mask=mask, **params)


def run(engine: BflEngine, fill_job: FillJob, cancel_after: int | None = None) -> tuple[Any, list[int]]:
    seen: list[int] = []

    def cancelled() -> bool:
        return cancel_after is not None and len(seen) >= cancel_after

    return engine.fill(fill_job, seen.append, cancelled), seen


# --- pure mappings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("guidance", "factor", "expected"),
    [(3.0, 20.0, 60.0), (2.0, 20.0, 40.0), (5.0, 20.0, 100.0), (5.0, 30.0, 100.0), (2.0, 0.5, 1.5)],
)
def test_guidance_maps_to_clamped_factor_times_guidance(
    guidance: float, factor: float, expected: float
) -> None:
    assert upstream_guidance(guidance, factor) == expected


@pytest.mark.parametrize(("steps", "expected"), [(1, 15), (14, 15), (15, 15), (28, 28), (50, 50)])
def test_steps_below_15_are_raised(steps: int, expected: int) -> None:
    assert upstream_steps(steps) == expected


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("1.5") == 1.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_key_goes_only_to_the_base_site() -> None:
    assert same_site("https://api.us1.bfl.ai/v1/get_result?id=1", "https://api.bfl.ai")
    assert same_site("http://127.0.0.1:9/v1/get_result", "http://127.0.0.1:9")
    assert not same_site("https://evil.example/v1/get_result", "https://api.bfl.ai")
    assert not same_site("https://bfl.ai.evil.example/x", "https://api.bfl.ai")
    assert not same_site("http://127.0.0.2/x", "http://127.0.0.1:9")
    # The public-suffix list, not the last two labels: github.io and co.uk are public suffixes.
    assert not same_site("https://evil.github.io/x", "https://bfl.github.io")
    assert same_site("https://api.eu.bfl.co.uk/x", "https://api.bfl.co.uk")
    assert not same_site("https://other.co.uk/x", "https://api.bfl.co.uk")
    assert not same_site("http://api.localhost/x", "http://localhost:1")  # no domain: same host only
    assert registrable_domain("API.US1.BFL.AI.") == "bfl.ai" and registrable_domain("127.0.0.1") is None


def test_payload_is_base64_png_of_canvas_and_mask(canvas: tuple[np.ndarray, np.ndarray]) -> None:
    payload = build_payload(job(canvas, output_format="jpg"), 20.0)
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(payload["image"]))))
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(payload["mask"]))))
    assert np.array_equal(image, canvas[0]) and np.array_equal(mask, canvas[1])
    assert payload["output_format"] == "jpeg"


# --- the fake is faithful -------------------------------------------------------------------


def test_fake_validates_like_bfl(fake: FakeBfl, canvas: tuple[np.ndarray, np.ndarray]) -> None:
    body = build_payload(job(canvas), 20.0)
    url = fake.url + "/v1/flux-pro-1.0-fill"
    with httpx.Client() as client:
        assert client.post(url, json=body).status_code == 403  # no x-key
        assert client.post(url, json=body, headers={"x-key": "wrong"}).status_code == 403
        key = {"x-key": fake.api_key}
        small_mask = base64.b64encode(_png(np.zeros((10, 10), np.uint8))).decode()
        for bad in ({"mask": small_mask}, {"image": "not base64!"}, {"steps": 10}, {"guidance": 101},
                    {"safety_tolerance": 7}, {"output_format": "jpg"}, {"colour": "red"}):  # fmt: skip
            response = client.post(url, json={**body, **bad}, headers=key)
            assert response.status_code == 422, bad
            assert response.json()["detail"][0]["loc"][0] == "body"
        ok = client.post(url, json=body, headers=key)
        assert ok.status_code == 200
        assert set(ok.json()) == {"id", "polling_url", "cost", "input_mp", "output_mp"}
        poll = client.get(ok.json()["polling_url"], headers=key).json()
        assert poll["status"] == "Pending" and poll["id"] == ok.json()["id"]
        assert client.get(ok.json()["polling_url"]).status_code == 403


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


# --- the engine -----------------------------------------------------------------------------


def test_ready_result_is_downloaded_and_kept_pixels_restored(
    engine: BflEngine, fake: FakeBfl, clock: FakeClock, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    rgb, mask = canvas
    out, seen = run(engine, job(canvas))  # JPEG by default: the upstream changes every pixel
    hole = mask == 255
    assert out.rgb.shape == rgb.shape and out.rgb.dtype == np.uint8
    assert np.array_equal(out.rgb[~hole], rgb[~hole])
    colour = np.array(fill_colour(42, "a bunch of flowers"))
    inner = np.zeros_like(hole)
    inner[20:44, 26:70] = True  # away from the hole's edge, where JPEG blurs
    # JPEG (4:2:0) smears a saturated colour: compare the hole's mean colour.
    assert np.abs(out.rgb[inner & hole].mean(axis=0) - colour).max() <= 8
    assert fake.downloads == 1 and fake.submit_attempts == 1
    assert all(key == fake.api_key for key in fake.poll_keys)
    assert len(fake.poll_keys) == fake.pending_polls + 1  # Pending, Pending, Ready
    assert clock.sleeps == [0.5] * 3  # the poll interval before each poll
    assert seen == sorted(seen) and seen[0] == 5 and seen[-1] == 95
    assert out.notes["upstreamId"] == fake.accepted[0]["id"]
    megapixels = round(96 * 64 / 1e6, 4)
    assert (out.notes["cost"], out.notes["inputMp"], out.notes["outputMp"]) == (5.0, megapixels, megapixels)


def test_parameters_pass_through(
    engine: BflEngine, fake: FakeBfl, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    out, _ = run(
        engine,
        job(
            canvas,
            steps=28,
            guidance=2.5,
            seed=1234,
            safety_tolerance=5,
            prompt_upsampling=True,
            output_format="png",
        ),
    )
    sent = fake.accepted[0]
    assert sent["prompt"] == "a bunch of flowers" and sent["steps"] == 28 and sent["guidance"] == 50.0
    assert sent["seed"] == 1234 and sent["safety_tolerance"] == 5 and sent["prompt_upsampling"] is True
    assert sent["output_format"] == "png" and sent["image_size"] == (96, 64)
    assert out.notes["pipelineGuidance"] == 50.0 and out.notes["guidanceFactor"] == 20.0
    assert out.notes["stepsUsed"] == 28 and out.notes["stepsRaised"] is False
    # PNG: the hole is exactly the upstream's pixels.
    hole = canvas[1] == 255
    assert (out.rgb[hole] == fill_colour(1234, "a bunch of flowers")).all()


def test_steps_below_15_are_raised_and_the_job_says_so(
    engine: BflEngine, fake: FakeBfl, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    out, _ = run(engine, job(canvas, steps=4))
    assert fake.accepted[0]["steps"] == 15
    assert out.notes["stepsUsed"] == 15 and out.notes["stepsRaised"] is True


@pytest.mark.parametrize(("guidance", "expected"), [(3.0, 60.0), (2.0, 40.0), (5.0, 100.0)])
def test_guidance_sent_upstream(
    engine: BflEngine, fake: FakeBfl, canvas: tuple[np.ndarray, np.ndarray], guidance: float, expected: float
) -> None:
    out, _ = run(engine, job(canvas, guidance=guidance))
    assert fake.accepted[0]["guidance"] == expected and out.notes["pipelineGuidance"] == expected


def test_guidance_factor_setting(
    fake: FakeBfl, clock: FakeClock, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    engine = make_engine(fake, clock, bfl_guidance_factor=10.0)
    run(engine, job(canvas, guidance=3.0))
    assert fake.accepted[0]["guidance"] == 30.0


def test_request_moderated(engine: BflEngine, fake: FakeBfl, canvas: tuple[np.ndarray, np.ndarray]) -> None:
    fake.outcomes.append("request_moderated")
    with pytest.raises(RequestModerated) as info:
        run(engine, job(canvas))
    assert info.value.code == "request_moderated" and "Derivative Works Filter" in info.value.message


def test_content_moderated(engine: BflEngine, fake: FakeBfl, canvas: tuple[np.ndarray, np.ndarray]) -> None:
    fake.outcomes.append("content_moderated")
    with pytest.raises(ContentModerated) as info:
        run(engine, job(canvas))
    assert info.value.code == "content_moderated" and "NSFW" in info.value.message
    assert fake.downloads == 0


def test_error_keeps_the_upstream_message(
    engine: BflEngine, fake: FakeBfl, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    fake.outcomes.append("error")
    with pytest.raises(EngineFailed) as info:
        run(engine, job(canvas))
    assert info.value.code == "engine_error"
    assert "internal model error (code 17)" in info.value.message


def test_task_not_found_fails_after_a_few_polls(
    engine: BflEngine, fake: FakeBfl, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    fake.outcomes.append("lost")
    with pytest.raises(EngineFailed, match="Task not found"):
        run(engine, job(canvas))
    assert len(fake.poll_keys) == 3


def test_429_on_submit_honours_retry_after(
    engine: BflEngine, fake: FakeBfl, clock: FakeClock, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    fake.submit_script.extend([rate_limited("3"), rate_limited("2")])
    out, _ = run(engine, job(canvas))
    assert fake.submit_attempts == 3 and len(fake.accepted) == 1
    # Retry-After waits are taken in slices of at most a second, then the poll interval.
    assert clock.sleeps[:5] == [1.0, 1.0, 1.0, 1.0, 1.0]
    assert sum(clock.sleeps[:5]) == 5.0 and clock.sleeps[5:] == [0.5] * 3
    assert out.rgb.shape == canvas[0].shape


def test_5xx_on_submit_is_never_reposted(
    engine: BflEngine, fake: FakeBfl, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    fake.submit_script.append(server_error(502))
    with pytest.raises(EngineFailed) as info:
        run(engine, job(canvas))
    assert fake.submit_attempts == 1
    assert "502" in info.value.message and "not re-sent" in info.value.message


def test_polls_survive_5xx_and_429(
    engine: BflEngine, fake: FakeBfl, clock: FakeClock, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    fake.poll_script.extend([server_error(503), rate_limited("4")])
    out, _ = run(engine, job(canvas))
    assert out.rgb.shape == canvas[0].shape
    assert fake.submit_attempts == 1
    assert len(fake.poll_keys) == 2 + fake.pending_polls + 1
    # 0.5 before each poll; the 429's Retry-After (4 s) replaces one interval.
    assert clock.sleeps == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5]


def test_expired_sample_url_fails_clearly(
    engine: BflEngine, fake: FakeBfl, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    fake.sample_ttl = 0.0
    with pytest.raises(EngineFailed) as info:
        run(engine, job(canvas))
    assert "403" in info.value.message and "expire" in info.value.message


def test_wrong_key_is_reported_as_such(
    fake: FakeBfl, clock: FakeClock, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    engine = make_engine(fake, clock, bfl_api_key="not-the-key")
    with pytest.raises(EngineFailed, match="FILLFRAME_BFL_API_KEY"):
        run(engine, job(canvas))
    assert fake.accepted == []


def test_cancel_between_polls(fake: FakeBfl, clock: FakeClock, canvas: tuple[np.ndarray, np.ndarray]) -> None:
    fake.pending_polls = 50
    engine = make_engine(fake, clock)
    with pytest.raises(Cancelled):
        run(engine, job(canvas), cancel_after=3)  # submit, then two Pending polls
    assert len(fake.poll_keys) == 2 and fake.downloads == 0


def test_timeout_while_pending(
    fake: FakeBfl, clock: FakeClock, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    fake.pending_polls = 10**6
    engine = make_engine(fake, clock, bfl_timeout_seconds=5.0, bfl_poll_seconds=1.0)
    with pytest.raises(TimedOut) as info:
        run(engine, job(canvas))
    assert info.value.code == "timeout" and "5 seconds" in info.value.message
    assert len(fake.poll_keys) == 4  # polls at t=1..4; the wait to t=5 meets the deadline


def test_polling_url_goes_through_the_ssrf_guard(
    fake: FakeBfl, clock: FakeClock, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    engine = make_engine(fake, clock, allow_private_urls=False)
    with pytest.raises(EngineFailed, match=r"polling URL that is refused.*loopback"):
        run(engine, job(canvas))
    assert fake.poll_keys == []


def test_upstream_size_change_is_resized_back(
    engine: BflEngine, fake: FakeBfl, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    fake.result_size = (192, 128)
    out, _ = run(engine, job(canvas, output_format="png"))
    rgb, mask = canvas
    assert out.rgb.shape == rgb.shape and out.notes["upstreamSize"] == [192, 128]
    assert np.array_equal(out.rgb[mask == 0], rgb[mask == 0])


def test_mask_of_another_size_is_invalid_input(engine: BflEngine, fake: FakeBfl) -> None:
    bad = FillJob(rgb=photo("coffee", (64, 48)), mask=box_mask(40, 64), prompt="x", seed=1)
    with pytest.raises(InvalidInput):
        run(engine, bad)
    assert fake.submit_attempts == 0


def test_load_refuses_without_key_or_with_a_bad_base_url() -> None:
    with pytest.raises(RuntimeError, match="FILLFRAME_BFL_API_KEY"):
        engine_class("bfl")(Settings(engine="bfl")).load()
    with pytest.raises(RuntimeError, match="FILLFRAME_BFL_BASE_URL"):
        BflEngine(Settings(bfl_api_key="k", bfl_base_url="ftp://api.bfl.ai")).load()


# --- through the whole service --------------------------------------------------------------


def test_live_service_with_bfl_engine(tmp_path: Path) -> None:
    """`fillframe serve` on the bfl engine: a completed job and a moderated one, end to end."""
    fake = FakeBfl()
    fake.outcomes.extend(["ready", "request_moderated"])
    env = fillframe_env(
        tmp_path / "data",
        engine="bfl",
        bfl_api_key=fake.api_key,
        bfl_base_url=fake.url,
        bfl_poll_seconds="0.05",
    )
    server = LiveServer(env)
    try:
        key = create_key(env, "bfl-live")
        rgb, mask = photo("astronaut", (96, 64)), box_mask(64, 96)
        params = {
            "image": "data:image/png;base64," + base64.b64encode(encode(rgb)).decode(),
            "mask": "data:image/png;base64," + base64.b64encode(encode(mask)).decode(),
            "prompt": "flowers",
            "steps": 4,
            "output_format": "png",
        }
        body = {"model": "flux-fill-pro", "fluxFillParams": params}
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as client:
            done = wait_job(client, client.post("/v2/images/edit", json=body).json()["jobId"], 30)
            moderated = wait_job(client, client.post("/v2/images/edit", json=body).json()["jobId"], 30)
            assert done["status"] == "COMPLETED", done
            stored = client.get(done["result"]["images"][0])
        out = np.asarray(Image.open(io.BytesIO(stored.content)).convert("RGB"))
        sent = fake.accepted[0]
        assert sent["steps"] == 15 and sent["output_format"] == "png"
        assert np.array_equal(out[mask == 0], rgb[mask == 0])
        assert (out[mask == 255] == fill_colour(sent["seed"], "flowers")).all()
        assert moderated["status"] == "FAILED" and moderated["errorCode"] == "request_moderated"
        assert "Derivative Works Filter" in moderated["error"]
    finally:
        server.stop()
        fake.close()


# --- busy upstream, task cap, other hosts, download retries, crops --------------------------


def test_busy_submits_back_off_exponentially_without_retry_after(
    engine: BflEngine, fake: FakeBfl, clock: FakeClock, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    assert [backoff_seconds(n, None) for n in (1, 2, 3, 6, 9)] == [2.0, 4.0, 8.0, 60.0, 60.0]
    assert backoff_seconds(5, 1.5) == 1.5
    fake.submit_script.extend([rate_limited(None), server_error(503), rate_limited(None)])
    out, _ = run(engine, job(canvas))
    assert fake.submit_attempts == 4 and len(fake.accepted) == 1
    assert sum(clock.sleeps[:-3]) == 2.0 + 4.0 + 8.0 and clock.sleeps[-3:] == [0.5] * 3
    assert out.rgb.shape == canvas[0].shape


def test_active_tasks_per_key_are_capped(fake: FakeBfl, clock: FakeClock) -> None:
    import threading

    fake.active_limit = 2  # more at once would be answered 429
    fake.pending_polls = 3
    engine = make_engine(fake, clock, bfl_max_active_tasks=2)
    canvas = (photo("coffee", (48, 32)), box_mask(32, 48, 0.2))
    results: list[Any] = []

    def one(seed: int) -> None:
        results.append(engine.fill(job(canvas, seed=seed), lambda _p: None, lambda: False))

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 5 and fake.submit_attempts == 5  # no submit met a 429
    assert fake.most_active <= 2


def test_polls_on_a_regional_host_and_delivery_from_another_host(
    fake: FakeBfl, clock: FakeClock, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    fake.delivery_host = "127.0.0.3"  # no key needed there: the URL is signed
    engine = make_engine(fake, clock)
    out, _ = run(engine, job(canvas, output_format="png"))
    assert fake.downloads == 1 and out.rgb.shape == canvas[0].shape
    # A polling host outside the base's registrable domain (here: another address) is not
    # sent the key; a regional host of the same domain is (same_site above).
    fake.poll_host = "127.0.0.2"
    with pytest.raises(EngineFailed, match=r"outside 127\.0\.0\.1; the key is not sent there"):
        run(engine, job(canvas))
    assert len(fake.poll_keys) == fake.pending_polls + 1  # only the first job's polls


def test_result_download_is_retried_within_its_validity(
    engine: BflEngine, fake: FakeBfl, clock: FakeClock, canvas: tuple[np.ndarray, np.ndarray]
) -> None:
    fake.sample_script.extend([503, 500])
    out, _ = run(engine, job(canvas, output_format="png"))
    assert fake.downloads == 3 and out.rgb.shape == canvas[0].shape
    assert clock.sleeps[-3:] == [1.0, 1.0, 1.0]  # 1 s, then 2 s in slices of a second
    fake.sample_script.extend([500] * 10)
    with pytest.raises(EngineFailed, match="after 4 attempt"):
        run(engine, job(canvas))


def test_a_canvas_over_the_cap_is_sent_crop_by_crop(fake: FakeBfl, clock: FakeClock) -> None:
    engine = make_engine(fake, clock, bfl_max_pixels=64 * 64, crop_min_context=16)
    rgb = photo("astronaut", (320, 240))
    mask = np.zeros((240, 320), np.uint8)
    mask[20:40, 20:60] = 255
    mask[180:220, 250:300] = 255
    seen: list[int] = []
    out = engine.fill(
        FillJob(rgb=rgb, mask=mask, prompt="flowers", seed=3, output_format="png"), seen.append, lambda: False
    )
    assert len(fake.accepted) == 2 and len(out.notes["crops"]) == 2
    for accepted in fake.accepted:
        width, height = accepted["image_size"]
        assert width * height <= 64 * 64 and width % 16 == 0 and height % 16 == 0
    assert np.array_equal(out.rgb[mask == 0], rgb[mask == 0])
    colour = np.array(fill_colour(3, "flowers"))
    assert np.abs(out.rgb[30, 40].astype(int) - colour).max() <= 2  # the first hole is the upstream's
    assert [u["id"] for u in out.notes["upstream"]] == [a["id"] for a in fake.accepted]
    assert out.notes["cost"] == 10.0
    assert seen == sorted(seen) and seen[-1] < 100
