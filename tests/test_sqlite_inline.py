"""Inline SQLite: statements run on the loop, lock waits do not block it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import time
from pathlib import Path
from types import FrameType

import pytest
import sqlalchemy as sa

from fillframe import sqlite_inline
from fillframe.db import Database
from fillframe.sqlite_inline import InlineConnection
from tests.utils.poll import until_async


async def _ticks_while(coro: asyncio.Future | asyncio.Task, period: float = 0.01) -> int:
    """How many times a 10 ms ticker ran while `coro` was pending: the loop stayed free."""
    ticks = 0
    while not coro.done():
        await asyncio.sleep(period)
        ticks += 1
    return ticks


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    return other


def test_a_write_waits_for_another_process_lock_without_blocking_the_loop(tmp_path: Path) -> None:
    asyncio.run(_write_meets_foreign_lock(tmp_path))


async def _insert(db: Database, value: int) -> None:
    async with db.write() as conn:
        await conn.execute(sa.text("INSERT INTO t VALUES (:v)"), {"v": value})


async def _values(db: Database) -> list[int]:
    async with db.read() as conn:
        return list((await conn.execute(sa.text("SELECT v FROM t ORDER BY v"))).scalars().all())


async def _locked_out(path: Path) -> tuple[Database, sqlite3.Connection]:
    """A database with table `t`, and another process's writer (in effect) holding its lock."""
    db = Database(f"sqlite:///{path}")
    async with db.write() as conn:
        await conn.execute(sa.text("CREATE TABLE t (v INTEGER)"))
    return db, _hold_write_lock(path)


async def _write_meets_foreign_lock(tmp_path: Path) -> None:
    db, other = await _locked_out(tmp_path / "x.db")
    try:
        task = asyncio.create_task(_insert(db, 2))
        asyncio.get_running_loop().call_later(0.3, other.commit)
        started = time.monotonic()
        ticks = await _ticks_while(task)
        await task
        assert time.monotonic() - started >= 0.25  # it really waited for the lock...
        assert ticks >= 10  # ...while the loop kept running other work
        assert await _values(db) == [1, 2]
    finally:
        other.close()
        await db.close()


def test_the_lock_wait_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    asyncio.run(_lock_wait_gives_up(tmp_path))


async def _lock_wait_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (v INTEGER)")
    setup.close()
    other = _hold_write_lock(path)
    engine = sqlite_inline.create_engine(str(path))
    sync = await sqlite_inline.checkout(engine)
    conn = InlineConnection(sync, busy_timeout_ms=200)
    try:
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError, match="locked"):
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        assert 0.15 <= time.monotonic() - started < 5
        other.rollback()
        await conn.exec_driver_sql("BEGIN IMMEDIATE")  # the same connection works once the lock is free
        await conn.exec_driver_sql("INSERT INTO t VALUES (3)")
        sync.commit()
        assert sqlite3.connect(path).execute("SELECT v FROM t").fetchall() == [(3,)]
    finally:
        sync.close()
        engine.dispose()
        other.close()


async def _in_lock_wait() -> bool:
    """Whether some thread is inside `InlineConnection._waiting_for_lock`, the wait for the lock."""
    wait = InlineConnection._waiting_for_lock.__code__
    for top in sys._current_frames().values():
        frame: FrameType | None = top
        while frame is not None:
            if frame.f_code is wait:
                return True
            frame = frame.f_back
    return False


def test_a_write_cancelled_while_it_waits_leaves_no_transaction_open(tmp_path: Path) -> None:
    asyncio.run(_cancelled_wait(tmp_path))


async def _cancelled_wait(tmp_path: Path) -> None:
    db, other = await _locked_out(tmp_path / "x.db")
    try:
        task = asyncio.create_task(_insert(db, 2))
        await until_async(_in_lock_wait, "waiting for the lock on a worker thread", 10)
        task.cancel()
        asyncio.get_running_loop().call_later(0.2, other.commit)
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancelled write took the lock after all, then rolled back: the next one gets it.
        await _insert(db, 4)
        assert await _values(db) == [1, 4]
    finally:
        other.close()
        await db.close()


def test_connection_settings(tmp_path: Path) -> None:
    asyncio.run(_connection_settings(tmp_path))


async def _connection_settings(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        async with db.read() as conn:
            pragmas = {}
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout"):
                pragmas[name] = await conn.scalar(sa.text(f"PRAGMA {name}"))
        assert pragmas == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 0}
    finally:
        await db.close()


def test_checkouts_past_the_pool_size_open_more_connections_instead_of_blocking(tmp_path: Path) -> None:
    asyncio.run(_many_readers(tmp_path))


async def _many_readers(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        async with contextlib.AsyncExitStack() as stack:
            conns = [await stack.enter_async_context(db.read()) for _ in range(40)]
            assert [await c.scalar(sa.text("SELECT 1")) for c in conns] == [1] * 40
    finally:
        await db.close()
