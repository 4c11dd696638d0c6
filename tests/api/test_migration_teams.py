"""Migration 0006 on a database at the previous head holding keys, jobs, balances and ledger rows:
every account becomes a team with an OWNER, every key still authenticates, every balance still
equals its ledger sum."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from fillframe import migrations, teams
from fillframe.accounts import AuthError, authenticate, hash_key
from fillframe.db import Database
from fillframe.jobs.store import list_jobs
from tests.utils.backends import BACKENDS, create_pg_database, drop_pg_database


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations.HERE))
    cfg.attributes["database_url"] = url
    return cfg


def previous_head() -> str:
    """The revision 0006 builds on, whatever it is numbered once the branches merge."""
    script = ScriptDirectory.from_config(_config("sqlite://"))
    down = script.get_revision("0006").down_revision
    assert isinstance(down, str)
    return down


@pytest.fixture(params=BACKENDS)
def old_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = create_pg_database() if request.param == "postgresql" else f"sqlite:///{tmp_path}/old.db"
    command.upgrade(_config(url), previous_head())
    yield url
    if request.param == "postgresql":
        drop_pg_database(url)


def _sync(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _job(account_id: str, key_id: str, status: str, now: datetime) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "account_id": account_id,
        "api_key_id": key_id,
        "model": "flux-fill-pro",
        "status": status,
        "progress": 100 if status == "COMPLETED" else 0,
        "request": {"model": "flux-fill-pro", "fluxFillParams": {"image": "http://x/a.png"}},
        "seed": 1,
        "credit_cost": 9,
        "attempts": 1,
        "max_attempts": 3,
        "cancel_requested": False,
        "expired": False,
        "run_after": now,
        "created_at": now,
    }


def seed_old_database(url: str) -> dict:
    """Two accounts as the CLI made them before teams: a metered one with two keys (one revoked),
    three jobs and their ledger rows, and an unlimited one with one key and one job."""
    now = datetime.now(UTC).replace(tzinfo=None)
    engine = _sync(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    t = meta.tables
    metered, free = str(uuid.uuid4()), str(uuid.uuid4())
    keys = {name: f"afk_{uuid.uuid4().hex}" for name in ("m1", "m2", "revoked", "free")}
    key_ids = {name: str(uuid.uuid4()) for name in keys}
    owner_of = {"m1": metered, "m2": metered, "revoked": metered, "free": free}
    with engine.begin() as conn:
        for account_id, unlimited, credits in ((metered, False, 32), (free, True, 0)):
            conn.execute(
                t["accounts"].insert(),
                {"id": account_id, "name": f"acct-{account_id[:4]}", "unlimited": unlimited,
                 "credits": credits, "plan": "self-hosted", "max_concurrent_jobs": 4, "created_at": now},
            )  # fmt: skip
        for name, key in keys.items():
            conn.execute(
                t["api_keys"].insert(),
                {"id": key_ids[name], "account_id": owner_of[name], "name": name, "prefix": key[:10],
                 "key_hash": hash_key(key), "active": True, "created_at": now,
                 "revoked_at": now if name == "revoked" else None},
            )  # fmt: skip
        done = _job(metered, key_ids["m1"], "COMPLETED", now)
        failed = _job(metered, key_ids["m2"], "FAILED", now)
        queued = _job(metered, key_ids["m1"], "QUEUED", now)
        free_job = _job(free, key_ids["free"], "COMPLETED", now)
        conn.execute(t["jobs"].insert(), [done, failed, queued, free_job])
        ledger = [
            (None, "grant", 50),
            (done["id"], "hold", -9),
            (done["id"], "capture", 0),
            (failed["id"], "hold", -9),
            (failed["id"], "refund", 9),
            (queued["id"], "hold", -9),
        ]  # sum: 32
        conn.execute(
            t["credit_ledger"].insert(),
            [
                {"account_id": metered, "job_id": j, "kind": k, "amount": a, "created_at": now}
                for j, k, a in ledger
            ],
        )
    engine.dispose()
    return {
        "keys": keys,
        "owner_of": owner_of,
        "jobs": {metered: 3, free: 1},
        "metered": metered,
        "free": free,
    }


def test_every_key_authenticates_and_every_balance_equals_its_ledger(old_url: str) -> None:
    seeded = seed_old_database(old_url)
    migrations.upgrade(old_url)

    async def check() -> None:
        db = Database(old_url)
        try:
            owners: dict[str, str] = {}
            for name, key in seeded["keys"].items():
                if name == "revoked":
                    with pytest.raises(AuthError):
                        await authenticate(db, key)
                    continue
                caller = await authenticate(db, key)
                assert caller.account_id == seeded["owner_of"][name]
                assert caller.role == "OWNER" and caller.user_email == f"owner@{caller.account_id}.invalid"
                assert owners.setdefault(caller.account_id, caller.user_id) == caller.user_id  # one owner
            free = await authenticate(db, seeded["keys"]["free"])
            assert free.unlimited
            report = {r["id"]: r for r in await teams.credit_report(db)}
            assert report[seeded["metered"]]["credits"] == report[seeded["metered"]]["ledger_sum"] == 32
            assert report[seeded["free"]]["credits"] == report[seeded["free"]]["ledger_sum"] == 0
            async with db.read() as conn:
                for team_id, count in seeded["jobs"].items():
                    rows, _ = await list_jobs(conn, team_id, limit=100, user_id=owners[team_id])
                    assert len(rows) == count  # the owner's `scope=user` holds the old jobs
            users = await teams.list_users(db, seeded["metered"])
            assert [u["role"] for u in users] == ["OWNER"]
        finally:
            await db.close()

    asyncio.run(check())


def test_the_migration_goes_down_and_up_again(old_url: str) -> None:
    seeded = seed_old_database(old_url)
    migrations.upgrade(old_url)
    command.downgrade(_config(old_url), previous_head())
    migrations.upgrade(old_url)

    async def check() -> None:
        db = Database(old_url)
        try:
            caller = await authenticate(db, seeded["keys"]["m1"])
            assert caller.role == "OWNER" and caller.account_id == seeded["metered"]
        finally:
            await db.close()

    asyncio.run(check())
