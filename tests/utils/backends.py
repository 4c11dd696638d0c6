"""Database backends for the suite: a SQLite file, or a fresh database on the real PostgreSQL
server (127.0.0.1:5432, trust auth; `FILLFRAME_TEST_PG` overrides the admin URL)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

BACKENDS = ("sqlite", "postgresql")
PG_ADMIN = os.environ.get("FILLFRAME_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin() -> sa.Engine:
    return sa.create_engine(
        PG_ADMIN.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )


def require_postgres() -> None:
    """Skip on a machine without PostgreSQL, but never in CI, where it must be there."""
    try:
        with _admin().connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN}: {exc.orig}")


def create_pg_database() -> str:
    """A fresh, empty database; returns its URL."""
    require_postgres()
    name = f"fillframe_test_{uuid.uuid4().hex[:12]}"
    engine = _admin()
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    engine = _admin()
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def sync_url(env: dict[str, str]) -> str:
    url = env.get("FILLFRAME_DATABASE_URL")
    if url:
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"sqlite:///{env['FILLFRAME_DATA_DIR']}/fillframe.db"


def query(env: dict[str, str], sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run one SQL statement against the server's database, as an operator would."""
    engine = sa.create_engine(sync_url(env))
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()
