"""Retention: files past their expiry are deleted from storage, their rows marked deleted, and the
jobs whose outputs they were marked `expired` (their links then answer 410). Housekeeping rows
(idempotency keys, rate windows) past their use are removed too. Safe to run from every worker."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from fillframe.clock import SYSTEM, Clock
from fillframe.db import Database, files, idempotency_keys, jobs, rate_windows
from fillframe.jobs import states
from fillframe.limits import WINDOW_SECONDS
from fillframe.storage import BlobStore

log = logging.getLogger(__name__)

BATCH = 500

# Only an ended job's outputs expire (a job still running has none on record yet).
_EXPIRE = states.update(states.EXPIRE, jobs.c.id.in_(sa.bindparam("job_ids", expanding=True)), expired=True)


async def purge(db: Database, store: BlobStore, *, clock: Clock = SYSTEM) -> int:
    """Delete one batch of expired files; returns how many. Call it again until it returns 0."""
    now = clock.now()
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(files.c.id, files.c.storage_key, files.c.job_id, files.c.kind)
                .where(files.c.deleted.is_(False), files.c.expires_at <= now)
                .limit(BATCH)
            )
        ).all()
    for row in rows:
        await store.delete(row.storage_key)
    async with db.write() as conn:
        if rows:
            await conn.execute(
                files.update().where(files.c.id.in_([r.id for r in rows])).values(deleted=True)
            )
            outputs = {r.job_id for r in rows if r.kind == "output" and r.job_id}
            if outputs:
                await conn.execute(_EXPIRE, {"job_ids": sorted(outputs)})
        await conn.execute(idempotency_keys.delete().where(idempotency_keys.c.expires_at <= now))
        stale_window = int(now.timestamp() // WINDOW_SECONDS) - 1
        await conn.execute(rate_windows.delete().where(rate_windows.c.window_start < stale_window))
    if rows:
        log.info("retention: deleted %d expired files", len(rows))
    return len(rows)
