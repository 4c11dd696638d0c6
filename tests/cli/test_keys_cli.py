"""`fillframe keys` and `fillframe credits` on teams: the same service functions as the admin API,
audited; `keys create` still prints the key alone on its last line."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fillframe.accounts import Caller, authenticate
from fillframe.db import Database
from tests.utils.backends import query
from tests.utils.servers import cli, fillframe_env


def caller_of(env: dict[str, str], key: str) -> Caller:
    async def go() -> Caller:
        db = Database(f"sqlite:///{env['FILLFRAME_DATA_DIR']}/fillframe.db")
        try:
            return await authenticate(db, key)
        finally:
            await db.close()

    return asyncio.run(go())


def test_keys_create_makes_a_team_and_its_owner_then_adds_keys_to_it(tmp_path: Path) -> None:
    env = fillframe_env(tmp_path / "data")
    made = cli(env, "keys", "create", "--name", "acme", "--credits", "30", "--email", "boss@acme.test")
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("afk_") and " " not in key
    owner = caller_of(env, key)
    assert (owner.role, owner.user_email, owner.unlimited) == ("OWNER", "boss@acme.test", False)

    second = (
        cli(env, "keys", "create", "--name", "ci", "--team", owner.account_id).stdout.strip().splitlines()[-1]
    )
    same = caller_of(env, second)
    assert (same.account_id, same.user_id) == (owner.account_id, owner.user_id)

    refused = cli(env, "keys", "create", "--name", "x", "--team", "no-such-team", check=False)
    assert refused.returncode != 0 and "No team" in refused.stderr
    mixed = cli(
        env, "keys", "create", "--name", "x", "--team", owner.account_id, "--credits", "5", check=False
    )
    assert mixed.returncode != 0

    unlimited = caller_of(env, cli(env, "keys", "create", "--name", "free").stdout.strip().splitlines()[-1])
    assert unlimited.unlimited and unlimited.user_email == f"owner@{unlimited.account_id}.invalid"
    listed = cli(env, "keys", "list").stdout
    assert owner.account_id in listed and owner.user_id in listed


def test_credits_grant_and_deduct_on_the_team_with_an_audit_trail(tmp_path: Path) -> None:
    env = fillframe_env(tmp_path / "data")
    key = cli(env, "keys", "create", "--name", "acme", "--credits", "10").stdout.strip().splitlines()[-1]
    team = caller_of(env, key).account_id
    granted = cli(env, "credits", "grant", "--team", team, "--reason", "invoice 7", "15")
    assert "balance is now 25" in granted.stdout
    key_id = caller_of(env, key).key_id
    assert "balance is now 20" in cli(env, "credits", "grant", "--key-id", key_id, "--", "-5").stdout
    short = cli(env, "credits", "grant", "--team", team, "--", "-21", check=False)
    assert short.returncode != 0 and "only 20 credits" in short.stderr
    shown = cli(env, "credits", "show").stdout.splitlines()[1].split()
    assert shown[:3] == [team, "20", "20"]  # balance == ledger sum
    rows = query(env, "SELECT actor, action, detail FROM admin_audit WHERE team_id = :t ORDER BY id", t=team)
    assert [r[1] for r in rows] == [
        "team.create",
        "credits.grant",
        "key.create",
        "credits.grant",
        "credits.deduct",
    ]
    assert all(r[0].startswith("cli") for r in rows)
    assert "invoice 7" in str(rows[3][2])
    reasons = query(
        env, "SELECT kind, amount, reason FROM credit_ledger WHERE account_id = :t ORDER BY id", t=team
    )
    assert reasons == [
        ("grant", 10, "initial grant"),
        ("grant", 15, "invoice 7"),
        ("deduct", -5, "granted from the CLI"),
    ]
