"""API keys: `afk_` keys, shown once, stored only as their SHA-256; each belongs to a user of a
team. Authentication turns a key into the `Caller` handlers see."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fillframe import audit, teams
from fillframe.db import Connection, Database, accounts, api_keys, users, utcnow

KEY_PREFIX = "afk_"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """The authenticated key, its user and its team (`account_id`), as handlers see them."""

    key_id: str
    key_name: str
    key_prefix: str
    key_hash: str
    account_id: str
    account_name: str
    unlimited: bool
    plan: str
    max_concurrent_jobs: int
    # The key's own limit, else its team's; None: the server's default.
    rate_limit_per_minute: int | None
    user_id: str
    user_email: str
    role: str
    customer_id: str | None

    @property
    def sees_team(self) -> bool:
        """OWNER and ADMIN may list every job of the team (`scope=team`); a MEMBER only its own."""
        return self.role in ("OWNER", "ADMIN")


class AuthError(Exception):
    """Why a key was refused: `status` 401 or 403 and the contract's sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _new_key_row(team_id: str, user_id: str, name: str, rate: int | None) -> tuple[str, dict[str, Any]]:
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = {
        "id": str(uuid.uuid4()),
        "account_id": team_id,
        "user_id": user_id,
        "name": name,
        "prefix": api_key[: len(KEY_PREFIX) + 6],
        "key_hash": hash_key(api_key),
        "active": True,
        "rate_limit_per_minute": rate,
        "created_at": utcnow(),
    }
    return api_key, row


async def add_key(
    db: Database,
    team_id: str,
    name: str,
    *,
    user_id: str | None = None,
    rate: int | None = None,
    actor: str,
) -> tuple[str, dict[str, Any]]:
    """A new key for `user_id` (default: the team's first OWNER). Returns (key, key row); the
    key itself exists only in this return value."""
    async with db.write() as conn:
        user = await teams.active_user(conn, team_id, user_id)
        api_key, row = _new_key_row(team_id, user["id"], name, rate)
        await conn.execute(api_keys.insert().values(**row))
        await audit.record(
            conn, actor, "key.create", team_id, row["id"], {"name": name, "userId": user["id"]}
        )
    return api_key, row


async def create_key(
    db: Database,
    name: str,
    *,
    credits: int | None = None,
    account_id: str | None = None,
    user_id: str | None = None,
    email: str | None = None,
    actor: str = "cli",
) -> tuple[str, dict[str, Any]]:
    """Create a key; without `account_id`, first a team named `name` (unlimited when `credits`
    is None) with an OWNER holding the key. Returns (key, key row)."""
    if account_id is None:
        team = await teams.create_team(
            db, name=name, owner_email=email, unlimited=credits is None, credits=credits or 0, actor=actor
        )
        account_id, user_id = team["id"], team["ownerId"]
    return await add_key(db, account_id, name, user_id=user_id, actor=actor)


_AUTHENTICATE = (
    sa.select(
        api_keys.c.id,
        api_keys.c.name,
        api_keys.c.prefix,
        api_keys.c.key_hash,
        api_keys.c.active,
        api_keys.c.revoked_at,
        sa.func.coalesce(api_keys.c.rate_limit_per_minute, accounts.c.rate_limit_per_minute).label("rate"),
        accounts.c.id.label("account_id"),
        accounts.c.name.label("account_name"),
        accounts.c.unlimited,
        accounts.c.plan,
        accounts.c.max_concurrent_jobs,
        accounts.c.customer_id,
        users.c.id.label("user_id"),
        users.c.email,
        users.c.role,
        users.c.removed_at,
    )
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .join(users, users.c.id == api_keys.c.user_id)
    .where(api_keys.c.key_hash == sa.bindparam("key_hash"))
)


async def authenticate(db: Database, api_key: str | None) -> Caller:
    if not api_key:
        raise AuthError(401, "API key is required")
    async with db.read() as conn:
        row = (await conn.execute(_AUTHENTICATE, {"key_hash": hash_key(api_key)})).mappings().first()
    if row is None or row["revoked_at"] is not None or row["removed_at"] is not None:
        raise AuthError(401, "Invalid API key")
    if not row["active"]:
        raise AuthError(403, "API key is inactive")
    return Caller(
        key_id=row["id"],
        key_name=row["name"],
        key_prefix=row["prefix"],
        key_hash=row["key_hash"],
        account_id=row["account_id"],
        account_name=row["account_name"],
        unlimited=row["unlimited"],
        plan=row["plan"],
        max_concurrent_jobs=row["max_concurrent_jobs"],
        rate_limit_per_minute=row["rate"],
        user_id=row["user_id"],
        user_email=row["email"],
        role=row["role"],
        customer_id=row["customer_id"],
    )


KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.prefix,
    api_keys.c.account_id,
    api_keys.c.user_id,
    api_keys.c.active,
    api_keys.c.rate_limit_per_minute,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)


def key_status(row: dict[str, Any]) -> str:
    """`revoked`, `active` or `inactive`, as the CLI and the admin API show a key row."""
    return "revoked" if row["revoked_at"] else ("active" if row["active"] else "inactive")


async def list_keys(db: Database, team_id: str | None = None) -> list[dict[str, Any]]:
    """Keys (never the keys themselves), oldest first; of one team when `team_id` is given."""
    query = sa.select(*KEY_COLUMNS).order_by(api_keys.c.created_at)
    if team_id is not None:
        query = query.where(api_keys.c.account_id == team_id)
    async with db.read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def get_key(conn: Connection, key_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(*KEY_COLUMNS).where(api_keys.c.id == key_id))).mappings().first()
    return dict(row) if row else None


async def _change_key(
    db: Database, key_id: str, values: dict[str, Any], action: str, actor: str
) -> dict[str, Any] | None:
    """Apply `values` to an unrevoked key and audit it; None when there is no such key."""
    async with db.write() as conn:
        if not values:
            return await get_key(conn, key_id)
        result = await conn.execute(
            api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(**values)
        )
        if result.rowcount != 1:
            return None
        row = await get_key(conn, key_id)
        assert row is not None
        detail = {k: v for k, v in values.items() if k != "revoked_at"}
        await audit.record(conn, actor, action, row["account_id"], key_id, detail)
    return row


async def revoke_key(db: Database, key_id: str, *, actor: str = "cli") -> dict[str, Any] | None:
    """Revoke an unrevoked key; its row as it is now, or None when there is no such key."""
    values = {"revoked_at": utcnow(), "active": False}
    return await _change_key(db, key_id, values, "key.revoke", actor)


async def set_key_active(db: Database, key_id: str, active: bool, *, actor: str = "cli") -> bool:
    action = "key.enable" if active else "key.disable"
    return await _change_key(db, key_id, {"active": active}, action, actor) is not None


async def update_key(
    db: Database, key_id: str, *, active: bool | None = None, rate: int | None = None, actor: str
) -> dict[str, Any] | None:
    """Disable/enable a key and set its submit rate (0: unlimited) in one audited change."""
    values: dict[str, Any] = {}
    if active is not None:
        values["active"] = active
    if rate is not None:
        values["rate_limit_per_minute"] = rate
    return await _change_key(db, key_id, values, "key.update", actor)


async def key_team(db: Database, key_id: str) -> str | None:
    async with db.read() as conn:
        return await conn.scalar(sa.select(api_keys.c.account_id).where(api_keys.c.id == key_id))


async def set_limits(
    db: Database, key_id: str, *, rate: int | None, concurrency: int | None, actor: str = "cli"
) -> bool:
    """The CLI's `keys limits`: the key's rate and its team's concurrent-job limit."""
    team_id = await key_team(db, key_id)
    if team_id is None:
        return False
    if rate is not None:
        await update_key(db, key_id, rate=rate, actor=actor)
    if concurrency is not None:
        await teams.update_team(db, team_id, {"max_concurrent_jobs": concurrency}, actor=actor)
    return True
