"""The admin audit trail: every change made through the admin API or the CLI, who, what, when.

Written in the same transaction as the change it describes, so neither exists without the other.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fillframe.db import Connection, Database, admin_audit, utcnow


async def record(
    conn: Connection,
    actor: str,
    action: str,
    team_id: str | None,
    target_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        admin_audit.insert().values(
            at=utcnow(), actor=actor[:200], action=action, team_id=team_id, target_id=target_id, detail=detail
        )
    )


async def entries(db: Database, *, team_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Newest first."""
    query = sa.select(admin_audit).order_by(admin_audit.c.id.desc()).limit(limit)
    if team_id is not None:
        query = query.where(admin_audit.c.team_id == team_id)
    async with db.read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]
