"""The durable queue: claim with a lease, heartbeat, and requeue jobs whose worker vanished.

Claim is one UPDATE ... WHERE id = (SELECT ... LIMIT 1) ... RETURNING statement. SQLite runs
it under BEGIN IMMEDIATE (one writer at a time). PostgreSQL runs the same statement, plus FOR
UPDATE SKIP LOCKED, inside the `fillframe_claim` function (migration 0003) under an advisory lock,
in one round trip. Per-account concurrency limits are applied here, at claim time, so extra jobs
wait QUEUED instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from fillframe.db import Connection, Database, UTCDateTime, accounts, jobs, plain_url, utcnow

log = logging.getLogger(__name__)

CHANNEL = "fillframe_jobs"
DONE_CHANNEL = "fillframe_done"


class Notifier:
    """In-process signals: "a job was queued" wakes idle workers; "job X finished" wakes requests
    waiting on it (`Prefer: wait`). Across processes PostgreSQL's LISTEN/NOTIFY feeds both (see
    `listen`); on SQLite a slow poll covers other processes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._finished: dict[str, asyncio.Event] = {}

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()

    def finished(self, job_id: str) -> None:
        if (event := self._finished.get(job_id)) is not None:
            event.set()

    async def wait_finished(self, job_id: str, timeout: float) -> None:
        """Return when `finished(job_id)` is called or `timeout` passes, whichever comes first."""
        event = self._finished.setdefault(job_id, asyncio.Event())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            if event.is_set() or self._finished.get(job_id) is event:
                self._finished.pop(job_id, None)


def _claim_statement() -> sa.Update:
    """The job runnable longest (earliest `run_after`, then oldest) whose account is under its
    concurrency limit. SQLite's claim; the PostgreSQL function in migration 0003 runs the same
    statement. The order is that of the `ix_jobs_queue` index (status, run_after, created_at), so
    the database walks the index from its start instead of sorting every queued job per claim."""
    other = jobs.alias("running")
    running = (
        sa.select(sa.func.count())
        .select_from(other)
        .where(other.c.account_id == jobs.c.account_id, other.c.status == "PROCESSING")
        .scalar_subquery()
    )
    limit = (
        sa.select(accounts.c.max_concurrent_jobs).where(accounts.c.id == jobs.c.account_id).scalar_subquery()
    )
    now = sa.bindparam("now")
    candidate = (
        sa.select(jobs.c.id)
        .where(jobs.c.status == "QUEUED", jobs.c.run_after <= now, running < limit)
        .order_by(jobs.c.run_after, jobs.c.created_at)
        .limit(1)
    )
    return (
        jobs.update()
        .where(jobs.c.id == candidate.scalar_subquery(), jobs.c.status == "QUEUED")
        .values(
            status="PROCESSING",
            worker_id=sa.bindparam("worker_id"),
            lease_expires_at=sa.bindparam("lease_expires_at"),
            attempts=jobs.c.attempts + 1,
            started_at=sa.func.coalesce(jobs.c.started_at, now),
        )
        .returning(*jobs.c)
    )


def pg_claimed() -> sa.TableValuedAlias:
    """PostgreSQL's claim, the `fillframe_claim` function (migration 0003), as a FROM item with the
    job's columns; parameters `worker_id`, `now` and `lease_expires_at` (`claim_params`)."""
    claim_fn = sa.func.fillframe_claim(
        sa.bindparam("worker_id", type_=sa.String()),
        sa.bindparam("now", type_=UTCDateTime()),
        sa.bindparam("lease_expires_at", type_=UTCDateTime()),
    )
    return claim_fn.table_valued(*(sa.column(c.name, c.type) for c in jobs.c)).alias("claimed")


def claim_params(worker_id: str, lease_seconds: float, now: datetime) -> dict[str, Any]:
    return {"now": now, "worker_id": worker_id, "lease_expires_at": now + timedelta(seconds=lease_seconds)}


_CLAIM = _claim_statement()
_PG_CLAIM = sa.select(*pg_claimed().c)


async def claim(db: Database, worker_id: str, lease_seconds: float) -> dict[str, Any] | None:
    """Take the oldest runnable job, mark it PROCESSING under a lease, and return its row."""
    params = claim_params(worker_id, lease_seconds, utcnow())
    async with db.autocommit() as conn:
        row = (await conn.execute(_CLAIM if db.is_sqlite else _PG_CLAIM, params)).mappings().first()
    return dict(row) if row else None


async def heartbeat(
    db: Database, job_id: str, worker_id: str, lease_seconds: float, progress: int
) -> bool | None:
    """Extend the lease and store progress. Returns cancel_requested, or None if the lease was lost."""
    stmt = (
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.status == "PROCESSING")
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds), progress=progress)
        .returning(jobs.c.cancel_requested)
    )
    async with db.write() as conn:
        value = (await conn.execute(stmt)).scalar()
    return None if value is None else bool(value)


async def cancel_requested(db: Database, job_id: str) -> bool:
    async with db.read() as conn:
        return bool(await conn.scalar(sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)))


async def requeue_expired(db: Database) -> list[str]:
    """Put jobs whose lease ran out back in the queue; return the ids that ran out of attempts."""
    now = utcnow()
    expired = (jobs.c.status == "PROCESSING") & (jobs.c.lease_expires_at < now)
    async with db.write() as conn:
        await conn.execute(
            jobs.update()
            .where(expired, jobs.c.attempts < jobs.c.max_attempts, jobs.c.cancel_requested.is_(False))
            .values(status="QUEUED", worker_id=None, lease_expires_at=None, run_after=now, progress=0)
        )
        exhausted = await conn.execute(sa.select(jobs.c.id).where(expired))
        return [r.id for r in exhausted]


async def release(db: Database, job_id: str, worker_id: str) -> bool:
    """Give a claimed job back at once (shutdown): QUEUED again, this attempt not counted."""
    async with db.write() as conn:
        result = await conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.status == "PROCESSING")
            .values(
                status="QUEUED",
                worker_id=None,
                lease_expires_at=None,
                run_after=utcnow(),
                progress=0,
                attempts=jobs.c.attempts - 1,
            )
        )
    return result.rowcount == 1


async def announce(conn: Connection) -> None:
    """Inside a transaction that queued a job: tell listening workers at commit (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text(f"NOTIFY {CHANNEL}"))


def done_signal() -> sa.ColumnElement[Any]:
    """`pg_notify` of a job's end when a request waits on it, for the RETURNING clause of the
    statement that ends it. Only then: each NOTIFY wakes every listening backend of the database
    (every worker's LISTEN connection), whichever channel it listens on."""
    return sa.case((jobs.c.notify_done, sa.func.pg_notify(DONE_CHANNEL, jobs.c.id))).label("done_signal")


async def announce_done(conn: Connection, job_id: str) -> None:
    """Inside a transaction that ended a job: tell waiting requests in other processes at commit."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_notify(DONE_CHANNEL, job_id)))


async def listen(db: Database, notifier: Notifier, stop: asyncio.Event, *, finished: bool = True) -> None:
    """Forward NOTIFYs (queued jobs and, with `finished`, finished jobs) to `notifier` until
    `stop`; reconnect after failures. Only a process with an API needs finished jobs (requests
    waiting with `Prefer: wait`); a lone worker would wake for every job every worker ends."""
    import asyncpg

    while not stop.is_set():
        conn = None
        try:
            conn = await asyncpg.connect(plain_url(db.url))
            await conn.add_listener(CHANNEL, lambda *_: notifier.notify())
            if finished:
                await conn.add_listener(DONE_CHANNEL, lambda _c, _p, _ch, job_id: notifier.finished(job_id))
            notifier.notify()  # catch up with anything queued while we were not listening
            while not stop.is_set() and not conn.is_closed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5.0)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN connection failed (%s); retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            if conn is not None:
                await conn.close()
