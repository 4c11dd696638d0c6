"""One settings object, read from `FILLFRAME_*` environment variables and a `.env` file.

Built by the CLI or the app factory, never at import, so every test builds its own.
"""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FILLFRAME_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./fillframe-data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in DATA_DIR."
    )
    public_url: str | None = Field(
        default=None, description="Base URL for result links; default: the request's own host."
    )
    allow_private_urls: bool = False
    secret: str | None = Field(default=None, description="URL-signing key; generated on first run.")

    engine: str = "classic"
    worker_concurrency: int = Field(default=1, ge=1, le=64)

    max_body_bytes: int = 40 * 1024 * 1024
    max_image_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_output_pixels: int = 4 * 1024 * 1024
    fetch_timeout_seconds: float = 20.0
    max_redirects: int = 5

    retention_days: float = 7.0
    lease_seconds: float = 60.0
    max_attempts: int = 3
    poll_seconds: float = 1.0

    @cached_property
    def sqlite_path(self) -> Path:
        return self.data_dir / "fillframe.db"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.sqlite_path}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    def signing_secret(self) -> bytes:
        """The configured secret, else one generated once and kept in the data dir."""
        if self.secret:
            return self.secret.encode()
        path = self.data_dir / "secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                with path.open("x") as fh:  # exclusive: two processes starting together agree
                    fh.write(secrets.token_urlsafe(48))
                path.chmod(0o600)
            except FileExistsError:
                pass
        return path.read_text().strip().encode()
