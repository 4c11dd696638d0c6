"""The worker: claim -> prepare inputs -> fill on an engine -> encode and store -> finish, as a
pipeline, with the engine in its own process (`engines/host.py`).

A worker holds each claimed job under a lease that a watcher task renews from claim to finish;
the same watcher stores progress and notices cancel requests. If the process dies, the lease runs
out and any other worker's sweeper puts the job back in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import numpy as np

from fillframe import logs, metrics, uploads
from fillframe.db import Database
from fillframe.engines.base import CancelledFn, Engine, FillJob, FillOutput, ProgressFn, batch_key, fill_one
from fillframe.engines.host import EngineCrashed, EngineHost, shape_problem
from fillframe.errors import Cancelled, FillError, TimedOut
from fillframe.imaging.canvas import OutpaintSpec, build_canvas, outpaint_spec, plan_canvas
from fillframe.imaging.decode import decode_image, decode_mask
from fillframe.imaging.encode import encode_image
from fillframe.imaging.fetch import load_source
from fillframe.imaging.masks import check_same_size, check_something_to_fill
from fillframe.jobs import queue, retention, service
from fillframe.jobs.queue import Notifier
from fillframe.jobs.service import Outcome, StoredFile
from fillframe.link_secret import link_secret
from fillframe.settings import LimitSettings, Settings
from fillframe.storage import EXTENSION_TYPES, BlobStore, Linker, output_key
from fillframe.webhooks import deliver

log = logging.getLogger(__name__)

_WATCH_SECONDS = 0.25


@dataclass
class RunState:
    """One claimed job's run, shared by its task, its watcher and (in-thread engines) the engine's
    thread. `phase` tells where the job is in the worker's pipeline."""

    progress: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    halted: asyncio.Event = field(default_factory=asyncio.Event)  # `stop`, for the event loop
    reason: str = ""  # "cancel" | "shutdown" | "lost" | "timeout" once `stop` is set
    phase: str = "preparing"  # -> "waiting" (for an engine) -> "filling" -> "storing"
    since: float = field(default_factory=time.monotonic)  # when the phase began
    seq: int = 0  # claim order
    account: str = ""  # the job's account: ready jobs take engines fairly across accounts
    crashed: bool = False  # the engine's process died on it: the attempt is retried if any are left
    seat: Seat | None = None  # once prepared: its place in an engine call

    def set_progress(self, percent: int) -> None:
        self.progress = max(self.progress, min(99, int(percent)))

    def halt(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop.set()
            self.halted.set()

    def enter(self, phase: str) -> None:
        self.phase, self.since = phase, time.monotonic()


@dataclass
class Seat:
    """A prepared job's place in an engine call: the job, and the future for its end, which the
    job that leads the call (this one, or another of the same `batch_key` it took along) sets."""

    job_id: str
    job: FillJob
    state: RunState
    result: asyncio.Future[FillOutput]


def settle(future: asyncio.Future[FillOutput], result: FillOutput | BaseException) -> None:
    if future.done():  # its job's task was cancelled (a hard stop) while it waited
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


SourceLoader = Callable[[str, str], Awaitable[bytes]]


def network_loader(settings: LimitSettings) -> SourceLoader:
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


async def fetch_sources(
    row: dict[str, Any], settings: LimitSettings, load: SourceLoader | None = None
) -> Sources:
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


def fill_job(sources: Sources, settings: LimitSettings) -> FillJob:
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


async def prepare(row: dict[str, Any], settings: LimitSettings, load: SourceLoader | None = None) -> FillJob:
    """Fetch and decode the job's inputs into the canvas and mask an engine fills."""
    sources = await fetch_sources(row, settings, load)
    return await asyncio.to_thread(fill_job, sources, settings)


def decode_inputs(
    image_bytes: bytes, mask_bytes: bytes | None, outpaint: OutpaintSpec, settings: LimitSettings
) -> tuple[np.ndarray, np.ndarray]:
    """The canvas and mask from the fetched bytes: the image and its mask (inpaint), or the
    image placed on the preset's (or expand's) canvas with the new area as the mask (no mask bytes)."""
    rgb = decode_image(image_bytes, max_pixels=settings.max_pixels)
    if mask_bytes is None:
        height, width = rgb.shape[:2]
        return build_canvas(rgb, plan_canvas(width, height, outpaint, settings.max_output_pixels))
    mask = decode_mask(mask_bytes, max_pixels=settings.max_pixels)
    check_same_size(rgb, mask)
    check_something_to_fill(mask)
    return rgb, mask


def check_output(job: FillJob, out: FillOutput) -> np.ndarray:
    """Engines must return the canvas size; pixels outside the mask are restored bit-identically."""
    rgb = out.rgb
    problem = shape_problem(job.rgb.shape, rgb)
    if problem is not None:
        raise FillError(problem)
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
    content_type: str
    notes: dict[str, Any] | None


def render(engine: Engine, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> Rendered:
    """The engine's fill (nothing to fill: the canvas is the answer), the unmasked pixels
    restored, the encoding. Blocking."""
    out = engine.fill(job, progress, cancelled) if job.mask.any() else FillOutput(job.rgb.copy())
    return encode_output(job, out)


Produced = tuple[StoredFile, dict[str, Any] | None]  # the stored output and the engine's notes


def encode_output(job: FillJob, out: FillOutput) -> Rendered:
    """The engine's output with the unmasked pixels restored, encoded (blocking)."""
    data, content_type = encode_image(check_output(job, out), job.output_format)
    return Rendered(data, job.output_format, content_type, out.notes)


class Runner(Protocol):
    """Where fills run: an engine host process (`EngineHost`) or a thread of this one (`InThread`).
    `fill_batch` takes 1 to `max_batch` jobs of one `batch_key`; a failure of the whole call (a
    crash, the deadline) is raised, each job's own end is returned."""

    name: str
    max_batch: int

    async def ready(self, stopped: CancelledFn) -> None: ...

    async def fill_batch(
        self,
        jobs: list[FillJob],
        progress: list[ProgressFn],
        stopped: list[CancelledFn],
        timeout: float,
        job_ids: list[str],
    ) -> list[FillOutput | BaseException]: ...

    async def close(self) -> None: ...


class InThread:
    """An engine loaded in this process, filled in a thread: what workers did before engine hosts,
    kept for tests with engines defined in the test and for `bench/e2e.py --in-thread`. A crash
    takes the process down and a thread past its deadline cannot be stopped (its output is
    dropped)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = engine.name
        self.max_batch = max(1, engine.max_batch())

    async def fill_batch(
        self,
        jobs: list[FillJob],
        progress: list[ProgressFn],
        stopped: list[CancelledFn],
        timeout: float,
        job_ids: list[str],
    ) -> list[FillOutput | BaseException]:
        work = asyncio.ensure_future(asyncio.to_thread(self._fill_batch, jobs, progress, stopped))
        try:
            return await asyncio.wait_for(asyncio.shield(work), timeout)
        except TimeoutError:
            work.add_done_callback(lambda w: w.cancelled() or w.exception())  # retrieved, not logged
            raise TimedOut(f"The engine did not finish within {timeout:g} seconds.") from None

    async def ready(self, stopped: CancelledFn) -> None:
        pass  # loaded once, never restarted

    def _fill_batch(
        self, jobs: list[FillJob], progress: list[ProgressFn], stopped: list[CancelledFn]
    ) -> list[FillOutput | BaseException]:
        if len(jobs) == 1:
            return [fill_one(self.engine, jobs[0], progress[0], stopped[0])]
        return self.engine.fill_batch(jobs, progress, stopped)

    async def close(self) -> None:
        pass


# A job fetching its inputs for longer than this stops counting against the jobs prepared ahead
# and loses its place in its account's line, so a slow image host holds up only its own job (up
# to `max_concurrent_fetches` such jobs).
SLOW_PREPARE_SECONDS = 0.5


def _in_line(state: RunState, now: float) -> bool:
    """Waiting for an engine, or soon to: prepared, or fetching (but not slowly)."""
    return state.phase == "waiting" or (
        state.phase == "preparing" and now - state.since < SLOW_PREPARE_SECONDS
    )


class Worker:
    """Claims jobs and carries each through a pipeline: prepare (fetch, decode) -> fill on a free
    engine (alone, or in one call with other ready jobs of its `batch_key`, up to the engine's
    `max_batch`) -> encode and store -> finish. Engines only fill; the next jobs are prepared, and
    the last ones stored, while they do.

    By default each of `worker_concurrency` engine slots is an `EngineHost` child process running
    `settings.worker.engine`; given a loaded `engine`, the slots fill in threads of this process instead.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: BlobStore,
        engine: Engine | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.engine = engine
        self.engine_name = engine.name if engine is not None else settings.worker.engine
        # Given a notifier, the worker shares it with an API in its process, whose waiting
        # requests then need to hear of jobs other processes finish; a lone worker does not.
        self.notifier = notifier or Notifier()
        self.serves_api = notifier is not None
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running: dict[str, RunState] = {}
        self.retention = timedelta(days=settings.worker.retention_days)
        self.fetches = asyncio.Semaphore(settings.worker.max_concurrent_fetches)
        # Result links in `completed` webhooks; made by `start` (the secret may be in the database).
        self.linker: Linker
        self.deliverer = deliver.Deliverer(db, settings.webhooks)
        self.runners: list[Runner] = []
        self._hosts: list[EngineHost] = []
        self._free: list[Runner] = []  # engine slots with no job
        self._served: dict[str, float] = {}  # account -> when an engine last started on its job
        self._changed = asyncio.Event()  # set (and replaced) when a job changes phase or frees a slot
        self._ended = asyncio.Event()  # set (and replaced) when one of this worker's jobs ends
        self._claims = itertools.count()
        self._claiming = 0  # finish statements in flight that claim the next job
        self._stop = asyncio.Event()  # the `stop` of `run` / `_loop`
        self._carried: set[asyncio.Task[None]] = set()
        self._size_pipeline(1)

    def _size_pipeline(self, max_batch: int) -> None:
        """Prepared ahead of the engines: one engine call's worth of jobs per slot (`max_batch`
        each) ready or fetching; at most this many jobs held in all (filling, ahead, slow to
        fetch, being stored)."""
        self.max_batch = max_batch
        self.ahead = self.settings.worker.worker_concurrency * max_batch
        self.capacity = 2 * self.ahead + self.settings.worker.max_concurrent_fetches

    async def start(self) -> None:
        """Load the engine in every slot (once; later calls return at once). Raises
        `EngineLoadFailed` (a RuntimeError) with the engine's own sentence when it cannot load."""
        if self.runners:
            return
        # Without PUBLIC_URL, each job's submit host.
        links = self.settings.links
        self.linker = Linker(self.store, await link_secret(self.db, links), links.public_url or "")
        if self.engine is not None:
            runners: list[Runner] = [InThread(self.engine)] * self.settings.worker.worker_concurrency
        else:
            if not self._hosts:
                self._hosts = [self._host(slot) for slot in range(self.settings.worker.worker_concurrency)]
            started = await asyncio.gather(*(h.start() for h in self._hosts), return_exceptions=True)
            failures = [r for r in started if isinstance(r, BaseException)]
            if failures:
                await self.close()
                raise failures[0]
            runners = list(self._hosts)
        self.engine_name = runners[0].name
        self.runners = runners
        self._free = list(runners)
        self._size_pipeline(min(r.max_batch for r in runners))

    def _host(self, slot: int) -> EngineHost:
        limit = self.settings.worker.engine_memory_limit_mb
        host = EngineHost(
            self.settings,
            memory_limit_bytes=int(limit * 2**20) if limit else None,
            on_restart=lambda reason: metrics.ENGINE_RESTARTS.labels(reason).inc(),
        )
        metrics.ENGINE_HOSTS.track(str(slot), host)
        return host

    async def close(self) -> None:
        """Stop the engine host processes (also those still loading)."""
        hosts, self._hosts, self.runners = self._hosts, [], []
        for host in hosts:
            await host.close()
            metrics.ENGINE_HOSTS.forget(host)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the claim pipeline, a lease sweeper and `webhook_concurrency` webhook delivery
        loops until `stop` is set; then stop the engines."""
        await self.start()
        tasks = [asyncio.create_task(self._loop(stop)), asyncio.create_task(self._sweep(stop))]
        if self.settings.webhooks.webhook_concurrency:
            tasks.append(asyncio.create_task(self.deliverer.run(stop)))
        if not self.db.is_sqlite:
            listener = queue.listen(self.db, self.notifier, stop, finished=self.serves_api)
            tasks.append(asyncio.create_task(listener))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await self.close()

    def shutdown_running(self) -> None:
        """Ask running engines to stop so their jobs can be released (grace period over)."""
        for state in self.running.values():
            state.halt("shutdown")

    async def _idle(self) -> None:
        """After a claim found nothing: wait for news of a queued job, or for one of this worker's
        own jobs to end (that may bring its account back under its concurrency limit), or for
        the stop (`_poke_at` pokes as if a job had ended)."""
        waits = [
            asyncio.ensure_future(self.notifier.wait(self.settings.worker.poll_seconds)),
            asyncio.ensure_future(self._ended.wait()),
        ]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()

    def _poke(self, ended: bool = False) -> None:
        """Wake whoever waits for a change: the claimer (room) and jobs waiting for an engine;
        with `ended`, also a claimer idle after an empty claim."""
        self._changed.set()
        self._changed = asyncio.Event()
        if ended:
            self._ended.set()
            self._ended = asyncio.Event()

    def has_room(self, excluding: RunState | None = None) -> bool:
        """Room to claim one more job: fewer than `ahead` jobs prepared, preparing (slow fetches
        not counted) or being stored, and fewer than `capacity` held in all. (A job is PROCESSING
        from its claim to its finish and counts against its account's concurrency limit, so a
        worker holds few beyond the ones its engines fill.) A job ending may claim the next one
        in its finish statement: it asks, `excluding` itself.

        Jobs in line that the free engine slots take at once (`max_batch` each) are as good as
        filling, and the jobs that finish statements in flight are claiming count as in line.
        A finish does not count the other jobs being stored: each of those is replaced by its
        own finish. (With fast engines several jobs are stored at once, and each finish counted
        the others: about half the jobs were claimed by a claim statement of their own.)"""
        if len(self.running) >= self.capacity:
            return False
        now = time.monotonic()
        others = [s for s in self.running.values() if s is not excluding]
        in_line = sum(1 for s in others if _in_line(s, now))
        starting = min(in_line, len(self._free) * self.max_batch)
        storing = 0 if excluding is not None else sum(1 for s in others if s.phase == "storing")
        return in_line - starting + self._claiming + storing < self.ahead

    async def _wait_for_room(self) -> None:
        """Until the next change (`_poke`; `stop` pokes too), or 0.1 s: a fetch turns slow
        without any event. (A timeout on the current task, not tasks to wait on: this runs a
        few times a job.)"""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.1):
                await self._changed.wait()

    async def _poke_at(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._poke(ended=True)

    async def _claim_while_room(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self.has_room():
                await self._wait_for_room()
                continue
            try:
                row = await queue.claim(self.db, self.id, self.settings.worker.lease_seconds)
            except Exception:
                log.exception("claim failed; retrying")
                await asyncio.sleep(1.0)
                continue
            if row is None:
                await self._idle()
                continue
            self._carry(row, stop)

    async def _loop(self, stop: asyncio.Event) -> None:
        """Claim while there is room, each claimed job carried by its own task; at `stop`, hand
        back the jobs no engine has started and wait for the rest."""
        await self.start()
        self._stop = stop
        stop_poker = asyncio.create_task(self._poke_at(stop))
        try:
            await self._claim_while_room(stop)
        finally:
            stop_poker.cancel()
        for state in self.running.values():
            if state.phase in ("preparing", "waiting"):
                state.halt("shutdown")
        while self._carried:
            await asyncio.wait(list(self._carried))

    def _carry(self, row: dict[str, Any], stop: asyncio.Event) -> None:
        # Held from this moment, before its task first runs: the next `has_room` must count it.
        # (A SQLite claim runs inline and never yields, so the loop could otherwise claim the
        # whole queue before any task had registered its job.)
        state = self._hold(row["id"], row["account_id"])
        task = asyncio.create_task(self._carry_one(row, stop, state))
        self._carried.add(task)
        task.add_done_callback(self._carried.discard)

    async def _carry_one(self, row: dict[str, Any], stop: asyncio.Event, state: RunState) -> None:
        token = logs.job_id.set(row["id"])
        try:
            next_job = await self.run_job(row, claim_next=not stop.is_set(), state=state)
        except Exception:
            # The job keeps its lease and is retried after it runs out; the worker lives on.
            log.exception("job %s could not be finished", row["id"])
            next_job = None
        finally:
            logs.job_id.reset(token)
            self._poke()
        if next_job is None:
            return
        if stop.is_set():  # claimed as the stop came: another worker may have it at once
            await self._hand_back(next_job["id"])
        else:
            self._carry(next_job, stop)

    async def _hand_back(self, job_id: str) -> None:
        try:
            await queue.release(self.db, job_id, self.id)
        except Exception:
            log.exception("job %s could not be handed back; it will be when its lease runs out", job_id)

    async def _sweep(self, stop: asyncio.Event) -> None:
        interval = max(0.5, min(10.0, self.settings.worker.lease_seconds / 4))
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
        lease = self.settings.worker.lease_seconds
        renew_every = lease / 3
        last_renew = time.monotonic()
        last_progress = state.progress
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_WATCH_SECONDS):  # times out this wait only
                    await done.wait()
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

    def _hold(self, job_id: str, account: str) -> RunState:
        """Count a claimed job as held by this worker (in claim order)."""
        state = RunState(seq=next(self._claims), account=account)
        self.running[job_id] = state
        self._poke()
        return state

    async def run_job(
        self, row: dict[str, Any], *, claim_next: bool = False, state: RunState | None = None
    ) -> dict[str, Any] | None:
        """Run a claimed job to its end (`state`: as `_hold` made it when the job was claimed).
        With `claim_next`, returns the worker's next job when the statement that ended this one
        could claim it too (PostgreSQL) and there is room, else None."""
        job_id = row["id"]
        state = state or self._hold(job_id, row["account_id"])
        try:
            await self.start()
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
            state.enter("storing")  # until it has ended: counted as held ahead (see `has_room`)
            return await self._conclude(row, state, outcome, claim_next)
        finally:
            self.running.pop(job_id, None)
            self._poke(ended=True)

    async def _conclude(
        self, row: dict[str, Any], state: RunState, outcome: Outcome, claim_next: bool
    ) -> dict[str, Any] | None:
        """Hand the job back, drop its output, queue it again or finish it, as its run ended."""
        job_id = row["id"]
        if state.reason == "shutdown":
            await queue.release(self.db, job_id, self.id)
            log.info("job %s released for another worker", job_id)
            return None
        if state.reason == "lost":
            await self._discard(outcome)
            return None
        if state.crashed and await queue.requeue_crashed(self.db, job_id, self.id):
            log.warning("job %s queued again after its engine crashed: %s", job_id, outcome.error)
            self.notifier.notify()
            return None
        claim = claim_next and self.has_room(state)
        self._claiming += claim
        try:
            finished = await service.finish(
                self.db,
                job_id,
                outcome,
                worker_id=self.id,
                retention=self.retention,
                linker=self.linker,
                has_webhook=row["webhook_url"] is not None,
                claim_lease=self.settings.worker.lease_seconds if claim else None,
            )
        finally:
            self._claiming -= claim  # the job it claimed is held (`_carry`) before anything else runs
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
            return await deliver.progress_sender(self.db, row, self.settings.webhooks)
        except Exception:
            log.exception("progress webhooks for job %s are off", row["id"])
            return None

    async def _discard(self, outcome: Outcome) -> None:
        for f in outcome.files:
            await self.store.delete(f.storage_key)

    def _loader(self, account_id: str) -> SourceLoader:
        """Upload URLs are read from storage for the job's own account; the rest go to the network."""
        fallback = network_loader(self.settings.limits)

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
        metrics.JOB_DURATION.labels(self.engine_name, outcome.status).observe(time.monotonic() - start)
        log.info("job %s ran: %s %s", row["id"], outcome.status, outcome.error_code or "")
        return outcome

    async def _attempt(self, row: dict[str, Any], state: RunState) -> Outcome:
        try:
            sources = await fetch_sources(row, self.settings.limits, self._loader(row["account_id"]))
            job = await asyncio.to_thread(fill_job, sources, self.settings.limits)
            if state.stop.is_set():
                raise Cancelled()
            out = await self._fill(row["id"], job, state)
            state.enter("storing")
            stored, notes = await asyncio.to_thread(self._encode_and_store, job, out)
            if state.stop.is_set() and state.reason in ("cancel", "shutdown", "lost"):
                await self.store.delete(stored.storage_key)
                raise Cancelled()
            return Outcome.completed([stored], notes)
        except EngineCrashed as exc:
            state.crashed = True
            return Outcome.failed(exc.code, exc.message)
        except FillError as exc:
            if state.reason == "cancel":
                return Outcome.failed("cancelled", "The job was cancelled.")
            return Outcome.failed(exc.code, exc.message)
        except Exception:
            log.exception("engine %s failed on job %s", self.engine_name, row["id"])
            return Outcome.failed("engine_error", f"The {self.engine_name} engine failed on this job.")

    async def _fill(self, job_id: str, job: FillJob, state: RunState) -> FillOutput:
        """The engine's output, from the first engine slot that is free, alone or in one call
        with other ready jobs of its `batch_key` (nothing to fill: the canvas is the answer, and
        no engine is needed). Its deadline runs from the call's start, not from its claim."""
        if not job.mask.any():
            return FillOutput(job.rgb.copy())
        seat = Seat(job_id, job, state, asyncio.get_running_loop().create_future())
        state.seat = seat
        state.enter("waiting")
        self._poke()
        runner = await self._take_runner(state)
        if runner is None:  # another job's call took this one along
            return await seat.result
        return await self._lead(runner, seat)

    async def _lead(self, runner: Runner, seat: Seat) -> FillOutput:
        """Run one engine call for `seat` and the ready jobs it takes along; settle each one's end."""
        seat.state.enter("filling")  # from here on no other call takes it along
        seats = [seat]
        try:
            # An engine restarting (after a crash) is waited for first: the jobs ready by then go along.
            await runner.ready(seat.state.stop.is_set)
            seats += self._companions(seat, runner.max_batch - 1)
            results = await self._call(runner, seats)
        except Exception as exc:  # the whole call failed: a crash or the deadline, every job's
            results = [exc] * len(seats)
        except BaseException:
            for member in seats[1:]:  # this task was cancelled: so are the jobs it took along
                member.result.cancel()
            raise
        finally:
            self._free.append(runner)
            self._poke()
        for member, result in zip(seats, results, strict=True):
            if isinstance(result, TimedOut):
                member.state.halt("timeout")  # an in-thread engine still running sees `cancelled()` turn true
            settle(member.result, result)
        return seat.result.result()

    async def _call(self, runner: Runner, seats: list[Seat]) -> list[FillOutput | BaseException]:
        now = time.monotonic()
        for member in seats:
            member.state.enter("filling")
            self._served[member.state.account] = now
        self._poke()
        return await runner.fill_batch(
            [m.job for m in seats],
            [m.state.set_progress for m in seats],
            [m.state.stop.is_set for m in seats],
            self.settings.worker.job_timeout_seconds,
            [m.job_id for m in seats],
        )

    def _companions(self, seat: Seat, room: int) -> list[Seat]:
        """Up to `room` other ready jobs of `seat`'s batch key, in line order."""
        if room < 1:
            return []
        key = batch_key(seat.job)
        fitting = [
            s.seat
            for s in self.running.values()
            if s is not seat.state
            and s.phase == "waiting"
            and s.seat is not None
            and not s.stop.is_set()
            and batch_key(s.seat.job) == key
        ]
        fitting.sort(key=lambda other: self._line_key(other.state))
        return fitting[:room]

    def _line_key(self, state: RunState) -> tuple[int, float, int]:
        """The order in which ready jobs take free engines: the account with the fewest jobs on
        this worker's engines first, then the one served least recently here, then claim order.
        (As the claim's `fair_pick`: an account's prepared backlog cannot hold another account's
        ready job back by more than the runs already started.)"""
        filling = sum(1 for s in self.running.values() if s.phase == "filling" and s.account == state.account)
        return (filling, self._served.get(state.account, -1.0), state.seq)

    def _first_in_line(self, state: RunState) -> bool:
        """Whether no other job comes before this one in line order that is ready, or is its own
        account's and soon ready (`_in_line`: an account's jobs start in claim order unless one
        is slow to fetch). Another account's job still being prepared holds no ready job back:
        a free engine does not idle on one tenant's image host while another tenant's job waits."""
        now = time.monotonic()
        mine = self._line_key(state)
        return not any(
            other is not state
            and (other.phase == "waiting" or (other.account == state.account and _in_line(other, now)))
            and self._line_key(other) < mine
            for other in self.running.values()
        )

    async def _take_runner(self, state: RunState) -> Runner | None:
        """A free engine slot when it is this job's turn, or None once another job's call took
        this one along. A halt while waiting wins, and once the worker is told to stop, jobs no
        engine has started are handed back."""
        while True:
            if state.phase == "filling":
                return None
            if self._stop.is_set():
                state.halt("shutdown")
            if state.stop.is_set():
                raise Cancelled()
            if self._free and self._first_in_line(state):
                return self._free.pop()
            waits = [asyncio.ensure_future(e.wait()) for e in (self._changed, state.halted, self._stop)]
            # Re-checked on a timer too: an earlier job's fetch turns slow without any event.
            await asyncio.wait(waits, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()

    def _encode_and_store(self, job: FillJob, out: FillOutput) -> Produced:
        """Encode and store the output in a worker thread, off the engine."""
        done = encode_output(job, out)
        file_id = str(uuid.uuid4())
        key = output_key(file_id, done.ext)
        self.store.put_blocking(key, done.data)
        content_type = done.content_type or EXTENSION_TYPES[done.ext]
        return StoredFile(file_id, key, done.ext, content_type, len(done.data)), done.notes
