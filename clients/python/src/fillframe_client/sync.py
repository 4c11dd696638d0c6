"""`Fillframe`, the synchronous driver: httpx.Client for `Send`, `sleep` for `Sleep`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Self, TypeVar, Unpack

import httpx

from fillframe_client import flows
from fillframe_client.base import BaseClient
from fillframe_client.flows import ProgressCallback
from fillframe_client.inputs import EditOptions, EditSpec, Source
from fillframe_client.models import Job, JobList, Me, Model, Submission, Upload
from fillframe_client.retry import PollPolicy
from fillframe_client.steps import Flow, Reply, Sleep, TransportFailure

T = TypeVar("T")


class Fillframe(BaseClient):
    """Synchronous client. `base_url`/`api_key` default to FILLFRAME_SERVER / FILLFRAME_API_KEY.

    max_retries: retries of a retryable request (see `fillframe_client.retry`); max_retry_wait:
    the longest `Retry-After` honoured; `sleep` is how retries and polling wait (swap it to
    observe them).
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
            return stop.value  # type: ignore[no-any-return]

    def me(self) -> Me:
        """`GET /v2/me`: the key's user, team (credits, plan) and key."""
        return self._run(flows.me_flow(self.retry))

    def models(self, modality: str | None = None) -> list[Model]:
        """`GET /v2/models`: the model catalog with credit costs."""
        return self._run(flows.models_flow(self.retry, modality))

    def edit(self, image: Source, *, prompt: str, **options: Unpack[EditOptions]) -> Submission:
        """Submit a job. `image`/`mask`: URL, data URI, path, bytes, PIL image or numpy array (local
        content is uploaded first). `mode` defaults to outpaint when only `outpaint` or `expand` is
        given. Other options: expand (`{"left": 256, ...}` pixels per side, instead of a preset),
        steps, guidance, seed, safety_tolerance, output_format, prompt_upsampling."""
        return self._run(flows.edit_flow(EditSpec.of(image, prompt, options), self.retry))

    def edit_and_wait(
        self,
        image: Source,
        *,
        prompt: str,
        timeout: float | None = 900.0,
        on_progress: ProgressCallback | None = None,
        **options: Unpack[EditOptions],
    ) -> Job:
        """`edit`, then `jobs.wait`; raises JobFailedError unless the job COMPLETED."""
        spec = EditSpec.of(image, prompt, options)
        return self._run(flows.edit_and_wait_flow(spec, self.retry, self.poll, timeout, on_progress))

    def download(self, target: Job | str) -> bytes:
        """A result's bytes: the job's first image, or a signed result URL."""
        return self._run(flows.download_flow(target, self.retry))

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
        return self._client._run(flows.get_job_flow(job_id, self._client.retry))

    def list(
        self,
        *,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        model: str | None = None,
        scope: Literal["user", "team"] | None = None,
        search: str | None = None,
        include_models: bool = False,
    ) -> JobList:
        """A page of jobs, newest first. `scope="team"`: every job of the team (OWNER and ADMIN
        keys; the server's default is the caller's own); `search`: one job id; `include_models`:
        the page also lists the model ids present (`JobList.models`)."""
        flow = flows.list_jobs_flow(
            self._client.retry, status, limit, cursor, model, scope, search, include_models
        )
        return self._client._run(flow)

    def cancel(self, job_id: str) -> Job:
        return self._client._run(flows.cancel_flow(job_id, self._client.retry))

    def wait(
        self, job_id: str, *, timeout: float | None = 900.0, on_progress: ProgressCallback | None = None
    ) -> Job:
        """Poll (with backoff) until the job ends, whatever the outcome; WaitTimeoutError after `timeout`."""
        c = self._client
        return c._run(flows.wait_flow(job_id, c.retry, c.poll, timeout, on_progress))


class Uploads:
    def __init__(self, client: Fillframe) -> None:
        self._client = client

    def create(self, file: Source) -> Upload:
        """Upload a path, bytes, PIL image or numpy array; use `.url` as `image` or `mask`."""
        return self._client._run(flows.upload_flow(file, self._client.retry))
