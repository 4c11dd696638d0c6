"""One settings object, read from `FILLFRAME_*` environment variables and a `.env` file.

Built by the CLI or the app factory, never at import, so every test builds its own.
"""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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

    storage_url: str | None = Field(
        default=None, description="Object store URL (s3://bucket/prefix, ...); default: DATA_DIR/files."
    )
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    file_urls: Literal["api", "presigned"] = Field(
        default="api", description="Result links served through the API, or presigned by the store."
    )

    engine: str = "classic"
    worker_concurrency: int = Field(default=1, ge=1, le=64)

    max_body_bytes: int = 40 * 1024 * 1024
    max_image_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_output_pixels: int = 4 * 1024 * 1024
    fetch_timeout_seconds: float = 20.0
    max_redirects: int = 5

    max_upload_bytes: int = 25 * 1024 * 1024
    upload_ttl_hours: float = 24.0
    idempotency_ttl_hours: float = 24.0
    rate_limit_per_minute: int = Field(default=600, ge=0, description="Per key; 0 = unlimited.")
    max_wait_seconds: int = 60
    retention_days: float = 7.0
    lease_seconds: float = 60.0
    max_attempts: int = 3
    poll_seconds: float = 1.0
    job_timeout_seconds: float = 900.0
    shutdown_grace_seconds: float = 30.0
    model_costs: dict[str, int] = Field(default_factory=lambda: {"flux-fill-pro": 9})

    # Webhooks (fillframe/webhooks): attempts at 0, 5 s, 5 min, 30 min, 2 h ... 24 h after the first.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_schedule_scale: float = Field(
        default=1.0, gt=0, le=1, description="Multiplies the retry schedule; tests squeeze a day into seconds."
    )
    webhook_concurrency: int = Field(
        default=4, ge=0, le=64, description="Delivery loops per worker process; 0: this process delivers none."
    )

    # flux engine (optional extra `fillframe[flux]`): FLUX.1 Fill [dev] through diffusers, offline.
    flux_model: Path | None = Field(
        default=None, description="Local FLUX.1-Fill-dev snapshot in diffusers layout."
    )
    flux_transformer_file: Path | None = Field(
        default=None, description="Optional single-file transformer; configs come from FLUX_MODEL."
    )
    flux_device: str = Field(default="auto", description="auto | cuda | cuda:N | cpu")
    flux_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    flux_cpu_offload: bool = False
    flux_compile: bool = False
    flux_fp8: bool = False
    flux_guidance_factor: float = Field(default=10.0, gt=0)

    # bfl engine: Black Forest Labs' hosted FLUX.1 Fill [pro] with the operator's key.
    bfl_api_key: SecretStr | None = None  # SecretStr: never shown in a repr or a log
    bfl_base_url: str = "https://api.bfl.ai"
    bfl_guidance_factor: float = Field(default=20.0, gt=0)
    bfl_poll_seconds: float = Field(default=1.0, gt=0)
    bfl_timeout_seconds: float = Field(default=600.0, gt=0)

    @cached_property
    def sqlite_path(self) -> Path:
        return self.data_dir / "fillframe.db"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.sqlite_path}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @cached_property
    def _secret_bytes(self) -> bytes:
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

    def signing_secret(self) -> bytes:
        """The configured secret, else one generated once and kept in the data dir (read once)."""
        return self._secret_bytes
