"""The secret that signs result links: the configured one, else one generated once per installation.

With a server database (PostgreSQL), the processes of every machine share that database, so the
generated secret is kept there (`service_secrets`, migration 0007): each process inserts a fresh
one if none is there yet (insert-if-absent, so two processes starting at once agree) and reads
back the one row. On SQLite the database is a file in DATA_DIR, on one machine, and the secret
stays in a file beside it as it always has, so existing installations keep their secret and the
links they handed out.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from fillframe.db import Database, service_secrets, utcnow
from fillframe.settings import LinkSettings

NAME = "link_signing"


def new_secret() -> str:
    return secrets.token_urlsafe(48)


def file_secret(data_dir: Path) -> bytes:
    """The secret in DATA_DIR/secret, written there first if absent (exclusively: two processes
    starting together agree)."""
    path = data_dir / "secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("x") as fh:
                fh.write(new_secret())
            path.chmod(0o600)
        except FileExistsError:
            pass
    return path.read_text().strip().encode()


async def stored_secret(db: Database) -> bytes:
    """The secret kept in the (PostgreSQL) database, inserted first if absent."""
    insert = (
        postgresql.insert(service_secrets)
        .values(name=NAME, value=new_secret(), created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["name"])
    )
    async with db.autocommit() as conn:
        await conn.execute(insert)
    async with db.read() as conn:
        value = await conn.scalar(sa.select(service_secrets.c.value).where(service_secrets.c.name == NAME))
    return str(value).encode()


async def link_secret(db: Database, links: LinkSettings) -> bytes:
    """FILLFRAME_SECRET when set; else the database's (PostgreSQL) or DATA_DIR's (SQLite)."""
    if links.secret is not None and links.secret.get_secret_value():
        return links.secret.get_secret_value().encode()
    if db.is_sqlite:
        return await asyncio.to_thread(file_secret, links.data_dir)
    return await stored_secret(db)
