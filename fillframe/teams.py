"""Teams and their users: the service functions the admin API and the CLI share.

A team (table `accounts`) holds the credits, plan, the operator's `customerId`, limits and the
unlimited flag; users belong to one team with an email and a role. Every change is audited in
the transaction that makes it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import sqlalchemy as sa

from fillframe import audit, billing
from fillframe.db import Connection, Database, accounts, api_keys, credit_ledger, users, utcnow

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
# The columns an operator may change (API name -> column).
TEAM_FIELDS = {
    "name": "name",
    "plan": "plan",
    "customerId": "customer_id",
    "unlimited": "unlimited",
    "maxConcurrentJobs": "max_concurrent_jobs",
    "rateLimitPerMinute": "rate_limit_per_minute",
}


class NotFound(LookupError):
    """No such team, user or key (the sentence says which)."""


class Conflict(Exception):
    """The change would break a rule of the team (the sentence says which)."""


def placeholder_email(team_id: str) -> str:
    """For an owner created without an address: `.invalid` can never be someone's (RFC 2606)."""
    return f"owner@{team_id}.invalid"


def check_email(email: str) -> str:
    email = email.strip()
    if len(email) > 320 or not _EMAIL.match(email):
        raise ValueError(f"{email[:80]!r} is not an email address.")
    return email


async def _insert_user(conn: Connection, team_id: str, email: str, role: str) -> dict[str, Any]:
    row = {
        "id": str(uuid.uuid4()),
        "account_id": team_id,
        "email": email,
        "role": role,
        "created_at": utcnow(),
    }
    await conn.execute(users.insert().values(**row))
    return row


async def create_team(
    db: Database,
    *,
    name: str,
    owner_email: str | None = None,
    plan: str = "self-hosted",
    customer_id: str | None = None,
    unlimited: bool = False,
    credits: int = 0,
    max_concurrent_jobs: int = 4,
    rate: int | None = None,
    actor: str,
) -> dict[str, Any]:
    """A team with its OWNER user (and a first grant when `credits` > 0). Returns the team's row
    plus `ownerId`."""
    email = check_email(owner_email) if owner_email else None
    team_id = str(uuid.uuid4())
    row = {
        "id": team_id,
        "name": name,
        "unlimited": unlimited,
        "credits": 0,
        "plan": plan,
        "customer_id": customer_id,
        "max_concurrent_jobs": max_concurrent_jobs,
        "rate_limit_per_minute": rate,
        "created_at": utcnow(),
    }
    async with db.write() as conn:
        await conn.execute(accounts.insert().values(**row))
        owner = await _insert_user(conn, team_id, email or placeholder_email(team_id), "OWNER")
        await audit.record(conn, actor, "team.create", team_id, team_id, {"name": name, "plan": plan})
        if credits > 0:
            await billing.grant(conn, team_id, credits, reason="initial grant")
            await audit.record(conn, actor, "credits.grant", team_id, team_id, {"amount": credits})
            row["credits"] = credits
    return {**row, "ownerId": owner["id"]}


async def _team_row(conn: Connection, team_id: str) -> dict[str, Any]:
    row = (await conn.execute(sa.select(accounts).where(accounts.c.id == team_id))).mappings().first()
    if row is None:
        raise NotFound(f"No team with id {team_id[:64]!r}.")
    return dict(row)


async def get_team(db: Database, team_id: str) -> dict[str, Any]:
    async with db.read() as conn:
        return await _team_row(conn, team_id)


async def list_teams(
    db: Database, *, customer_id: str | None = None, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """Oldest first; filtered by the operator's `customerId` when given."""
    query = sa.select(accounts).order_by(accounts.c.created_at, accounts.c.id).limit(limit).offset(offset)
    if customer_id is not None:
        query = query.where(accounts.c.customer_id == customer_id)
    async with db.read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def update_team(db: Database, team_id: str, values: dict[str, Any], *, actor: str) -> dict[str, Any]:
    """Change plan, customerId, limits, name or the unlimited flag (`values` by column name)."""
    async with db.write() as conn:
        await _team_row(conn, team_id)
        if values:
            await conn.execute(accounts.update().where(accounts.c.id == team_id).values(**values))
            await audit.record(conn, actor, "team.update", team_id, team_id, values)
        return await _team_row(conn, team_id)


async def active_user(conn: Connection, team_id: str, user_id: str | None) -> dict[str, Any]:
    """The team's user `user_id` (not removed), or its first OWNER when `user_id` is None."""
    query = sa.select(users).where(users.c.account_id == team_id, users.c.removed_at.is_(None))
    if user_id is None:
        query = query.where(users.c.role == "OWNER").order_by(users.c.created_at).limit(1)
    else:
        query = query.where(users.c.id == user_id)
    row = (await conn.execute(query)).mappings().first()
    if row is None:
        await _team_row(conn, team_id)  # says "no team" when that is the problem
        raise NotFound(
            f"No user {user_id!r} in team {team_id}." if user_id else f"Team {team_id} has no owner."
        )
    return dict(row)


async def list_users(db: Database, team_id: str) -> list[dict[str, Any]]:
    query = (
        sa.select(users)
        .where(users.c.account_id == team_id, users.c.removed_at.is_(None))
        .order_by(users.c.created_at)
    )
    async with db.read() as conn:
        await _team_row(conn, team_id)
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def add_user(db: Database, team_id: str, email: str, role: str, *, actor: str) -> dict[str, Any]:
    email = check_email(email)
    async with db.write() as conn:
        await _team_row(conn, team_id)
        taken = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(users)
            .where(users.c.account_id == team_id, users.c.removed_at.is_(None), users.c.email == email)
        )
        if taken:
            raise Conflict(f"{email} is already a member of this team.")
        row = await _insert_user(conn, team_id, email, role)
        await audit.record(conn, actor, "user.add", team_id, row["id"], {"email": email, "role": role})
    return row


async def _owners(conn: Connection, team_id: str) -> int:
    count = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(users)
        .where(users.c.account_id == team_id, users.c.removed_at.is_(None), users.c.role == "OWNER")
    )
    return int(count or 0)


async def set_role(db: Database, team_id: str, user_id: str, role: str, *, actor: str) -> dict[str, Any]:
    async with db.write() as conn:
        user = await active_user(conn, team_id, user_id)
        if user["role"] == "OWNER" and role != "OWNER" and await _owners(conn, team_id) == 1:
            raise Conflict("A team keeps at least one OWNER: make someone else OWNER first.")
        await conn.execute(users.update().where(users.c.id == user_id).values(role=role))
        await audit.record(conn, actor, "user.role", team_id, user_id, {"from": user["role"], "to": role})
    return {**user, "role": role}


async def remove_user(db: Database, team_id: str, user_id: str, *, actor: str) -> int:
    """Remove a user and revoke their keys at once; returns how many keys were revoked. Their
    jobs stay the team's."""
    now = utcnow()
    async with db.write() as conn:
        user = await active_user(conn, team_id, user_id)
        if user["role"] == "OWNER" and await _owners(conn, team_id) == 1:
            raise Conflict("A team keeps at least one OWNER: make someone else OWNER first.")
        await conn.execute(users.update().where(users.c.id == user_id).values(removed_at=now))
        revoked = await conn.execute(
            api_keys.update()
            .where(api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now, active=False)
        )
        await audit.record(conn, actor, "user.remove", team_id, user_id, {"keysRevoked": revoked.rowcount})
    return revoked.rowcount


async def adjust_credits(db: Database, team_id: str, amount: int, reason: str, *, actor: str) -> int:
    """Grant (amount > 0) or deduct (amount < 0) credits with a reason: one ledger row. A
    deduction never takes the balance below zero (billing.InsufficientCredits). Returns the
    new balance. The unlimited flag is left as it is."""
    if amount == 0:
        raise ValueError("amount must not be 0.")
    async with db.write() as conn:
        await _team_row(conn, team_id)
        if amount > 0:
            await billing.grant(conn, team_id, amount, reason=reason)
        else:
            await billing.deduct(conn, team_id, -amount, reason=reason)
        action = "credits.grant" if amount > 0 else "credits.deduct"
        await audit.record(conn, actor, action, team_id, team_id, {"amount": amount, "reason": reason})
        return await billing.balance(conn, team_id)


async def credit_report(db: Database) -> list[dict[str, Any]]:
    """Each team's balance beside the sum of its ledger rows (they must be equal)."""
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
