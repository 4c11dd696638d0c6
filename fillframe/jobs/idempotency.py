"""`Idempotency-Key`: a repeat of a submit returns the original job instead of a second one.

Keys are scoped to the account and kept `idempotency_ttl_hours`. The key row is inserted in the
same transaction as the job, so concurrent duplicates race on the primary key and exactly one
job is created; the losers read the winner's row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fillframe.db import idempotency_keys, jobs

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class IdempotencyKey:
    key: str
    request_hash: str

    @classmethod
    def of(cls, key: str, canonical_body: str) -> IdempotencyKey:
        return cls(key, hashlib.sha256(canonical_body.encode()).hexdigest())


class KeyReused(Exception):
    """The key was used before with a different body."""


async def replay(
    conn: AsyncConnection, account_id: str, idem: IdempotencyKey, now: datetime
) -> dict[str, str] | None:
    """The original submit's answer with the job's current status, or None if the key is new."""
    row = (
        await conn.execute(
            sa.select(idempotency_keys.c.request_hash, jobs.c.id, jobs.c.status)
            .join(jobs, jobs.c.id == idempotency_keys.c.job_id)
            .where(
                idempotency_keys.c.account_id == account_id,
                idempotency_keys.c.key == idem.key,
                idempotency_keys.c.expires_at > now,
            )
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != idem.request_hash:
        raise KeyReused(
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new request."
        )
    return {"jobId": row.id, "status": row.status}


async def remember(
    conn: AsyncConnection,
    account_id: str,
    idem: IdempotencyKey,
    job_id: str,
    now: datetime,
    expires: datetime,
) -> None:
    """Record the key for `job_id` (an expired record of the same key is replaced)."""
    await conn.execute(
        idempotency_keys.delete().where(
            idempotency_keys.c.account_id == account_id,
            idempotency_keys.c.key == idem.key,
            idempotency_keys.c.expires_at <= now,
        )
    )
    await conn.execute(
        idempotency_keys.insert().values(
            account_id=account_id,
            key=idem.key,
            request_hash=idem.request_hash,
            job_id=job_id,
            expires_at=expires,
        )
    )
