"""The outbox in the database: written in the transaction that ends the job, and claimed by
many deliverers at once without a webhook going out twice. In-process, on a real database."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from fillframe.accounts import authenticate, create_key, revoke_key
from fillframe.db import Database, accounts, jobs, webhook_deliveries
from fillframe.jobs import queue, service
from fillframe.jobs.service import Outcome, StoredFile
from fillframe.settings import Settings
from fillframe.storage import BlobStore, Linker
from fillframe.webhooks import verify
from fillframe.webhooks.deliver import Deliverer
from tests.utils.poll import until_async
from tests.webhooks.helpers import edit_request
from tests.webhooks.receiver import Receiver

DAY = timedelta(days=1)
OUTBOX_DOWN = {
    "sqlite": [
        "CREATE TRIGGER outbox_down BEFORE INSERT ON webhook_deliveries "
        "BEGIN SELECT RAISE(ABORT, 'outbox is down'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION outbox_down() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION 'outbox is down'; END $$",
        "CREATE TRIGGER outbox_down BEFORE INSERT ON webhook_deliveries "
        "FOR EACH ROW EXECUTE FUNCTION outbox_down()",
    ],
}
OUTBOX_UP = {
    "sqlite": ["DROP TRIGGER outbox_down"],
    "postgresql": ["DROP TRIGGER outbox_down ON webhook_deliveries"],
}


async def execute(db: Database, statements: list[str]) -> None:
    async with db.write() as conn:
        for statement in statements:
            await conn.exec_driver_sql(statement)


async def snapshot(db: Database, job_id: str) -> tuple[str, str | None, int, int]:
    """(status, webhook_status, the account's credits, outbox rows) of one job."""
    async with db.read() as conn:
        job = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).mappings().one()
        credits = await conn.scalar(sa.select(accounts.c.credits).where(accounts.c.id == job["account_id"]))
        rows = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(webhook_deliveries)
            .where(webhook_deliveries.c.job_id == job_id)
        )
    return job["status"], job["webhook_status"], int(credits or 0), int(rows or 0)


def test_a_job_cannot_end_without_its_webhook(database_url: str, backend: str) -> None:
    """With the outbox insert failing, finishing fails as a whole: no status, no refund."""

    async def scenario() -> None:
        db = Database(database_url)
        try:
            api_key, _ = await create_key(db, "atomic", credits=9)
            caller = await authenticate(db, api_key)
            job_id = (
                await service.submit(
                    db, caller, edit_request("http://127.0.0.1:9/hook"), cost=9, max_attempts=3
                )
            ).job_id
            claimed = await queue.claim(db, "w1", 60)
            assert claimed is not None and claimed["id"] == job_id
            outcome = Outcome.failed("engine_error", "The engine broke.")
            await execute(db, OUTBOX_DOWN[backend])
            with pytest.raises(sa.exc.DBAPIError, match="outbox is down"):
                await service.finish(db, job_id, outcome, worker_id="w1", retention=DAY)
            assert await snapshot(db, job_id) == ("PROCESSING", None, 0, 0)
            await execute(db, OUTBOX_UP[backend])
            assert (await service.finish(db, job_id, outcome, worker_id="w1", retention=DAY)).ended
            assert await snapshot(db, job_id) == ("FAILED", "pending", 9, 1)
        finally:
            await db.close()

    asyncio.run(scenario())


def test_many_deliverers_send_each_webhook_once(database_url: str, tmp_path: Path) -> None:
    """Four deliverers (separate engines and pools, as separate processes would have), four
    loops each, race for 30 due webhooks of a key revoked after submitting."""
    count = 30

    async def scenario(rx: Receiver) -> str:
        db = Database(database_url)
        api_key, key_row = await create_key(db, "many")
        caller = await authenticate(db, api_key)
        job_ids = []
        for i in range(count):
            submitted = await service.submit(
                db, caller, edit_request(rx.url(f"/{i}")), cost=0, max_attempts=3
            )
            assert (await queue.claim(db, "w", 60) or {}).get("id") == submitted.job_id
            failed = Outcome.failed("engine_error", f"Job {i} broke.")
            assert (await service.finish(db, submitted.job_id, failed, worker_id="w", retention=DAY)).ended
            job_ids.append(submitted.job_id)
        assert await revoke_key(db, key_row["id"])  # a revoked key still signs its jobs' webhooks
        settings = Settings(
            data_dir=tmp_path, database_url=database_url, allow_private_urls=True, poll_seconds=0.05
        )
        pools = [Database(database_url) for _ in range(4)]
        stop = asyncio.Event()
        loops = [asyncio.create_task(Deliverer(pool, settings).run(stop)) for pool in pools]

        async def all_delivered() -> bool:
            return [(await snapshot(db, j))[1] for j in job_ids] == ["delivered"] * len(job_ids)

        await until_async(all_delivered, "every webhook delivered", 60, every=0.1)
        stop.set()
        await asyncio.gather(*loops)
        async with db.read() as conn:
            attempts = (await conn.execute(sa.select(webhook_deliveries.c.attempts))).scalars().all()
        assert attempts == [1] * count
        for pool in [db, *pools]:
            await pool.close()
        return api_key

    with Receiver() as rx:
        api_key = asyncio.run(scenario(rx))
        hits = rx.hits
    assert len(hits) == count
    assert len({h.headers["webhook-id"] for h in hits}) == count
    assert sorted(h.path for h in hits) == sorted(f"/{i}" for i in range(count))
    assert {verify(api_key, h.body, h.headers)["errorCode"] for h in hits} == {"engine_error"}


@pytest.mark.parametrize("public_url", [None, "https://frames.example.test"])
def test_completed_links_use_public_url_else_the_submit_host(
    database_url: str, tmp_path: Path, public_url: str | None
) -> None:
    """Workers know no request: a job's links use PUBLIC_URL, else the host it was submitted to."""
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    store = BlobStore(settings)
    secret = settings.signing_secret()

    async def scenario() -> tuple[dict, list[str]]:
        db = Database(database_url)
        try:
            api_key, _ = await create_key(db, "links")
            caller = await authenticate(db, api_key)
            request = edit_request("https://hooks.example.test/h")
            submitted = await service.submit(
                db, caller, request, cost=0, max_attempts=3, base_url="http://api.internal:8000"
            )
            await queue.claim(db, "w", 60)
            stored = StoredFile(
                "f1e2d3c4-0000-4000-8000-000000000001", "outputs/f1.jpg", "jpg", "image/jpeg", 9
            )
            worker_linker = Linker(store, secret, public_url or "")
            done = Outcome.completed([stored])
            finished = await service.finish(
                db, submitted.job_id, done, worker_id="w", retention=DAY, linker=worker_linker
            )
            assert finished.ended
            async with db.read() as conn:
                job = (
                    (await conn.execute(sa.select(jobs).where(jobs.c.id == submitted.job_id)))
                    .mappings()
                    .one()
                )
                body = await conn.scalar(sa.select(webhook_deliveries.c.payload))
            api_view = await Linker(store, secret, public_url or "http://api.internal:8000").result(dict(job))
            return json.loads(body), api_view["images"] if api_view else []
        finally:
            await db.close()

    payload, api_images = asyncio.run(scenario())
    [image] = payload["result"]["images"]
    assert image == api_images[0]
    assert image.startswith((public_url or "http://api.internal:8000") + "/v2/files/")
