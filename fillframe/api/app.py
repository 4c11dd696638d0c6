"""The app factory: settings in, a FastAPI app out (plus, optionally, an in-process worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from fillframe import __version__
from fillframe.api import errors
from fillframe.api.middleware import BodyLimit, RequestId
from fillframe.api.routes import account, edit, files, health, jobs, uploads, web
from fillframe.db import Database
from fillframe.jobs.queue import Notifier
from fillframe.settings import Settings
from fillframe.storage import BlobStore

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def _worker_running(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Run an in-process worker beside the API for the app's lifetime."""
    from fillframe.engines import create_engine  # engines import heavy libraries; only when used
    from fillframe.jobs.worker import Worker

    engine = create_engine(settings)
    await asyncio.to_thread(engine.load)
    worker = Worker(settings, app.state.db, app.state.store, engine, app.state.notifier)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    app.state.worker = worker
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), settings.shutdown_grace_seconds)
        except TimeoutError:
            worker.shutdown_running()
            await asyncio.wait_for(task, 10)


def create_app(settings: Settings, *, run_worker: bool = False) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.db = Database(settings.db_url)
        app.state.store = BlobStore(settings)
        app.state.notifier = Notifier()
        settings.signing_secret()  # create it now, not inside the first request
        try:
            if run_worker:
                async with _worker_running(app, settings):
                    yield
            else:
                yield
        finally:
            await app.state.db.close()

    app = FastAPI(
        title="Fillframe",
        version=__version__,
        description="Inpaint and outpaint images through the Apiframe v2 dialect for `flux-fill-pro`.",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (edit, jobs, uploads, account, files, health, web):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestId)
    return app
