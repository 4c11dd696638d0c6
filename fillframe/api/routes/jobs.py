"""GET /v2/jobs/{id}, GET /v2/jobs (cursor list) and POST /v2/jobs/{id}/cancel."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from fillframe.api import job_scope
from fillframe.api.deps import CallerDep, DbDep, LinkerDep
from fillframe.api.errors import ApiError
from fillframe.contract import (
    MODELS,
    ErrorBody,
    JobList,
    JobListWithModels,
    JobStatus,
    JobView,
    NotCancellableBody,
)
from fillframe.jobs import service
from fillframe.jobs.store import decode_cursor, get_job, job_view, list_jobs

router = APIRouter(tags=["jobs"])

NOT_FOUND = "Job not found."
# Documented as a UUID, checked by parse_job_id (whose 400 names the problem in one sentence).
JobIdPath = Annotated[str, Path(description="The `jobId` from submit.", json_schema_extra={"format": "uuid"})]


def parse_job_id(job_id: str) -> str:
    try:
        return str(uuid.UUID(job_id))
    except ValueError:
        raise ApiError(400, f"{job_id[:64]!r} is not a job id: job ids are UUIDs.") from None


@router.get(
    "/v2/jobs/{job_id}",
    response_model=JobView,
    responses={404: {"model": ErrorBody, "description": "No such job for this account."}},
    summary="Get a job",
)
async def get_one(job_id: JobIdPath, caller: CallerDep, db: DbDep, linker: LinkerDep) -> dict[str, Any]:
    async with db.read() as conn:
        row = await get_job(conn, parse_job_id(job_id), caller.account_id, job_scope.own_only(caller))
    if row is None:
        raise ApiError(404, NOT_FOUND)
    return await job_view(row, linker)


@router.get(
    "/v2/jobs",
    response_model=JobListWithModels | JobList,
    summary="List your jobs (or, for OWNER and ADMIN, the team's), newest first",
)
async def get_many(
    caller: CallerDep,
    db: DbDep,
    linker: LinkerDep,
    status: JobStatus | None = None,
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    scope: job_scope.ScopeQuery = "user",
    search: job_scope.SearchQuery = None,
    include_models: job_scope.IncludeModelsQuery = "false",
) -> dict[str, Any]:
    user_id = job_scope.scope_user(caller, scope)
    job_id = job_scope.search_id(search)
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        raise ApiError(400, f"Invalid request: {exc}.", details={"cursor": [str(exc)]}) from None
    if model is not None and model not in MODELS:
        # Every job's model was a known one at submit: nothing to look up (and PostgreSQL answers
        # a NUL in text with an error, not an empty result).
        rows: list[dict[str, Any]] = []
        next_cursor: str | None = None
    else:
        async with db.read() as conn:
            rows, next_cursor = await list_jobs(
                conn, caller.account_id, limit=limit, status=status, model=model, cursor=after,
                user_id=user_id, job_id=job_id,
            )  # fmt: skip
    page: dict[str, Any] = {
        "jobs": [await job_view(r, linker) for r in rows],
        "nextCursor": next_cursor,
        "hasMore": next_cursor is not None,
    }
    if include_models == "true":
        async with db.read() as conn:
            page["models"] = await job_scope.models_present(conn, caller.account_id, user_id)
    return page


@router.post(
    "/v2/jobs/{job_id}/cancel",
    response_model=JobView,
    responses={
        404: {"model": ErrorBody, "description": "No such job for this account."},
        409: {"model": NotCancellableBody, "description": "The job has already ended."},
    },
    summary="Cancel a queued or running job (credits are refunded)",
)
async def cancel(job_id: JobIdPath, caller: CallerDep, db: DbDep, linker: LinkerDep) -> dict[str, Any]:
    job_id = parse_job_id(job_id)
    if not caller.sees_team:  # a MEMBER cancels only its own jobs
        async with db.read() as conn:
            if await get_job(conn, job_id, caller.account_id, caller.user_id) is None:
                raise ApiError(404, NOT_FOUND)
    try:
        status = await service.cancel(db, job_id, caller.account_id)
    except service.NotCancellable as exc:
        raise ApiError(409, str(exc), extra={"status": exc.status}) from None
    if status is None:
        raise ApiError(404, NOT_FOUND)
    async with db.read() as conn:
        row = await get_job(conn, job_id, caller.account_id)
    assert row is not None
    return await job_view(row, linker)
