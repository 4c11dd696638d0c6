"""The credit ledger: hold at submit, capture on success, refund on failure or cancel.

Every movement is a row in `credit_ledger`; `accounts.credits` is their running sum, changed in
the same transaction as the row, so a hold is one conditional UPDATE that can never go negative.
Unlimited accounts are not metered: they get no ledger rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fillframe.db import accounts, credit_ledger, utcnow


class InsufficientCredits(Exception):
    def __init__(self, required: int, available: int) -> None:
        super().__init__(f"Insufficient credits: {required} required, {available} available.")
        self.required = required
        self.available = available


async def _move(
    conn: AsyncConnection,
    account_id: str,
    kind: str,
    amount: int,
    *,
    job_id: str | None = None,
    reason: str | None = None,
    balance_done: bool = False,
) -> None:
    """Write one ledger row and move `accounts.credits` by `amount` (unless `balance_done`: the
    caller already moved it, as a hold does in its conditional UPDATE)."""
    await conn.execute(
        credit_ledger.insert().values(
            account_id=account_id,
            job_id=job_id,
            kind=kind,
            amount=amount,
            reason=reason,
            created_at=utcnow(),
        )
    )
    if amount and not balance_done:
        await conn.execute(
            accounts.update().where(accounts.c.id == account_id).values(credits=accounts.c.credits + amount)
        )


async def grant(conn: AsyncConnection, account_id: str, amount: int, *, reason: str) -> None:
    if amount <= 0:
        raise ValueError("A grant must be a positive number of credits.")
    await _move(conn, account_id, "grant", amount, reason=reason)


async def balance(conn: AsyncConnection, account_id: str) -> int:
    value = await conn.scalar(sa.select(accounts.c.credits).where(accounts.c.id == account_id))
    return int(value or 0)


async def ledger_sum(conn: AsyncConnection, account_id: str) -> int:
    total = await conn.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(credit_ledger.c.amount), 0)).where(
            credit_ledger.c.account_id == account_id
        )
    )
    return int(total)


async def hold(conn: AsyncConnection, account_id: str, job_id: str, cost: int) -> None:
    """Take `cost` from a metered account for `job_id`, or raise InsufficientCredits."""
    taken = await conn.execute(
        accounts.update()
        .where(
            accounts.c.id == account_id,
            accounts.c.unlimited.is_(False),
            accounts.c.credits >= cost,
        )
        .values(credits=accounts.c.credits - cost)
    )
    if taken.rowcount == 1:
        await _move(conn, account_id, "hold", -cost, job_id=job_id, balance_done=True)
        return
    row = (
        await conn.execute(
            sa.select(accounts.c.unlimited, accounts.c.credits).where(accounts.c.id == account_id)
        )
    ).first()
    if row is not None and row.unlimited:
        return
    raise InsufficientCredits(cost, int(row.credits) if row else 0)


async def _held(conn: AsyncConnection, job_id: str) -> tuple[str, int] | None:
    row = (
        await conn.execute(
            sa.select(credit_ledger.c.account_id, credit_ledger.c.amount).where(
                credit_ledger.c.job_id == job_id, credit_ledger.c.kind == "hold"
            )
        )
    ).first()
    return (row.account_id, -int(row.amount)) if row else None


async def capture(conn: AsyncConnection, job_id: str) -> int:
    """Make a job's hold final. Returns the credits captured (0 for unmetered jobs)."""
    held = await _held(conn, job_id)
    if held is None:
        return 0
    await _move(conn, held[0], "capture", 0, job_id=job_id, reason=f"{held[1]} credits")
    return held[1]


async def refund(conn: AsyncConnection, job_id: str) -> int:
    """Give a job's hold back. Returns the credits refunded (0 for unmetered jobs)."""
    held = await _held(conn, job_id)
    if held is None:
        return 0
    await _move(conn, held[0], "refund", held[1], job_id=job_id)
    return held[1]
