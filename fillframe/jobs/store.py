"""Job rows: reading them, listing them by cursor, and turning a row into the wire's job object."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from fillframe.db import Connection, jobs
from fillframe.storage import Linker

_DATA_PREVIEW = 48


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def get_job(
    conn: Connection, job_id: str, account_id: str | None = None, user_id: str | None = None
) -> dict[str, Any] | None:
    """The job, if it is the team's (`account_id`) and, given `user_id`, that user's."""
    query = sa.select(jobs).where(jobs.c.id == job_id)
    if account_id is not None:
        query = query.where(jobs.c.account_id == account_id)
    if user_id is not None:
        query = query.where(jobs.c.user_id == user_id)
    row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


def encode_cursor(created_at: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raise ValueError on anything that is not a cursor we issued. A crafted cursor must put
    neither text (a NUL fails on PostgreSQL) nor a time that overflows in UTC (year 1 at +14:00)
    into the query, so the time is normalised to UTC and the id must be a UUID."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        return datetime.fromisoformat(created).astimezone(UTC), str(uuid.UUID(job_id))
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise ValueError("cursor is not one this API returned") from exc


async def list_jobs(
    conn: Connection,
    account_id: str | None,
    *,
    limit: int,
    status: str | None = None,
    model: str | None = None,
    cursor: tuple[datetime, str] | None = None,
    user_id: str | None = None,
    job_id: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; returns (rows, next cursor or None). `account_id` None: every team's (the
    operator's view); `user_id`: only that user's jobs; `job_id`: only that job."""
    query = sa.select(jobs)
    if account_id is not None:
        query = query.where(jobs.c.account_id == account_id)
    if user_id is not None:
        query = query.where(jobs.c.user_id == user_id)
    if job_id is not None:
        query = query.where(jobs.c.id == job_id)
    if status:
        query = query.where(jobs.c.status == status)
    if model:
        query = query.where(jobs.c.model == model)
    if cursor:
        created_at, job_id = cursor
        query = query.where(
            sa.or_(
                jobs.c.created_at < created_at,
                sa.and_(jobs.c.created_at == created_at, jobs.c.id < job_id),
            )
        )
    query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
    rows = [dict(r) for r in (await conn.execute(query)).mappings()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return rows, next_cursor


def _shorten_sources(params: Mapping[str, Any]) -> dict[str, Any]:
    """Data URIs can be megabytes: the job echoes their head and size, URLs stay as given."""
    shown = dict(params)
    for field in ("image", "mask"):
        value = shown.get(field)
        if isinstance(value, str) and value.startswith("data:") and len(value) > _DATA_PREVIEW:
            shown[field] = f"{value[:_DATA_PREVIEW]}... ({len(value)} characters)"
    return shown


async def job_view(row: dict[str, Any], linker: Linker) -> dict[str, Any]:
    """The contract's job object for one row."""
    request = dict(row["request"])
    request["fluxFillParams"] = _shorten_sources(request["fluxFillParams"])
    result = await linker.result(row)
    return {
        "id": row["id"],
        "status": row["status"],
        "model": row["model"],
        "progress": row["progress"],
        "result": result,
        "error": row["error"],
        "errorCode": row["error_code"],
        "creditCost": row["credit_cost"],
        "webhookStatus": row["webhook_status"],
        "createdAt": iso(row["created_at"]),
        "startedAt": iso(row["started_at"]),
        "completedAt": iso(row["completed_at"]),
        "expired": row["expired"],
        "seed": row["seed"],
        "input": request,
        "engine": row["notes"],
    }
