"""SQLite connections that run their statements on the event loop's own thread.

aiosqlite hands every call (each statement, fetch, BEGIN and COMMIT) to a per-connection thread
and back. On a busy or sandboxed host that hand-off costs far more than the statement: measured
here, a submit's seven calls spent about 2 ms in hand-offs against well under 0.1 ms in SQLite
(`bench/api.py` shows the effect end to end). Our statements touch a few indexed rows of small
tables, so they run inline instead, with one exception that would otherwise stall the loop:

- Another process holding the write lock. The connection's own busy timeout is zero, so SQLite
  answers SQLITE_BUSY at once instead of sleeping on this thread; the statement (which has not
  run) is then retried on a worker thread that waits up to `busy_timeout_ms` for the lock.

Within one process, writers already queue on `Database`'s lock, so they never meet each other
here. The class keeps aiosqlite's interface, which SQLAlchemy's aiosqlite dialect drives, and
is handed to SQLAlchemy through `create_async_engine(async_creator=...)`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


class LoopConnection(aiosqlite.Connection):
    """An aiosqlite connection without its thread: calls run inline, lock waits off the loop."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        super().__init__(lambda: self._open(path, busy_timeout_ms), iter_chunk_size=64)
        self._busy_timeout_ms = busy_timeout_ms

    @staticmethod
    def _open(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
        # Autocommit at the driver level: SQLAlchemy's "begin" hook (db.py) issues BEGIN itself.
        conn = sqlite3.connect(
            path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=0")
        return conn

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
        return await asyncio.to_thread(self._wait_for_lock, fn, *args, **kwargs)

    def _wait_for_lock(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        try:
            return fn(*args, **kwargs)
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    async def _connect(self) -> LoopConnection:
        if self._connection is None:
            # Opening may wait for a lock (switching a new file to WAL): done off the loop, once
            # per pooled connection.
            self._connection = await asyncio.to_thread(self._connector)
        return self

    def __await__(self) -> Any:
        return self._connect().__await__()

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()
