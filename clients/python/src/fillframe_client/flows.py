"""Every operation, written once as a flow: a generator of `Send` and `Sleep` steps.

The sync and async drivers only carry the steps out, so request building, retries, response
parsing and polling exist in one place (see `steps`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from fillframe_client.errors import (
    APIConnectionError,
    FillframeError,
    JobFailedError,
    WaitTimeoutError,
    error_from_reply,
)
from fillframe_client.inputs import EditSpec, Source, check_params, edit_body, file_part, infer_mode
from fillframe_client.models import Job, JobList, Me, Model, Submission, Upload
from fillframe_client.retry import PollPolicy, RetryPolicy, can_retry, retry_delay
from fillframe_client.steps import Flow, Reply, Send, Sleep, TransportFailure

ProgressCallback = Callable[[Job], None]


def request_flow(send: Send, policy: RetryPolicy) -> Flow[Reply]:
    """Send, retry where allowed (see `retry`), raise the typed error for a final error reply."""
    retryable = can_retry(send)
    attempt = 0
    while True:
        reply = yield send
        if reply is None:
            raise RuntimeError("A driver must answer every Send with a Reply or a TransportFailure.")
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


def me_flow(policy: RetryPolicy) -> Flow[Me]:
    data = yield from json_flow(Send("GET", "/v2/me"), policy)
    return Me.from_json(data)


def models_flow(policy: RetryPolicy, modality: str | None = None) -> Flow[list[Model]]:
    params = {"modality": modality} if modality else None
    data = yield from json_flow(Send("GET", "/v2/models", params=params), policy)
    return [Model.from_json(m) for m in data["models"]]


def upload_flow(value: Source, policy: RetryPolicy, what: str = "image") -> Flow[Upload]:
    part = file_part(value, what)
    if isinstance(part, str):
        raise ValueError(f"The {what} is already a URL or data URI; it needs no upload.")
    data = yield from json_flow(Send("POST", "/v2/uploads", files={"file": part}), policy)
    return Upload.from_json(data)


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
    # The same key on every attempt: a retried submit whose first answer was lost finds its job.
    key = spec.idempotency_key or f"ff-{uuid.uuid4().hex}"
    send = Send("POST", "/v2/images/edit", json=body, headers={"Idempotency-Key": key})
    data = yield from json_flow(send, policy)
    return Submission.from_json(data, key)


def get_job_flow(job_id: str, policy: RetryPolicy) -> Flow[Job]:
    data = yield from json_flow(Send("GET", f"/v2/jobs/{job_id}"), policy)
    return Job.from_json(data)


def list_jobs_flow(
    policy: RetryPolicy,
    status: str | None,
    limit: int,
    cursor: str | None,
    model: str | None,
    scope: str | None = None,
    search: str | None = None,
    include_models: bool = False,
) -> Flow[JobList]:
    query = {
        "status": status,
        "limit": limit,
        "cursor": cursor,
        "model": model,
        "scope": scope,
        "search": search,
        "include_models": "true" if include_models else None,
    }
    data = yield from json_flow(Send("GET", "/v2/jobs", params={k: v for k, v in query.items() if v}), policy)
    return JobList.from_json(data)


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
