"""PostgreSQL's claim function is generated from the statement SQLite runs: the database's
function must be exactly what the code generates now (a change to the statement without a
migration that runs it again fails here), and migration 0005 goes back and forth."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from fillframe.db import Database
from fillframe.jobs import queue
from fillframe.migrations import HERE, current_revision


def _function(url: str) -> tuple[str, list[str] | None]:
    async def read() -> tuple[str, list[str] | None]:
        db = Database(url)
        try:
            async with db.read() as conn:
                row = (
                    await conn.execute(
                        sa.text("SELECT prosrc, proconfig FROM pg_proc WHERE proname = 'fillframe_claim'")
                    )
                ).one()
                return row.prosrc, row.proconfig
        finally:
            await db.close()

    return asyncio.run(read())


def _body(function_sql: str) -> str:
    return function_sql.split("$$", 1)[1].rsplit("$$", 1)[0]


def test_the_database_runs_the_claim_the_code_builds(database_url: str, backend: str) -> None:
    if backend == "sqlite":
        assert "FOR UPDATE" not in str(queue._CLAIM.compile(dialect=sa.dialects.sqlite.dialect()))
        return
    source, config = _function(database_url)
    assert source == _body(queue.claim_function_sql())
    assert "FOR UPDATE SKIP LOCKED" in source
    assert config == ["plan_cache_mode=force_generic_plan"]


def test_migration_0005_goes_back_and_forth(database_url: str, backend: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["database_url"] = database_url
    command.downgrade(cfg, "0004")
    assert asyncio.run(current_revision(database_url)) == "0004"
    if backend == "postgresql":
        assert "ORDER BY candidate.run_after, candidate.created_at" in _function(database_url)[0]
    command.upgrade(cfg, "0005")
    assert asyncio.run(current_revision(database_url)) == "0005"
    if backend == "postgresql":
        assert _function(database_url)[0] == _body(queue.claim_function_sql())
