"""Every error the client raises, and the typed error for an error reply."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fillframe_client.retry import parse_retry_after
from fillframe_client.steps import Reply

if TYPE_CHECKING:
    from fillframe_client.models import Job


class FillframeError(Exception):
    """Base class of every error this client raises."""


class APIError(FillframeError):
    """The server answered with an error status; `message` is its one-sentence `error`."""

    status_code: int = 0

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        details: dict[str, list[str]] | None = None,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status_code} {message}")
        self.status_code = status_code
        self.message = message
        self.details = details or {}
        self.body = body
        self.request_id = request_id


class BadRequestError(APIError):
    """400: a parameter is invalid; `details` maps JSON paths to messages."""


class AuthenticationError(APIError):
    """401: the API key is missing, unknown or revoked."""


class InsufficientCreditsError(APIError):
    """402: the account cannot pay for the job."""

    @property
    def credits_required(self) -> int | None:
        return self.body.get("creditsRequired") if isinstance(self.body, dict) else None

    @property
    def credits_available(self) -> int | None:
        return self.body.get("creditsAvailable") if isinstance(self.body, dict) else None


class PermissionDeniedError(APIError):
    """403: the key is inactive, or a file link is not valid."""


class NotFoundError(APIError):
    """404: no such job (or upload) for this account."""


class ConflictError(APIError):
    """409: an Idempotency-Key reused with another body, or a job that cannot be cancelled."""


class GoneError(APIError):
    """410: a result link expired or its file was purged."""


class PayloadTooLargeError(APIError):
    """413: the body or upload is too large."""


class RateLimitError(APIError):
    """429: too many requests; `retry_after` is the server's advice in seconds."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServiceUnavailableError(APIError):
    """503: the database or queue is unavailable; retry later."""


class InternalServerError(APIError):
    """Any other 5xx."""


class APIConnectionError(FillframeError):
    """The server could not be reached (after the retries)."""


class JobFailedError(FillframeError):
    """`edit_and_wait` ended in FAILED or CANCELLED; `job.error_code` says why."""

    def __init__(self, job: Job) -> None:
        code = f" ({job.error_code})" if job.error_code else ""
        super().__init__(f"Job {job.id} {job.status.lower()}{code}: {job.error or 'no detail given'}")
        self.job = job


class WaitTimeoutError(FillframeError, TimeoutError):
    """The job did not finish within the wait's timeout; `job` is its last known state."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"Job {job.id} is still {job.status} after {timeout:g} s.")
        self.job = job


class InvalidWebhookError(FillframeError, ValueError):
    """A request is not a webhook signed with this key (or it is too old or too new)."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_from_reply(reply: Reply) -> APIError:
    """The typed error for an error reply (status >= 400), its message taken from `error`."""
    try:
        body: Any = reply.json()
    except ValueError:
        body = reply.content.decode("utf-8", "replace")[:500]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
    else:
        message = (body.strip() if isinstance(body, str) else "") or f"HTTP {reply.status}"
    details = body.get("details") if isinstance(body, dict) else None
    cls = _BY_STATUS.get(reply.status) or (InternalServerError if reply.status >= 500 else APIError)
    kwargs: dict[str, Any] = {
        "details": details if isinstance(details, dict) else None,
        "body": body,
        "request_id": reply.headers.get("x-request-id"),
    }
    if cls is RateLimitError:
        kwargs["retry_after"] = parse_retry_after(reply.headers.get("retry-after"))
    return cls(reply.status, message, **kwargs)
