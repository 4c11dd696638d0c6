"""`AsyncFillframe`, the asyncio twin of `Fillframe`: the same flows, carried out by
httpx.AsyncClient and an awaited `sleep`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
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


class AsyncFillframe(BaseClient):
    """The asyncio twin of `Fillframe`: the same methods and arguments, awaited."""

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
            return stop.value  # type: ignore[no-any-return]

    async def me(self) -> Me:
        return await self._run(flows.me_flow(self.retry))

    async def models(self, modality: str | None = None) -> list[Model]:
        return await self._run(flows.models_flow(self.retry, modality))

    async def edit(self, image: Source, *, prompt: str, **options: Unpack[EditOptions]) -> Submission:
        return await self._run(flows.edit_flow(EditSpec.of(image, prompt, options), self.retry))

    async def edit_and_wait(
        self,
        image: Source,
        *,
        prompt: str,
        timeout: float | None = 900.0,
        on_progress: ProgressCallback | None = None,
        **options: Unpack[EditOptions],
    ) -> Job:
        spec = EditSpec.of(image, prompt, options)
        return await self._run(flows.edit_and_wait_flow(spec, self.retry, self.poll, timeout, on_progress))

    async def download(self, target: Job | str) -> bytes:
        return await self._run(flows.download_flow(target, self.retry))

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
        return await self._client._run(flows.get_job_flow(job_id, self._client.retry))

    async def list(
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
        return await self._client._run(flow)

    async def cancel(self, job_id: str) -> Job:
        return await self._client._run(flows.cancel_flow(job_id, self._client.retry))

    async def wait(
        self, job_id: str, *, timeout: float | None = 900.0, on_progress: ProgressCallback | None = None
    ) -> Job:
        c = self._client
        return await c._run(flows.wait_flow(job_id, c.retry, c.poll, timeout, on_progress))


class AsyncUploads:
    def __init__(self, client: AsyncFillframe) -> None:
        self._client = client

    async def create(self, file: Source) -> Upload:
        return await self._client._run(flows.upload_flow(file, self._client.retry))
