"""Settings per component, read from `FILLFRAME_*` environment variables and a `.env` file.

Each part is its own pydantic-settings class and each component is handed only its part
(`BlobStore(settings.storage)`, `Deliverer(db, settings.webhooks)`, `FluxEngine(settings.flux)`).
`Settings` holds the parts; the CLI or the app factory builds it once, never at import, so every
test builds its own. Units are in the names (`_seconds`, `_hours`, `_days`, `_bytes`, `_mb`,
`_pixels`) and every number has bounds. A few settings are read by more than one part (the data
folder, the private-address switch, the poll interval, the crop context): each such field is
declared once, in a mixin below, and every part that needs it reads the same variable.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
GiB = 1024 * MiB


class Part(BaseSettings):
    """One component's settings: `FILLFRAME_` + the field name, as before the split."""

    # Errors name the variable, never its value: a refused value may be a secret.
    model_config = SettingsConfigDict(
        env_prefix="FILLFRAME_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )
    summary: ClassVar[str] = ""


# Fields more than one part reads.


class _DataDir(Part):
    data_dir: Path = Field(
        default=Path("./fillframe-data"),
        description="SQLite file, result files and (on SQLite) the generated link secret.",
    )


class _PrivateUrls(Part):
    allow_private_urls: bool = Field(
        default=False, description="Fetch images from loopback/private addresses (local development, tests)."
    )


class _Fetch(_PrivateUrls):
    """How an image is fetched and decoded: a request's inputs, and the bfl engine's results."""

    max_image_bytes: int = Field(
        default=25 * MiB, ge=1024, le=4 * GiB, description="Largest image or mask fetched or sent."
    )
    max_pixels: int = Field(
        default=40_000_000, ge=64 * 64, le=400_000_000, description="Largest decoded image (width x height)."
    )
    fetch_timeout_seconds: float = Field(
        default=20.0, gt=0, le=600, description="Deadline for fetching one image URL."
    )
    max_redirects: int = Field(
        default=5, ge=0, le=20, description="Redirects followed (each re-checked) per image URL."
    )


class _Poll(Part):
    poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Idle workers' backstop poll of the queue (and of the webhook outbox).",
    )


class _Crops(Part):
    crop_context: float = Field(
        default=0.5,
        ge=0,
        le=4,
        description="Context around each hole's box, as a share of its side.",
    )
    crop_min_context: int = Field(
        default=256, ge=0, le=4096, description="At least this many pixels of context each side."
    )


# The parts.


class DatabaseSettings(_DataDir):
    summary: ClassVar[str] = "the jobs database"

    # A secret: a server's URL usually holds its password.
    database_url: SecretStr | None = Field(
        default=None, description="postgresql://... for many processes; default: SQLite file in DATA_DIR."
    )

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "fillframe.db"

    @property
    def url(self) -> str:
        if self.database_url is None:
            return f"sqlite:///{self.sqlite_path}"
        return self.database_url.get_secret_value()

    @property
    def is_shared(self) -> bool:
        """A server database that processes on other machines may share (not a file in DATA_DIR)."""
        return self.database_url is not None and not self.url.startswith("sqlite")


class LinkSettings(_DataDir):
    summary: ClassVar[str] = "signed result links"

    secret: SecretStr | None = Field(
        default=None,
        description="Signs result links. Unset: generated once and kept in the database (PostgreSQL) "
        "or in DATA_DIR (SQLite).",
    )
    public_url: str | None = Field(
        default=None, description="Base URL in result links and webhooks; default: the request's own host."
    )


class StorageSettings(_DataDir):
    summary: ClassVar[str] = "the blob store for uploads and results"

    storage_url: str | None = Field(
        default=None, description="Object store for files (s3://bucket/prefix); default: DATA_DIR/files."
    )
    s3_endpoint: str | None = Field(default=None, description="S3-compatible endpoint URL (MinIO, R2, ...).")
    s3_region: str | None = Field(default=None, description="S3 region.")
    s3_access_key_id: str | None = Field(default=None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret access key.")
    file_urls: Literal["api", "presigned"] = Field(
        default="api", description="Result links served through the API (`api`) or presigned by the store."
    )

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"


class LimitSettings(_Fetch):
    summary: ClassVar[str] = "what a request may ask for (API and the worker's image loading)"

    max_body_bytes: int = Field(
        default=40 * MiB, ge=64 * 1024, le=4 * GiB, description="Largest request body (413 beyond)."
    )
    max_output_pixels: int = Field(
        default=4 * MiB,
        ge=64 * 64,
        le=400_000_000,
        description="Outpaint canvases are scaled down to stay within this.",
    )
    max_upload_bytes: int = Field(
        default=25 * MiB, ge=1024, le=4 * GiB, description="Largest `POST /v2/uploads` file."
    )
    rate_limit_per_minute: int = Field(
        default=600,
        ge=0,
        le=1_000_000,
        description="Submits per key per minute (0 = unlimited); per key via the CLI.",
    )
    max_wait_seconds: int = Field(default=60, ge=0, le=600, description="Ceiling for `Prefer: wait=N`.")


class ApiSettings(Part):
    summary: ClassVar[str] = "the HTTP API: admin access, credits, what a submit records"

    admin_token: SecretStr | None = Field(
        default=None,
        min_length=24,
        description="Operator token for the admin API and console (`/admin`); both are off when unset.",
    )
    upload_ttl_hours: float = Field(
        default=24.0, gt=0, le=24 * 365, description="How long an upload stays usable."
    )
    idempotency_ttl_hours: float = Field(
        default=24.0, gt=0, le=24 * 365, description="How long an Idempotency-Key is kept."
    )
    max_attempts: int = Field(
        default=3, ge=1, le=100, description="Runs of one job before it fails (and is refunded)."
    )
    model_costs: dict[str, Annotated[int, Field(ge=0, le=1_000_000)]] = Field(
        default_factory=lambda: {"flux-fill-pro": 9},
        description="Credits per model (0 to 1000000 each), as JSON.",
    )

    @field_validator("admin_token")
    @classmethod
    def _not_an_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().startswith("afk_"):
            raise ValueError(
                "must not be an API key: generate a separate random token (`openssl rand -hex 32`)"
            )
        return value


class WorkerSettings(_Poll):
    summary: ClassVar[str] = "a worker process: its engine slots, leases and deadlines"

    engine: str = Field(
        default="classic",
        description="`classic`, `telea`, `flux`, `bfl`, or `package.module:Class` for your own.",
    )
    worker_concurrency: int = Field(default=1, ge=1, le=64, description="Jobs a worker process runs at once.")
    engine_memory_limit_mb: float | None = Field(
        default=None,
        gt=0,
        le=1024 * 1024,
        description="An engine process above this resident memory is restarted (its job: engine_error).",
    )
    retention_days: float = Field(
        default=7.0, gt=0, le=3650, description="How long results (and their links) are kept."
    )
    lease_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="A silent worker's job is requeued after this."
    )
    job_timeout_seconds: float = Field(
        default=900.0, gt=0, le=86_400, description="An engine run longer than this fails."
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="On SIGTERM, running jobs get this long before they are handed back.",
    )
    max_concurrent_fetches: int = Field(
        default=8, ge=1, le=256, description="Image downloads a worker process runs at once."
    )
    worker_metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="`fillframe worker` serves /metrics on this port when set."
    )


class LogSettings(Part):
    summary: ClassVar[str] = "logging, in every process"

    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="`auto`: readable on a terminal, JSON lines otherwise."
    )


class WebhookSettings(_PrivateUrls, _Poll):
    """Attempts at 0, 5 s, 5 min, 30 min, 2 h ... 24 h after the first (fillframe/webhooks)."""

    summary: ClassVar[str] = "webhook deliveries"

    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Timeout of one delivery attempt."
    )
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
        le=1024,
        description="Attempts in flight to one destination (scheme, host, port), over all processes.",
    )


class FluxSettings(_Crops):
    """The flux engine (optional extra `fillframe[flux]`): FLUX.1 Fill [dev] through diffusers, offline."""

    summary: ClassVar[str] = "the flux engine (FLUX.1 Fill [dev] on this machine)"

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
        le=65535,
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
        le=16 * MiB,
        description="The model sees at most this many pixels; larger canvases are filled crop by crop.",
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
        max_length=32,
        description='Canvas sizes run once at load, e.g. ["1024x1024"] (pays compile before the first job).',
    )
    flux_guidance_factor: float = Field(
        default=10.0, gt=0, le=100, description="Pipeline guidance = clamp(factor x API guidance, 1.5, 100)."
    )


class BflSettings(_Crops, _Fetch):
    """The bfl engine: Black Forest Labs' hosted FLUX.1 Fill [pro] with the operator's key."""

    summary: ClassVar[str] = "the bfl engine (Black Forest Labs' hosted FLUX.1 Fill [pro])"

    bfl_api_key: SecretStr | None = Field(default=None, description="Your Black Forest Labs key.")
    bfl_base_url: str = Field(default="https://api.bfl.ai", description="BFL region base URL.")
    bfl_guidance_factor: float = Field(
        default=20.0, gt=0, le=100, description="Upstream guidance = clamp(factor x API guidance, 1.5, 100)."
    )
    bfl_poll_seconds: float = Field(default=1.0, gt=0, le=60, description="Interval between upstream polls.")
    bfl_timeout_seconds: float = Field(
        default=600.0, gt=0, le=86_400, description="Give up on an upstream job after this."
    )
    bfl_max_pixels: int = Field(
        default=4 * MiB,
        ge=256,
        le=16 * MiB,
        description="Canvases over this are sent crop by crop (each crop scaled within it).",
    )
    bfl_max_active_tasks: int = Field(
        default=24,
        ge=1,
        le=1024,
        description="Upstream tasks in flight per key in one process (BFL's default cap).",
    )


# Attribute of `Settings` -> its part, in the order of the README's table.
PARTS: dict[str, type[Part]] = {
    "database": DatabaseSettings,
    "storage": StorageSettings,
    "links": LinkSettings,
    "api": ApiSettings,
    "limits": LimitSettings,
    "worker": WorkerSettings,
    "webhooks": WebhookSettings,
    "logging": LogSettings,
    "flux": FluxSettings,
    "bfl": BflSettings,
}


def _split(values: dict[str, Any]) -> dict[str, Any]:
    """`Settings(lease_seconds=5, data_dir=...)`: each flat value goes to every part that has that
    field; a part given whole (`database=DatabaseSettings(...)`) is kept; the rest are read from
    the environment. Problems of all parts are raised together, named by their variables."""
    known = {name for part in PARTS.values() for name in part.model_fields}
    unknown = sorted(set(values) - known - set(PARTS))
    if unknown:
        raise TypeError(f"Settings has no field {', '.join(unknown)}")
    parts: dict[str, Any] = {}
    errors: dict[tuple[Any, ...], Any] = {}
    for attr, part in PARTS.items():
        if attr in values:
            parts[attr] = values[attr]
            continue
        try:
            parts[attr] = part(**{k: v for k, v in values.items() if k in part.model_fields})
        except ValidationError as exc:
            for error in exc.errors():  # a shared field's problem is told once
                errors.setdefault((error["loc"], error["type"]), error)
    if errors:
        details: list[InitErrorDetails] = [
            {"type": PydanticCustomError(e["type"], e["msg"]), "loc": e["loc"], "input": e["input"]}
            for e in errors.values()
        ]
        raise ValidationError.from_exception_data("Settings", details, hide_input=True)
    return parts


class Settings(BaseModel):
    """Every part, each read from the environment (or given); built once per process."""

    database: DatabaseSettings
    storage: StorageSettings
    links: LinkSettings
    api: ApiSettings
    limits: LimitSettings
    worker: WorkerSettings
    webhooks: WebhookSettings
    logging: LogSettings
    flux: FluxSettings
    bfl: BflSettings

    def __init__(self, **values: Any) -> None:
        super().__init__(**_split(values))


def flat_view(settings: Settings) -> SimpleNamespace:
    """Every setting by its flat field name (`view.lease_seconds`), as the single settings object
    of earlier versions offered them: what a custom engine that names no part is built with."""
    return SimpleNamespace(
        **{
            name: getattr(part, name)
            for part in (getattr(settings, a) for a in PARTS)
            for name in type(part).model_fields
        }
    )


def variables() -> set[str]:
    """Every `FILLFRAME_*` variable that some part reads."""
    return {f"FILLFRAME_{name.upper()}" for part in PARTS.values() for name in part.model_fields}
