"""Tenants for in-process queue tests: an account with a key on a real database, and jobs
submitted through the service as the API would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np

from fillframe.accounts import Caller, authenticate, create_key, set_limits
from fillframe.clock import SYSTEM, Clock
from fillframe.contract import EditRequest
from fillframe.db import Database
from fillframe.jobs import service
from tests.utils.jobs import data_uri, edit_body

IMAGE = data_uri(np.full((16, 16, 3), 90, np.uint8))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), 4))
COST = 9


async def tenant(
    db: Database, name: str, *, credits: int | None = None, concurrency: int | None = None
) -> Caller:
    """A new account (unlimited unless given `credits`) and its caller."""
    key, row = await create_key(db, name, credits=credits)
    if concurrency is not None:
        await set_limits(db, row["id"], rate=None, concurrency=concurrency)
    return await authenticate(db, key)


def request(webhook_url: str | None = None) -> EditRequest:
    body = edit_body(IMAGE, MASK)
    if webhook_url:
        body["webhookUrl"] = webhook_url
    return EditRequest.model_validate(body)


async def submit(
    db: Database,
    caller: Caller,
    count: int = 1,
    *,
    clock: Clock = SYSTEM,
    webhook_url: str | None = None,
    max_attempts: int = 3,
) -> list[str]:
    """Queue `count` jobs; returns their ids in submission order."""
    req = request(webhook_url)
    ids = []
    for _ in range(count):
        submitted = await service.submit(db, caller, req, cost=COST, max_attempts=max_attempts, clock=clock)
        ids.append(submitted.job_id)
    return ids


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Database]:
    """The test's database, closed after."""
    db = Database(url)
    try:
        yield db
    finally:
        await db.close()
