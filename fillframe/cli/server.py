"""Server commands: serve (the API, with or without a worker), worker (scale-out) and migrate."""

from __future__ import annotations

import asyncio
import signal

import click

from fillframe.cli.common import load_and_log, load_settings, migrate_db, run
from fillframe.settings import Settings


@click.command()
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
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )
    server = uvicorn.Server(config)
    app.state.stop_server = lambda: setattr(server, "should_exit", True)
    server.run()
    running = getattr(app.state, "worker", None)  # the in-process worker's run
    failure = running.failure_message() if running is not None else None
    if failure is not None:
        raise click.ClickException(failure)


async def _run_worker(settings: Settings) -> str | None:
    """Run a worker until SIGTERM or SIGINT; the operator's line when it ended on its own."""
    from fillframe.db import Database
    from fillframe.jobs.runner import worker_running
    from fillframe.jobs.worker import Worker
    from fillframe.storage import BlobStore

    db = Database(settings.db_url)
    try:
        worker = Worker(settings, db, BlobStore(settings))
        async with worker_running(worker, settings.shutdown_grace_seconds) as running:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, running.stop.set)
            await running.until_done()
        return running.failure_message()
    finally:
        await db.close()


@click.command()
def worker() -> None:
    """Run workers only (scale-out): claim jobs from the shared database and fill them."""
    settings = load_and_log()
    migrate_db(settings)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        from fillframe.metrics import REGISTRY

        start_http_server(settings.worker_metrics_port, registry=REGISTRY)
    failure = run(_run_worker(settings))
    if failure is not None:
        raise click.ClickException(failure)


@click.command()
def migrate() -> None:
    """Apply database migrations and exit."""
    settings = load_settings()
    migrate_db(settings)
    click.echo("database is up to date")
