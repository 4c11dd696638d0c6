"""POST /v2/images/edit: validate, guard the URLs, store data URIs as uploads, then one
transaction that counts the rate, holds the credits and queues the job (or replays an
idempotent repeat).

Data URIs never reach the job row: each is decoded off the event loop and saved as the
account's upload (api/data_uris.py cuts the long ones out of the body before it is parsed), and
the job keeps the upload URL, which is also what its `input` shows."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from fillframe import uploads
from fillframe.accounts import Caller
from fillframe.api.data_uris import Cut, DataUriRoute, off_loop
from fillframe.api.deps import CallerDep, DbDep, LinkerDep, SettingsDep, StoreDep
from fillframe.api.errors import ApiError
from fillframe.api.openapi import RATE_LIMIT_HEADERS
from fillframe.billing import InsufficientCredits
from fillframe.contract import (
    TERMINAL,
    EditRequest,
    ErrorBody,
    InsufficientCreditsBody,
    JobView,
    SubmitResponse,
    source_kind,
)
from fillframe.db import Database
from fillframe.errors import InvalidInput
from fillframe.imaging.fetch import check_url, parse_data_uri
from fillframe.imaging.masks import check_mask_bytes
from fillframe.jobs import service
from fillframe.jobs.idempotency import MAX_KEY_LENGTH, IdempotencyKey, KeyReused
from fillframe.jobs.queue import Notifier
from fillframe.jobs.store import get_job, job_view
from fillframe.limits import RateLimited
from fillframe.settings import LimitSettings, Settings
from fillframe.storage import BlobStore

router = APIRouter(tags=["jobs"], route_class=DataUriRoute)

_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*(\d+)", re.IGNORECASE)


async def check_sources(
    req: EditRequest, caller: Caller, db: Database, store: BlobStore, limits: LimitSettings
) -> None:
    """Refuse at submit what would certainly fail later: private literal addresses, upload URLs
    that are not this account's live uploads, and an uploaded mask that repaints nothing."""
    params = req.fluxFillParams
    candidates = {"fluxFillParams.image": params.image, "webhookUrl": req.effective_webhook_url}
    if params.mode == "inpaint":
        candidates["fluxFillParams.mask"] = params.mask
    details: dict[str, list[str]] = {}
    for path, value in candidates.items():
        if not value or source_kind(value) != "url":
            continue
        file_id = uploads.upload_id(value) if path != "webhookUrl" else None
        if file_id is not None:
            row = await uploads.find(db, caller.account_id, file_id)
            if row is None:
                details[path] = ["is an upload that does not exist for this account or has expired"]
            elif path == "fluxFillParams.mask":
                try:
                    await off_loop(check_mask_bytes, await store.get(row["storage_key"]), limits.max_pixels)
                except InvalidInput as exc:
                    details[path] = [str(exc)]
            continue
        try:
            check_url(value, limits.allow_private_urls)
        except ValueError as exc:
            details[path] = [str(exc)]
    if details:
        path, messages = next(iter(details.items()))
        raise ApiError(400, f"Invalid request: {path} {messages[0]}", details=details)


async def store_data_uris(
    req: EditRequest,
    cuts: dict[str, Cut],
    caller: Caller,
    db: Database,
    store: BlobStore,
    settings: Settings,
    base: str,
) -> tuple[EditRequest, list[dict[str, Any]]]:
    """The request with each data-URI image or mask replaced by the URL of the upload it was
    saved as, and those uploads (to discard if no job is queued). Raises a 400 naming the field."""
    params = req.fluxFillParams
    if set(cuts) - {params.image, params.mask}:
        # Every other string field is far shorter than a cut-out one: it could not be valid.
        raise ApiError(400, "Invalid request: a data URI may only be fluxFillParams.image or .mask.")
    saved: list[dict[str, Any]] = []
    urls: dict[str, str] = {}
    try:
        for field in ("image", "mask"):
            value = getattr(params, field)
            if value is None or source_kind(value) != "data":
                continue
            cut = cuts.get(value)
            try:
                source = await off_loop(cut.value) if cut else value
                data = await off_loop(parse_data_uri, source, settings.limits.max_image_bytes, what=field)
                if field == "mask":  # an all-black mask would be charged for the image unchanged
                    await off_loop(check_mask_bytes, data, settings.limits.max_pixels)
                ttl = timedelta(hours=settings.api.upload_ttl_hours)
                subject = f"The {field} data URI"
                row = await uploads.save(db, store, caller.account_id, data, ttl, subject=subject)
            except (InvalidInput, uploads.NotAnImage) as exc:
                path = f"fluxFillParams.{field}"
                raise ApiError(400, f"Invalid request: {path}: {exc}", details={path: [str(exc)]}) from None
            saved.append(row)
            urls[field] = f"{base}/v2/uploads/{row['id']}"
    except BaseException:
        await uploads.discard(db, store, saved)
        raise
    if not urls:
        return req, saved
    return req.model_copy(update={"fluxFillParams": params.model_copy(update=urls)}), saved


async def queue_job(
    db: Database,
    caller: Caller,
    req: EditRequest,
    settings: Settings,
    idem: IdempotencyKey | None,
    base_url: str,
    notify_done: bool,
) -> service.Submitted:
    """service.submit, its refusals turned into the contract's 429, 402 and 409."""
    limit = caller.rate_limit_per_minute
    try:
        return await service.submit(
            db,
            caller,
            req,
            cost=settings.api.model_costs.get(req.model, 0),
            max_attempts=settings.api.max_attempts,
            rate_limit=settings.limits.rate_limit_per_minute if limit is None else limit,
            idem=idem,
            idem_ttl=timedelta(hours=settings.api.idempotency_ttl_hours),
            base_url=base_url,
            notify_done=notify_done,
        )
    except RateLimited as exc:
        headers = {**exc.state.headers(), "Retry-After": str(exc.state.reset_seconds)}
        raise ApiError(429, f"{exc} Retry after {exc.state.reset_seconds} s.", headers=headers) from None
    except InsufficientCredits as exc:
        raise ApiError(
            402,
            "Insufficient credits",
            extra={"creditsRequired": exc.required, "creditsAvailable": exc.available},
        ) from None
    except KeyReused as exc:
        raise ApiError(409, str(exc)) from None


def parse_prefer_wait(prefer: str | None, ceiling: int) -> int | None:
    match = _PREFER_WAIT.search(prefer or "")
    return None if match is None else min(int(match.group(1)), ceiling)


async def wait_until_done(
    db: Database, notifier: Notifier, job_id: str, seconds: float
) -> dict[str, Any] | None:
    """The job once it ends, or None after `seconds`. Woken by the finishing worker (in this
    process, or by NOTIFY on PostgreSQL); a 250 ms re-check covers workers it cannot hear."""
    deadline = time.monotonic() + seconds
    while True:
        async with db.read() as conn:
            row = await get_job(conn, job_id)
        if row is not None and row["status"] in TERMINAL:
            return row
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        await notifier.wait_finished(job_id, min(remaining, 0.25))


@router.post(
    "/v2/images/edit",
    status_code=202,
    response_model=SubmitResponse,
    responses={
        200: {"model": JobView, "description": "With `Prefer: wait=N`, the finished job."},
        402: {"model": InsufficientCreditsBody, "description": "The balance is short of the model's cost."},
        409: {
            "model": ErrorBody,
            "description": "The Idempotency-Key came with another body, or its first request is in flight.",
        },
        413: {"model": ErrorBody, "description": "The body is larger than the limit."},
        429: {
            "model": ErrorBody,
            "description": "Rate or concurrency limit reached; retry after `Retry-After` seconds.",
            "headers": RATE_LIMIT_HEADERS,
        },
    },
    summary="Submit an inpaint or outpaint job",
)
async def submit_edit(
    req: EditRequest,
    request: Request,
    caller: CallerDep,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
    linker: LinkerDep,
    idempotency_key: Annotated[
        str | None, Header(description=f"At most {MAX_KEY_LENGTH} characters; repeats return the same job.")
    ] = None,
    prefer: Annotated[
        str | None, Header(description="`wait=N` (N <= 60): answer with the finished job.")
    ] = None,
) -> JSONResponse:
    idem = None
    if idempotency_key is not None:
        if not 0 < len(idempotency_key) <= MAX_KEY_LENGTH:
            raise ApiError(400, f"The Idempotency-Key header must be 1 to {MAX_KEY_LENGTH} characters long.")
        idem = IdempotencyKey.of(idempotency_key, req.model_dump_json())
    await check_sources(req, caller, db, store, settings.limits)
    cuts = getattr(request.state, "data_uris", {})
    req, saved = await store_data_uris(req, cuts, caller, db, store, settings, linker.base_url)
    wait = parse_prefer_wait(prefer, settings.limits.max_wait_seconds)
    try:
        submitted = await queue_job(db, caller, req, settings, idem, linker.base_url, bool(wait))
    except BaseException:
        await uploads.discard(db, store, saved)  # no job will read them
        raise
    headers = submitted.rate.headers() if submitted.rate else {}
    if submitted.replayed:
        await uploads.discard(db, store, saved)  # the original job has its own
    else:
        request.app.state.notifier.notify()
    if wait is not None:
        headers["Preference-Applied"] = f"wait={wait}"
        row = await wait_until_done(db, request.app.state.notifier, submitted.job_id, wait)
        if row is not None:
            return JSONResponse(await job_view(row, linker), status_code=200, headers=headers)
    return JSONResponse(
        {"jobId": submitted.job_id, "status": submitted.status}, status_code=202, headers=headers
    )
