"""`fillframe_client` against a live server, for what its own tests (clients/python/tests, run in a
venv without numpy or Pillow by test_client_venv.py) cannot do there: numpy and PIL inputs with
exact pixel checks, retries through a scriptable gateway, a real rate limit, and errors that need
the admin CLI (credits, disabled keys)."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fillframe_client import (
    AsyncFillframe,
    Fillframe,
    InsufficientCreditsError,
    Job,
    JobFailedError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from PIL import Image

from tests.client.conftest import create_key_with_id
from tests.client.gateway import Gateway
from tests.utils.images import box_mask, decode, encode, photo
from tests.utils.jobs import data_uri
from tests.utils.servers import ImageServer, LiveServer, cli

# The sleep engine paints the mask mid-grey, so results are exact to check and quick to make.
LIVE_SETTINGS = {"engine": "tests.utils.engines:SleepEngine", "test_sleep": "0.5"}
GREY = 128


@dataclass(frozen=True)
class Files:
    rgb: np.ndarray  # HxWx3 uint8
    mask: np.ndarray  # HxW uint8, 255 = repaint
    image_path: Path
    mask_path: Path
    small_mask_path: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("client-files")
    rgb = photo("chelsea", (160, 120))
    mask = box_mask(120, 160, 0.1)
    (root / "cat.png").write_bytes(encode(rgb))
    (root / "mask.png").write_bytes(encode(mask))
    (root / "small-mask.png").write_bytes(encode(box_mask(60, 80, 0.1)))
    return Files(rgb, mask, root / "cat.png", root / "mask.png", root / "small-mask.png")


@pytest.fixture(scope="module")
def ff(live: LiveServer, api_key: str) -> Iterator[Fillframe]:
    with Fillframe(live.url, api_key) as client:
        yield client


def check_filled(data: bytes, rgb: np.ndarray, mask: np.ndarray) -> None:
    out = decode(data)
    assert out.shape == rgb.shape
    hole = mask >= 128
    assert np.array_equal(out[~hole], rgb[~hole])
    assert (out[hole] == GREY).all()


def test_edit_and_wait_uploads_local_files(ff: Fillframe, files: Files, live: LiveServer) -> None:
    seen: list[Job] = []
    job = ff.edit_and_wait(
        files.image_path,
        mask=files.mask_path,
        prompt="a grey box",
        seed=11,
        output_format="png",
        on_progress=seen.append,
    )
    assert job.status == "COMPLETED" and job.seed == 11 and len(job.images) == 1
    params = job.raw["input"]["fluxFillParams"]
    assert params["image"].startswith(f"{live.url}/v2/uploads/")
    assert params["mask"].startswith(f"{live.url}/v2/uploads/")
    assert seen[-1].status == "COMPLETED"
    progress = [j.progress for j in seen]
    assert progress == sorted(progress)
    check_filled(ff.download(job), files.rgb, files.mask)
    assert ff.download(job.images[0]) == ff.download(job)


def test_edit_accepts_every_input_form(ff: Fillframe, files: Files, image_server: ImageServer) -> None:
    url = image_server.add(f"cat-{uuid.uuid4().hex}.png", encode(files.rgb))
    forms = [
        (Image.fromarray(files.rgb), files.mask),  # PIL image, numpy mask
        (files.image_path.read_bytes(), str(files.mask_path)),  # bytes, str path
        (url, data_uri(files.mask)),  # URL as given, data URI
    ]
    submissions = [ff.edit(image, mask=mask, prompt="grey", output_format="png") for image, mask in forms]
    assert len({s.idempotency_key for s in submissions}) == 3
    for sub in submissions:
        job = ff.jobs.wait(sub.job_id, timeout=60)
        assert job.status == "COMPLETED", job.error
        check_filled(ff.download(job), files.rgb, files.mask)
    assert ff.jobs.get(submissions[2].job_id).raw["input"]["fluxFillParams"]["image"] == url


def test_outpaint_is_inferred_from_the_preset(ff: Fillframe, files: Files) -> None:
    job = ff.edit_and_wait(
        files.image_path, outpaint="Right outpaint", prompt="more cat", output_format="png"
    )
    params = job.raw["input"]["fluxFillParams"]
    assert (params["mode"], params["outpaint"]) == ("outpaint", "Right outpaint")
    out = decode(ff.download(job))
    assert out.shape == (128, 240, 3)  # 120 -> next multiple of 16; 160 * 1.5 = 240
    assert np.array_equal(out[4:124, :160], files.rgb)  # the image sits flush left, centred vertically


def test_upload_a_local_file(ff: Fillframe, files: Files, api_key: str) -> None:
    upload = ff.uploads.create(files.image_path)
    data = files.image_path.read_bytes()
    assert (upload.content_type, upload.byte_size) == ("image/png", len(data))
    assert upload.expires_at
    assert httpx.get(upload.url, headers={"X-API-Key": api_key}).content == data
    from_array = ff.uploads.create(files.mask)
    mask_png = httpx.get(from_array.url, headers={"X-API-Key": api_key}).content
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(mask_png))), files.mask)


def cli_key(live: LiveServer, name: str, credits: int | None = None) -> str:
    return create_key_with_id(live.env, name, credits)[0]


def test_errors_that_need_the_admin_cli(live: LiveServer, ff: Fillframe, files: Files) -> None:
    with Fillframe(live.url, cli_key(live, "broke", credits=0)) as broke:
        assert broke.me().team.credits == 0
        with pytest.raises(InsufficientCreditsError) as credits:
            broke.edit(data_uri(files.rgb), mask=data_uri(files.mask), prompt="x")
    assert (credits.value.credits_required, credits.value.credits_available) == (9, 0)

    key, key_id = create_key_with_id(live.env, "switched-off")
    cli(live.env, "keys", "disable", key_id)
    with Fillframe(live.url, key) as inactive, pytest.raises(PermissionDeniedError):
        inactive.me()

    with pytest.raises(JobFailedError) as failed:
        ff.edit_and_wait(files.image_path, mask=files.small_mask_path, prompt="x")
    assert "The mask is 80x60 but the image is 160x120" in str(failed.value)


def test_real_rate_limit_retries_on_retry_after_then_raises(live: LiveServer, files: Files) -> None:
    key, key_id = create_key_with_id(live.env, "one-a-minute")
    cli(live.env, "keys", "limits", key_id, "--rate", "1")
    sleeps: list[float] = []
    image, mask = data_uri(files.rgb), data_uri(files.mask)
    ff = Fillframe(live.url, key, max_retries=2, sleep=sleeps.append)
    # At most one window boundary can pass between quick submits, so 3 tries hit the limit.
    with ff, pytest.raises(RateLimitError) as limited:
        for _ in range(3):
            ff.edit(image, mask=mask, prompt="x")
    assert limited.value.status_code == 429
    assert limited.value.retry_after is not None and 1 <= limited.value.retry_after <= 60
    # Each retry waited what the server's Retry-After said (the recorded sleep does not wait).
    assert len(sleeps) >= 2 and all(1 <= s <= 60 for s in sleeps)
    with Fillframe(live.url, key, max_retry_wait=0) as impatient, pytest.raises(RateLimitError):
        impatient.edit(image, mask=mask, prompt="x")


@pytest.fixture
def gateway(live: LiveServer) -> Iterator[Gateway]:
    gw = Gateway(live.url)
    yield gw
    gw.close()


def test_retries_through_a_gateway(gateway: Gateway, live: LiveServer, files: Files) -> None:
    sleeps: list[float] = []
    key = cli_key(live, "behind-gateway")
    with Fillframe(gateway.url, key, sleep=sleeps.append) as ff:
        # The first submit reaches the server but its answer is lost in a 503: the retry carries
        # the same Idempotency-Key, so the server answers with the same job instead of a second one.
        gateway.answer("POST", "/v2/images/edit", 503, forward=True, Retry_After="2")
        gateway.answer("GET", "/v2/jobs/", 429)  # no Retry-After: exponential backoff
        sub = ff.edit(data_uri(files.rgb), mask=data_uri(files.mask), prompt="x", output_format="png")
        posts = gateway.requests("POST", "/v2/images/edit")
        assert len(posts) == 2
        assert (
            posts[0].headers["Idempotency-Key"] == posts[1].headers["Idempotency-Key"] == sub.idempotency_key
        )
        job = ff.jobs.wait(sub.job_id, timeout=60)
        assert job.status == "COMPLETED"
        assert sleeps[:2] == [2.0, 0.5]
        assert [j.id for j in ff.jobs.list().jobs] == [sub.job_id]

        # A POST without an idempotency key is never repeated.
        gateway.answer("POST", "/v2/uploads", 503, Retry_After="1")
        with pytest.raises(ServiceUnavailableError):
            ff.uploads.create(files.image_path)
        assert len(gateway.requests("POST", "/v2/uploads")) == 1

        # Retries run out: max_retries (3) retries after the first try, then the typed error.
        sleeps.clear()
        gateway.answer("GET", "/v2/me", 429, times=4, Retry_After="1")
        with pytest.raises(RateLimitError) as limited:
            ff.me()
        assert limited.value.retry_after == 1 and sleeps == [1.0, 1.0, 1.0]
        assert len(gateway.requests("GET", "/v2/me")) == 4

    # A Retry-After longer than the client will wait is raised at once.
    with Fillframe(gateway.url, key, max_retry_wait=5, sleep=sleeps.append) as ff:
        sleeps.clear()
        gateway.answer("GET", "/v2/me", 429, Retry_After="30")
        with pytest.raises(RateLimitError):
            ff.me()
        assert sleeps == []


def test_async_twin_arrays_and_retries(
    live: LiveServer, api_key: str, files: Files, gateway: Gateway
) -> None:
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    async def main() -> None:
        gateway.answer("GET", "/v2/me", 503, Retry_After="3")
        async with AsyncFillframe(gateway.url, api_key, sleep=record) as ff:
            assert (await ff.me()).api_key is not None
            job = await ff.edit_and_wait(files.rgb, mask=files.mask, prompt="grey", output_format="png")
            check_filled(await ff.download(job), files.rgb, files.mask)
        assert sleeps[0] == 3.0

    asyncio.run(main())
