"""The client against a live Fillframe server (see conftest): every operation, both twins,
typed answers and typed errors."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fillframe_client import (
    APIConnectionError,
    AsyncFillframe,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    Fillframe,
    Job,
    JobFailedError,
    NotFoundError,
    PermissionDeniedError,
    WaitTimeoutError,
)
from support import Files, Live, png_size


def test_me_and_models(ff: Fillframe) -> None:
    me = ff.me()
    assert me.api_key is not None and me.api_key.prefix.startswith("afk_")
    # A key made by `fillframe keys create` without --credits: its team's OWNER, unmetered.
    assert me.user.role == "OWNER" and me.user.email
    assert me.team.unlimited is True and me.team.credits == 0
    [model] = [m for m in ff.models() if m.id == "flux-fill-pro"]
    assert (model.modality, model.credit_cost, model.endpoint, model.params_key) == (
        "image",
        9,
        "/v2/images/edit",
        "fluxFillParams",
    )


def test_edit_and_wait_uploads_local_files_and_downloads(ff: Fillframe, files: Files, live: Live) -> None:
    seen: list[Job] = []
    job = ff.edit_and_wait(
        files.image, mask=files.mask, prompt="grey box", seed=11, output_format="png", on_progress=seen.append
    )
    assert job.status == "COMPLETED" and job.seed == 11 and len(job.images) == 1
    assert (job.model, job.credit_cost, job.error) == ("flux-fill-pro", 9, None)
    params = job.raw["input"]["fluxFillParams"]
    assert params["image"].startswith(f"{live.url}/v2/uploads/") and params["mask"].startswith(live.url)
    assert seen[-1].status == "COMPLETED"
    assert [j.progress for j in seen] == sorted(j.progress for j in seen)
    data = ff.download(job)
    assert png_size(data) == files.size
    assert ff.download(job.images[0]) == data


def test_upload_then_use_its_url(ff: Fillframe, files: Files, live: Live) -> None:
    upload = ff.uploads.create(files.image)
    data = files.image.read_bytes()
    assert (upload.content_type, upload.byte_size, upload.kind) == ("image/png", len(data), "image")
    assert httpx.get(upload.url, headers={"X-API-Key": live.api_key}).content == data
    sub = ff.edit(upload.url, mask=files.mask.read_bytes(), prompt="x", output_format="png")
    assert sub.idempotency_key.startswith("ff-")
    assert ff.jobs.wait(sub.job_id, timeout=60).status == "COMPLETED"
    assert ff.jobs.get(sub.job_id).raw["input"]["fluxFillParams"]["image"] == upload.url


def test_outpaint_is_inferred_from_the_preset(ff: Fillframe, files: Files) -> None:
    job = ff.edit_and_wait(files.image, outpaint="Make square", prompt="more", output_format="png")
    params = job.raw["input"]["fluxFillParams"]
    assert (params["mode"], params["outpaint"]) == ("outpaint", "Make square")
    width, height = png_size(ff.download(job))
    assert width == height >= max(files.size)


def test_list_get_cancel(ff: Fillframe, files: Files) -> None:
    image = ff.uploads.create(files.image).url
    mask = ff.uploads.create(files.mask).url
    ids = [ff.edit(image, mask=mask, prompt=f"job {i}").job_id for i in range(3)]
    # The third job waits behind two others on a one-job worker: cancelled while QUEUED (or
    # flagged while PROCESSING on a slow machine); either way it ends CANCELLED.
    assert ff.jobs.cancel(ids[2]).status in ("CANCELLED", "PROCESSING")
    cancelled = ff.jobs.wait(ids[2], timeout=60)
    assert (cancelled.status, cancelled.error_code) == ("CANCELLED", "cancelled")
    page = ff.jobs.list(limit=2)
    assert [j.id for j in page.jobs] == ids[:0:-1] and page.has_more and page.next_cursor
    rest = ff.jobs.list(limit=2, cursor=page.next_cursor)
    assert rest.jobs[0].id == ids[0]
    assert ids[2] in [j.id for j in ff.jobs.list(status="CANCELLED", limit=100).jobs]
    found = ff.jobs.list(search=ids[1], include_models=True)
    assert [j.id for j in found.jobs] == [ids[1]] and found.models == ["flux-fill-pro"]
    assert ids[0] in [j.id for j in ff.jobs.list(scope="team", limit=100).jobs]  # an OWNER's key
    assert ff.jobs.wait(ids[0], timeout=60).status == "COMPLETED"
    with pytest.raises(ConflictError) as info:
        ff.jobs.cancel(ids[0])
    assert info.value.status_code == 409 and info.value.request_id


def test_wait_times_out_with_the_last_state(ff: Fillframe, files: Files) -> None:
    sub = ff.edit(files.image, mask=files.mask, prompt="slow")
    with pytest.raises(WaitTimeoutError) as info:
        ff.jobs.wait(sub.job_id, timeout=0)
    assert info.value.job.id == sub.job_id and not info.value.job.done
    assert ff.jobs.wait(sub.job_id, timeout=60).status == "COMPLETED"


def test_typed_errors(ff: Fillframe, files: Files, live: Live) -> None:
    with Fillframe(live.url, "afk_not_a_real_key") as stranger, pytest.raises(AuthenticationError) as auth:
        stranger.me()
    assert (auth.value.status_code, auth.value.message) == (401, "Invalid API key")
    with pytest.raises(NotFoundError):
        ff.jobs.get(str(uuid.uuid4()))
    with pytest.raises(BadRequestError) as bad:
        ff.edit(files.image, mask=files.mask, prompt="x", steps=99)
    assert bad.value.details == {"fluxFillParams.steps": ["must be <= 50"]}
    with pytest.raises(TypeError, match="stepz"):
        ff.edit(files.image, mask=files.mask, prompt="x", stepz=3)  # type: ignore[call-arg]
    with pytest.raises(JobFailedError) as failed:
        ff.edit_and_wait(files.image, mask=files.small_mask, prompt="x")
    assert (failed.value.job.status, failed.value.job.error_code) == ("FAILED", "invalid_input")
    job = ff.edit_and_wait(files.image, mask=files.mask, prompt="x")
    with pytest.raises(PermissionDeniedError):
        ff.download(job.images[0].replace("sig=", "sig=0"))


def test_unreachable_server_is_retried_then_raised() -> None:
    sleeps: list[float] = []
    ff = Fillframe("http://127.0.0.1:9", "afk_x", max_retries=2, sleep=sleeps.append)
    with ff, pytest.raises(APIConnectionError):
        ff.me()
    assert sleeps == [0.5, 1.0]


def test_async_twin(live: Live, files: Files) -> None:
    async def main() -> None:
        async with AsyncFillframe(live.url, live.api_key) as ff:
            assert (await ff.me()).api_key is not None
            assert "flux-fill-pro" in [m.id for m in await ff.models()]
            upload = await ff.uploads.create(files.image)
            seen: list[Job] = []
            job = await ff.edit_and_wait(
                upload.url, mask=files.mask, prompt="grey", output_format="png", on_progress=seen.append
            )
            assert job.status == "COMPLETED" and seen[-1].status == "COMPLETED"
            assert png_size(await ff.download(job)) == files.size
            assert (await ff.jobs.get(job.id)).id == job.id
            assert job.id in [j.id for j in (await ff.jobs.list(limit=5)).jobs]
            sub = await ff.edit(files.image, mask=files.mask, prompt="x")
            assert (await ff.jobs.wait(sub.job_id, timeout=60)).status == "COMPLETED"
            with pytest.raises(ConflictError):
                await ff.jobs.cancel(sub.job_id)
        async with AsyncFillframe(live.url, "afk_wrong") as stranger:
            with pytest.raises(AuthenticationError):
                await stranger.me()

        sleeps: list[float] = []

        async def record(seconds: float) -> None:
            sleeps.append(seconds)

        async with AsyncFillframe("http://127.0.0.1:9", "afk_x", max_retries=1, sleep=record) as ff:
            with pytest.raises(APIConnectionError):
                await ff.me()
        assert sleeps == [0.5]

    asyncio.run(main())
