"""Command line: serve | worker | keys | credits | migrate.

These command names and flags are a contract that scripts outside the repo rely on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from fillframe.settings import Settings

if TYPE_CHECKING:
    from fillframe.db import Database

T = TypeVar("T")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"FILLFRAME_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise click.ClickException(f"Invalid settings: {problems}") from None


def migrate_db(settings: Settings) -> None:
    from fillframe.migrations import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group()
@click.version_option(package_name="fillframe")
def main() -> None:
    """Fillframe: inpaint and outpaint images through the Apiframe v2 flux-fill-pro API."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--no-worker", is_flag=True, help="Serve the API only; run `fillframe worker` elsewhere.")
def serve(host: str, port: int, no_worker: bool) -> None:
    """Run the HTTP API (and, unless --no-worker, a worker in the same process)."""
    import uvicorn

    from fillframe.api.app import create_app

    setup_logging()
    settings = load_settings()
    migrate_db(settings)
    app = create_app(settings, run_worker=not no_worker)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )


async def _run_worker(settings: Settings) -> None:
    from fillframe.db import Database
    from fillframe.engines import create_engine
    from fillframe.jobs.worker import Worker
    from fillframe.storage import BlobStore

    engine = create_engine(settings)
    await asyncio.to_thread(engine.load)
    db = Database(settings.db_url)
    worker = Worker(settings, db, BlobStore(settings), engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(worker.run(stop))
    logging.getLogger("fillframe.worker").info("worker %s running engine %s", worker.id, engine.name)
    await stop.wait()
    try:
        await asyncio.wait_for(asyncio.shield(task), settings.shutdown_grace_seconds)
    except TimeoutError:
        worker.shutdown_running()
        await asyncio.wait_for(task, 10)
    await db.close()


@main.command()
def worker() -> None:
    """Run workers only (scale-out): claim jobs from the shared database and fill them."""
    setup_logging()
    settings = load_settings()
    migrate_db(settings)
    run(_run_worker(settings))


@main.command()
def migrate() -> None:
    """Apply database migrations and exit."""
    settings = load_settings()
    migrate_db(settings)
    click.echo("database is up to date")


@main.group()
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
@click.option("--name", required=True, help="A label for the key and its account.")
@click.option(
    "--credits", type=click.IntRange(min=0), default=None, help="Credits to start with; omit for unlimited."
)
def keys_create(name: str, credits: int | None) -> None:
    """Create a key (and its account). The key is printed alone on the last line, once."""
    from fillframe.accounts import create_key

    api_key, row = with_db(lambda db: create_key(db, name, credits=credits))
    amount = "unlimited credits" if credits is None else f"{credits} credits"
    click.echo(f"Created key {row['id']} ({row['prefix']}...) for account {row['account_id']} with {amount}.")
    click.echo("Store it now: it is not shown again.")
    click.echo(api_key)


@keys.command("list")
def keys_list() -> None:
    """List keys (never the keys themselves)."""
    from fillframe.accounts import list_keys

    rows = with_db(list_keys)
    click.echo(f"{'ID':36}  {'PREFIX':12}  {'STATUS':8}  {'ACCOUNT':36}  NAME")
    for r in rows:
        status = "revoked" if r["revoked_at"] else ("active" if r["active"] else "inactive")
        click.echo(f"{r['id']:36}  {r['prefix']:12}  {status:8}  {r['account_id']:36}  {r['name']}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its ID: it stops working at once."""
    from fillframe.accounts import revoke_key

    if not with_db(lambda db: revoke_key(db, key_id)):
        raise click.ClickException(f"No active key with ID {key_id}.")
    click.echo(f"Revoked key {key_id}.")


def _set_active(key_id: str, active: bool) -> None:
    from fillframe.accounts import set_key_active

    if not with_db(lambda db: set_key_active(db, key_id, active)):
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
