"""Python client for a Fillframe server (the Apiframe v2 `flux-fill-pro` dialect): `Fillframe` and
its async twin `AsyncFillframe`.

    from fillframe.client import Fillframe
    with Fillframe("http://127.0.0.1:8000", "afk_...") as ff:
        job = ff.edit_and_wait(image="photo.jpg", mask="mask.png", prompt="a red kite")
        open("out.jpg", "wb").write(ff.download(job))

How it is built: every operation is written once, as a *flow* - a generator that yields `Send`
(one HTTP request) and `Sleep` steps and is sent back each request's `Reply`. The two clients only
carry those steps out (httpx.Client + time.sleep, or httpx.AsyncClient + asyncio.sleep), so request
building, retries, response parsing and polling exist in one place.

Retries: a GET, or a POST that carries an `Idempotency-Key` (`edit` always sends one, generated
when not given, and repeats the same key on every attempt), is retried on 429, 502, 503, 504 and
on connection errors, waiting `Retry-After` when the server sends it (up to `max_retry_wait`
seconds; a longer wait is raised as `RateLimitError` at once) and an exponential backoff otherwise.
Other POSTs (uploads, cancel) are never retried.
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import json
import mimetypes
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeAlias, TypeVar

import httpx

from fillframe import __version__
from fillframe.contract import TERMINAL, FluxFillParams

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
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
    "Job",
    "JobFailedError",
    "JobList",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "Submission",
    "Upload",
    "WaitTimeoutError",
]

MODEL = "flux-fill-pro"
USER_AGENT = f"fillframe-python/{__version__}"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# fluxFillParams a caller may pass as keyword arguments (image, mask, prompt, mode and outpaint
# have their own arguments); checked here so a misspelt name fails before any upload.
EXTRA_PARAMS = frozenset(FluxFillParams.model_fields) - {"image", "mask", "prompt", "mode", "outpaint"}
_URL_OR_DATA = re.compile(r"^(https?://|data:image/)", re.IGNORECASE)

T = TypeVar("T")
if TYPE_CHECKING:
    Source: TypeAlias = str | os.PathLike[str] | bytes | Image.Image | np.ndarray
ProgressCallback = Callable[["Job"], None]


# --- errors ----------------------------------------------------------------------------------


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


_ERRORS: dict[int, type[APIError]] = {
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


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A job as `GET /v2/jobs/{id}` shows it; `raw` keeps the whole JSON object."""

    id: str
    status: str
    progress: int
    images: list[str]
    error: str | None
    error_code: str | None
    seed: int | None
    created_at: str | None
    completed_at: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        result = data.get("result") or {}
        return cls(
            id=data["id"],
            status=data["status"],
            progress=int(data.get("progress") or 0),
            images=list(result.get("images") or []),
            error=data.get("error"),
            error_code=data.get("errorCode"),
            seed=data.get("seed"),
            created_at=data.get("createdAt"),
            completed_at=data.get("completedAt"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class JobList:
    """One page of `GET /v2/jobs`, newest first; pass `next_cursor` to get the next page."""

    jobs: list[Job]
    next_cursor: str | None
    has_more: bool


@dataclass(frozen=True)
class Submission:
    """The answer to a submit: the job's id and status, and the Idempotency-Key that was sent."""

    job_id: str
    status: str
    idempotency_key: str


@dataclass(frozen=True)
class Upload:
    """An uploaded image; `url` can be used as `image` or `mask` by the same account."""

    id: str
    url: str
    content_type: str
    byte_size: int
    expires_at: str | None


# --- the steps a flow yields -----------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """One HTTP request. `path` is relative to the base URL, or absolute (`auth` then off)."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass(frozen=True)
class TransportFailure:
    """The request never got an answer (connection refused, reset, timed out)."""

    error: Exception


@dataclass(frozen=True)
class Sleep:
    seconds: float


Flow = Generator[Send | Sleep, Reply | TransportFailure | None, T]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    max_retry_wait: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 8.0


@dataclass(frozen=True)
class PollPolicy:
    """Job polling: start at `first` seconds, grow by `factor` up to `most`."""

    first: float = 0.25
    factor: float = 1.5
    most: float = 2.0


# --- pure helpers ----------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def can_retry(send: Send) -> bool:
    """Only requests that cannot run twice by accident: GETs, and POSTs with an idempotency key."""
    if send.method.upper() in ("GET", "HEAD"):
        return True
    return any(name.lower() == "idempotency-key" for name in send.headers)


def retry_delay(reply: Reply | TransportFailure, attempt: int, policy: RetryPolicy) -> float | None:
    """How long to wait before retry number `attempt + 1`, or None when the reply is final.

    `attempt` counts retries already made. Assumes the request may be retried (`can_retry`).
    """
    if attempt >= policy.max_retries:
        return None
    backoff = min(policy.backoff_max, policy.backoff_base * 2**attempt)
    if isinstance(reply, TransportFailure):
        return backoff
    if reply.status not in RETRY_STATUSES:
        return None
    advised = parse_retry_after(reply.headers.get("retry-after"))
    if advised is None:
        return backoff
    return advised if advised <= policy.max_retry_wait else None


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
    cls = _ERRORS.get(reply.status) or (InternalServerError if reply.status >= 500 else APIError)
    kwargs: dict[str, Any] = {
        "details": details if isinstance(details, dict) else None,
        "body": body,
        "request_id": reply.headers.get("x-request-id"),
    }
    if cls is RateLimitError:
        kwargs["retry_after"] = parse_retry_after(reply.headers.get("retry-after"))
    return cls(reply.status, message, **kwargs)


@dataclass(frozen=True)
class EditSpec:
    """What a caller asked `edit` for, before local content is uploaded."""

    image: Source
    prompt: str
    mask: Source | None = None
    mode: str | None = None
    outpaint: str | None = None
    idempotency_key: str | None = None
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


def check_params(params: Mapping[str, Any]) -> None:
    """Raise TypeError for a keyword that is not a fluxFillParams field (before any upload)."""
    unknown = sorted(set(params) - EXTRA_PARAMS)
    if unknown:
        raise TypeError(f"Unknown fluxFillParams {unknown}; known: {', '.join(sorted(EXTRA_PARAMS))}.")


def infer_mode(mode: str | None, mask: object, outpaint: str | None, expand: object = None) -> str:
    """`mode` as given, else "outpaint" when only a preset or an `expand` is given, else "inpaint"."""
    if mode is not None:
        return mode
    return "outpaint" if (outpaint is not None or expand) and mask is None else "inpaint"


def edit_body(
    image: str,
    *,
    prompt: str,
    mode: str,
    mask: str | None = None,
    outpaint: str | None = None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of `POST /v2/images/edit`; `image`/`mask` are URLs or data URIs by now."""
    params = dict(params or {})
    check_params(params)
    fill: dict[str, Any] = {"image": image, "prompt": prompt, "mode": mode}
    if mode == "inpaint" and mask is not None:
        fill["mask"] = mask
    if mode == "outpaint" and outpaint is not None:
        fill["outpaint"] = outpaint
    fill.update({k: v for k, v in params.items() if v is not None})
    body: dict[str, Any] = {"model": MODEL, "fluxFillParams": fill}
    if webhook_url is not None:
        body["webhookUrl"] = webhook_url
    if webhook_events is not None:
        body["webhookEvents"] = list(webhook_events)
    return body


def file_part(value: Source, what: str) -> tuple[str, bytes, str] | str:
    """A reference the API takes as is (http(s) URL, data URI), or `(filename, bytes, type)` to upload.

    value: a URL or data URI (str); a local path (str or PathLike); raw bytes; a PIL image; or a
    numpy array (HxW or HxWx3/4 uint8), which is sent as PNG. The server sniffs the real type.
    """
    if isinstance(value, str) and _URL_OR_DATA.match(value):
        return value
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"The {what} file {str(path)!r} does not exist.")
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return path.name, path.read_bytes(), mime
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{what}.bin", bytes(value), "application/octet-stream"
    from PIL import Image

    if not isinstance(value, Image.Image):
        import numpy as np

        if not isinstance(value, np.ndarray):
            raise TypeError(
                f"The {what} must be a URL, a data URI, a path, bytes, a PIL image or a numpy array, "
                f"not {type(value).__name__}."
            )
        value = Image.fromarray(value)
    buffer = io.BytesIO()
    value.save(buffer, "PNG")
    return f"{what}.png", buffer.getvalue(), "image/png"


# --- flows: each operation, once ---------------------------------------------------------------


def request_flow(send: Send, policy: RetryPolicy) -> Flow[Reply]:
    """Send, retry where allowed (see module doc), raise the typed error for a final error reply."""
    retryable = can_retry(send)
    attempt = 0
    while True:
        reply = yield send
        assert reply is not None
        delay = retry_delay(reply, attempt, policy) if retryable else None
        if delay is None:
            if isinstance(reply, TransportFailure):
                raise APIConnectionError(f"Could not reach the server: {reply.error}") from reply.error
            if reply.status >= 400:
                raise error_from_reply(reply)
            return reply
        yield Sleep(delay)
        attempt += 1


def json_flow(send: Send, policy: RetryPolicy) -> Flow[Any]:
    reply = yield from request_flow(send, policy)
    return reply.json()


def upload_flow(value: Source, policy: RetryPolicy, what: str = "image") -> Flow[Upload]:
    part = file_part(value, what)
    if isinstance(part, str):
        raise ValueError(f"The {what} is already a URL or data URI; it needs no upload.")
    data = yield from json_flow(Send("POST", "/v2/uploads", files={"file": part}), policy)
    return Upload(data["id"], data["url"], data["contentType"], data["byteSize"], data.get("expiresAt"))


def source_flow(value: Source, policy: RetryPolicy, what: str) -> Flow[str]:
    """The string the API takes for `value`: as given for URLs/data URIs, else an upload's URL."""
    part = file_part(value, what)
    if isinstance(part, str):
        return part
    upload = yield from upload_flow(value, policy, what)
    return upload.url


def edit_flow(spec: EditSpec, policy: RetryPolicy) -> Flow[Submission]:
    check_params(spec.params)
    mode = infer_mode(spec.mode, spec.mask, spec.outpaint, spec.params.get("expand"))
    image_ref = yield from source_flow(spec.image, policy, "image")
    mask_ref = None
    if mode == "inpaint" and spec.mask is not None:
        mask_ref = yield from source_flow(spec.mask, policy, "mask")
    body = edit_body(
        image_ref,
        prompt=spec.prompt,
        mode=mode,
        mask=mask_ref,
        outpaint=spec.outpaint,
        webhook_url=spec.webhook_url,
        webhook_events=spec.webhook_events,
        params=spec.params,
    )
    key = spec.idempotency_key or f"ff-{uuid.uuid4().hex}"
    send = Send("POST", "/v2/images/edit", json=body, headers={"Idempotency-Key": key})
    data = yield from json_flow(send, policy)
    if "jobId" not in data:  # a `Prefer: wait` answer is the job itself
        return Submission(data["id"], data["status"], key)
    return Submission(data["jobId"], data["status"], key)


def get_job_flow(job_id: str, policy: RetryPolicy) -> Flow[Job]:
    data = yield from json_flow(Send("GET", f"/v2/jobs/{job_id}"), policy)
    return Job.from_json(data)


def list_jobs_flow(
    policy: RetryPolicy, status: str | None, limit: int, cursor: str | None, model: str | None
) -> Flow[JobList]:
    params = {
        k: v for k, v in {"status": status, "limit": limit, "cursor": cursor, "model": model}.items() if v
    }
    data = yield from json_flow(Send("GET", "/v2/jobs", params=params), policy)
    return JobList(
        [Job.from_json(j) for j in data["jobs"]], data.get("nextCursor"), bool(data.get("hasMore"))
    )


def cancel_flow(job_id: str, policy: RetryPolicy) -> Flow[Job]:
    data = yield from json_flow(Send("POST", f"/v2/jobs/{job_id}/cancel"), policy)
    return Job.from_json(data)


def wait_flow(
    job_id: str,
    policy: RetryPolicy,
    poll: PollPolicy,
    timeout: float | None,
    on_progress: ProgressCallback | None,
) -> Flow[Job]:
    """Poll until the job ends; `on_progress(job)` runs whenever its status or progress changes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = poll.first
    seen: tuple[str, int] | None = None
    while True:
        job = yield from get_job_flow(job_id, policy)
        if on_progress is not None and (job.status, job.progress) != seen:
            on_progress(job)
        seen = (job.status, job.progress)
        if job.done:
            return job
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(job, timeout or 0.0)
            delay = min(delay, remaining)
        yield Sleep(delay)
        delay = min(poll.most, delay * poll.factor)


def edit_and_wait_flow(
    spec: EditSpec,
    policy: RetryPolicy,
    poll: PollPolicy,
    timeout: float | None,
    on_progress: ProgressCallback | None,
) -> Flow[Job]:
    submission = yield from edit_flow(spec, policy)
    job = yield from wait_flow(submission.job_id, policy, poll, timeout, on_progress)
    if job.status != "COMPLETED":
        raise JobFailedError(job)
    return job


def download_flow(target: Job | str, policy: RetryPolicy) -> Flow[bytes]:
    """The bytes of a result: a job's first image, or a signed result URL (no key is sent)."""
    if isinstance(target, Job):
        if not target.images:
            raise FillframeError(f"Job {target.id} has no result image (status {target.status}).")
        target = target.images[0]
    reply = yield from request_flow(Send("GET", target, auth=False), policy)
    return reply.content


# --- the two drivers -------------------------------------------------------------------------


class _Base:
    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        max_retries: int,
        max_retry_wait: float,
        poll: PollPolicy | None,
    ) -> None:
        base_url = base_url or os.environ.get("FILLFRAME_SERVER")
        if not base_url:
            raise ValueError("Give the server's base URL, or set FILLFRAME_SERVER.")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("FILLFRAME_API_KEY")
        self.retry = RetryPolicy(max_retries=max_retries, max_retry_wait=max_retry_wait)
        self.poll = poll or PollPolicy()

    def _request_args(self, send: Send) -> dict[str, Any]:
        absolute = send.path.startswith(("http://", "https://"))
        headers = {"User-Agent": USER_AGENT, **send.headers}
        # Result links are signed; never hand the key to whatever host a URL names.
        if send.auth and not absolute and self.api_key:
            headers["X-API-Key"] = self.api_key
        return {
            "method": send.method,
            "url": send.path if absolute else self.base_url + send.path,
            "params": send.params,
            "json": send.json,
            "files": send.files,
            "headers": headers,
        }


class Fillframe(_Base):
    """Synchronous client. `base_url`/`api_key` default to FILLFRAME_SERVER / FILLFRAME_API_KEY.

    max_retries: retries of a retryable request (module doc); max_retry_wait: the longest
    `Retry-After` honoured; `sleep` is how retries and polling wait (swap it to observe them).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_retry_wait: float = 60.0,
        poll: PollPolicy | None = None,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(base_url, api_key, max_retries=max_retries, max_retry_wait=max_retry_wait, poll=poll)
        self._http = http_client or httpx.Client(timeout=timeout, follow_redirects=False)
        self._owns_http = http_client is None
        self._sleep = sleep
        self.jobs = Jobs(self)
        self.uploads = Uploads(self)

    def _run(self, flow: Flow[T]) -> T:
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    self._sleep(step.seconds)
                    step = flow.send(None)
                    continue
                try:
                    response = self._http.request(**self._request_args(step))
                    result: Reply | TransportFailure = Reply(
                        response.status_code, response.headers, response.content
                    )
                except httpx.TransportError as exc:
                    result = TransportFailure(exc)
                step = flow.send(result)
        except StopIteration as stop:
            return stop.value

    def me(self) -> dict[str, Any]:
        """`GET /v2/me`: the key's user, team (credits, plan) and key."""
        return self._run(json_flow(Send("GET", "/v2/me"), self.retry))

    def models(self) -> list[dict[str, Any]]:
        """`GET /v2/models`: the model catalog with credit costs."""
        return self._run(json_flow(Send("GET", "/v2/models"), self.retry))["models"]

    def edit(
        self,
        image: Source,
        *,
        prompt: str,
        mask: Source | None = None,
        mode: str | None = None,
        outpaint: str | None = None,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_events: list[str] | None = None,
        **params: Any,
    ) -> Submission:
        """Submit a job. `image`/`mask`: URL, data URI, path, bytes, PIL image or numpy array (local
        content is uploaded first). `mode` defaults to outpaint when only `outpaint` or `expand` is
        given. `params`: steps, guidance, seed, safety_tolerance, output_format, prompt_upsampling,
        expand (`{"left": 256, "right": 0, ...}` pixels per side, instead of a preset)."""
        spec = EditSpec(
            image, prompt, mask, mode, outpaint, idempotency_key, webhook_url, webhook_events, params
        )
        return self._run(edit_flow(spec, self.retry))

    def edit_and_wait(
        self,
        image: Source,
        *,
        prompt: str,
        mask: Source | None = None,
        mode: str | None = None,
        outpaint: str | None = None,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_events: list[str] | None = None,
        timeout: float | None = 900.0,
        on_progress: ProgressCallback | None = None,
        **params: Any,
    ) -> Job:
        """`edit`, then `jobs.wait`; raises JobFailedError unless the job COMPLETED."""
        spec = EditSpec(
            image, prompt, mask, mode, outpaint, idempotency_key, webhook_url, webhook_events, params
        )
        return self._run(edit_and_wait_flow(spec, self.retry, self.poll, timeout, on_progress))

    def download(self, target: Job | str) -> bytes:
        """A result's bytes: the job's first image, or a signed result URL."""
        return self._run(download_flow(target, self.retry))

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Jobs:
    def __init__(self, client: Fillframe) -> None:
        self._client = client

    def get(self, job_id: str) -> Job:
        return self._client._run(get_job_flow(job_id, self._client.retry))

    def list(
        self,
        *,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        model: str | None = None,
    ) -> JobList:
        return self._client._run(list_jobs_flow(self._client.retry, status, limit, cursor, model))

    def cancel(self, job_id: str) -> Job:
        return self._client._run(cancel_flow(job_id, self._client.retry))

    def wait(
        self, job_id: str, *, timeout: float | None = 900.0, on_progress: ProgressCallback | None = None
    ) -> Job:
        """Poll (with backoff) until the job ends, whatever the outcome; WaitTimeoutError after `timeout`."""
        c = self._client
        return c._run(wait_flow(job_id, c.retry, c.poll, timeout, on_progress))


class Uploads:
    def __init__(self, client: Fillframe) -> None:
        self._client = client

    def create(self, file: Source) -> Upload:
        """Upload a path, bytes, PIL image or numpy array; use `.url` as `image` or `mask`."""
        return self._client._run(upload_flow(file, self._client.retry))


class AsyncFillframe(_Base):
    """The asyncio twin of `Fillframe`: the same methods, awaited."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_retry_wait: float = 60.0,
        poll: PollPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(base_url, api_key, max_retries=max_retries, max_retry_wait=max_retry_wait, poll=poll)
        self._http = http_client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._owns_http = http_client is None
        self._sleep = sleep
        self.jobs = AsyncJobs(self)
        self.uploads = AsyncUploads(self)

    async def _run(self, flow: Flow[T]) -> T:
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    await self._sleep(step.seconds)
                    step = flow.send(None)
                    continue
                try:
                    response = await self._http.request(**self._request_args(step))
                    result: Reply | TransportFailure = Reply(
                        response.status_code, response.headers, response.content
                    )
                except httpx.TransportError as exc:
                    result = TransportFailure(exc)
                step = flow.send(result)
        except StopIteration as stop:
            return stop.value

    async def me(self) -> dict[str, Any]:
        return await self._run(json_flow(Send("GET", "/v2/me"), self.retry))

    async def models(self) -> list[dict[str, Any]]:
        return (await self._run(json_flow(Send("GET", "/v2/models"), self.retry)))["models"]

    async def edit(
        self,
        image: Source,
        *,
        prompt: str,
        mask: Source | None = None,
        mode: str | None = None,
        outpaint: str | None = None,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_events: list[str] | None = None,
        **params: Any,
    ) -> Submission:
        spec = EditSpec(
            image, prompt, mask, mode, outpaint, idempotency_key, webhook_url, webhook_events, params
        )
        return await self._run(edit_flow(spec, self.retry))

    async def edit_and_wait(
        self,
        image: Source,
        *,
        prompt: str,
        mask: Source | None = None,
        mode: str | None = None,
        outpaint: str | None = None,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        webhook_events: list[str] | None = None,
        timeout: float | None = 900.0,
        on_progress: ProgressCallback | None = None,
        **params: Any,
    ) -> Job:
        spec = EditSpec(
            image, prompt, mask, mode, outpaint, idempotency_key, webhook_url, webhook_events, params
        )
        return await self._run(edit_and_wait_flow(spec, self.retry, self.poll, timeout, on_progress))

    async def download(self, target: Job | str) -> bytes:
        return await self._run(download_flow(target, self.retry))

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class AsyncJobs:
    def __init__(self, client: AsyncFillframe) -> None:
        self._client = client

    async def get(self, job_id: str) -> Job:
        return await self._client._run(get_job_flow(job_id, self._client.retry))

    async def list(
        self,
        *,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        model: str | None = None,
    ) -> JobList:
        return await self._client._run(list_jobs_flow(self._client.retry, status, limit, cursor, model))

    async def cancel(self, job_id: str) -> Job:
        return await self._client._run(cancel_flow(job_id, self._client.retry))

    async def wait(
        self, job_id: str, *, timeout: float | None = 900.0, on_progress: ProgressCallback | None = None
    ) -> Job:
        c = self._client
        return await c._run(wait_flow(job_id, c.retry, c.poll, timeout, on_progress))


class AsyncUploads:
    def __init__(self, client: AsyncFillframe) -> None:
        self._client = client

    async def create(self, file: Source) -> Upload:
        return await self._client._run(upload_flow(file, self._client.retry))
