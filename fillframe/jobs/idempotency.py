"""`Idempotency-Key`: a repeat of a submit returns the original job instead of a second one.

Keys are scoped to the account and kept `idempotency_ttl_hours`. The key is claimed first, in the
same transaction that creates the job, by one insert that only takes over an expired record:
concurrent duplicates meet on the primary key, exactly one job is created, and the others replay
it (a replay holds no credits and counts no rate).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from fillframe.db import Connection, UTCDateTime, idempotency_keys, jobs, upserts

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


def _claim(insert: Any) -> Any:
    stmt = insert(idempotency_keys)
    return stmt.on_conflict_do_update(
        index_elements=["account_id", "key"],
        set_={name: stmt.excluded[name] for name in ("request_hash", "job_id", "expires_at")},
        where=idempotency_keys.c.expires_at <= sa.bindparam("now", type_=UTCDateTime()),
    ).returning(idempotency_keys.c.job_id)


_CLAIM = upserts(_claim)


async def replay(
    conn: Connection, account_id: str, idem: IdempotencyKey, now: datetime
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


async def claim(
    conn: Connection,
    account_id: str,
    idem: IdempotencyKey,
    job_id: str,
    now: datetime,
    expires: datetime,
) -> bool:
    """Record the key for `job_id` in one statement, taking over an expired record of it.
    False when a live record holds the key (the caller then replays it)."""
    params = {
        "account_id": account_id,
        "key": idem.key,
        "request_hash": idem.request_hash,
        "job_id": job_id,
        "expires_at": expires,
        "now": now,
    }
    return (await conn.execute(_CLAIM[conn.dialect.name], params)).first() is not None
