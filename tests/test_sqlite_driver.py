"""The inline SQLite driver: statements run on the loop, lock waits do not block it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from fillframe.db import Database
from fillframe.sqlite_driver import LoopConnection


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


async def _write_meets_foreign_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = Database(f"sqlite:///{path}")
    try:
        async with db.write() as conn:
            await conn.execute(sa.text("CREATE TABLE t (v INTEGER)"))
        other = _hold_write_lock(path)  # another process's writer, in effect

        async def write() -> None:
            async with db.write() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (2)"))

        task = asyncio.create_task(write())
        asyncio.get_running_loop().call_later(0.3, other.commit)
        started = time.monotonic()
        ticks = await _ticks_while(task)
        await task
        assert time.monotonic() - started >= 0.25  # it really waited for the lock...
        assert ticks >= 10  # ...while the loop kept running other work
        async with db.read() as conn:
            values = (await conn.execute(sa.text("SELECT v FROM t ORDER BY v"))).scalars().all()
        assert values == [1, 2]
        other.close()
    finally:
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
    conn = await LoopConnection(str(path), busy_timeout_ms=200)
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await conn.execute("BEGIN IMMEDIATE")
        assert 0.15 <= time.monotonic() - started < 5
        other.rollback()
        await conn.execute("BEGIN IMMEDIATE")  # the same connection works once the lock is free
        await conn.execute("INSERT INTO t VALUES (3)")
        await conn.commit()
        assert sqlite3.connect(path).execute("SELECT v FROM t").fetchall() == [(3,)]
    finally:
        await conn.close()
        other.close()


def test_connection_settings(tmp_path: Path) -> None:
    asyncio.run(_connection_settings(tmp_path))


async def _connection_settings(tmp_path: Path) -> None:
    conn = await LoopConnection(str(tmp_path / "x.db"), busy_timeout_ms=200)
    try:
        pragmas = {}
        for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout"):
            cursor = await conn.execute(f"PRAGMA {name}")
            pragmas[name] = (await cursor.fetchone())[0]
        assert pragmas == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 0}
    finally:
        await conn.close()
    with pytest.raises(ValueError, match="no active connection"):
        await conn.execute("SELECT 1")
