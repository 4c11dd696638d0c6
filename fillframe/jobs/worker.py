"""The worker loop: claim -> load inputs -> engine.fill (in a thread) -> store output -> finish.

A worker holds each claimed job under a lease that a watcher task renews while the engine runs;
the same watcher stores progress and notices cancel requests. If the process dies, the lease runs
out and any other worker's sweeper puts the job back in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from fillframe import logs, metrics, uploads
from fillframe.db import Database
from fillframe.engines.base import CancelledFn, Engine, FillJob, FillOutput, ProgressFn
from fillframe.errors import Cancelled, FillError, TimedOut
from fillframe.imaging.canvas import OutpaintSpec, build_canvas, outpaint_spec, plan_canvas
from fillframe.imaging.decode import decode_image, decode_mask
from fillframe.imaging.encode import encode_image
from fillframe.imaging.fetch import load_source
from fillframe.imaging.masks import check_same_size
from fillframe.jobs import queue, retention, service
from fillframe.jobs.queue import Notifier
from fillframe.jobs.service import Outcome, StoredFile
from fillframe.settings import Settings
from fillframe.storage import EXTENSION_TYPES, BlobStore, Linker, output_key
from fillframe.webhooks import deliver

log = logging.getLogger(__name__)

_WATCH_SECONDS = 0.25


@dataclass
class RunState:
    """Shared between the event loop and the engine's thread."""

    progress: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    reason: str = ""  # "cancel" | "shutdown" | "lost" | "timeout" once `stop` is set

    def set_progress(self, percent: int) -> None:
        self.progress = max(self.progress, min(99, int(percent)))

    def halt(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop.set()


SourceLoader = Callable[[str, str], Awaitable[bytes]]


def network_loader(settings: Settings) -> SourceLoader:
    """Sources from data URIs and http(s) URLs only (no uploads: nothing to read them from)."""

    async def load(value: str, what: str) -> bytes:
        return await load_source(value, settings, what=what)

    return load


@dataclass(frozen=True)
class Sources:
    """A job's inputs as fetched, not yet decoded (decoding is CPU work for a worker thread)."""

    row: dict[str, Any]
    image: bytes
    mask: bytes | None  # None: outpaint, the mask is the preset's new area


async def fetch_sources(row: dict[str, Any], settings: Settings, load: SourceLoader | None = None) -> Sources:
    load = load or network_loader(settings)
    params = row["request"]["fluxFillParams"]
    if params.get("mode", "inpaint") == "outpaint":
        return Sources(row, await load(params["image"], "image"), None)
    # Both at once: two round trips to the user's image host cost the latency of one.
    image_bytes, mask_bytes = await _both(load(params["image"], "image"), load(params["mask"], "mask"))
    return Sources(row, image_bytes, mask_bytes)


async def _both(first: Awaitable[bytes], second: Awaitable[bytes]) -> tuple[bytes, bytes]:
    """Run both; the first one's failure wins (as if run in turn), and stops the other."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    try:
        return await tasks[0], await tasks[1]
    finally:
        running = [task for task in tasks if not task.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # a second failure is not logged as never retrieved


def fill_job(sources: Sources, settings: Settings) -> FillJob:
    """Decode the inputs into the canvas and mask an engine fills (blocking)."""
    request = sources.row["request"]
    params = request["fluxFillParams"]
    canvas, mask = decode_inputs(sources.image, sources.mask, outpaint_spec(params), settings)
    return FillJob(
        rgb=canvas,
        mask=mask,
        prompt=params.get("prompt") or request.get("prompt") or "",
        seed=int(sources.row["seed"]),
        steps=params.get("steps", 50),
        guidance=params.get("guidance", 3.0),
        safety_tolerance=params.get("safety_tolerance", 2),
        prompt_upsampling=params.get("prompt_upsampling", False),
        output_format=params.get("output_format", "jpg"),
    )


async def prepare(row: dict[str, Any], settings: Settings, load: SourceLoader | None = None) -> FillJob:
    """Fetch and decode the job's inputs into the canvas and mask an engine fills."""
    sources = await fetch_sources(row, settings, load)
    return await asyncio.to_thread(fill_job, sources, settings)


def decode_inputs(
    image_bytes: bytes, mask_bytes: bytes | None, outpaint: OutpaintSpec, settings: Settings
) -> tuple[np.ndarray, np.ndarray]:
    """The canvas and mask from the fetched bytes: the image and its mask (inpaint), or the
    image placed on the preset's (or expand's) canvas with the new area as the mask (no mask bytes)."""
    rgb = decode_image(image_bytes, max_pixels=settings.max_pixels)
    if mask_bytes is None:
        height, width = rgb.shape[:2]
        return build_canvas(rgb, plan_canvas(width, height, outpaint, settings.max_output_pixels))
    mask = decode_mask(mask_bytes, max_pixels=settings.max_pixels)
    check_same_size(rgb, mask)
    return rgb, mask


def check_output(job: FillJob, out: FillOutput) -> np.ndarray:
    """Engines must return the canvas size; pixels outside the mask are restored bit-identically."""
    rgb = out.rgb
    if rgb.shape != job.rgb.shape or rgb.dtype != np.uint8:
        raise FillError(f"The engine returned an image of shape {rgb.shape}, expected {job.rgb.shape}.")
    keep = job.mask < 128
    if np.array_equal(rgb[keep], job.rgb[keep]):
        return rgb
    fixed = rgb.copy()
    fixed[keep] = job.rgb[keep]
    return fixed


@dataclass(frozen=True)
class Rendered:
    data: bytes
    ext: str
    content_type: str | None
    notes: dict[str, Any] | None


def render(engine: Engine, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> Rendered:
    """The engine's fill (nothing to fill: the canvas is the answer), the unmasked pixels
    restored, the encoding. Blocking."""
    out = engine.fill(job, progress, cancelled) if job.mask.any() else FillOutput(job.rgb.copy())
    data, content_type = encode_image(check_output(job, out), job.output_format)
    return Rendered(data, job.output_format, content_type, out.notes)


Produced = tuple[StoredFile, dict[str, Any] | None]  # the stored output and the engine's notes


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: BlobStore,
        engine: Engine,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.engine = engine
        # Given a notifier, the worker shares it with an API in its process, whose waiting
        # requests then need to hear of jobs other processes finish; a lone worker does not.
        self.notifier = notifier or Notifier()
        self.serves_api = notifier is not None
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running: dict[str, RunState] = {}
        self.retention = timedelta(days=settings.retention_days)
        self.fetches = asyncio.Semaphore(settings.max_concurrent_fetches)
        # Result links in `completed` webhooks; without PUBLIC_URL, each job's submit host.
        self.linker = Linker(store, settings.signing_secret(), settings.public_url or "")
        self.deliverer = deliver.Deliverer(db, settings)
        self._late_discards: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Run `worker_concurrency` claim loops, a lease sweeper and `webhook_concurrency`
        webhook delivery loops until `stop` is set."""
        tasks = [asyncio.create_task(self._loop(stop)) for _ in range(self.settings.worker_concurrency)]
        tasks.append(asyncio.create_task(self._sweep(stop)))
        if self.settings.webhook_concurrency:
            tasks.append(asyncio.create_task(self.deliverer.run(stop)))
        if not self.db.is_sqlite:
            listener = queue.listen(self.db, self.notifier, stop, finished=self.serves_api)
            tasks.append(asyncio.create_task(listener))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    def shutdown_running(self) -> None:
        """Ask running engines to stop so their jobs can be released (grace period over)."""
        for state in self.running.values():
            state.halt("shutdown")

    async def _idle(self, stop: asyncio.Event) -> None:
        waiter = asyncio.ensure_future(self.notifier.wait(self.settings.poll_seconds))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()

    async def _loop(self, stop: asyncio.Event) -> None:
        row: dict[str, Any] | None = None  # a job claimed while the last one was finished
        while not stop.is_set():
            if row is None:
                try:
                    row = await queue.claim(self.db, self.id, self.settings.lease_seconds)
                except Exception:
                    log.exception("claim failed; retrying")
                    await asyncio.sleep(1.0)
                    continue
            if row is None:
                await self._idle(stop)
                continue
            job, row = row, None
            try:
                token = logs.job_id.set(job["id"])
                try:
                    row = await self.run_job(job, claim_next=not stop.is_set())
                finally:
                    logs.job_id.reset(token)
            except Exception:
                # The job keeps its lease and is retried after it runs out; the loop lives on.
                log.exception("job %s could not be finished", job["id"])
                await asyncio.sleep(1.0)
        if row is not None:  # claimed as the stop came: another worker may have it at once
            try:
                await queue.release(self.db, row["id"], self.id)
            except Exception:
                log.exception(
                    "job %s could not be handed back; it will be when its lease runs out", row["id"]
                )

    async def _sweep(self, stop: asyncio.Event) -> None:
        interval = max(0.5, min(10.0, self.settings.lease_seconds / 4))
        while not stop.is_set():
            try:
                await retention.purge(self.db, self.store)
                for job_id in await queue.requeue_expired(self.db):
                    await service.finish_abandoned(self.db, job_id, self.retention)
                    self.deliverer.wake()
                self.notifier.notify()
            except Exception:
                log.exception("lease sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def _watch(
        self,
        job_id: str,
        state: RunState,
        done: asyncio.Event,
        progress_hook: deliver.ProgressSender | None = None,
    ) -> None:
        """Renew the lease, store progress, offer it to the progress webhook, and turn a cancel
        request into `state.halt`.

        Stops when `done` is set, never by task cancellation: cancelling a task in the middle of
        a database call can leave its transaction open and the database locked.
        """
        lease = self.settings.lease_seconds
        renew_every = lease / 3
        last_renew = time.monotonic()
        last_progress = state.progress
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), _WATCH_SECONDS)
            if done.is_set():
                return
            if progress_hook is not None:
                progress_hook.offer(state.progress, time.monotonic())
            try:
                if state.progress != last_progress or time.monotonic() - last_renew >= renew_every:
                    last_progress = state.progress
                    flag = await queue.heartbeat(self.db, job_id, self.id, lease, last_progress)
                    last_renew = time.monotonic()
                    if flag is None:
                        state.halt("lost")
                else:
                    flag = await queue.cancel_requested(self.db, job_id)
                if flag:
                    state.halt("cancel")
            except Exception:
                log.exception("heartbeat for job %s failed", job_id)

    async def run_job(self, row: dict[str, Any], *, claim_next: bool = False) -> dict[str, Any] | None:
        """Run a claimed job to its end. With `claim_next`, returns the worker's next job when the
        statement that ended this one could claim it too (PostgreSQL), else None."""
        job_id = row["id"]
        state = RunState()
        self.running[job_id] = state
        done = asyncio.Event()
        progress_hook = await self._progress_hook(row)
        watcher = asyncio.create_task(self._watch(job_id, state, done, progress_hook))
        try:
            outcome = await self._execute(row, state)
        finally:
            done.set()
            await watcher
            if progress_hook is not None:
                await progress_hook.close()
            self.running.pop(job_id, None)
        if state.reason == "shutdown":
            await queue.release(self.db, job_id, self.id)
            log.info("job %s released for another worker", job_id)
            return None
        if state.reason == "lost":
            await self._discard(outcome)
            return None
        finished = await service.finish(
            self.db,
            job_id,
            outcome,
            worker_id=self.id,
            retention=self.retention,
            linker=self.linker,
            has_webhook=row["webhook_url"] is not None,
            claim_lease=self.settings.lease_seconds if claim_next else None,
        )
        if not finished.ended:
            await self._discard(outcome)
            return finished.next_job
        if row["webhook_url"]:
            self.deliverer.wake()
        self.notifier.finished(job_id)
        return finished.next_job

    async def _progress_hook(self, row: dict[str, Any]) -> deliver.ProgressSender | None:
        """Progress webhooks are best-effort: a failure to set them up never fails the job."""
        try:
            return await deliver.progress_sender(self.db, row, self.settings)
        except Exception:
            log.exception("progress webhooks for job %s are off", row["id"])
            return None

    async def _discard(self, outcome: Outcome) -> None:
        for f in outcome.files:
            await self.store.delete(f.storage_key)

    def _loader(self, account_id: str) -> SourceLoader:
        """Upload URLs are read from storage for the job's own account; the rest go to the network."""
        fallback = network_loader(self.settings)

        async def load(value: str, what: str) -> bytes:
            file_id = uploads.upload_id(value)
            if file_id is not None:
                return await uploads.read(self.db, self.store, account_id, file_id, what)
            async with self.fetches:
                return await fallback(value, what)

        return load

    async def _execute(self, row: dict[str, Any], state: RunState) -> Outcome:
        start = time.monotonic()
        outcome = await self._attempt(row, state)
        metrics.JOB_DURATION.labels(self.engine.name, outcome.status).observe(time.monotonic() - start)
        log.info("job %s ran: %s %s", row["id"], outcome.status, outcome.error_code or "")
        return outcome

    async def _attempt(self, row: dict[str, Any], state: RunState) -> Outcome:
        try:
            sources = await fetch_sources(row, self.settings, self._loader(row["account_id"]))
            stored, notes = await self._render(sources, state)
            return Outcome.completed([stored], notes)
        except FillError as exc:
            if state.reason == "cancel":
                return Outcome.failed("cancelled", "The job was cancelled.")
            return Outcome.failed(exc.code, exc.message)
        except Exception:
            log.exception("engine %s failed on job %s", self.engine.name, row["id"])
            return Outcome.failed("engine_error", f"The {self.engine.name} engine failed on this job.")

    def _render_and_store(self, sources: Sources, state: RunState) -> Produced:
        """All of a job's blocking work in one worker thread: decode, fill, encode and store the
        output. One hand-off per job, not one per step."""
        done = render(self.engine, fill_job(sources, self.settings), state.set_progress, state.stop.is_set)
        file_id = str(uuid.uuid4())
        key = output_key(file_id, done.ext)
        self.store.put_blocking(key, done.data)
        content_type = done.content_type or EXTENSION_TYPES[done.ext]
        return StoredFile(file_id, key, done.ext, content_type, len(done.data)), done.notes

    async def _render(self, sources: Sources, state: RunState) -> Produced:
        work = asyncio.ensure_future(asyncio.to_thread(self._render_and_store, sources, state))
        try:
            stored, notes = await asyncio.wait_for(asyncio.shield(work), self.settings.job_timeout_seconds)
        except TimeoutError:
            state.halt("timeout")
            # The engine's thread cannot be stopped; if it stores an output after all, delete it.
            work.add_done_callback(self._discard_late)
            raise TimedOut(
                f"The engine did not finish within {self.settings.job_timeout_seconds:g} seconds."
            ) from None
        if state.stop.is_set() and state.reason in ("cancel", "shutdown", "lost"):
            await self.store.delete(stored.storage_key)
            raise Cancelled()
        return stored, notes

    def _discard_late(self, work: asyncio.Future[Produced]) -> None:
        if not work.cancelled() and work.exception() is None:
            stored, _ = work.result()
            task = asyncio.ensure_future(self.store.delete(stored.storage_key))
            self._late_discards.add(task)
            task.add_done_callback(self._late_discards.discard)


async def stop_gracefully(worker: Worker | None, task: asyncio.Task[None], grace: float) -> None:
    """After `stop` is set: let running jobs finish within `grace`, then hand them back."""
    try:
        await asyncio.wait_for(asyncio.shield(task), grace)
    except TimeoutError:
        if worker is not None:
            worker.shutdown_running()
        await asyncio.wait_for(task, 10)
    except Exception:
        pass  # the task's own failure was already reported by whoever watched it
