"""Usage of a team per UTC day: jobs by status, credits captured and refunded, engine seconds.

Jobs count on the day they were created; credits on the day of their ledger row; engine seconds
are each finished job's time from start to end, on its creation day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from fillframe.contract import JobStatus
from fillframe.db import Database, credit_ledger, jobs, utcnow

STATUSES: tuple[str, ...] = JobStatus.__args__  # type: ignore[attr-defined]


def _empty_day(day: date) -> dict[str, Any]:
    return {
        "date": day.isoformat(),
        "jobs": dict.fromkeys(STATUSES, 0),
        "creditsCaptured": 0,
        "creditsRefunded": 0,
        "engineSeconds": 0.0,
    }


async def per_day(
    db: Database, team_id: str, days: int, *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The last `days` UTC days up to today, oldest first, every day present (zeros included)."""
    today = (now or utcnow()).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time.min, tzinfo=UTC)
    out = {first + timedelta(days=i): _empty_day(first + timedelta(days=i)) for i in range(days)}
    hold = credit_ledger.alias("hold")
    settle = credit_ledger.alias("settle")
    job_rows = sa.select(jobs.c.status, jobs.c.created_at, jobs.c.started_at, jobs.c.completed_at).where(
        jobs.c.account_id == team_id, jobs.c.created_at >= start
    )
    # A capture row notes the amount in its reason only; the credits it made final are its hold's.
    credit_rows = (
        sa.select(settle.c.kind, settle.c.created_at, sa.func.abs(hold.c.amount).label("amount"))
        .join(hold, sa.and_(hold.c.job_id == settle.c.job_id, hold.c.kind == "hold"))
        .where(
            settle.c.account_id == team_id,
            settle.c.kind.in_(("capture", "refund")),
            settle.c.created_at >= start,
        )
    )
    async with db.read() as conn:
        for row in (await conn.execute(job_rows)).mappings():
            day = out.get(row["created_at"].date())
            if day is None:
                continue
            day["jobs"][row["status"]] += 1
            if row["started_at"] and row["completed_at"]:
                day["engineSeconds"] += (row["completed_at"] - row["started_at"]).total_seconds()
        for row in (await conn.execute(credit_rows)).mappings():
            day = out.get(row["created_at"].date())
            if day is not None:
                field = "creditsCaptured" if row["kind"] == "capture" else "creditsRefunded"
                day[field] += int(row["amount"])
    for day in out.values():
        day["engineSeconds"] = round(day["engineSeconds"], 3)
    return list(out.values())
