"""Ending a job and claiming the worker's next one in the same statement (PostgreSQL), in-process
on a real database: the next job is claimed under a lease, the concurrency limit still holds, a
refund or a fenced-out finish is never combined wrongly."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from fillframe.accounts import authenticate, create_key, set_limits
from fillframe.contract import EditRequest
from fillframe.db import Database, accounts, credit_ledger, files, jobs
from fillframe.engines.base import CancelledFn, FillJob, FillOutput, ProgressFn
from fillframe.jobs import queue, service
from fillframe.jobs.service import Outcome, StoredFile
from fillframe.jobs.worker import Worker
from fillframe.settings import Settings
from fillframe.storage import BlobStore
from tests.utils.engines import NoopEngine
from tests.utils.jobs import data_uri, edit_body

IMAGE = data_uri(np.full((16, 16, 3), 90, np.uint8))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), 4))
DAY = timedelta(days=1)


def stored(job_id: str) -> StoredFile:
    """An output named after its job (the job id with its first letter swapped)."""
    return StoredFile(_file_id(job_id), f"outputs/{_file_id(job_id)}.png", "png", "image/png", 10)


def _file_id(job_id: str) -> str:
    return "f" + job_id[1:]


async def _setup(url: str, jobs_count: int, limit: int | None = None) -> tuple[Database, list[str]]:
    db = Database(url)
    key, row = await create_key(db, "t", credits=100)
    if limit is not None:
        await set_limits(db, row["id"], rate=None, concurrency=limit)
    caller = await authenticate(db, key)
    req = EditRequest.model_validate(edit_body(IMAGE, MASK))
    ids = [(await service.submit(db, caller, req, cost=9, max_attempts=3)).job_id for _ in range(jobs_count)]
    return db, ids


async def _status(db: Database, job_id: str) -> tuple[str, str | None, int]:
    async with db.read() as conn:
        row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).mappings().one()
    return row["status"], row["worker_id"], row["attempts"]


def test_a_completed_job_ends_and_the_next_is_claimed_at_once(database_url: str, backend: str) -> None:
    asyncio.run(_completed_then_next(database_url, backend))


async def _completed_then_next(url: str, backend: str) -> None:
    db, (first, second) = await _setup(url, 2)
    try:
        claimed = await queue.claim(db, "w", 60)
        assert claimed is not None and claimed["id"] == first
        finished = await service.finish(
            db, first, Outcome.completed([stored(first)]), worker_id="w", retention=DAY,
            has_webhook=False, claim_lease=60,
        )  # fmt: skip
        assert finished.ended
        assert await _status(db, first) == ("COMPLETED", None, 1)
        if backend == "sqlite":  # one statement per step there: the worker claims as usual
            assert finished.next_job is None
            return
        assert finished.next_job is not None and finished.next_job["id"] == second
        assert finished.next_job["status"] == "PROCESSING" and finished.next_job["worker_id"] == "w"
        assert finished.next_job["request"]["fluxFillParams"]["image"] == IMAGE  # typed like a claim
        assert await _status(db, second) == ("PROCESSING", "w", 1)
        async with db.read() as conn:
            kinds = (
                await conn.execute(sa.select(credit_ledger.c.kind).where(credit_ledger.c.job_id == first))
            ).scalars()
            assert sorted(kinds) == ["capture", "hold"]
            assert await conn.scalar(sa.select(files.c.job_id).where(files.c.id == _file_id(first))) == first
    finally:
        await db.close()


def test_the_combined_claim_respects_the_concurrency_limit(database_url: str) -> None:
    asyncio.run(_limit_holds(database_url))


async def _processing(db: Database) -> int:
    async with db.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).where(jobs.c.status == "PROCESSING")))


async def _limit_holds(url: str) -> None:
    db, ids = await _setup(url, 4, limit=2)
    try:
        assert (await queue.claim(db, "w", 60))["id"] == ids[0]
        assert (await queue.claim(db, "x", 60))["id"] == ids[1]
        assert await queue.claim(db, "y", 60) is None  # the limit of 2 is reached
        finished = await service.finish(
            db, ids[0], Outcome.completed([stored(ids[0])]), worker_id="w", retention=DAY,
            has_webhook=False, claim_lease=60,
        )  # fmt: skip
        assert finished.ended
        # The claim in that statement may or may not count the ending job (PostgreSQL's order);
        # either way the account never has more than 2 running, and the queue order is kept.
        assert await _processing(db) <= 2
        if finished.next_job is None:
            assert (await queue.claim(db, "w", 60))["id"] == ids[2]
        else:
            assert finished.next_job["id"] == ids[2]
        assert await _processing(db) == 2
        assert await queue.claim(db, "y", 60) is None
    finally:
        await db.close()


def test_a_refund_is_not_combined_with_a_claim(database_url: str) -> None:
    asyncio.run(_refund_alone(database_url))


async def _refund_alone(url: str) -> None:
    db, (first, second) = await _setup(url, 2)
    try:
        await queue.claim(db, "w", 60)
        failed = Outcome.failed("engine_error", "The engine failed.")
        finished = await service.finish(
            db, first, failed, worker_id="w", retention=DAY, has_webhook=False, claim_lease=60
        )
        assert finished.ended and finished.next_job is None
        assert await _status(db, second) == ("QUEUED", None, 0)
        async with db.read() as conn:
            assert await conn.scalar(sa.select(accounts.c.credits)) == 100 - 9  # the second's hold
    finally:
        await db.close()


def test_a_fenced_out_finish_changes_nothing_but_may_still_claim(database_url: str, backend: str) -> None:
    asyncio.run(_fenced(database_url, backend))


async def _fenced(url: str, backend: str) -> None:
    db, (first, second) = await _setup(url, 2)
    try:
        await queue.claim(db, "someone-else", 60)
        finished = await service.finish(
            db, first, Outcome.completed([stored(first)]), worker_id="w", retention=DAY,
            has_webhook=False, claim_lease=60,
        )  # fmt: skip
        assert not finished.ended
        assert await _status(db, first) == ("PROCESSING", "someone-else", 1)
        if backend == "postgresql":
            assert finished.next_job is not None and finished.next_job["id"] == second
            assert await _status(db, second) == ("PROCESSING", "w", 1)
    finally:
        await db.close()


def test_a_worker_told_to_stop_hands_back_the_job_it_claimed_in_passing(
    database_url: str, tmp_path: Path
) -> None:
    asyncio.run(_stop_releases(database_url, tmp_path))


async def _stop_releases(url: str, tmp_path: Path) -> None:
    db, (first, second) = await _setup(url, 2)
    settings = Settings(data_dir=tmp_path, database_url=url, webhook_concurrency=0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    class StopsMidJob(NoopEngine):
        def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
            loop.call_soon_threadsafe(stop.set)  # SIGTERM arrives while the first job runs
            return super().fill(job, progress, cancelled)

    try:
        worker = Worker(settings, db, BlobStore(settings.storage), StopsMidJob())
        await asyncio.wait_for(worker._loop(stop), 30)
        assert await _status(db, first) == ("COMPLETED", None, 1)
        # Claimed with the first one's end (PostgreSQL) or never claimed (SQLite): queued either way,
        # with no attempt spent, for another worker to take at once.
        assert await _status(db, second) == ("QUEUED", None, 0)
    finally:
        await db.close()
