"""Leases, retention, upload and idempotency TTLs on fake time, on a real database and blob folder: nothing
here sleeps, and every deadline is met to the second."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from fillframe import uploads
from fillframe.clock import FakeClock
from fillframe.contract import EditRequest
from fillframe.db import Database, credit_ledger, jobs
from fillframe.jobs import queue, retention, service
from fillframe.jobs.idempotency import IdempotencyKey, KeyReused
from fillframe.jobs.service import Outcome, StoredFile
from fillframe.settings import Settings
from fillframe.storage import BlobStore, output_key
from tests.jobs.tenants import IMAGE, MASK, opened, request, submit, tenant
from tests.utils.images import encode
from tests.utils.jobs import edit_body

LEASE = 30.0
DAY = timedelta(days=1)


async def _status(db: Database, job_id: str) -> tuple[str, int]:
    async with db.read() as conn:
        row = (await conn.execute(sa.select(jobs.c.status, jobs.c.attempts).where(jobs.c.id == job_id))).one()
    return row.status, row.attempts


def test_a_lease_runs_out_on_time_and_a_heartbeat_moves_it(database_url: str) -> None:
    asyncio.run(_lease(database_url))


async def _lease(url: str) -> None:
    clock = FakeClock()
    async with opened(url) as db:
        caller = await tenant(db, "t", credits=9)
        (job_id,) = await submit(db, caller, clock=clock, max_attempts=2)
        assert (await queue.claim(db, "w1", LEASE, clock=clock))["id"] == job_id
        clock.advance(LEASE - 1)
        assert await queue.heartbeat(db, job_id, "w1", LEASE, 40, clock=clock) is False
        clock.advance(LEASE - 1)  # 58 s after the claim, 29 s after the heartbeat
        assert await queue.requeue_expired(db, clock=clock) == []
        assert await _status(db, job_id) == ("PROCESSING", 1)
        clock.advance(2)  # w1 is gone: its lease ran out
        assert await queue.requeue_expired(db, clock=clock) == []
        assert await _status(db, job_id) == ("QUEUED", 1)
        assert await queue.heartbeat(db, job_id, "w1", LEASE, 50, clock=clock) is None  # lost
        assert (await queue.claim(db, "w2", LEASE, clock=clock))["id"] == job_id
        clock.advance(LEASE + 1)  # w2 vanishes too, on the last attempt
        assert await queue.requeue_expired(db, clock=clock) == [job_id]
        assert await service.finish_abandoned(db, job_id, DAY, clock=clock)
        assert await _status(db, job_id) == ("FAILED", 2)
        ledger = await _ledger(db, job_id)
        assert [(k, a) for k, a, _ in ledger] == [("hold", -9), ("refund", 9)]
        assert ledger[1].created_at == clock.now()  # the ledger is written on the same clock
        for _ in range(3):  # later sweeps find nothing to end, and refund nothing again
            clock.advance(LEASE)
            assert await queue.requeue_expired(db, clock=clock) == []
            assert not await service.finish_abandoned(db, job_id, DAY, clock=clock)
        assert await _ledger(db, job_id) == ledger
        assert await _status(db, job_id) == ("FAILED", 2)


async def _ledger(db: Database, job_id: str) -> list[sa.Row[tuple[str, int, object]]]:
    async with db.read() as conn:
        return list(
            (
                await conn.execute(
                    sa.select(credit_ledger.c.kind, credit_ledger.c.amount, credit_ledger.c.created_at)
                    .where(credit_ledger.c.job_id == job_id)
                    .order_by(credit_ledger.c.id)
                )
            ).all()
        )


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> BlobStore:
    return BlobStore(Settings(data_dir=tmp_path / "blobs", database_url=database_url))


def test_outputs_expire_after_the_retention_period_to_the_second(database_url: str, store: BlobStore) -> None:
    asyncio.run(_retention(database_url, store))


async def _retention(url: str, store: BlobStore) -> None:
    clock = FakeClock()
    async with opened(url) as db:
        caller = await tenant(db, "t")
        (job_id,) = await submit(db, caller, clock=clock)
        await queue.claim(db, "w", LEASE, clock=clock)
        file_id = str(uuid.uuid4())
        key = output_key(file_id, "png")
        await store.put(key, b"png bytes")
        stored = StoredFile(file_id, key, "png", "image/png", 9)
        outcome = Outcome.completed([stored])
        assert (await service.finish(db, job_id, outcome, worker_id="w", retention=DAY, clock=clock)).ended
        clock.advance(DAY.total_seconds() - 1)
        assert await retention.purge(db, store, clock=clock) == 0
        assert await store.get(key) == b"png bytes"
        clock.advance(1)
        assert await retention.purge(db, store, clock=clock) == 1
        async with db.read() as conn:
            assert await conn.scalar(sa.select(jobs.c.expired).where(jobs.c.id == job_id)) is True
        with pytest.raises(FileNotFoundError):
            await store.get(key)


def test_an_upload_lives_exactly_its_ttl(database_url: str, store: BlobStore) -> None:
    asyncio.run(_upload(database_url, store))


async def _upload(url: str, store: BlobStore) -> None:
    clock = FakeClock()
    async with opened(url) as db:
        caller = await tenant(db, "t")
        png = encode(np.zeros((4, 4, 3), np.uint8), "PNG")
        row = await uploads.save(db, store, caller.account_id, png, timedelta(hours=1), clock=clock)
        clock.advance(3599)
        assert (await uploads.find(db, caller.account_id, row["id"], clock=clock)) is not None
        clock.advance(1)
        assert await uploads.find(db, caller.account_id, row["id"], clock=clock) is None


def test_an_idempotency_key_lives_exactly_its_ttl(database_url: str) -> None:
    asyncio.run(_idempotency(database_url))


async def _idempotency(url: str) -> None:
    clock = FakeClock()
    ttl = timedelta(hours=1)
    async with opened(url) as db:
        caller = await tenant(db, "t")
        first_body, other_body = request(), EditRequest.model_validate(edit_body(IMAGE, MASK, prompt="other"))

        async def submit_with(req: EditRequest) -> service.Submitted:
            idem = IdempotencyKey.of("nightly-run", req.model_dump_json())
            return await service.submit(
                db, caller, req, cost=0, max_attempts=1, idem=idem, idem_ttl=ttl, clock=clock
            )

        first = await submit_with(first_body)
        clock.advance(ttl.total_seconds() - 1)
        replayed = await submit_with(first_body)
        assert (replayed.job_id, replayed.replayed) == (first.job_id, True)
        with pytest.raises(KeyReused):
            await submit_with(other_body)
        clock.advance(1)  # the key is free again: a different body starts a new job
        again = await submit_with(other_body)
        assert again.job_id != first.job_id and not again.replayed
