"""Python client for a Fillframe server (the Apiframe v2 `flux-fill-pro` dialect).

    from fillframe_client import Fillframe
    with Fillframe("http://127.0.0.1:8000", "afk_...") as ff:
        job = ff.edit_and_wait(image="photo.jpg", mask="mask.png", prompt="a red kite")
        open("out.jpg", "wb").write(ff.download(job))

`AsyncFillframe` is the asyncio twin. Every operation is written once as a flow (`flows`), a
generator of HTTP requests and sleeps; the two drivers (`sync`, `aio`) only carry them out, so
retries (`retry`), response parsing (`models`) and polling exist in one place. `verify_webhook`
(`webhooks`) checks a webhook's signature. The only runtime dependency is httpx.
"""

from fillframe_client._version import __version__
from fillframe_client.aio import AsyncFillframe
from fillframe_client.contract import FLUX_FILL_PARAMS, MODEL, TERMINAL
from fillframe_client.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FillframeError,
    GoneError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidWebhookError,
    JobFailedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    WaitTimeoutError,
)
from fillframe_client.models import (
    Job,
    JobList,
    KeyInfo,
    Me,
    Model,
    Submission,
    Team,
    Upload,
    User,
    WebhookEvent,
)
from fillframe_client.retry import PollPolicy, RetryPolicy
from fillframe_client.sync import Fillframe
from fillframe_client.webhooks import signing_key, verify_webhook

__all__ = [
    "FLUX_FILL_PARAMS",
    "MODEL",
    "TERMINAL",
    "APIConnectionError",
    "APIError",
    "AsyncFillframe",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "Fillframe",
    "FillframeError",
    "GoneError",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidWebhookError",
    "Job",
    "JobFailedError",
    "JobList",
    "KeyInfo",
    "Me",
    "Model",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PollPolicy",
    "RateLimitError",
    "RetryPolicy",
    "ServiceUnavailableError",
    "Submission",
    "Team",
    "Upload",
    "User",
    "WaitTimeoutError",
    "WebhookEvent",
    "__version__",
    "signing_key",
    "verify_webhook",
]
