"""The app factory: settings in, a FastAPI app out (plus, optionally, an in-process worker)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI

from fillframe import __version__
from fillframe.api import errors, openapi
from fillframe.api.middleware import BodyLimit, RequestContext
from fillframe.api.routes import account, admin, edit, files, health, jobs, uploads, web
from fillframe.db import Database
from fillframe.jobs.queue import Notifier, listen
from fillframe.jobs.runner import worker_running
from fillframe.settings import Settings
from fillframe.storage import BlobStore

if TYPE_CHECKING:
    from fillframe.engines.base import Engine


@contextlib.asynccontextmanager
async def _worker_running(app: FastAPI, settings: Settings, engine: Engine | None) -> AsyncIterator[None]:
    """Run a worker beside the API for the app's lifetime; its engine loads in the worker's child
    process (never in this one), in the background, so the API answers at once (jobs wait QUEUED
    until the engine is ready); `/readyz` tells which.
    """
    from fillframe.jobs.worker import Worker

    def take_server_down(_failure: BaseException) -> None:
        """A worker that ends on its own (its engine failed to load, or it crashed) takes the server
        down; `fillframe serve` then says why (the runner has logged it)."""
        stop = getattr(app.state, "stop_server", None)  # set by `fillframe serve`
        if stop is not None:
            stop()
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    worker = Worker(settings, app.state.db, app.state.store, engine, app.state.notifier)
    async with worker_running(worker, settings.shutdown_grace_seconds, on_failure=take_server_down) as run:
        app.state.worker = run
        yield


def create_app(settings: Settings, *, run_worker: bool = False, engine: Engine | None = None) -> FastAPI:
    """With `run_worker`, a worker runs beside the API; its engine in a child process, unless a
    loaded `engine` is given to fill in this process's threads (`bench/e2e.py` measures the
    process hop against that)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.db = Database(settings.db_url)
        app.state.store = BlobStore(settings)
        app.state.notifier = Notifier()
        settings.signing_secret()  # create it now, not inside the first request
        stop = asyncio.Event()
        listener = None
        if not app.state.db.is_sqlite and not run_worker:  # a worker listens for itself
            listener = asyncio.create_task(listen(app.state.db, app.state.notifier, stop))
        try:
            if run_worker:
                async with _worker_running(app, settings, engine):
                    yield
            else:
                yield
        finally:
            stop.set()
            if listener is not None:
                await listener
            await app.state.db.close()

    app = FastAPI(
        title="Fillframe",
        version=__version__,
        description="Inpaint and outpaint images through the Apiframe v2 dialect for `flux-fill-pro`.",
        lifespan=lifespan,
        openapi_tags=[admin.TAG] if settings.admin_token else None,
    )
    errors.install(app)
    openapi.install(app)
    for module in (edit, jobs, uploads, account, files, health, web):
        app.include_router(module.router)
    if settings.admin_token:  # no token, no admin API: there is no default one
        app.include_router(admin.router)
        app.include_router(admin.console)
    # An upload's multipart envelope (boundaries, part headers) is well under 64 KB.
    upload_mb = settings.max_upload_bytes / (1024 * 1024)
    upload_limit = (
        settings.max_upload_bytes + 64 * 1024,
        f"The upload is larger than the {upload_mb:g} MB limit.",
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, per_path={"/v2/uploads": upload_limit})
    app.add_middleware(RequestContext)
    return app
