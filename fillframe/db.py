"""Tables and the database engine: SQLite (WAL) by default, PostgreSQL at scale.

SQLAlchemy Core rather than the ORM: the queue's claim and the status transitions are single
statements whose exact SQL matters, and Core keeps them visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from fillframe import sqlite_inline
from fillframe.sqlite_inline import InlineConnection

metadata = sa.MetaData()


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in Python; naive UTC in SQLite, `timestamptz` in PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A team (the table keeps its first name, `accounts`: credits, ledger rows, jobs, files and
# idempotency keys all point at it through `account_id`).
accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    # Not metered: holds are skipped and no ledger rows are written for its jobs.
    sa.Column("unlimited", sa.Boolean, nullable=False, default=False),
    # Always equal to the sum of this account's ledger rows; kept here so a hold is one UPDATE.
    sa.Column("credits", sa.BigInteger, nullable=False, default=0),
    sa.Column("plan", sa.String(40), nullable=False, default="self-hosted"),
    sa.Column("max_concurrent_jobs", sa.Integer, nullable=False, default=4),
    # The operator's own id for this customer (free text), as /v2/me's `customerId`.
    sa.Column("customer_id", sa.String(200), nullable=True, index=True),
    # Submits per minute for each key of the team that has no limit of its own.
    sa.Column("rate_limit_per_minute", sa.Integer, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# People of a team. Removed users keep their row (their jobs and keys point at it), marked
# `removed_at`, and their keys are revoked.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("role", sa.String(8), nullable=False),  # OWNER | ADMIN | MEMBER
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("removed_at", UTCDateTime, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.ForeignKey("accounts.id"), nullable=False, index=True),
    # The key's holder (users.id; a reference by value, see migration 0006). Always set; nullable
    # only because rows from before 0006 were filled in by that migration.
    sa.Column("user_id", sa.String(36), nullable=True, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("rate_limit_per_minute", sa.Integer, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("api_key_id", sa.ForeignKey("api_keys.id"), nullable=False),
    # The user whose key submitted it (`scope=user` lists); `account_id` is the team.
    sa.Column("user_id", sa.String(36), nullable=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("progress", sa.Integer, nullable=False, default=0),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("notes", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("error_code", sa.String(40), nullable=True),
    sa.Column("credit_cost", sa.Integer, nullable=False, default=0),
    sa.Column("webhook_url", sa.Text, nullable=True),
    sa.Column("webhook_events", sa.JSON, nullable=True),
    sa.Column("webhook_status", sa.String(16), nullable=True),
    # Where result links in this job's webhooks point when PUBLIC_URL is unset: the submit's host.
    sa.Column("base_url", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False, default=3),
    sa.Column("worker_id", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("expired", sa.Boolean, nullable=False, default=False),
    # A request waits on this job (`Prefer: wait`): on PostgreSQL its end is announced by NOTIFY.
    sa.Column("notify_done", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Column("run_after", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("completed_at", UTCDateTime, nullable=True),
    sa.Index("ix_jobs_account_created", "account_id", "created_at", "id"),
    # The fair claim's probes (jobs/queue.py `fair_pick`): accounts with queued jobs, an
    # account's running jobs and oldest runnable one; and an account's latest start.
    sa.Index("ix_jobs_fair", "status", "account_id", "run_after", "created_at"),
    sa.Index(
        "ix_jobs_served",
        "account_id",
        "started_at",
        sqlite_where=sa.text("started_at IS NOT NULL"),
        postgresql_where=sa.text("started_at IS NOT NULL"),
    ),
    sa.Index("ix_jobs_lease", "status", "lease_expires_at"),
    sa.Index("ix_jobs_account_user_created", "account_id", "user_id", "created_at", "id"),
)

credit_ledger = sa.Table(
    "credit_ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("job_id", sa.String(36), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),  # grant | deduct | hold | capture | refund
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # A job's hold, capture and refund each happen at most once, whatever races.
    sa.UniqueConstraint("job_id", "kind", name="uq_ledger_job_kind"),
)

# Every change made through the admin API or the CLI: who, what, when.
admin_audit = sa.Table(
    "admin_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),  # e.g. team.create, key.revoke
    sa.Column("team_id", sa.String(36), nullable=True, index=True),
    sa.Column("target_id", sa.String(36), nullable=True),
    sa.Column("detail", sa.JSON, nullable=True),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("account_id", sa.String(36), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
)

rate_windows = sa.Table(
    "rate_windows",
    metadata,
    sa.Column("api_key_id", sa.String(36), primary_key=True),
    sa.Column("window_start", sa.BigInteger, primary_key=True),  # unix minute
    sa.Column("count", sa.Integer, nullable=False),
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("job_id", sa.String(36), nullable=True, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # "output" | "upload"
    sa.Column("storage_key", sa.String(300), nullable=False),
    sa.Column("content_type", sa.String(64), nullable=False),
    sa.Column("byte_size", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
)

# The webhook outbox: one row per terminal event, written in the transaction that ends the job
# (fillframe/webhooks/deliver.py). Progress events are best-effort and never stored here.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # the `webhook-id` header, same on every retry
    sa.Column("job_id", sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),  # completed | failed
    sa.Column("url", sa.Text, nullable=False),
    # `scheme://host:port` of the URL (deliver.destination): what the per-host cap counts
    sa.Column("destination", sa.Text, nullable=False, server_default=""),
    sa.Column("payload", sa.Text, nullable=False),  # the exact body, byte-identical on every attempt
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("locked_by", sa.String(64), nullable=True),  # the claim of the attempt in flight
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("job_id", "event", name="uq_webhook_job_event"),
    sa.Index("ix_webhook_due", "status", "next_attempt_at"),
    # Attempts in flight per destination, counted by every claim (the few claimed rows only).
    sa.Index(
        "ix_webhook_in_flight",
        "destination",
        "next_attempt_at",
        sqlite_where=sa.text("locked_by IS NOT NULL"),
        postgresql_where=sa.text("locked_by IS NOT NULL"),
    ),
)


_Stmt = TypeVar("_Stmt")


def upserts(build: Callable[[Callable[..., Any]], _Stmt]) -> dict[str, _Stmt]:
    """One prebuilt statement per dialect, from `build(insert)` where `insert` is that dialect's
    INSERT (the one with ON CONFLICT). Index the result with `conn.dialect.name`.

    The hot paths (submit, claim, finish) execute statements built once, with bound parameters:
    building and cache-keying a statement per call cost more than running it."""
    return {"sqlite": build(sqlite.insert), "postgresql": build(postgresql.insert)}


def async_url(url: str) -> str:
    """Pick the driver: `postgresql://` and `postgres://` mean asyncpg; SQLite URLs stay as they
    are (their statements run inline: fillframe/sqlite_inline.py)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def plain_url(url: str) -> str:
    """The libpq form (no driver suffix), for asyncpg's own connection used by LISTEN."""
    return "postgresql://" + url.split("://", 1)[1]


def create_engine(url: str) -> AsyncEngine:
    """The PostgreSQL engine. No pool_pre_ping: for asyncpg it is three round trips (BEGIN, ping,
    ROLLBACK) per checkout, which doubled the cost of a short transaction. A connection that died
    (a server restart) fails its statement instead; SQLAlchemy then discards the whole pool, the
    API answers that request with a 503 and Retry-After (api/errors.py) and the worker retries
    its claim."""
    return create_async_engine(async_url(url), pool_size=10, max_overflow=20)


Connection = AsyncConnection | InlineConnection


class Database:
    """Two ways in: `read()` for queries, `write()` for a transaction that writes (and
    `autocommit()` for a write that is one statement).

    SQLite statements run on the event loop's thread (fillframe/sqlite_inline.py); PostgreSQL's
    through asyncpg. Never open a `write()` inside another in the same task: on SQLite they queue
    on one lock.
    """

    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            self.sqlite = sqlite_inline.create_engine(sa.make_url(self.url).database or ":memory:")
            self._write_lock = asyncio.Lock()
        else:
            self.engine = create_engine(self.url)
            # Reads need no transaction: that spares a BEGIN and a ROLLBACK round trip each.
            self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        """A connection for queries; each statement is its own transaction."""
        if not self.is_sqlite:
            async with self._reader.connect() as conn:
                yield conn
            return
        sync = await sqlite_inline.checkout(self.sqlite)
        try:
            yield InlineConnection(sync)
        finally:
            sync.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        if not self.is_sqlite:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        # SQLite has one writer at a time. Queue this process's writers here, in order, rather
        # than in SQLite's busy handler, which sleeps in steps of up to 100 ms and turned a busy
        # moment into second-long tail latencies. Another process's writer is waited for on a
        # worker thread. The write lock is taken up front: a deferred transaction that reads and
        # then writes can fail with SQLITE_BUSY without waiting.
        async with self._write_lock:
            sync = await sqlite_inline.checkout(self.sqlite)
            try:
                inline = InlineConnection(sync)
                await inline.exec_driver_sql("BEGIN IMMEDIATE")
                yield inline
                sync.commit()
            except BaseException:
                sync.rollback()
                raise
            finally:
                sync.close()

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Connection]:
        """For a write that is one statement: on PostgreSQL it commits by itself, one round trip
        instead of three (BEGIN, it, COMMIT). On SQLite this is `write()`."""
        if self.is_sqlite:
            async with self.write() as conn:
                yield conn
            return
        async with self._reader.connect() as conn:
            yield conn

    async def close(self) -> None:
        if self.is_sqlite:
            self.sqlite.dispose()
        else:
            await self.engine.dispose()
