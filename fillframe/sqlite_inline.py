"""SQLite on the event loop's own thread, through SQLAlchemy's synchronous engine.

Our SQLite statements touch a few indexed rows of small tables and take microseconds. Run through
an async driver they cost far more than that: aiosqlite hands every call to a thread and back,
and SQLAlchemy's async layer adds a greenlet switch per call and per connection checkout
(measured here: checking out a connection, one `SELECT 1` and the return took 155 us that way,
42 us through the synchronous engine). So `Database` runs SQLite statements inline, through an
`InlineConnection` that has the part of `AsyncConnection`'s interface our code uses, with one
exception that would otherwise stall the loop:

- Another process holding the write lock. Connections have a busy timeout of zero, so SQLite
  answers SQLITE_BUSY at once instead of sleeping on the loop's thread; the statement (which has
  not run) is then retried on a worker thread that waits up to ten seconds for the lock.

Within one process, writers already queue on `Database`'s lock, so they never meet each other
here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

BUSY_TIMEOUT_MS = 10_000

T = TypeVar("T")


def connect(path: str, busy_timeout_ms: int = 0) -> sqlite3.Connection:
    """A driver connection in autocommit (the caller issues BEGIN IMMEDIATE for writes), WAL."""
    # Opening may wait for the lock (switching a new file to WAL), hence the connect timeout.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    return conn


def create_engine(path: str) -> sa.Engine:
    """A synchronous engine whose pool never blocks: a checkout past the pooled eight opens one
    more connection instead of waiting (waiting would block the event loop that returns them)."""
    return sa.create_engine(
        "sqlite://", creator=lambda: connect(path), poolclass=sa.QueuePool, pool_size=8, max_overflow=-1
    )


def is_busy(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    return (orig.sqlite_errorcode & 0xFF) == sqlite3.SQLITE_BUSY


async def checkout(engine: sa.Engine) -> sa.Connection:
    """A pooled connection; one that must first be opened is opened on a worker thread."""
    if engine.pool.checkedin() == 0:  # type: ignore[attr-defined]
        return await asyncio.to_thread(engine.connect)
    return engine.connect()


class InlineConnection:
    """What our code uses of `AsyncConnection`, over a synchronous connection whose statements run
    on the loop's thread; a statement that meets another process's lock waits on a worker thread."""

    def __init__(self, sync: sa.Connection, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.sync = sync
        self.busy_timeout_ms = busy_timeout_ms

    @property
    def dialect(self) -> sa.Dialect:
        return self.sync.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> sa.CursorResult[Any]:
        return await self.run(self.sync.execute, statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return await self.run(self.sync.scalar, statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> sa.CursorResult[Any]:
        return await self.run(self.sync.exec_driver_sql, statement, parameters)

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.run(fn, self.sync, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except sa.exc.OperationalError as exc:
            if not is_busy(exc):
                raise
        waiting = asyncio.ensure_future(asyncio.to_thread(self._waiting_for_lock, fn, *args))
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            # The thread goes on with this connection: let it finish before anyone rolls back.
            await asyncio.wait([waiting])
            raise

    def _waiting_for_lock(self, fn: Callable[..., T], *args: Any) -> T:
        driver = self.sync.connection.dbapi_connection
        assert driver is not None
        driver.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        try:
            return fn(*args)
        finally:
            driver.execute("PRAGMA busy_timeout=0")
