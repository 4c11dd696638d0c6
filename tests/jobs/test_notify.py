"""PostgreSQL announces a job's end (NOTIFY) only when a request waits on it: every NOTIFY wakes
every listening backend of the database, so announcing each job woke each worker's LISTEN
connection once per job."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import asyncpg
import numpy as np
import pytest

from fillframe.accounts import authenticate, create_key
from fillframe.contract import EditRequest
from fillframe.db import Database, plain_url
from fillframe.jobs import queue, service
from fillframe.jobs.service import Outcome
from fillframe.migrations import upgrade
from tests.utils.backends import create_pg_database, drop_pg_database
from tests.utils.jobs import data_uri, edit_body
from tests.utils.poll import until_async

IMAGE = data_uri(np.full((16, 16, 3), 90, np.uint8))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), 4))


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    upgrade(url)
    yield url
    drop_pg_database(url)


def test_only_waited_jobs_announce_their_end(pg_url: str) -> None:
    asyncio.run(_announcements(pg_url))


async def _announcements(url: str) -> None:
    db = Database(url)
    heard: list[str] = []
    listener = await asyncpg.connect(plain_url(db.url))
    await listener.add_listener(queue.DONE_CHANNEL, lambda _c, _p, _ch, job_id: heard.append(job_id))
    try:
        key, _ = await create_key(db, "t")
        caller = await authenticate(db, key)
        req = EditRequest.model_validate(edit_body(IMAGE, MASK))
        waited = []
        # The one-statement finish (no webhook) and the one inside a transaction (webhook).
        for has_webhook in (False, True):
            for notify_done in (True, False):
                submitted = await service.submit(
                    db, caller, req, cost=0, max_attempts=1, notify_done=notify_done
                )
                if notify_done:
                    waited.append(submitted.job_id)
                claimed = await queue.claim(db, "w", 60)
                assert claimed is not None and claimed["id"] == submitted.job_id
                ended = await service.finish(
                    db,
                    submitted.job_id,
                    Outcome.failed("engine_error", "No engine here."),
                    worker_id="w",
                    retention=timedelta(days=1),
                    has_webhook=has_webhook,
                )
                assert ended.ended
        # A marker sent after every finish has committed: PostgreSQL delivers notifications in
        # commit order, so once it is heard, nothing from the jobs above can still arrive.
        sender = await asyncpg.connect(plain_url(db.url))
        try:
            await sender.execute("SELECT pg_notify($1, 'marker')", queue.DONE_CHANNEL)
        finally:
            await sender.close()
        await until_async(lambda: _heard(heard, "marker"), "the marker heard", timeout=10)
    finally:
        await listener.close()
        await db.close()
    assert heard == [*waited, "marker"]


async def _heard(heard: list[str], payload: str) -> bool:
    return payload in heard
