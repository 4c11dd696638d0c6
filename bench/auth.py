"""What teams cost every request: `authenticate` (key -> user -> team, one SELECT with two joins)
against the pre-teams lookup (key -> account, one join), on the same database in the same run.

Both run through `Database.read()` as the API does, alternating rounds so that drift on a shared
machine falls on both alike. Prints each side's median microseconds per call and their ratio.

Usage: .venv/bin/python -m bench.auth [--calls 2000] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fillframe.accounts import authenticate, create_key, hash_key
from fillframe.db import Database, accounts, api_keys
from fillframe.migrations import upgrade
from tests.utils.backends import create_pg_database, drop_pg_database

ROUNDS = 10
# `authenticate` as it was before teams (fillframe/accounts.py at main): the key and its account.
_BEFORE = (
    sa.select(
        api_keys.c.id,
        api_keys.c.name,
        api_keys.c.prefix,
        api_keys.c.key_hash,
        api_keys.c.active,
        api_keys.c.revoked_at,
        api_keys.c.rate_limit_per_minute,
        accounts.c.id.label("account_id"),
        accounts.c.name.label("account_name"),
        accounts.c.unlimited,
        accounts.c.plan,
        accounts.c.max_concurrent_jobs,
    )
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.key_hash == sa.bindparam("key_hash"))
)


async def before(db: Database, key: str) -> None:
    async with db.read() as conn:
        row = (await conn.execute(_BEFORE, {"key_hash": hash_key(key)})).mappings().first()
    assert row is not None and row["revoked_at"] is None and row["active"]
    dict(row)  # the old Caller was built from these ten values


async def after(db: Database, key: str) -> None:
    await authenticate(db, key)


async def timed(fn, db: Database, key: str, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await fn(db, key)
    return (time.perf_counter() - start) / calls * 1e6


async def main(calls: int, url: str) -> None:
    db = Database(url)
    try:
        keys = [(await create_key(db, f"bench-{i}", credits=10))[0] for i in range(200)]
        key = keys[100]
        await timed(after, db, key, 200)  # warm both paths' statement caches
        await timed(before, db, key, 200)
        sides: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(ROUNDS):
            sides["before"].append(await timed(before, db, key, calls // ROUNDS))
            sides["after"].append(await timed(after, db, key, calls // ROUNDS))
    finally:
        await db.close()
    b, a = statistics.median(sides["before"]), statistics.median(sides["after"])
    print(f"key lookup before teams (key + account):   {b:8.1f} us/call (median of {ROUNDS} rounds)")
    print(f"authenticate with teams (key + user + team): {a:8.1f} us/call")
    print(f"ratio after/before: {a / b:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = create_pg_database() if args.backend == "postgresql" else f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        try:
            asyncio.run(main(args.calls, url))
        finally:
            if args.backend == "postgresql":
                drop_pg_database(url)
