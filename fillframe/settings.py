"""One settings object, read from `FILLFRAME_*` environment variables and a `.env` file.

Built by the CLI or the app factory, never at import, so every test builds its own.
"""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FILLFRAME_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path("./fillframe-data"), description="SQLite file, result files and the generated secret."
    )
    database_url: str | None = Field(
        default=None, description="postgresql://... for many processes; default: SQLite file in DATA_DIR."
    )
    public_url: str | None = Field(
        default=None, description="Base URL in result links and webhooks; default: the request's own host."
    )
    allow_private_urls: bool = Field(
        default=False, description="Fetch images from loopback/private addresses (local development, tests)."
    )
    secret: str | None = Field(
        default=None, description="Signs result links; generated and kept in DATA_DIR on first run if unset."
    )
    admin_token: SecretStr | None = Field(
        default=None,
        min_length=24,
        description="Operator token for the admin API and console (`/admin`); both are off when unset.",
    )

    storage_url: str | None = Field(
        default=None, description="Object store for files (s3://bucket/prefix); default: DATA_DIR/files."
    )
    s3_endpoint: str | None = Field(default=None, description="S3-compatible endpoint URL (MinIO, R2, ...).")
    s3_region: str | None = Field(default=None, description="S3 region.")
    s3_access_key_id: str | None = Field(default=None, description="S3 access key id.")
    s3_secret_access_key: str | None = Field(default=None, description="S3 secret access key.")
    file_urls: Literal["api", "presigned"] = Field(
        default="api", description="Result links served through the API (`api`) or presigned by the store."
    )

    engine: str = Field(
        default="classic",
        description="`classic`, `telea`, `flux`, `bfl`, or `package.module:Class` for your own.",
    )
    worker_concurrency: int = Field(default=1, ge=1, le=64, description="Jobs a worker process runs at once.")
    engine_memory_limit_mb: float | None = Field(
        default=None,
        gt=0,
        description="An engine process above this resident memory is restarted (its job: engine_error).",
    )

    max_body_bytes: int = Field(default=40 * 1024 * 1024, description="Largest request body (413 beyond).")
    max_image_bytes: int = Field(
        default=25 * 1024 * 1024, description="Largest image or mask fetched or sent."
    )
    max_pixels: int = Field(default=40_000_000, description="Largest decoded image (width x height).")
    max_output_pixels: int = Field(
        default=4 * 1024 * 1024, description="Outpaint canvases are scaled down to stay within this."
    )
    fetch_timeout_seconds: float = Field(default=20.0, description="Deadline for fetching one image URL.")
    max_redirects: int = Field(default=5, description="Redirects followed (each re-checked) per image URL.")

    max_upload_bytes: int = Field(default=25 * 1024 * 1024, description="Largest `POST /v2/uploads` file.")
    upload_ttl_hours: float = Field(default=24.0, description="How long an upload stays usable.")
    idempotency_ttl_hours: float = Field(default=24.0, description="How long an Idempotency-Key is kept.")
    rate_limit_per_minute: int = Field(
        default=600, ge=0, description="Submits per key per minute (0 = unlimited); per key via the CLI."
    )
    max_wait_seconds: int = Field(default=60, description="Ceiling for `Prefer: wait=N`.")
    retention_days: float = Field(default=7.0, description="How long results (and their links) are kept.")
    lease_seconds: float = Field(default=60.0, description="A silent worker's job is requeued after this.")
    max_attempts: int = Field(default=3, description="Runs of one job before it fails (and is refunded).")
    poll_seconds: float = Field(default=1.0, description="Idle workers' backstop poll of the queue.")
    job_timeout_seconds: float = Field(default=900.0, description="An engine run longer than this fails.")
    shutdown_grace_seconds: float = Field(
        default=30.0, description="On SIGTERM, running jobs get this long before they are handed back."
    )
    model_costs: dict[str, int] = Field(
        default_factory=lambda: {"flux-fill-pro": 9}, description="Credits per model, as JSON."
    )

    max_concurrent_fetches: int = Field(
        default=8, ge=1, description="Image downloads a worker process runs at once."
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="`auto`: readable on a terminal, JSON lines otherwise."
    )
    worker_metrics_port: int | None = Field(
        default=None, description="`fillframe worker` serves /metrics on this port when set."
    )

    # Webhooks (fillframe/webhooks): attempts at 0, 5 s, 5 min, 30 min, 2 h ... 24 h after the first.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of one delivery attempt.")
    webhook_schedule_scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Multiplies the retry schedule; tests squeeze a day into seconds.",
    )
    webhook_concurrency: int = Field(
        default=128,
        ge=0,
        le=4096,
        description="Delivery attempts in flight per worker process; 0: this process delivers none.",
    )
    webhook_per_host: int = Field(
        default=8,
        ge=1,
        description="Attempts in flight to one destination (scheme, host, port), over all processes.",
    )

    # flux engine (optional extra `fillframe[flux]`): FLUX.1 Fill [dev] through diffusers, offline.
    flux_model: Path | None = Field(
        default=None, description="Local FLUX.1-Fill-dev snapshot in diffusers layout."
    )
    flux_transformer_file: Path | None = Field(
        default=None, description="Optional single-file transformer; configs come from FLUX_MODEL."
    )
    flux_device: str = Field(
        default="auto", description="auto, cuda, cuda:N or cpu; auto: one GPU per worker (docs/engines.md)."
    )
    flux_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="auto: bfloat16 on GPU, float32 on CPU."
    )
    flux_worker_index: int | None = Field(
        default=None,
        ge=0,
        description="With DEVICE=auto on a multi-GPU machine: cuda:(index mod GPUs); unset: cuda:0.",
    )
    flux_cpu_offload: bool = Field(default=False, description="Model CPU offload (same as OFFLOAD=model).")
    flux_offload: Literal["none", "model", "group", "sequential"] = Field(
        default="none",
        description="none, model, group (leaf level, streamed) or sequential: less GPU memory, slower.",
    )
    flux_compile: bool = Field(default=False, description="torch.compile the transformer.")
    flux_fp8: bool = Field(
        default=False, description="FP8 weights through torchao, quantized at load (needs bfloat16)."
    )
    flux_max_pixels: int = Field(
        default=1024 * 1024,
        ge=256,
        description="The model sees at most this many pixels; larger canvases are filled crop by crop.",
    )
    crop_context: float = Field(
        default=0.5,
        ge=0,
        le=4,
        description="Context around each hole's box, as a share of its side (flux, bfl).",
    )
    crop_min_context: int = Field(
        default=256, ge=0, description="At least this many pixels of context each side (flux, bfl)."
    )
    flux_cache_threshold: float = Field(
        default=0.0, ge=0, le=1, description="First-block cache threshold (0 = off; 0.05-0.12 typical)."
    )
    flux_max_batch: int = Field(
        default=1, ge=1, le=16, description="Jobs of one canvas size run in one pipeline call (fill_batch)."
    )
    flux_vae_tiling: bool = Field(
        default=False, description="Decode large canvases tile by tile (less memory)."
    )
    flux_warmup_sizes: list[str] = Field(
        default_factory=list,
        description='Canvas sizes run once at load, e.g. ["1024x1024"] (pays compile before the first job).',
    )
    flux_guidance_factor: float = Field(
        default=10.0, gt=0, description="Pipeline guidance = clamp(factor x API guidance, 1.5, 100)."
    )

    # bfl engine: Black Forest Labs' hosted FLUX.1 Fill [pro] with the operator's key.
    bfl_api_key: SecretStr | None = Field(
        default=None, description="Your Black Forest Labs key (never logged)."
    )
    bfl_base_url: str = Field(default="https://api.bfl.ai", description="BFL region base URL.")
    bfl_guidance_factor: float = Field(
        default=20.0, gt=0, description="Upstream guidance = clamp(factor x API guidance, 1.5, 100)."
    )
    bfl_poll_seconds: float = Field(default=1.0, gt=0, description="Interval between upstream polls.")
    bfl_timeout_seconds: float = Field(
        default=600.0, gt=0, description="Give up on an upstream job after this."
    )
    bfl_max_pixels: int = Field(
        default=4 * 1024 * 1024,
        ge=256,
        description="Canvases over this are sent crop by crop (each crop scaled within it).",
    )
    bfl_max_active_tasks: int = Field(
        default=24, ge=1, description="Upstream tasks in flight per key in one process (BFL's default cap)."
    )

    @field_validator("admin_token")
    @classmethod
    def _not_an_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().startswith("afk_"):
            raise ValueError(
                "must not be an API key: generate a separate random token (`openssl rand -hex 32`)"
            )
        return value

    @cached_property
    def sqlite_path(self) -> Path:
        return self.data_dir / "fillframe.db"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

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
