"""The credit ledger: hold at submit, capture on success, refund on failure or cancel.

Credits belong to the team (table `accounts`), whichever of its keys submitted the job.
Every movement is a row in `credit_ledger`; `accounts.credits` is their running sum, changed in
the same transaction as the row, so a hold is one conditional UPDATE that can never go negative.
Unlimited teams are not metered: their jobs get no ledger rows (grants still do).
"""

from __future__ import annotations

import sqlalchemy as sa

from fillframe.clock import SYSTEM, Clock
from fillframe.db import Connection, UTCDateTime, accounts, credit_ledger


class InsufficientCredits(Exception):
    def __init__(self, required: int, available: int) -> None:
        super().__init__(f"Insufficient credits: {required} required, {available} available.")
        self.required = required
        self.available = available


# Built once: these run on every submit and every job's end.
_RECORD = credit_ledger.insert()
_ADD = (
    accounts.update()
    .where(accounts.c.id == sa.bindparam("b_account_id"))
    .values(credits=accounts.c.credits + sa.bindparam("b_amount"))
)
_TAKE = (
    accounts.update()
    .where(
        accounts.c.id == sa.bindparam("b_account_id"),
        accounts.c.unlimited.is_(False),
        accounts.c.credits >= sa.bindparam("b_cost"),
    )
    .values(credits=accounts.c.credits - sa.bindparam("b_cost"))
)


async def _move(
    conn: Connection,
    account_id: str,
    kind: str,
    amount: int,
    *,
    job_id: str | None = None,
    reason: str | None = None,
    balance_done: bool = False,
    clock: Clock = SYSTEM,
) -> None:
    """Write one ledger row and move `accounts.credits` by `amount` (unless `balance_done`: the
    caller already moved it, as a hold does in its conditional UPDATE)."""
    row = {"account_id": account_id, "job_id": job_id, "kind": kind, "amount": amount, "reason": reason}
    await conn.execute(_RECORD, {**row, "created_at": clock.now()})
    if amount and not balance_done:
        await conn.execute(_ADD, {"b_account_id": account_id, "b_amount": amount})


async def grant(
    conn: Connection, account_id: str, amount: int, *, reason: str, clock: Clock = SYSTEM
) -> None:
    if amount <= 0:
        raise ValueError("A grant must be a positive number of credits.")
    await _move(conn, account_id, "grant", amount, reason=reason, clock=clock)


async def deduct(conn: Connection, account_id: str, amount: int, *, reason: str) -> None:
    """Take `amount` from the team's balance (an operator's correction), never below zero."""
    if amount <= 0:
        raise ValueError("A deduction must be a positive number of credits.")
    taken = await conn.execute(
        accounts.update()
        .where(accounts.c.id == account_id, accounts.c.credits >= amount)
        .values(credits=accounts.c.credits - amount)
    )
    if taken.rowcount != 1:
        raise InsufficientCredits(amount, await balance(conn, account_id))
    await _move(conn, account_id, "deduct", -amount, reason=reason, balance_done=True)


async def balance(conn: Connection, account_id: str) -> int:
    value = await conn.scalar(sa.select(accounts.c.credits).where(accounts.c.id == account_id))
    return int(value or 0)


async def ledger_sum(conn: Connection, account_id: str) -> int:
    total = await conn.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(credit_ledger.c.amount), 0)).where(
            credit_ledger.c.account_id == account_id
        )
    )
    return int(total or 0)


async def hold(conn: Connection, account_id: str, job_id: str, cost: int, *, clock: Clock = SYSTEM) -> None:
    """Take `cost` from a metered account for `job_id`, or raise InsufficientCredits."""
    taken = await conn.execute(_TAKE, {"b_account_id": account_id, "b_cost": cost})
    if taken.rowcount == 1:
        await _move(conn, account_id, "hold", -cost, job_id=job_id, balance_done=True, clock=clock)
        return
    row = (
        await conn.execute(
            sa.select(accounts.c.unlimited, accounts.c.credits).where(accounts.c.id == account_id)
        )
    ).first()
    if row is not None and row.unlimited:
        return
    raise InsufficientCredits(cost, int(row.credits) if row else 0)


def _after_hold(kind: str) -> sa.Insert:
    """The ledger row that settles a job's hold, written from the hold row itself in one
    statement (nothing when the job had no hold: unmetered). A capture moves nothing (the hold
    already took the credits) and notes the amount; a refund gives the hold's amount back."""
    hold = credit_ledger.alias("hold")
    amount = sa.literal(0, sa.BigInteger) if kind == "capture" else -hold.c.amount
    reason = sa.cast(-hold.c.amount, sa.String) + " credits" if kind == "capture" else sa.null()
    rows = sa.select(
        hold.c.account_id,
        hold.c.job_id,
        sa.literal(kind),
        amount,
        reason,
        sa.bindparam("now", type_=UTCDateTime()),
    ).where(hold.c.job_id == sa.bindparam("job_id"), hold.c.kind == "hold")
    columns = ["account_id", "job_id", "kind", "amount", "reason", "created_at"]
    return (
        credit_ledger.insert()
        .from_select(columns, rows)
        .returning(credit_ledger.c.account_id, credit_ledger.c.amount)
    )


_CAPTURE = _after_hold("capture")
_REFUND = _after_hold("refund")


def settle_ended(ended: sa.CTE) -> list[sa.CTE]:
    """PostgreSQL: the same settlement as `capture` / `refund`, as CTEs to run inside the
    statement that ends the jobs in `ended` (a CTE with each job's `id` and new `status`):
    COMPLETED captures, anything else refunds, a job without a hold is left alone. It lets a job
    end in one statement, one round trip, with no BEGIN or COMMIT."""
    hold = credit_ledger.alias("hold")
    completed = ended.c.status == "COMPLETED"
    rows = (
        sa.select(
            hold.c.account_id,
            hold.c.job_id,
            sa.case((completed, "capture"), else_="refund"),
            sa.case((completed, sa.literal(0, sa.BigInteger)), else_=-hold.c.amount),
            sa.case((completed, sa.cast(-hold.c.amount, sa.String) + " credits"), else_=sa.null()),
            sa.bindparam("now", type_=UTCDateTime()),
        )
        .select_from(hold.join(ended, hold.c.job_id == ended.c.id))
        .where(hold.c.kind == "hold")
    )
    columns = ["account_id", "job_id", "kind", "amount", "reason", "created_at"]
    settled = (
        credit_ledger.insert()
        .from_select(columns, rows)
        .returning(credit_ledger.c.account_id, credit_ledger.c.amount)
        .cte("settled")
    )
    refunded = (
        accounts.update()
        .where(accounts.c.id == settled.c.account_id, settled.c.amount != 0)
        .values(credits=accounts.c.credits + settled.c.amount)
        .cte("refunded")
    )
    return [settled, refunded]


async def capture(conn: Connection, job_id: str, *, clock: Clock = SYSTEM) -> None:
    """Make a job's hold final (one statement; no-op for unmetered jobs)."""
    await conn.execute(_CAPTURE, {"job_id": job_id, "now": clock.now()})


async def refund(conn: Connection, job_id: str, *, clock: Clock = SYSTEM) -> None:
    """Give a job's hold back (no-op for unmetered jobs)."""
    row = (await conn.execute(_REFUND, {"job_id": job_id, "now": clock.now()})).first()
    if row is not None and row.amount:
        await conn.execute(_ADD, {"b_account_id": row.account_id, "b_amount": row.amount})
