"""Alembic environment: runs migrations in one write transaction of our `Database` (SQLite or
PostgreSQL)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context

from fillframe.db import Database, metadata

# Serialises concurrent `serve`/`worker` start-ups on one PostgreSQL database.
_PG_MIGRATION_LOCK = 7_300_417


def _run(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    db = Database(context.config.attributes["database_url"])
    try:
        async with db.write() as conn:
            await conn.run_sync(_run)
    finally:
        await db.close()


asyncio.run(_main())
