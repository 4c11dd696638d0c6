"""The webhook outbox and its delivery.

Terminal events (`completed`, `failed`) are rows in `webhook_deliveries`, inserted by
`enqueue` inside the transaction that ends the job (jobs/service.py), so a job can never end
without its webhook nor the webhook exist for a job that did not end. Worker processes deliver
them: a claim takes a batch of due rows with one UPDATE ... WHERE id IN (...) RETURNING (FOR
UPDATE SKIP LOCKED on PostgreSQL, under BEGIN IMMEDIATE on SQLite) that also pushes
`next_attempt_at` one lease ahead, so a worker killed mid-attempt leaves rows another worker
retries once the lease runs out.

Isolation per destination: each process keeps up to `webhook_concurrency` attempts in flight at
once, and at most `webhook_per_host` are in flight to one destination (scheme, host and port,
stored on the row at enqueue) over all the processes that share the database: the claim counts
the rows claimed and still under their lease per destination, under one lock (an advisory lock
on PostgreSQL, BEGIN IMMEDIATE on SQLite), and skips the rows of destinations at their cap. A
process that dies mid-attempt holds its slots only until their lease runs out. So a tenant whose
receivers hang holds at most that many slots per host, each for at most
`webhook_timeout_seconds`, and everyone else's deliveries go out past them.

Schedule: attempts at 0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h after the
first, each gap with +-10 % jitter (`webhook_schedule_scale` shrinks it for tests), read from a
`Clock` so tests move through it without sleeping. A 2xx ends it; a 410, a target the address
guard refuses, or the tenth failure ends it as failed. Redirects are never followed (they count
as failures). Each attempt resolves the URL, checks every address with the same guard as image
URLs (imaging/fetch.py) and connects to the checked address only.

Progress events are different: best-effort, throttled to one a second per job, sent straight
from the worker running the job (`ProgressSender`), never stored, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from fillframe.clock import SYSTEM, Clock
from fillframe.db import Connection, Database, UTCDateTime, api_keys, jobs, utcnow, webhook_deliveries
from fillframe.imaging.fetch import Refused, Unresolved, checked_addresses, send_pinned, tls_context
from fillframe.settings import Settings
from fillframe.webhooks import events, sign

log = logging.getLogger(__name__)

# Seconds after the first attempt at which each attempt is due.
SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
MAX_ATTEMPTS = len(SCHEDULE)
JITTER = 0.1
USER_AGENT = "fillframe-webhooks/0.1"
# A claim outlives the attempt's timeout by this much before another worker may retry it.
_LEASE_MARGIN_SECONDS = 30.0

d = webhook_deliveries


def new_webhook_id() -> str:
    """A `webhook-id`: unique per event, the same on every retry of it."""
    return "msg_" + uuid.uuid4().hex


def retry_delay(attempts_made: int, scale: float = 1.0, rand: float = 0.5) -> float | None:
    """Seconds from a failed attempt to the next, or None once all attempts are used.

    attempts_made: 1..MAX_ATTEMPTS. rand: uniform in [0, 1); 0.5 means no jitter.
    """
    if attempts_made >= MAX_ATTEMPTS:
        return None
    gap = SCHEDULE[attempts_made] - SCHEDULE[attempts_made - 1]
    return gap * scale * (1 + JITTER * (2 * rand - 1))


# --- the outbox --------------------------------------------------------------------------------


async def enqueue(
    conn: Connection,
    job_id: str,
    event: str,
    url: str,
    payload: dict[str, Any],
    *,
    now: datetime | None = None,
) -> str:
    """Inside the transaction that ends the job: queue its webhook, mark the job pending.

    Returns the webhook id. The body is fixed now, so every attempt sends the same bytes.
    `now`: the ending transaction's time (its clock's), due at once.
    """
    now = now or utcnow()
    webhook_id = new_webhook_id()
    await conn.execute(
        d.insert().values(
            id=webhook_id,
            job_id=job_id,
            event=event,
            url=url,
            destination=destination(url),
            payload=events.encode(payload).decode(),
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
    )
    await conn.execute(jobs.update().where(jobs.c.id == job_id).values(webhook_status="pending"))
    return webhook_id


async def signing_key(conn: Connection, job_id: str) -> bytes | None:
    """The key a job's webhooks are signed with, from the key that created it (even if revoked)."""
    return (await signing_keys(conn, [job_id])).get(job_id)


async def signing_keys(conn: Connection, job_ids: Iterable[str]) -> dict[str, bytes]:
    """`signing_key` for many jobs in one query; jobs whose key is gone are absent."""
    rows = await conn.execute(
        sa.select(jobs.c.id, api_keys.c.key_hash)
        .select_from(jobs.join(api_keys, jobs.c.api_key_id == api_keys.c.id))
        .where(jobs.c.id.in_(list(job_ids)))
    )
    return {row.id: sign.key_from_hash(row.key_hash) for row in rows}


def destination(url: str) -> str:
    """What the per-host cap counts: `scheme://host:port`, lower-case, with the default port."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return url  # fails on its first attempt anyway; a destination of its own
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"{parsed.scheme}://{parsed.host.lower()}:{port}"


def pick(candidates: Iterable[tuple[str, str]], room: Mapping[str, int], limit: int) -> list[str]:
    """Ids of at most `limit` candidates `(id, destination)`, in order, none past its
    destination's room (absent: no room)."""
    taken: Counter[str] = Counter()
    chosen: list[str] = []
    for row_id, host in candidates:
        if len(chosen) >= limit:
            break
        if taken[host] < room.get(host, 0):
            taken[host] += 1
            chosen.append(row_id)
    return chosen


@dataclass(frozen=True)
class Claimed:
    """One delivery taken for an attempt: its row (attempts already counted) and signing key."""

    id: str
    job_id: str
    event: str
    url: str
    body: bytes
    attempts: int
    token: str
    key: bytes | None


# Due rows read per claim, per free slot: enough to find other destinations' rows behind a
# run of rows for destinations at their cap.
_SCAN_PER_SLOT = 8
_MAX_SCAN = 2000
# Serialises claims across processes (PostgreSQL), so two cannot both see a host's last free
# slot; held only for the claim's transaction. SQLite's BEGIN IMMEDIATE does the same.
CLAIM_LOCK = 7300419


def _in_flight_now(now: datetime) -> sa.ColumnElement[bool]:
    """Rows with an attempt in flight: claimed (`locked_by`) and their lease not yet run out. A
    lease that ran out (its process died) no longer counts, so the slot it held comes back."""
    return sa.and_(d.c.locked_by.is_not(None), d.c.status == "pending", d.c.next_attempt_at > now)


async def in_flight_per_host(conn: Connection, now: datetime) -> dict[str, int]:
    """Attempts in flight per destination, by every process that shares this database."""
    count = sa.func.count().label("attempts")
    query = sa.select(d.c.destination, count).where(_in_flight_now(now)).group_by(d.c.destination)
    return {row.destination: row.attempts for row in await conn.execute(query)}


def _due(now: datetime | sa.ColumnElement[datetime]) -> sa.ColumnElement[bool]:
    return sa.and_(d.c.status == "pending", d.c.next_attempt_at <= now)


# Most polls find nothing due: one probe of `ix_webhook_due` says so.
_ANY_DUE = sa.select(sa.exists().where(_due(sa.bindparam("now", type_=UTCDateTime()))))


async def _choose(conn: Connection, now: datetime, limit: int, per_host: int) -> list[str]:
    """Ids of up to `limit` due deliveries, longest due first, within each destination's room
    (`per_host` less its attempts in flight); the rows of destinations at their cap are left out
    by the query itself."""
    busy = await in_flight_per_host(conn, now)
    full = [host for host, count in busy.items() if count >= per_host]
    due = sa.select(d.c.id, d.c.destination).where(_due(now))
    if full:
        due = due.where(d.c.destination.not_in(full))
    due = due.order_by(d.c.next_attempt_at).limit(min(limit * _SCAN_PER_SLOT, _MAX_SCAN))
    candidates = [(row.id, row.destination) for row in await conn.execute(due)]
    room = {host: per_host - busy.get(host, 0) for _, host in candidates}
    return pick(candidates, room, limit)


async def claim(
    db: Database,
    token: str,
    lease_seconds: float,
    *,
    limit: int = 1,
    per_host: int | None = None,
    clock: Clock = SYSTEM,
) -> list[Claimed]:
    """Take up to `limit` deliveries due longest ago, count the attempt and lease them to `token`,
    so that no destination has more than `per_host` (default: `limit`) attempts in flight, counted
    in the database over every process. A poll that finds nothing it may take (nothing due, or
    only rows of destinations at their cap) only reads; otherwise the choice is made again under
    the claim lock and taken in the same transaction."""
    now = clock.now()
    per_host = per_host or limit
    async with db.read() as conn:
        if not await conn.scalar(_ANY_DUE, {"now": now}) or not await _choose(conn, now, limit, per_host):
            return []
    async with db.write() as conn:
        if not db.is_sqlite:
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CLAIM_LOCK)))
        chosen = await _choose(conn, now, limit, per_host)
        if not chosen:
            return []
        still_due = sa.select(d.c.id).where(d.c.id.in_(chosen), _due(now))
        if not db.is_sqlite:
            # A row being recorded or enqueued elsewhere: skip it, never wait on it.
            still_due = still_due.with_for_update(skip_locked=True)
        stmt = (
            d.update()
            .where(d.c.id.in_(still_due))
            .values(
                attempts=d.c.attempts + 1,
                locked_by=token,
                next_attempt_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(d.c.id, d.c.job_id, d.c.event, d.c.url, d.c.payload, d.c.attempts)
        )
        rows = (await conn.execute(stmt)).all()
        keys = await signing_keys(conn, {row.job_id for row in rows}) if rows else {}
    order = {row_id: i for i, row_id in enumerate(chosen)}
    return [
        Claimed(r.id, r.job_id, r.event, r.url, r.payload.encode(), r.attempts, token, keys.get(r.job_id))
        for r in sorted(rows, key=lambda r: order[r.id])
    ]


@dataclass(frozen=True)
class Verdict:
    """How an attempt went: `outcome` is delivered | retry | failed."""

    outcome: str
    status_code: int | None = None
    error: str | None = None


def judge(status_code: int) -> Verdict:
    """A 2xx delivers; a 410 (the receiver is gone for good) stops; anything else is retried."""
    if 200 <= status_code < 300:
        return Verdict("delivered", status_code)
    if status_code == 410:
        return Verdict("failed", status_code, "the receiver answered 410 Gone; no more attempts")
    if 300 <= status_code < 400:
        reason = f"the receiver answered {status_code}; redirects are not followed"
        return Verdict("retry", status_code, reason)
    return Verdict("retry", status_code, f"the receiver answered {status_code}")


async def record(
    db: Database, claimed: Claimed, verdict: Verdict, scale: float, clock: Clock = SYSTEM
) -> str:
    """Store an attempt's verdict and schedule the next; returns the delivery's new status.

    Ignored (returns "lost") if the claim ran out and another worker took the delivery over.
    """
    now = clock.now()
    status = verdict.outcome
    next_at = now
    if status == "retry":
        delay = retry_delay(claimed.attempts, scale, random.random())
        if delay is None:
            status = "failed"
        else:
            status = "pending"
            next_at = now + timedelta(seconds=delay)
    async with db.write() as conn:
        changed = await conn.execute(
            d.update()
            .where(d.c.id == claimed.id, d.c.locked_by == claimed.token, d.c.status == "pending")
            .values(
                status=status,
                next_attempt_at=next_at,
                locked_by=None,
                last_status_code=verdict.status_code,
                last_error=verdict.error,
                updated_at=now,
            )
        )
        if changed.rowcount != 1:
            return "lost"
        if status != "pending":
            await conn.execute(jobs.update().where(jobs.c.id == claimed.job_id).values(webhook_status=status))
    return status


# --- one HTTP attempt ----------------------------------------------------------------------------


async def post(
    url: str, body: bytes, headers: Mapping[str, str], *, allow_private: bool, timeout: float
) -> Verdict:
    """POST `body` to `url` through the address guard, pinned to the checked address.

    `timeout` covers DNS, connect and the response headers; the response body is not read.
    """
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        return Verdict("failed", error="the webhook URL could not be parsed; no more attempts")
    try:
        async with asyncio.timeout(timeout):
            try:
                addresses = await checked_addresses(target, allow_private)
            except Unresolved as exc:
                return Verdict("retry", error=str(exc))
            except Refused as exc:
                # A refused address or an unusable URL will not get better by waiting.
                return Verdict("failed", error=f"{exc}; no more attempts")
            async with httpx.AsyncClient(
                follow_redirects=False, trust_env=False, timeout=None, verify=tls_context()
            ) as client:
                response = await send_pinned(
                    client,
                    target,
                    addresses,
                    method="POST",
                    content=body,
                    headers={**headers, "User-Agent": USER_AGENT},
                )
                await response.aclose()
    except Refused as exc:  # could not connect, or the TLS certificate failed: may recover
        return Verdict("retry", error=str(exc))
    except TimeoutError:
        return Verdict("retry", error=f"no answer within {timeout:g} seconds")
    except httpx.HTTPError as exc:
        return Verdict("retry", error=str(exc) or type(exc).__name__)
    return judge(response.status_code)


async def attempt(claimed: Claimed, *, allow_private: bool, timeout: float) -> Verdict:
    """Sign this attempt (a fresh webhook-timestamp) and send it."""
    if claimed.key is None:
        return Verdict("failed", error="the job's API key no longer exists, so it cannot be signed")
    headers = sign.signed_headers(claimed.key, claimed.event, claimed.id, int(time.time()), claimed.body)
    return await post(claimed.url, claimed.body, headers, allow_private=allow_private, timeout=timeout)


# --- the dispatcher -----------------------------------------------------------------------------


_MIN_POLL_SECONDS = 0.5


class Deliverer:
    """Delivers due outbox rows from this process; any number of processes may run one.

    Up to `webhook_concurrency` attempts run at once as tasks (at most `webhook_per_host` to one
    destination over all processes, see `claim`); a finished attempt frees its slot and wakes the
    claim at once.
    """

    def __init__(self, db: Database, settings: Settings, clock: Clock = SYSTEM) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.capacity = max(settings.webhook_concurrency, 1)
        self.token_prefix = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[str]] = set()

    def wake(self) -> None:
        """A delivery was just queued in this process: look now rather than at the next poll."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def claim_and_start(self) -> list[asyncio.Task[str]]:
        """Claim what the free slots allow and start an attempt task for each."""
        free = self.capacity - len(self._in_flight)
        if free <= 0:
            return []
        timeout = self.settings.webhook_timeout_seconds
        token = f"{self.token_prefix}:{uuid.uuid4().hex[:8]}"
        claimed = await claim(
            self.db,
            token,
            timeout + _LEASE_MARGIN_SECONDS,
            limit=free,
            per_host=self.settings.webhook_per_host,
            clock=self.clock,
        )
        started = []
        for one in claimed:
            task = asyncio.create_task(self._attempt(one))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
            started.append(task)
        return started

    def _finished(self, task: asyncio.Task[str]) -> None:
        self._in_flight.discard(task)
        self._wake.set()  # a slot is free: rows waiting on it may go now

    async def _attempt(self, claimed: Claimed) -> str:
        try:
            verdict = await attempt(
                claimed,
                allow_private=self.settings.allow_private_urls,
                timeout=self.settings.webhook_timeout_seconds,
            )
            status = await record(self.db, claimed, verdict, self.settings.webhook_schedule_scale, self.clock)
        except Exception:
            # The lease brings the row back to some deliverer; this one only logs.
            log.exception("webhook %s: attempt %d could not be recorded", claimed.id, claimed.attempts)
            return "lost"
        log.info(
            "webhook %s (%s, job %s) attempt %d: %s%s",
            claimed.id,
            claimed.event,
            claimed.job_id,
            claimed.attempts,
            status,
            f" ({verdict.error})" if verdict.error else "",
        )
        return status

    async def deliver_due(self) -> list[str]:
        """Claim what is due now (as far as the slots allow) and wait for those attempts; returns
        their new statuses. One step of `run`, for tests and tools that move a fake clock."""
        started = await self.claim_and_start()
        return list(await asyncio.gather(*started))

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and start attempts until `stop` is set, then let those in flight finish.

        Never cancelled: a cancel inside a database call can leave its transaction open (see
        jobs/worker.py); each attempt ends by its own timeout.
        """
        while not stop.is_set():
            try:
                started = await self.claim_and_start()
            except Exception:
                log.exception("webhook claim failed; retrying")
                started = []
            if started:
                continue  # there may be more due behind them (the next claim says)
            await self._idle(stop)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _idle(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        # Deliveries queued here and finished attempts wake us at once; the poll finds retries
        # coming due and deliveries queued by other processes, and need not be as eager as the
        # job queue's.
        poll = max(self.settings.poll_seconds, _MIN_POLL_SECONDS)
        await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        self._wake.clear()


# --- progress: best-effort, straight from the running job ------------------------------------------


class ProgressSender:
    """Progress webhooks for one running job: only on change, at most one a second, one in
    flight at a time; failures are logged and dropped. Offer progress from the event loop."""

    def __init__(self, job: Mapping[str, Any], key: bytes, settings: Settings) -> None:
        self.job_id: str = job["id"]
        self.model: str = job["model"]
        self.url: str = job["webhook_url"]
        self.key = key
        self.settings = settings
        self.throttle = events.ProgressThrottle()
        self._task: asyncio.Task[None] | None = None

    def offer(self, progress: int, now: float) -> None:
        """`now`: time.monotonic(). Sends in the background when the throttle allows."""
        if self._task is not None and not self._task.done():
            return
        if not self.throttle.due(progress, now):
            return
        self.throttle.sent(progress, now)
        # Stamped here, not when the task starts, so stamps are as far apart as the offers.
        self._task = asyncio.create_task(self._send(progress, int(time.time())))

    async def _send(self, progress: int, timestamp: int) -> None:
        body = events.encode(events.progress_payload(self.job_id, self.model, progress))
        headers = sign.signed_headers(self.key, "progress", new_webhook_id(), timestamp, body)
        verdict = await post(
            self.url,
            body,
            headers,
            allow_private=self.settings.allow_private_urls,
            timeout=self.settings.webhook_timeout_seconds,
        )
        if verdict.outcome != "delivered":
            log.debug("progress webhook for job %s dropped: %s", self.job_id, verdict.error)

    async def close(self) -> None:
        """The job ended: drop a send still in flight so it cannot land after the final event."""
        if self._task is not None:
            self._task.cancel()  # HTTP only, no database inside: safe to cancel
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def progress_sender(db: Database, job: Mapping[str, Any], settings: Settings) -> ProgressSender | None:
    """A sender for a job that asked for progress events, else None."""
    if not job.get("webhook_url") or not events.wants(job.get("webhook_events"), "progress"):
        return None
    async with db.read() as conn:
        key = await signing_key(conn, job["id"])
    return None if key is None else ProgressSender(job, key, settings)
