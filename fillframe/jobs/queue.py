"""The durable queue: claim with a lease, heartbeat, and requeue jobs whose worker vanished.

Claim is one UPDATE ... WHERE id = (the fair pick) ... RETURNING statement. SQLite runs it under
BEGIN IMMEDIATE (one writer at a time). PostgreSQL runs the same statement, plus FOR UPDATE SKIP
LOCKED, inside the `fillframe_claim` function (generated from it, created by migration 0005)
under an advisory lock, in one round trip. Per-account concurrency limits are applied here, at
claim time, so extra jobs wait QUEUED instead of failing, and the pick is fair across accounts.
The status changes themselves are the guarded statements of `states`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from fillframe.clock import SYSTEM, Clock
from fillframe.db import Connection, Database, UTCDateTime, accounts, jobs, plain_url
from fillframe.jobs import states

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


Param = Callable[[str, sa.types.TypeEngine[Any]], sa.ColumnElement[Any]]


def _bound(name: str, type_: sa.types.TypeEngine[Any]) -> sa.ColumnElement[Any]:
    """A parameter of the statement as SQLite runs it (a bound value)."""
    return sa.bindparam(name, type_=type_)


def _argument(name: str, type_: sa.types.TypeEngine[Any]) -> sa.ColumnElement[Any]:
    """A parameter of the statement inside `fillframe_claim`: the function's argument `p_<name>`."""
    return sa.literal_column(f"p_{name}", type_)


def _head(after: sa.ColumnElement[Any] | None, name: str) -> sa.ScalarSelect[Any]:
    """The first queued job (in the order `account_id, run_after, created_at`: the account's
    oldest) of the first account after `after` (None: of the first account): one probe of
    `ix_jobs_fair`, however many jobs that account has queued."""
    q = jobs.alias(name)
    head = sa.select(q.c.id).where(q.c.status == states.QUEUED)
    if after is not None:
        head = head.where(q.c.account_id > after)
    return head.order_by(q.c.account_id, q.c.run_after, q.c.created_at).limit(1).scalar_subquery()


def _column_of(job_id: sa.ColumnElement[Any], column: str, name: str) -> sa.ScalarSelect[Any]:
    """One column of the job with that id (a primary-key lookup), correlated to the query that
    holds `job_id` however deep inside it this sits."""
    row = jobs.alias(name)
    lookup = sa.select(row.c[column]).where(row.c.id == job_id)
    return lookup.correlate_except(row).scalar_subquery()


def fair_pick(param: Param, *, lock: bool) -> sa.ScalarSelect[Any]:
    """The id of the job to claim next, fair across accounts.

    Among accounts with runnable work and under their `max_concurrent_jobs`: the one with the
    fewest jobs running, then the one served least recently (its latest claimed job started
    longest ago; never, first), then the one whose oldest job is oldest (earliest `run_after`,
    then `created_at`); of that account, its oldest job. So one account's backlog delays another
    account's new job by about one engine run: it is next as soon as a slot frees, whatever the
    backlog's size.

    The cost is a few index probes per account with queued jobs, never a walk over the queue:
    `heads` holds each such account's oldest queued job, found by skipping through `ix_jobs_fair`
    (status, account_id, run_after, created_at) from one account to the next (a loose index
    scan, as a recursive CTE, on SQLite and PostgreSQL); per account, the count of its running
    jobs is a probe of the same index and its latest start one of `ix_jobs_served`. The jobs a
    claim just took leave dead index entries at the front of their account's run (until
    vacuum), so each account's run is entered once, by its head. MATERIALIZED: the per-account
    values are computed once each, not once per use. With `lock` (PostgreSQL) a picked row
    another transaction holds (a cancel in flight) is skipped, so the claim, holding the claim
    lock, never waits on it: that claim finds nothing and the next one picks afresh."""
    now = param("now", UTCDateTime())
    seed = sa.select(_head(None, "first_head").label("job_id")).cte("waiting", recursive=True)
    previous = _column_of(seed.c.job_id, "account_id", "previous_head")
    waiting = seed.union_all(sa.select(_head(previous, "next_head")).where(seed.c.job_id.is_not(None)))
    heads = (
        sa.select(
            waiting.c.job_id,
            _column_of(waiting.c.job_id, "account_id", "head_account").label("account_id"),
            _column_of(waiting.c.job_id, "run_after", "head_run_after").label("run_after"),
            _column_of(waiting.c.job_id, "created_at", "head_created_at").label("created_at"),
        )
        .where(waiting.c.job_id.is_not(None))
        .cte("heads")
        .prefix_with("MATERIALIZED")
    )
    running = jobs.alias("running")
    running_count = (
        sa.select(sa.func.count())
        .where(running.c.status == states.PROCESSING, running.c.account_id == heads.c.account_id)
        .scalar_subquery()
    )
    served = jobs.alias("served")
    served_at = (
        sa.select(served.c.started_at)
        .where(served.c.account_id == heads.c.account_id, served.c.started_at.is_not(None))
        .order_by(served.c.started_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    max_running = (
        sa.select(accounts.c.max_concurrent_jobs).where(accounts.c.id == heads.c.account_id).scalar_subquery()
    )
    fair = (
        sa.select(
            heads.c.job_id,
            heads.c.run_after,
            heads.c.created_at,
            running_count.label("running"),
            max_running.label("max_running"),
            served_at.label("served_at"),
        )
        .where(heads.c.run_after <= now)
        .cte("fair")
        .prefix_with("MATERIALIZED")
    )
    chosen = (
        sa.select(fair.c.job_id)
        .where(fair.c.running < fair.c.max_running)
        .order_by(fair.c.running, fair.c.served_at.nulls_first(), fair.c.run_after, fair.c.created_at)
        .limit(1)
        .scalar_subquery()
    )
    if not lock:
        return chosen
    pick = jobs.alias("pick")
    return sa.select(pick.c.id).where(pick.c.id == chosen).with_for_update(skip_locked=True).scalar_subquery()


def claim_statement(param: Param, returning: Sequence[sa.ColumnElement[Any]], *, lock: bool) -> sa.Update:
    """The claim: the fair pick, moved to PROCESSING under a lease. SQLite runs it as it is;
    PostgreSQL runs the same statement inside `fillframe_claim` (`claim_function_sql`)."""
    now = param("now", UTCDateTime())
    return states.update(
        states.CLAIM,
        jobs.c.id == fair_pick(param, lock=lock),
        to=states.PROCESSING,
        worker_id=param("worker_id", sa.String()),
        lease_expires_at=param("lease_expires_at", UTCDateTime()),
        attempts=jobs.c.attempts + 1,
        started_at=sa.func.coalesce(jobs.c.started_at, now),
    ).returning(*returning)


# The claim must be serialised so that an account's count of running jobs cannot go stale
# between two workers: an advisory lock, held only while the server runs the function. PL/pgSQL
# takes a new snapshot for each statement, so the UPDATE sees every claim committed before the
# lock was granted. The function returns `jobs.*` (its row type is the table's, in the table's
# own column order); everything else is the statement SQLite runs. The plan is the generic one,
# planned once per connection: PostgreSQL otherwise kept re-planning this statement for every
# call's values, which cost the server more (0.9 ms of CPU per claim and requeue, measured) than
# running it (0.5 ms, as much as 0003's simpler claim).
CLAIM_LOCK = 7300418


def claim_function_sql() -> str:
    """`CREATE OR REPLACE FUNCTION fillframe_claim(...)`, generated from `claim_statement`.
    Migrations run it; tests/jobs/test_claim_function.py checks that the database's function is
    still this one (a change to the statement needs a migration that runs it again)."""
    statement = claim_statement(_argument, [sa.literal_column("jobs.*")], lock=True)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped
    body = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return (
        "CREATE OR REPLACE FUNCTION fillframe_claim(\n"
        "    p_worker_id text, p_now timestamptz, p_lease_expires_at timestamptz\n"
        ") RETURNS SETOF jobs LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$\n"
        "BEGIN\n"
        f"    PERFORM pg_advisory_xact_lock({CLAIM_LOCK});\n"
        f"    RETURN QUERY {body};\n"
        "END\n"
        "$$"
    )


def pg_claimed() -> sa.TableValuedAlias:
    """PostgreSQL's claim, the `fillframe_claim` function, as a FROM item with the job's columns;
    parameters `worker_id`, `now` and `lease_expires_at` (`claim_params`)."""
    claim_fn = sa.func.fillframe_claim(
        sa.bindparam("worker_id", type_=sa.String()),
        sa.bindparam("now", type_=UTCDateTime()),
        sa.bindparam("lease_expires_at", type_=UTCDateTime()),
    )
    return claim_fn.table_valued(*(sa.column(c.name, c.type) for c in jobs.c)).alias("claimed")


def claim_params(worker_id: str, lease_seconds: float, now: datetime) -> dict[str, Any]:
    return {"now": now, "worker_id": worker_id, "lease_expires_at": now + timedelta(seconds=lease_seconds)}


_CLAIM = claim_statement(_bound, list(jobs.c), lock=False)
_PG_CLAIM = sa.select(*pg_claimed().c)


async def claim(
    db: Database, worker_id: str, lease_seconds: float, *, clock: Clock = SYSTEM
) -> dict[str, Any] | None:
    """Take the next job (`fair_pick`), mark it PROCESSING under a lease, and return its row."""
    params = claim_params(worker_id, lease_seconds, clock.now())
    async with db.autocommit() as conn:
        row = (await conn.execute(_CLAIM if db.is_sqlite else _PG_CLAIM, params)).mappings().first()
    return dict(row) if row else None


_HEARTBEAT = (
    jobs.update()
    .where(
        jobs.c.id == sa.bindparam("job_id"),
        jobs.c.worker_id == sa.bindparam("b_worker_id"),
        jobs.c.status == states.PROCESSING,
    )
    .values(lease_expires_at=sa.bindparam("lease_expires_at"), progress=sa.bindparam("b_progress"))
    .returning(jobs.c.cancel_requested)
)


async def heartbeat(
    db: Database,
    job_id: str,
    worker_id: str,
    lease_seconds: float,
    progress: int,
    *,
    clock: Clock = SYSTEM,
) -> bool | None:
    """Extend the lease and store progress (no change of status: only while this worker holds
    it). Returns cancel_requested, or None if the lease was lost."""
    params = {
        "job_id": job_id,
        "b_worker_id": worker_id,
        "lease_expires_at": clock.now() + timedelta(seconds=lease_seconds),
        "b_progress": progress,
    }
    async with db.write() as conn:
        value = (await conn.execute(_HEARTBEAT, params)).scalar()
    return None if value is None else bool(value)


async def cancel_requested(db: Database, job_id: str) -> bool:
    async with db.read() as conn:
        return bool(await conn.scalar(sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)))


def _requeue(*which: sa.ColumnElement[bool]) -> sa.Update:
    """A PROCESSING job (`which`) back in the queue while it has attempts left and no cancel was
    asked for, this attempt counted."""
    return states.update(
        states.REQUEUE,
        *which,
        jobs.c.attempts < jobs.c.max_attempts,
        jobs.c.cancel_requested.is_(False),
        to=states.QUEUED,
        worker_id=None,
        lease_expires_at=None,
        run_after=sa.bindparam("now", type_=UTCDateTime()),
        progress=0,
    )


_LAPSED = jobs.c.lease_expires_at < sa.bindparam("now", type_=UTCDateTime())
_REQUEUE = _requeue(_LAPSED)
_LAPSED_LEFT = sa.select(jobs.c.id).where(jobs.c.status == states.PROCESSING, _LAPSED)


async def requeue_expired(db: Database, *, clock: Clock = SYSTEM) -> list[str]:
    """Put jobs whose lease ran out back in the queue; return the ids of those whose lease ran
    out with no attempt left (or with a cancel asked for): `service.finish_abandoned` ends them."""
    params = {"now": clock.now()}
    async with db.write() as conn:
        await conn.execute(_REQUEUE, params)
        return [r.id for r in await conn.execute(_LAPSED_LEFT, params)]


_RELEASE = states.update(
    states.RELEASE,
    jobs.c.id == sa.bindparam("job_id"),
    jobs.c.worker_id == sa.bindparam("b_worker_id"),
    to=states.QUEUED,
    worker_id=None,
    lease_expires_at=None,
    run_after=sa.bindparam("now", type_=UTCDateTime()),
    progress=0,
    attempts=jobs.c.attempts - 1,
).returning(jobs.c.id)


async def release(db: Database, job_id: str, worker_id: str, *, clock: Clock = SYSTEM) -> bool:
    """Give a claimed job back at once (shutdown): QUEUED again, this attempt not counted.
    False (and reported) when it was no longer this worker's."""
    async with db.write() as conn:
        params = {"job_id": job_id, "b_worker_id": worker_id, "now": clock.now()}
        if (await conn.execute(_RELEASE, params)).first() is not None:
            return True
        await states.refused(conn, states.RELEASE, job_id)
    return False


_REQUEUE_CRASHED = _requeue(
    jobs.c.id == sa.bindparam("job_id"), jobs.c.worker_id == sa.bindparam("b_worker_id")
).returning(jobs.c.id)


async def requeue_crashed(db: Database, job_id: str, worker_id: str, *, clock: Clock = SYSTEM) -> bool:
    """Queue a job again after its engine's process died under it, this attempt counted, while it
    has attempts left and no cancel request. False (nothing changed) otherwise: the worker then
    ends it as failed."""
    async with db.write() as conn:
        params = {"job_id": job_id, "b_worker_id": worker_id, "now": clock.now()}
        requeued = (await conn.execute(_REQUEUE_CRASHED, params)).first() is not None
        if requeued:
            await announce(conn)
    return requeued


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
