"""Command line: serve | worker | keys | credits | migrate | edit | jobs.

These command names and flags are a contract that scripts outside the repo rely on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from fillframe.contract import MAX_SEED, OUTPAINT_PRESETS
from fillframe.settings import Settings

if TYPE_CHECKING:
    from fillframe_client import Fillframe

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


def check_data_dir(settings: Settings) -> None:
    """Stop with one line, not a traceback, when the data folder is needed but cannot be written
    (a read-only volume, a folder owned by another user)."""
    # With PostgreSQL the link secret, unless given, is kept in the database.
    if settings.database.is_shared and settings.storage.storage_url:
        return  # nothing is kept locally
    path = settings.database.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise click.ClickException(
            f"The data folder {path} is not writable ({exc.strerror or exc}): "
            "mount a writable volume there or point FILLFRAME_DATA_DIR at one."
        ) from None


def migrate_db(settings: Settings) -> None:
    from fillframe.migrations import upgrade

    check_data_dir(settings)
    upgrade(settings.database.url)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def load_and_log() -> Settings:
    """Settings for a long-running process, with logging set up from them."""
    from fillframe import logs

    settings = load_settings()
    logs.setup(settings.logging.log_level, settings.logging.log_format)
    return settings


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
    from fillframe.api.protocol import JsonErrorsProtocol

    settings = load_and_log()
    migrate_db(settings)
    app = create_app(settings, run_worker=not no_worker)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=JsonErrorsProtocol,
        timeout_graceful_shutdown=int(settings.worker.shutdown_grace_seconds) + 5,
    )
    server = uvicorn.Server(config)
    app.state.stop_server = lambda: setattr(server, "should_exit", True)
    server.run()
    failure = getattr(app.state, "worker_failure", None)
    if failure is not None:
        raise click.ClickException(f"The worker could not start: {failure}")


async def _run_worker(settings: Settings) -> None:
    from fillframe.db import Database
    from fillframe.jobs.worker import Worker, stop_gracefully
    from fillframe.storage import BlobStore

    db = Database(settings.database.url)
    worker = Worker(settings, db, BlobStore(settings.storage))
    try:
        await worker.start()  # the engine loads in the worker's child process
    except RuntimeError as exc:
        await db.close()
        raise click.ClickException(f"The worker could not start: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(worker.run(stop))
    logging.getLogger("fillframe.worker").info("worker %s running engine %s", worker.id, worker.engine_name)
    await asyncio.wait([task, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    await stop_gracefully(worker, task, settings.worker.shutdown_grace_seconds)
    await db.close()
    failure = task.exception() if task.done() and not task.cancelled() else None
    if failure is not None:
        raise failure


@main.command()
def worker() -> None:
    """Run workers only (scale-out): claim jobs from the shared database and fill them."""
    settings = load_and_log()
    migrate_db(settings)
    if settings.worker.worker_metrics_port:
        from prometheus_client import start_http_server

        from fillframe.metrics import REGISTRY

        start_http_server(settings.worker.worker_metrics_port, registry=REGISTRY)
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
        db = Database(settings.database.url)
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
    from fillframe.accounts import list_keys

    rows = with_db(list_keys)
    click.echo(f"{'ID':36}  {'PREFIX':12}  {'STATUS':8}  {'TEAM':36}  {'USER':36}  NAME")
    for r in rows:
        status = "revoked" if r["revoked_at"] else ("active" if r["active"] else "inactive")
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


@main.group()
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


# --- edit and jobs: the client side ----------------------------------------------------------


def _server_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--key", envvar="FILLFRAME_API_KEY", help="API key for --server (env FILLFRAME_API_KEY)."
    )(fn)
    return click.option(
        "--server",
        envvar="FILLFRAME_SERVER",
        help="Base URL of a Fillframe server, e.g. http://127.0.0.1:8000 (env FILLFRAME_SERVER).",
    )(fn)


def _client(server: str | None, key: str | None) -> Fillframe:
    from fillframe_client import Fillframe

    if not server or not key:
        raise click.UsageError("Give --server and --key, or set FILLFRAME_SERVER and FILLFRAME_API_KEY.")
    return Fillframe(server, key)


def _source(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An existing local file, or an http(s) URL (fetched by the server or the local engine)."""
    if value is None or value.lower().startswith(("http://", "https://")):
        return value
    if not Path(value).is_file():
        raise click.BadParameter(f"the file {value!r} does not exist.", param=param)
    return value


def output_target(image: str, output: Path | None, fmt: str | None) -> tuple[Path, str]:
    """Where the result goes and its format: OUTPUT's extension decides, else --format, else jpg.

    Without OUTPUT the file is `<image name>-filled.<fmt>` in the current directory.
    """
    by_suffix = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}
    if output is not None and output.suffix.lower() in by_suffix:
        implied = by_suffix[output.suffix.lower()]
        if fmt is not None and fmt != implied:
            raise click.UsageError(f"--format {fmt} contradicts the output file name {output.name}.")
        return output, implied
    fmt = fmt or "jpg"
    if output is not None:
        return output, fmt
    stem = Path(image.split("?", 1)[0].rstrip("/")).stem or "result"
    return Path(f"{stem}-filled.{fmt}"), fmt


def _progress_bar() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


def _expand_sides(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dict[str, int] | None:
    """`left=256,right=128` -> {"left": 256, "right": 128}; the API checks the ranges."""
    if value is None:
        return None
    sides: dict[str, int] = {}
    for part in value.split(","):
        name, sep, number = part.strip().partition("=")
        name = name.strip().lower()
        if not sep or name not in ("left", "right", "top", "bottom") or not number.strip().isdigit():
            raise click.BadParameter(
                f"{part.strip()!r} is not SIDE=PIXELS with SIDE left, right, top or bottom."
            )
        sides[name] = int(number)
    return sides


@main.command()
@click.argument("image", callback=_source)
@click.option("--mask", callback=_source, help="Mask file: white = repaint, black = keep; the image's size.")
@click.option("--outpaint", type=click.Choice(OUTPAINT_PRESETS), help="Extend the canvas with this preset.")
@click.option(
    "--expand",
    callback=_expand_sides,
    metavar="SIDE=PX,...",
    help="Extend the canvas by pixels per side instead of a preset, e.g. left=256,right=256 (0-2048).",
)
@click.option("--prompt", required=True, help="What to paint (the classic engine ignores it).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: <image>-filled.<fmt>."
)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), help="Same seed and inputs, same image.")
@click.option("--steps", type=click.IntRange(1, 50))
@click.option("--guidance", type=click.FloatRange(2, 5))
@click.option(
    "--format", "fmt", type=click.Choice(["jpg", "png"]), help="Default: from --output's extension, else jpg."
)
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to wait for a server job.")
@_server_options
def edit(
    image: str,
    mask: str | None,
    outpaint: str | None,
    expand: dict[str, int] | None,
    prompt: str,
    output: Path | None,
    seed: int | None,
    steps: int | None,
    guidance: float | None,
    fmt: str | None,
    timeout: float,
    server: str | None,
    key: str | None,
) -> None:
    """Inpaint IMAGE under --mask, or outpaint it with --outpaint PRESET or --expand SIDE=PX,...

    Without --server the configured engine (FILLFRAME_ENGINE) runs in this process; with it the
    job goes to that server. IMAGE and --mask are files or http(s) URLs. The output path is
    printed on the last line.
    """
    if sum(x is not None for x in (mask, outpaint, expand)) != 1:
        raise click.UsageError(
            "Give exactly one of --mask (inpaint), --outpaint PRESET and --expand SIDE=PX."
        )
    target, fmt = output_target(image, output, fmt)
    given: dict[str, Any] = {"seed": seed, "steps": steps, "guidance": guidance}
    params = {k: v for k, v in given.items() if v is not None}
    params["output_format"] = fmt
    if expand is not None:
        params["expand"] = expand
    if server:
        data, facts = _edit_on_server(server, key, image, mask, outpaint, prompt, params, timeout)
    else:
        data, facts = _edit_locally(image, mask, outpaint, prompt, params)
    target.write_bytes(data)
    click.echo(f"Wrote {len(data)} bytes ({facts}).")
    click.echo(str(target))


def _edit_locally(
    image: str, mask: str | None, outpaint: str | None, prompt: str, params: dict[str, Any]
) -> tuple[bytes, str]:
    from fillframe.engines import create_engine
    from fillframe.errors import FillError
    from fillframe.local import build_request, run_local

    settings = load_settings()
    seed = params.pop("seed", None)
    try:
        request = build_request(image, prompt=prompt, mask=mask, outpaint=outpaint, params=params)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        engine = create_engine(settings)
        engine.load()
    except (RuntimeError, ValueError, ImportError) as exc:
        raise click.ClickException(f"The {settings.worker.engine} engine could not start: {exc}") from None
    with _progress_bar() as bar:
        task = bar.add_task(f"Filling ({engine.name}, local)", total=100)
        try:
            result = run_local(
                request, engine, settings.limits, seed=seed, progress=lambda p: bar.update(task, completed=p)
            )
        except FillError as exc:
            raise click.ClickException(exc.message) from None
    return result.data, f"{result.width}x{result.height}, seed {result.seed}, {engine.name} engine, local"


def _edit_on_server(
    server: str,
    key: str | None,
    image: str,
    mask: str | None,
    outpaint: str | None,
    prompt: str,
    params: dict[str, Any],
    timeout: float,
) -> tuple[bytes, str]:
    from fillframe_client import FillframeError, Job, JobFailedError

    with _client(server, key) as client, _progress_bar() as bar:
        task = bar.add_task("Submitting", total=100)

        def show(job: Job) -> None:
            bar.update(task, completed=job.progress, description=f"{job.status.title()} {job.id[:8]}")

        try:
            job = client.edit_and_wait(
                image,
                mask=mask,
                outpaint=outpaint,
                prompt=prompt,
                timeout=timeout,
                on_progress=show,
                **params,
            )
            data = client.download(job)
        except JobFailedError as exc:
            code = f" ({exc.job.error_code})" if exc.job.error_code else ""
            raise click.ClickException(
                f"Job {exc.job.id} {exc.job.status.lower()}{code}: {exc.job.error}"
            ) from None
        except FillframeError as exc:
            raise click.ClickException(str(exc)) from None
    return data, f"seed {job.seed}, job {job.id}"


@main.group()
def jobs() -> None:
    """List and inspect jobs on a server (--server/--key or FILLFRAME_SERVER/FILLFRAME_API_KEY)."""


def _call_server(fn: Callable[[], T]) -> T:
    from fillframe_client import FillframeError

    try:
        return fn()
    except FillframeError as exc:
        raise click.ClickException(str(exc)) from None


@jobs.command("list")
@click.option("--status", type=click.Choice(["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]))
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--cursor", help="The cursor printed under the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON objects, one per line.")
@_server_options
def jobs_list(
    status: str | None, limit: int, cursor: str | None, as_json: bool, server: str | None, key: str | None
) -> None:
    """Your jobs, newest first."""
    with _client(server, key) as client:
        page = _call_server(lambda: client.jobs.list(status=status, limit=limit, cursor=cursor))
    if as_json:
        for job in page.jobs:
            click.echo(json.dumps(job.raw))
        return
    click.echo(f"{'ID':36}  {'STATUS':10}  {'PROG':>4}  {'CREATED':24}  RESULT / ERROR")
    for job in page.jobs:
        outcome = job.images[0] if job.images else (f"{job.error_code}: {job.error}" if job.error else "")
        created = job.created_at or ""
        click.echo(f"{job.id:36}  {job.status:10}  {job.progress:>3}%  {created:24}  {outcome}")
    if page.has_more:
        click.echo(f"More: --cursor {page.next_cursor}")


@jobs.command("get")
@click.argument("job_id")
@_server_options
def jobs_get(job_id: str, server: str | None, key: str | None) -> None:
    """One job, as the API's JSON."""
    with _client(server, key) as client:
        job = _call_server(lambda: client.jobs.get(job_id))
    click.echo(json.dumps(job.raw, indent=2))


@jobs.command("cancel")
@click.argument("job_id")
@_server_options
def jobs_cancel(job_id: str, server: str | None, key: str | None) -> None:
    """Cancel a queued or running job (its credits are refunded)."""
    with _client(server, key) as client:
        job = _call_server(lambda: client.jobs.cancel(job_id))
    click.echo(f"Job {job.id} is {job.status}.")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
