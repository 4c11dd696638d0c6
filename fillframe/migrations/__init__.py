"""Alembic migrations, shipped inside the package so an installed `fillframe serve` can apply them."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["database_url"] = url
    return cfg


def upgrade(url: str) -> None:
    """Apply every migration up to head (idempotent). Call outside a running event loop."""
    command.upgrade(alembic_config(url), "head")
