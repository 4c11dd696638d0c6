"""Accounts and API keys: `afk_` keys, shown once, stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fillframe import billing
from fillframe.db import Connection, Database, accounts, api_keys, credit_ledger, utcnow

KEY_PREFIX = "afk_"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """The authenticated key and its account, as handlers see them."""

    key_id: str
    key_name: str
    key_prefix: str
    key_hash: str
    account_id: str
    account_name: str
    unlimited: bool
    plan: str
    max_concurrent_jobs: int
    rate_limit_per_minute: int | None


class AuthError(Exception):
    """Why a key was refused: `status` 401 or 403 and the contract's sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def create_key(
    db: Database, name: str, *, credits: int | None = None, account_id: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Create a key (and its account unless `account_id` is given). Returns (key, key row)."""
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    async with db.write() as conn:
        if account_id is None:
            account_id = str(uuid.uuid4())
            await conn.execute(
                accounts.insert().values(
                    id=account_id,
                    name=name,
                    unlimited=credits is None,
                    plan="self-hosted",
                    max_concurrent_jobs=4,
                    created_at=now,
                )
            )
            if credits:
                await billing.grant(conn, account_id, credits, reason="initial grant")
        row = {
            "id": str(uuid.uuid4()),
            "account_id": account_id,
            "name": name,
            "prefix": api_key[: len(KEY_PREFIX) + 6],
            "key_hash": hash_key(api_key),
            "active": True,
            "created_at": now,
        }
        await conn.execute(api_keys.insert().values(**row))
    return api_key, row


_AUTHENTICATE = (
    sa.select(
        api_keys.c.id,
        api_keys.c.name,
        api_keys.c.prefix,
        api_keys.c.key_hash,
        api_keys.c.active,
        api_keys.c.revoked_at,
        api_keys.c.rate_limit_per_minute,
        accounts.c.id.label("account_id"),
        accounts.c.name.label("account_name"),
        accounts.c.unlimited,
        accounts.c.plan,
        accounts.c.max_concurrent_jobs,
    )
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.key_hash == sa.bindparam("key_hash"))
)


async def authenticate(db: Database, api_key: str | None) -> Caller:
    if not api_key:
        raise AuthError(401, "API key is required")
    async with db.read() as conn:
        row = (await conn.execute(_AUTHENTICATE, {"key_hash": hash_key(api_key)})).mappings().first()
    if row is None or row["revoked_at"] is not None:
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
        rate_limit_per_minute=row["rate_limit_per_minute"],
    )


async def list_keys(db: Database) -> list[dict[str, Any]]:
    query = sa.select(
        api_keys.c.id,
        api_keys.c.name,
        api_keys.c.prefix,
        api_keys.c.account_id,
        api_keys.c.active,
        api_keys.c.created_at,
        api_keys.c.revoked_at,
    ).order_by(api_keys.c.created_at)
    async with db.read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def revoke_key(db: Database, key_id: str) -> bool:
    async with db.write() as conn:
        result = await conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow(), active=False)
        )
    return result.rowcount == 1


async def set_key_active(db: Database, key_id: str, active: bool) -> bool:
    async with db.write() as conn:
        result = await conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(active=active)
        )
    return result.rowcount == 1


async def _account_of(conn: Connection, key_id: str) -> str | None:
    return await conn.scalar(sa.select(api_keys.c.account_id).where(api_keys.c.id == key_id))


async def set_limits(db: Database, key_id: str, *, rate: int | None, concurrency: int | None) -> bool:
    async with db.write() as conn:
        account_id = await _account_of(conn, key_id)
        if account_id is None:
            return False
        if rate is not None:
            await conn.execute(
                api_keys.update().where(api_keys.c.id == key_id).values(rate_limit_per_minute=rate)
            )
        if concurrency is not None:
            await conn.execute(
                accounts.update().where(accounts.c.id == account_id).values(max_concurrent_jobs=concurrency)
            )
    return True


async def grant_credits(db: Database, key_id: str, amount: int) -> int | None:
    """Credit the key's account (making it metered); returns the new balance."""
    async with db.write() as conn:
        account_id = await _account_of(conn, key_id)
        if account_id is None:
            return None
        await conn.execute(accounts.update().where(accounts.c.id == account_id).values(unlimited=False))
        await billing.grant(conn, account_id, amount, reason="granted from the CLI")
        return await billing.balance(conn, account_id)


async def credit_report(db: Database) -> list[dict[str, Any]]:
    ledger = (
        sa.select(credit_ledger.c.account_id, sa.func.sum(credit_ledger.c.amount).label("total"))
        .group_by(credit_ledger.c.account_id)
        .subquery()
    )
    query = (
        sa.select(
            accounts.c.id,
            accounts.c.name,
            accounts.c.unlimited,
            accounts.c.credits,
            sa.func.coalesce(ledger.c.total, 0).label("ledger_sum"),
        )
        .outerjoin(ledger, ledger.c.account_id == accounts.c.id)
        .order_by(accounts.c.created_at)
    )
    async with db.read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]
