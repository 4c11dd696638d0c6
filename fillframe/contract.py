"""The wire contract as pydantic models: what comes in (strict, no unknown keys) and what goes out.

See ../shared/CONTRACT.md. Fields keep the wire's camelCase names so the OpenAPI document reads
like the contract.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

MODELS: dict[str, dict[str, Any]] = {
    "flux-fill-pro": {
        "label": "Flux Fill Pro",
        "provider": "Black Forest Labs",
        "modality": "image",
        "endpoint": "/v2/images/edit",
        "paramsKey": "fluxFillParams",
        "description": "Inpaint with a mask or outpaint to extend the canvas.",
    }
}
OutpaintPreset = Literal[
    "Zoom out 1.5x",
    "Zoom out 2x",
    "Make square",
    "Left outpaint",
    "Right outpaint",
    "Top outpaint",
    "Bottom outpaint",
]
OUTPAINT_PRESETS: tuple[str, ...] = get_args(OutpaintPreset)
WebhookEvent = Literal["progress", "completed", "failed"]
JobStatus = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
MAX_SEED = 2**32 - 1
MAX_URL_LENGTH = 2048

_DATA_URI = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
_HTTP_URL = re.compile(r"^https?://[^\s/?#]+([/?#]\S*)?$", re.IGNORECASE)


def source_kind(value: str) -> Literal["data", "url"]:
    """Classify an image/mask source string, or raise ValueError with the accepted forms."""
    if _DATA_URI.match(value):
        return "data"
    if len(value) <= MAX_URL_LENGTH and _HTTP_URL.match(value):
        return "url"
    raise ValueError(
        "must be an http(s) URL (at most 2048 characters), an upload URL, or a data:image/...;base64, URI"
    )


class _Strict(BaseModel):
    # JSON's NaN and Infinity (which Python's parser accepts) are refused as not finite, instead of
    # failing a bound they never meet ("must be <= 5.0").
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


MAX_EXPAND = 2048


class Expand(_Strict):
    """Beyond: free expansion, pixels added on each side (as BFL's expand endpoint takes)."""

    left: int = Field(default=0, ge=0, le=MAX_EXPAND)
    right: int = Field(default=0, ge=0, le=MAX_EXPAND)
    top: int = Field(default=0, ge=0, le=MAX_EXPAND)
    bottom: int = Field(default=0, ge=0, le=MAX_EXPAND)

    @model_validator(mode="after")
    def _grows(self) -> Expand:
        if not (self.left or self.right or self.top or self.bottom):
            raise ValueError("expand must add pixels on at least one side (left, right, top or bottom > 0)")
        return self


class FluxFillParams(_Strict):
    image: str = Field(description="Source image: http(s) URL, upload URL or data:image URI.")
    prompt: str | None = Field(default=None, min_length=1, max_length=2000)
    mode: Literal["inpaint", "outpaint"] = "inpaint"
    mask: str | None = Field(default=None, description="White = repaint, black = keep.")
    outpaint: OutpaintPreset = "Zoom out 1.5x"
    expand: Expand | None = Field(
        default=None,
        description=(
            "Beyond: pixels to add per side (0-2048 each, at least one > 0), instead of an "
            "`outpaint` preset; only with mode 'outpaint'. Canvas sides become multiples of 16 "
            "and the canvas stays within the server's output pixel limit."
        ),
    )
    steps: int = Field(default=50, ge=1, le=50)
    guidance: float = Field(default=3.0, ge=2, le=5)
    safety_tolerance: int = Field(default=2, ge=1, le=6)
    output_format: Literal["jpg", "png"] = "jpg"
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    prompt_upsampling: bool = False

    @model_serializer(mode="wrap")
    def _one_canvas_rule(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The stored input shows what shaped the canvas: expand, not the unused default preset.
        data: dict[str, Any] = handler(self)
        if self.expand is not None:
            data.pop("outpaint", None)
        return data

    @field_validator("image", "mask")
    @classmethod
    def _source_form(cls, value: str | None) -> str | None:
        if value is not None:
            source_kind(value)
        return value

    @model_validator(mode="after")
    def _mode_rules(self) -> FluxFillParams:
        if self.mode == "inpaint" and not self.mask:
            raise ValueError("mask is required when mode is 'inpaint' (white = repaint)")
        if self.expand is not None and self.mode != "outpaint":
            raise ValueError("expand needs mode 'outpaint' (it grows the canvas; inpaint keeps it)")
        if self.expand is not None and "outpaint" in self.model_fields_set:
            raise ValueError("send either outpaint (a preset) or expand (pixels per side), not both")
        return self


class EditRequest(_Strict):
    # The seed page's request, as the document's example (and Schemathesis's first case).
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "prompt": "a sleek silver sports car on a coastal highway at sunset, hyper-realistic",
                    "model": "flux-fill-pro",
                    "fluxFillParams": {
                        "image": "https://example.com/input.jpg",
                        "mode": "inpaint",
                        "mask": "https://example.com/mask.png",
                        "outpaint": "Zoom out 1.5x",
                    },
                }
            ]
        },
    )

    model: str
    fluxFillParams: FluxFillParams
    prompt: str | None = Field(default=None, min_length=1, max_length=2000)
    webhookUrl: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    webhook_url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    webhookEvents: list[WebhookEvent] | None = Field(default=None, min_length=1)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"must be a known model: {', '.join(MODELS)} (got {value!r})")
        return value

    @field_validator("webhookUrl", "webhook_url")
    @classmethod
    def _webhook_form(cls, value: str | None) -> str | None:
        if value is not None and not _HTTP_URL.match(value):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _cross_field_rules(self) -> EditRequest:
        params_prompt = self.fluxFillParams.prompt
        if not (params_prompt and params_prompt.strip()) and not self.prompt:
            raise ValueError("a prompt is required: set 'prompt' or 'fluxFillParams.prompt'")
        if self.webhookUrl and self.webhook_url and self.webhookUrl != self.webhook_url:
            raise ValueError("webhookUrl and webhook_url differ; send one of them")
        if self.webhookEvents is not None and len(set(self.webhookEvents)) != len(self.webhookEvents):
            raise ValueError("webhookEvents must not repeat an event")
        return self

    @property
    def effective_webhook_url(self) -> str | None:
        return self.webhookUrl or self.webhook_url

    @property
    def effective_webhook_events(self) -> list[str]:
        return list(self.webhookEvents or ["completed", "failed"])


class SubmitResponse(BaseModel):
    jobId: str
    status: JobStatus


class JobResult(BaseModel):
    images: list[str]


class JobView(BaseModel):
    id: str
    status: JobStatus
    model: str
    progress: int = Field(ge=0, le=100)
    result: JobResult | None
    error: str | None
    errorCode: str | None
    creditCost: int
    webhookStatus: Literal["pending", "delivered", "failed"] | None
    createdAt: str
    startedAt: str | None
    completedAt: str | None
    expired: bool
    seed: int
    input: dict[str, Any]
    engine: dict[str, Any] | None = Field(
        default=None, description="Facts the engine recorded, e.g. the pipeline guidance used."
    )


class JobList(BaseModel):
    jobs: list[JobView]
    nextCursor: str | None
    hasMore: bool


class JobListWithModels(JobList):
    """`include_models=true` adds the model ids present among the scope's jobs."""

    models: list[str]


class ErrorBody(BaseModel):
    error: str
    details: dict[str, list[str]] | None = None


class InsufficientCreditsBody(ErrorBody):
    """402: the hold did not fit the balance."""

    creditsRequired: int
    creditsAvailable: int


class NotCancellableBody(ErrorBody):
    """409 on cancel: the job had already ended, in `status`."""

    status: JobStatus


class UploadView(BaseModel):
    id: str
    url: str = Field(description="Pass it as `fluxFillParams.image` or `mask`.")
    kind: Literal["image"]
    contentType: Literal["image/jpeg", "image/png", "image/webp"]
    byteSize: int = Field(ge=1)
    expiresAt: str


Role = Literal["OWNER", "ADMIN", "MEMBER"]
Modality = Literal["image", "video", "music"]
PricingMode = Literal["flat", "per-second", "per-output"]


class MeUser(BaseModel):
    id: str
    email: str
    role: Role


class MeTeam(BaseModel):
    id: str
    name: str
    credits: int = Field(
        ge=0,
        description="The team's balance (the sum of its ledger rows). An unlimited team is not "
        "metered: it answers its balance as it stands (0 unless credits were granted) and "
        "`unlimited: true`.",
    )
    plan: str
    customerId: str | None = Field(description="The operator's own id for this customer.")
    unlimited: bool = Field(description="Beyond: jobs of this team are not metered.")
    maxConcurrentJobs: int = Field(description="Beyond: jobs of the team that may run at once.")


class MeApiKey(BaseModel):
    id: str
    name: str
    prefix: str


class MeView(BaseModel):
    user: MeUser
    team: MeTeam
    apiKey: MeApiKey | None


class ModelInfo(BaseModel):
    id: str
    label: str
    modality: Modality
    description: str
    costMin: int
    costMax: int
    pricingMode: PricingMode
    provider: str = Field(description="Beyond: who made the model.")
    endpoint: str = Field(description="Beyond: where to submit it.")
    paramsKey: str = Field(description="Beyond: the body key of its parameters.")
    creditCost: int = Field(description="Beyond: credits one job costs.")
    engine: str = Field(description="Beyond: the fill engine this server runs the model on.")


class ModelCatalog(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["up", "down"]
