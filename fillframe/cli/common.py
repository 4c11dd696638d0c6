"""What the command modules share: settings from the environment, the data folder check,
migrations and logging for long-running processes."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Coroutine
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from fillframe.settings import Settings

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
    if settings.database_url and settings.storage_url and settings.secret:
        return  # nothing is kept locally
    path = settings.data_dir
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
    upgrade(settings.db_url)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def load_and_log() -> Settings:
    """Settings for a long-running process, with logging set up from them."""
    from fillframe import logs

    settings = load_settings()
    logs.setup(settings.log_level, settings.log_format)
    return settings
