"""Alembic migrations, shipped inside the package so an installed `fillframe serve` can apply them.

Start-up first asks the database which revision it is at; only when that is not the newest one
in `versions/` is Alembic imported and run (it costs a process about 40 MB and half a second).
Revisions are numbered `NNNN` and form one line, so the newest is the largest number.
"""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).parent
_REVISION = re.compile(r'^revision = "(\d{4})"$', re.MULTILINE)


def head_revision() -> str:
    found = [m.group(1) for f in (HERE / "versions").glob("*.py") if (m := _REVISION.search(f.read_text()))]
    return max(found)


async def current_revision(url: str) -> str | None:
    from fillframe.db import Database

    db = Database(url)
    try:
        async with db.read() as conn:
            try:
                version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
                return None if version is None else str(version)
            except sa.exc.DBAPIError:
                return None
    finally:
        await db.close()


def upgrade(url: str) -> None:
    """Bring the database to the newest revision (idempotent). Call outside a running event loop."""
    import asyncio

    if asyncio.run(current_revision(url)) == head_revision():
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["database_url"] = url
    command.upgrade(cfg, "head")
