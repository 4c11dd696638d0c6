"""Job transitions with their side effects: submit, finish, fail and cancel.

Each transition is one transaction that also moves the credits (and queues the webhook), so a
status can never change without its side effects, nor they without it. The status itself
changes only through the guarded statements of `states`; one that matches no row (the job is
no longer in a state the change may start from) changes nothing, and is reported.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from fillframe import billing, limits
from fillframe.accounts import Caller
from fillframe.clock import SYSTEM, Clock
from fillframe.contract import EditRequest
from fillframe.db import Connection, Database, UTCDateTime, files, jobs
from fillframe.jobs import idempotency, queue, states
from fillframe.jobs.idempotency import IdempotencyKey
from fillframe.jobs.store import get_job, iso
from fillframe.limits import RateState
from fillframe.storage import Linker
from fillframe.webhooks import deliver, events


@dataclass(frozen=True)
class StoredFile:
    """An output already written to the blob store, waiting for its row."""

    id: str
    storage_key: str
    ext: str
    content_type: str
    byte_size: int


@dataclass(frozen=True)
class Outcome:
    """How a run ended: COMPLETED with files, or FAILED / CANCELLED with a code and a sentence."""

    status: str
    files: list[StoredFile] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None
    notes: dict[str, Any] | None = None

    @classmethod
    def completed(cls, stored: list[StoredFile], notes: dict[str, Any] | None = None) -> Outcome:
        return cls("COMPLETED", files=stored, notes=notes or None)

    @classmethod
    def failed(cls, code: str, message: str) -> Outcome:
        status = "CANCELLED" if code == "cancelled" else "FAILED"
        return cls(status, error=message, error_code=code)


@dataclass(frozen=True)
class Submitted:
    """What the submit handler answers: the job id and status, whether it is a replay, the rate."""

    job_id: str
    status: str
    replayed: bool = False
    rate: RateState | None = None


_INSERT_JOB = jobs.insert()


async def submit(
    db: Database,
    caller: Caller,
    req: EditRequest,
    *,
    cost: int,
    max_attempts: int,
    rate_limit: int = 0,
    idem: IdempotencyKey | None = None,
    idem_ttl: timedelta = timedelta(hours=24),
    base_url: str | None = None,
    notify_done: bool = False,
    clock: Clock = SYSTEM,
) -> Submitted:
    """Count the rate, hold the credits, insert the QUEUED job (and its idempotency key) in one
    transaction. Raises RateLimited, InsufficientCredits or KeyReused.

    base_url: the host the caller used; the job's webhooks link results there unless PUBLIC_URL
    is set. notify_done: the caller will wait for the job's end (`Prefer: wait`), so announce it."""
    params = req.fluxFillParams
    now = clock.now()
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "account_id": caller.account_id,
        "api_key_id": caller.key_id,
        "user_id": caller.user_id,
        "model": req.model,
        "status": states.QUEUED,
        "progress": 0,
        "request": req.model_dump(mode="json", exclude_none=True),
        "seed": params.seed if params.seed is not None else secrets.randbelow(2**32),
        "credit_cost": cost,
        "webhook_url": req.effective_webhook_url,
        "webhook_events": req.effective_webhook_events,
        "webhook_status": None,
        "base_url": base_url,
        "attempts": 0,
        "max_attempts": max_attempts,
        "cancel_requested": False,
        "expired": False,
        "notify_done": notify_done,
        "run_after": now,
        "created_at": now,
    }
    try:
        async with db.write() as conn:
            if idem is not None and not await idempotency.claim(
                conn, caller.account_id, idem, row["id"], now, now + idem_ttl
            ):
                original = await idempotency.replay(conn, caller.account_id, idem, now)
                if original is not None:
                    return Submitted(original["jobId"], original["status"], replayed=True)
            rate = await limits.count_submit(conn, caller.key_id, rate_limit)
            if not caller.unlimited:
                await billing.hold(conn, caller.account_id, row["id"], cost, clock=clock)
            await conn.execute(_INSERT_JOB, row)
            await queue.announce(conn)
    except IntegrityError:
        if idem is None:
            raise
        # A concurrent request with the same key won the race: answer with its job.
        async with db.read() as conn:
            original = await idempotency.replay(conn, caller.account_id, idem, now)
        if original is None:
            raise
        return Submitted(original["jobId"], original["status"], replayed=True)
    return Submitted(row["id"], "QUEUED", rate=rate)


async def _settle(conn: Connection, job_id: str, status: str, clock: Clock) -> None:
    """Credits follow the status: captured on success, refunded otherwise."""
    if status == states.COMPLETED:
        await billing.capture(conn, job_id, clock=clock)
    else:
        await billing.refund(conn, job_id, clock=clock)


async def _queue_webhook(
    conn: Connection,
    job: dict[str, Any],
    status: str,
    *,
    error: str | None = None,
    error_code: str | None = None,
    completed_at: str | None = None,
    linker: Linker | None = None,
) -> None:
    """Inside a transaction that ends the job: queue its terminal webhook if it asked for one.

    job: the row's id, model, credit_cost, webhook_url, webhook_events, base_url and (when
    COMPLETED) result.
    """
    event = events.terminal_event(status)
    if not job["webhook_url"] or not events.wants(job["webhook_events"], event):
        return
    if event == "completed":
        if linker is None:
            raise TypeError("Completing a job that has a webhook needs a Linker for its result links.")
        if not linker.base_url and job["base_url"]:
            linker = Linker(linker.store, linker.secret, job["base_url"])
        links = await linker.result({"result": job["result"], "expired": False})
        images = links["images"] if links else []
        payload = events.completed_payload(
            job["id"], job["model"], job["credit_cost"], images, completed_at or ""
        )
    else:
        payload = events.failed_payload(job["id"], status, job["model"], error, error_code)
    await deliver.enqueue(conn, job["id"], event, job["webhook_url"], payload)


def _finish_statement(dialect: str, change: states.Change = states.FINISH) -> sa.Update:
    """End the job if it is still PROCESSING: FINISH, by its worker (when `fence`, only while
    still this worker's); FAIL, by the sweeper, only once its lease has run out.

    On PostgreSQL RETURNING also sends the `done` notification (delivered at commit), and the
    statement becomes the core of `_POSTGRESQL_FINISH`."""
    status: sa.BindParameter[Any] = sa.bindparam("b_status")
    now = sa.bindparam("now", type_=UTCDateTime())
    returning: list[sa.ColumnElement[Any]] = [
        jobs.c.id,
        jobs.c.status,
        jobs.c.account_id,
        jobs.c.model,
        jobs.c.credit_cost,
        jobs.c.result,
        jobs.c.webhook_url,
        jobs.c.webhook_events,
        jobs.c.base_url,
    ]
    if dialect == "postgresql":
        returning.append(queue.done_signal())
    if change is states.FAIL:
        guard = jobs.c.lease_expires_at < now
    else:
        guard = sa.or_(sa.bindparam("fence").is_(False), jobs.c.worker_id == sa.bindparam("b_worker_id"))
    return states.update(
        change,
        jobs.c.id == sa.bindparam("job_id"),
        guard,
        to=status,
        progress=sa.case((status == states.COMPLETED, 100), else_=jobs.c.progress),
        result=sa.bindparam("b_result", type_=jobs.c.result.type),
        notes=sa.bindparam("b_notes", type_=jobs.c.notes.type),
        error=sa.bindparam("b_error"),
        error_code=sa.bindparam("b_error_code"),
        completed_at=now,
        worker_id=None,
        lease_expires_at=None,
    ).returning(*returning)


_FINISH_SQLITE = {change: _finish_statement("sqlite", change) for change in (states.FINISH, states.FAIL)}
_INSERT_FILE = files.insert()


def _postgresql_finish(
    with_file: bool, claim_next: bool, change: states.Change = states.FINISH
) -> sa.Select[Any]:
    """PostgreSQL: a job's whole end in one statement (data-modifying CTEs, which run whether or
    not the outer SELECT reads them): the status change, its output's `files` row, and the
    credits settled. When the finish matches no row (fenced out), neither do the others.

    `claim_next`: the same statement also claims the worker's next job (columns `next_*`; a FULL
    JOIN, so either side may be missing), one round trip and one commit per job instead of two.
    The claim function sees this statement's finish if PostgreSQL ran that first; either way its
    account's concurrency limit holds (unseen, the ending job still counts: the claim is only
    more careful)."""
    done = _finish_statement("postgresql", change).cte("done")
    ctes = billing.settle_ended(done)
    if with_file:
        output = sa.select(
            sa.bindparam("f_id", type_=sa.String()),
            done.c.account_id,
            done.c.id,
            sa.literal("output"),
            sa.bindparam("f_key", type_=sa.String()),
            sa.bindparam("f_type", type_=sa.String()),
            sa.bindparam("f_size", type_=sa.Integer()),
            sa.bindparam("now", type_=UTCDateTime()),
            sa.bindparam("f_expires", type_=UTCDateTime()),
            sa.false(),
        )
        ctes.append(files.insert().from_select([c.name for c in files.c], output).cte("stored"))
    if not claim_next:
        return sa.select(*done.c).add_cte(*ctes)
    claimed = sa.select(*queue.pg_claimed().c).cte("next_job")
    return (
        sa.select(*done.c, *(c.label(_NEXT + c.name) for c in claimed.c))
        .select_from(done.join(claimed, sa.true(), full=True))
        .add_cte(*ctes)
    )


_NEXT = "next_"
_POSTGRESQL_FINISH = {
    (with_file, claim_next): _postgresql_finish(with_file, claim_next)
    for with_file in (False, True)
    for claim_next in (False, True)
}
_POSTGRESQL_FAIL = _postgresql_finish(False, False, states.FAIL)


@dataclass(frozen=True)
class Finished:
    """What `finish` did: `ended` is False when the job was no longer this worker's to end
    (`refused` says what state it was in); `next_job` is the worker's next job when it was
    claimed in the same round trip."""

    ended: bool
    next_job: dict[str, Any] | None = None
    refused: states.Refused | None = None


def _file_row(
    f: StoredFile, account_id: str, job_id: str, now: datetime, expires: datetime
) -> dict[str, Any]:
    return {
        "id": f.id,
        "account_id": account_id,
        "job_id": job_id,
        "kind": "output",
        "storage_key": f.storage_key,
        "content_type": f.content_type,
        "byte_size": f.byte_size,
        "created_at": now,
        "expires_at": expires,
        "deleted": False,
    }


async def finish(
    db: Database,
    job_id: str,
    outcome: Outcome,
    *,
    worker_id: str | None,
    retention: timedelta,
    linker: Linker | None = None,
    has_webhook: bool | None = None,
    claim_lease: float | None = None,
    clock: Clock = SYSTEM,
) -> Finished:
    """End a PROCESSING job. With `worker_id`, only while that worker still holds the lease.

    `ended` is False (nothing changed) when the job is no longer this worker's to finish: a lease
    that ran out and was claimed again must not be finished twice. `linker` makes the result
    links of a `completed` webhook (PUBLIC_URL as its base, else the job's own base_url).
    `has_webhook=False` (the worker knows it from the claimed row) lets PostgreSQL end the job
    in one self-committing statement; a webhook's outbox row needs a transaction around both.

    With `claim_lease`, that statement also claims `worker_id`'s next job (under a lease of that
    many seconds) when the job COMPLETED without a webhook and with at most one output. (Not for
    a refund: it updates the account's row, and the claim's lock taken after that row lock could
    deadlock with another worker's finish.) Otherwise `next_job` is None: claim as usual."""
    one_statement = not db.is_sqlite and has_webhook is False and len(outcome.files) <= 1
    claim_next = one_statement and claim_lease is not None and worker_id is not None
    claim_next = claim_next and outcome.status == states.COMPLETED
    return await _end(
        db,
        job_id,
        outcome,
        states.FINISH,
        worker_id=worker_id,
        retention=retention,
        linker=linker,
        one_statement=one_statement,
        claim_lease=claim_lease if claim_next else None,
        clock=clock,
    )


async def _end(
    db: Database,
    job_id: str,
    outcome: Outcome,
    change: states.Change,
    *,
    worker_id: str | None,
    retention: timedelta,
    linker: Linker | None,
    one_statement: bool,
    claim_lease: float | None,
    clock: Clock,
) -> Finished:
    """The status change (`change`: FINISH or FAIL), its outputs' rows, the credits settled and
    the webhook queued, together; `claim_lease`: claim `worker_id`'s next job in the same
    statement (PostgreSQL, `one_statement` only)."""
    now = clock.now()
    expires = now + retention
    result = None
    if outcome.files:
        result = {
            "files": [{"id": f.id, "ext": f.ext, "expires": int(expires.timestamp())} for f in outcome.files]
        }
    values = {
        "job_id": job_id,
        "fence": worker_id is not None,
        "b_worker_id": worker_id,
        "b_status": outcome.status,
        "b_result": result,
        "b_notes": outcome.notes,
        "b_error": outcome.error,
        "b_error_code": outcome.error_code,
        "now": now,
    }
    first, extra = outcome.files[:1], outcome.files[1:]
    next_job = None
    async with db.autocommit() if one_statement else db.write() as conn:
        if db.is_sqlite:
            job = _first_row(await conn.execute(_FINISH_SQLITE[change], values))
            extra = outcome.files
        else:
            if first:
                f = first[0]
                values |= {
                    "f_id": f.id,
                    "f_key": f.storage_key,
                    "f_type": f.content_type,
                    "f_size": f.byte_size,
                }
                values["f_expires"] = expires
            if claim_lease is not None:
                assert worker_id is not None
                values |= queue.claim_params(worker_id, claim_lease, now)
            if change is states.FAIL:
                statement = _POSTGRESQL_FAIL
            else:
                statement = _POSTGRESQL_FINISH[bool(first), claim_lease is not None]
            job = _first_row(await conn.execute(statement, values))
            if claim_lease is not None and job is not None:
                job, next_job = _split_next(job)
        if job is None:
            return Finished(False, next_job, await states.refused(conn, change, job_id))
        if extra:
            rows = [_file_row(f, job["account_id"], job_id, now, expires) for f in extra]
            await conn.execute(_INSERT_FILE, rows)
        if db.is_sqlite:
            await _settle(conn, job_id, outcome.status, clock)
        await _queue_webhook(
            conn,
            dict(job),
            outcome.status,
            error=outcome.error,
            error_code=outcome.error_code,
            completed_at=iso(now),
            linker=linker,
        )
    return Finished(True, next_job)


def _first_row(result: sa.CursorResult[Any]) -> dict[str, Any] | None:
    row = result.mappings().first()
    return None if row is None else dict(row)


def _split_next(row: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the ended job, the next job) from a finish-and-claim row; a side whose id is NULL is None."""
    ended = {k: v for k, v in row.items() if not k.startswith(_NEXT)}
    claimed = {k[len(_NEXT) :]: v for k, v in row.items() if k.startswith(_NEXT)}
    return (ended if ended["id"] is not None else None), (claimed if claimed["id"] is not None else None)


async def finish_abandoned(db: Database, job_id: str, retention: timedelta, *, clock: Clock = SYSTEM) -> bool:
    """A job whose lease ran out once too often (or that was being cancelled) ends here, FAILED
    (or CANCELLED) and refunded; only while its lease is still out (FAIL)."""
    async with db.read() as conn:
        row = await get_job(conn, job_id)
    if row is None:
        return False
    if row["cancel_requested"]:
        outcome = Outcome.failed("cancelled", "The job was cancelled.")
    else:
        outcome = Outcome.failed(
            "engine_error",
            f"The worker running this job stopped before finishing it ({row['attempts']} of "
            f"{row['max_attempts']} attempts); the credits were refunded, so submit it again.",
        )
    ended = await _end(
        db,
        job_id,
        outcome,
        states.FAIL,
        worker_id=None,
        retention=retention,
        linker=None,
        one_statement=False,
        claim_lease=None,
        clock=clock,
    )
    return ended.ended


class NotCancellable(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(f"The job is already {status} and cannot be cancelled.")
        self.status = status


_CANCELLED = "The job was cancelled."
_OWN_JOB = (jobs.c.id == sa.bindparam("job_id"), jobs.c.account_id == sa.bindparam("b_account_id"))
_CANCEL_QUEUED = states.update(
    states.CANCEL,
    *_OWN_JOB,
    to=states.CANCELLED,
    cancel_requested=True,
    error=_CANCELLED,
    error_code="cancelled",
    completed_at=sa.bindparam("now", type_=UTCDateTime()),
).returning(
    jobs.c.id,
    jobs.c.model,
    jobs.c.credit_cost,
    jobs.c.webhook_url,
    jobs.c.webhook_events,
    jobs.c.base_url,
)
_FLAG_CANCEL = states.update(states.REQUEST_CANCEL, *_OWN_JOB, cancel_requested=True).returning(jobs.c.id)
_OWN_STATUS = sa.select(jobs.c.status).where(*_OWN_JOB)


async def cancel(db: Database, job_id: str, account_id: str, *, clock: Clock = SYSTEM) -> str | None:
    """Cancel a job of this account. Returns its status after the call, or None if not found.

    A QUEUED job is CANCELLED at once; a PROCESSING one is flagged, and its worker stops at the
    next step. Raises NotCancellable for a finished job.

    Each step is a guarded UPDATE (it locks the row and re-checks its state), never a read and
    then a write by id: a job claimed, requeued or ended meanwhile is met in its new state. The
    loop covers a job that moved between two steps (claimed, then its lease lost)."""
    params = {"job_id": job_id, "b_account_id": account_id, "now": clock.now()}
    async with db.write() as conn:
        for _ in range(3):
            row = (await conn.execute(_CANCEL_QUEUED, params)).mappings().first()
            if row is not None:
                await _settle(conn, job_id, states.CANCELLED, clock)
                await queue.announce_done(conn, job_id)
                await _queue_webhook(
                    conn, dict(row), states.CANCELLED, error=_CANCELLED, error_code="cancelled"
                )
                return states.CANCELLED
            if (await conn.execute(_FLAG_CANCEL, params)).first() is not None:
                return states.PROCESSING
            status = await conn.scalar(_OWN_STATUS, params)
            if status is None:
                return None
            if status in states.TERMINAL:
                raise NotCancellable(status)
    raise RuntimeError(f"job {job_id} kept changing state while being cancelled")
