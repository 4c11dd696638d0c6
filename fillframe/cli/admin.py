"""Database administration: keys and credits, through the service functions the admin API uses
(`fillframe/teams.py`, `fillframe/accounts.py`), so every change is audited the same way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from fillframe.cli.common import load_settings, migrate_db, run

if TYPE_CHECKING:
    from fillframe.db import Database

T = TypeVar("T")


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


def with_db(fn: Callable[[Database], Awaitable[T]]) -> T:
    """Migrate, open the configured database, run `fn` on it, close it."""
    from fillframe.db import Database

    settings = load_settings()
    migrate_db(settings)

    async def go() -> T:
        db = Database(settings.db_url)
        try:
            return await fn(db)
        finally:
            await db.close()

    return run(go())


@keys.command("create")
@click.option("--name", required=True, help="A label for the key (and for its team when one is created).")
@click.option(
    "--credits", type=click.IntRange(min=0), default=None, help="A new team's credits; omit for unlimited."
)
@click.option("--team", "team_id", help="Add the key to this team instead of creating one.")
@click.option("--user", "user_id", help="The key's holder in --team (default: the team's first OWNER).")
@click.option("--email", help="A new team's OWNER email (default: a placeholder).")
def keys_create(
    name: str, credits: int | None, team_id: str | None, user_id: str | None, email: str | None
) -> None:
    """Create a key (and, without --team, its team and OWNER). The key is printed alone on the
    last line, once."""
    from fillframe.accounts import create_key
    from fillframe.teams import NotFound

    if team_id is not None and (credits is not None or email is not None):
        raise click.UsageError("--credits and --email describe a new team; with --team use `credits grant`.")
    if user_id is not None and team_id is None:
        raise click.UsageError("--user needs --team.")
    try:
        api_key, row = with_db(
            lambda db: create_key(
                db, name, credits=credits, account_id=team_id, user_id=user_id, email=email, actor=_actor()
            )
        )
    except (NotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    amount = "" if team_id else (" with unlimited credits" if credits is None else f" with {credits} credits")
    click.echo(
        f"Created key {row['id']} ({row['prefix']}...) for user {row['user_id']} "
        f"of team {row['account_id']}{amount}."
    )
    click.echo("Store it now: it is not shown again.")
    click.echo(api_key)


def _actor() -> str:
    """Who the audit trail names for a CLI change: the operating-system user."""
    import getpass

    try:
        return f"cli: {getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@keys.command("list")
def keys_list() -> None:
    """List keys (never the keys themselves)."""
    from fillframe.accounts import key_status, list_keys

    rows = with_db(list_keys)
    click.echo(f"{'ID':36}  {'PREFIX':12}  {'STATUS':8}  {'TEAM':36}  {'USER':36}  NAME")
    for r in rows:
        status = key_status(r)
        user = (r["user_id"] or "-").ljust(36)
        cells = (r["id"], r["prefix"].ljust(12), status.ljust(8), r["account_id"], user)
        click.echo("  ".join((*cells, r["name"])))


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its ID: it stops working at once."""
    from fillframe.accounts import revoke_key

    if not with_db(lambda db: revoke_key(db, key_id, actor=_actor())):
        raise click.ClickException(f"No active key with ID {key_id}.")
    click.echo(f"Revoked key {key_id}.")


def _set_active(key_id: str, active: bool) -> None:
    from fillframe.accounts import set_key_active

    if not with_db(lambda db: set_key_active(db, key_id, active, actor=_actor())):
        raise click.ClickException(f"No unrevoked key with ID {key_id}.")
    click.echo(f"Key {key_id} is now {'active' if active else 'inactive'}.")


@keys.command("disable")
@click.argument("key_id")
def keys_disable(key_id: str) -> None:
    """Make a key inactive (403) without revoking it."""
    _set_active(key_id, False)


@keys.command("enable")
@click.argument("key_id")
def keys_enable(key_id: str) -> None:
    """Make an inactive key work again."""
    _set_active(key_id, True)


@keys.command("limits")
@click.argument("key_id")
@click.option("--rate", type=click.IntRange(min=0), help="Submits per minute for this key (0 = unlimited).")
@click.option("--concurrency", type=click.IntRange(min=1), help="maxConcurrentJobs for the key's team.")
def keys_limits(key_id: str, rate: int | None, concurrency: int | None) -> None:
    """Set a key's submit rate and its team's concurrent-job limit."""
    from fillframe.accounts import set_limits

    if rate is None and concurrency is None:
        raise click.UsageError("Give --rate and/or --concurrency.")
    if not with_db(lambda db: set_limits(db, key_id, rate=rate, concurrency=concurrency, actor=_actor())):
        raise click.ClickException(f"No key with ID {key_id}.")
    click.echo(f"Limits updated for key {key_id}.")


@click.group()
def credits() -> None:
    """Grant and inspect credits (every movement is a ledger row)."""


@credits.command("grant")
@click.option("--team", "team_id", help="The team to credit.")
@click.option("--key-id", help="Or any key of that team.")
@click.option("--reason", default="granted from the CLI", show_default=True, help="Kept on the ledger row.")
@click.argument("amount", type=int)
def credits_grant(team_id: str | None, key_id: str | None, reason: str, amount: int) -> None:
    """Add AMOUNT credits to a team (a negative AMOUNT deducts, never below zero)."""
    from fillframe.accounts import key_team
    from fillframe.billing import InsufficientCredits
    from fillframe.teams import NotFound, adjust_credits

    if (team_id is None) == (key_id is None):
        raise click.UsageError("Give exactly one of --team and --key-id.")

    async def go(db: Database) -> int:
        team = team_id or await key_team(db, key_id or "")
        if team is None:
            raise NotFound(f"No key with ID {key_id}.")
        return await adjust_credits(db, team, amount, reason, actor=_actor())

    try:
        balance = with_db(go)
    except (NotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except InsufficientCredits as exc:
        raise click.ClickException(f"The team has only {exc.available} credits.") from None
    verb = "Granted" if amount > 0 else "Deducted"
    click.echo(f"{verb} {abs(amount)} credits; the balance is now {balance}.")


@credits.command("show")
def credits_show() -> None:
    """Each team's balance, checked against the sum of its ledger."""
    from fillframe.teams import credit_report

    rows = with_db(credit_report)
    click.echo(f"{'TEAM':36}  {'BALANCE':>10}  {'LEDGER SUM':>10}  NAME")
    for r in rows:
        balance = f"{r['credits']} (unlimited)" if r["unlimited"] else str(r["credits"])
        click.echo(f"{r['id']:36}  {balance:>10}  {r['ledger_sum']:>10}  {r['name']}")
