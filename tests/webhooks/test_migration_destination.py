"""Migration 0008 gives the deliveries already in the outbox their destination, which the claim's
cap per host counts (a row left with none would count against no host's cap)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from fillframe import migrations
from fillframe.clock import FakeClock
from fillframe.db import Database, webhook_deliveries
from fillframe.webhooks.deliver import destination
from tests.webhooks.test_isolation import queued_webhook, tenant

URLS = ["http://Hooks.example.com/a?x=1", "https://hooks.example.com/b", "http://hooks.example.com:8080"]


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations.HERE))
    cfg.attributes["database_url"] = url
    return cfg


def test_existing_deliveries_get_their_destination(database_url: str) -> None:
    async def seed() -> None:
        db = Database(database_url)
        caller = await tenant(db, "t")
        for url in URLS:
            await queued_webhook(db, caller, url, FakeClock())
        await db.close()

    async def stored() -> dict[str, str]:
        db = Database(database_url)
        async with db.read() as conn:
            rows = await conn.execute(sa.select(webhook_deliveries.c.url, webhook_deliveries.c.destination))
            found = {row.url: row.destination for row in rows}
        await db.close()
        return found

    asyncio.run(seed())
    previous = ScriptDirectory.from_config(_config(database_url)).get_revision("0008").down_revision
    assert isinstance(previous, str)
    command.downgrade(_config(database_url), previous)
    command.upgrade(_config(database_url), "head")
    assert asyncio.run(stored()) == {url: destination(url) for url in URLS}
    assert len({destination(url) for url in URLS}) == 3
