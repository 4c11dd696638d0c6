"""The engine host: an engine loaded once in a spawned child process and reused for many jobs.

As cog runs its predictor, the model lives apart from the server: a crash of native code
(`os.abort`, a segfault, a CUDA fault), an OOM kill, a hang past the deadline or an engine that
ignores `cancelled()` costs that job's attempt and a restart of the child, never the worker or
the API beside it.

Parent and child speak in small typed messages over a pipe (a run of one or more jobs in;
progress and each job's result out). Pixels never go through the pipe: the parent writes each
job's canvas and mask into its block of a shared-memory segment that the child maps, and the
child writes the filled canvas back into the same block. A run of several jobs (of one canvas
size) is one `Engine.fill_batch` call, for engines that can share work (`Engine.max_batch`).
Cancel is a flag byte per job at the head of that segment, so the engine's `cancelled()` costs
no message and the host needs no lock or semaphore of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from multiprocessing.shared_memory import SharedMemory
from typing import TYPE_CHECKING, Any

import numpy as np

from fillframe.engines.base import CancelledFn, Engine, FillJob, FillOutput, ProgressFn, fill_one
from fillframe.errors import (
    Cancelled,
    ContentModerated,
    EngineFailed,
    FillError,
    InvalidInput,
    RequestModerated,
    TimedOut,
)

if TYPE_CHECKING:
    from fillframe.settings import Settings

log = logging.getLogger(__name__)

# An engine told to stop gets this long to notice `cancelled()` before its process is killed.
CANCEL_GRACE_SECONDS = 2.0
_SLICE_SECONDS = 0.05  # how often a waiting fill looks at its deadline, its stop flag, its memory
_MEMORY_EVERY_SECONDS = 0.2
_ERRORS: dict[str, type[FillError]] = {
    cls.code: cls for cls in (InvalidInput, RequestModerated, ContentModerated, TimedOut, Cancelled)
}


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """child -> parent: the engine is loaded."""

    engine: str
    pid: int
    max_batch: int = 1  # the engine's `max_batch()`: most jobs one `Run` may carry


@dataclass(frozen=True)
class LoadFailed:
    """child -> parent: the engine could not load; `message` is the sentence for the operator."""

    message: str


@dataclass(frozen=True)
class Run:
    """parent -> child: fill the canvases in segment `shm`, block `i` for job `i` (rgb, then mask,
    then room for the output), all `height` x `width`: one `fill`, or one `fill_batch` of them all."""

    job_ids: list[str]
    shm: str
    height: int
    width: int
    params: list[dict[str, Any]]  # each FillJob's other fields (prompt, seed, steps, ...)


def job_params(job: FillJob) -> dict[str, Any]:
    """A FillJob's fields but its pixels: what travels in the message."""
    return {f.name: getattr(job, f.name) for f in fields(job) if f.name not in ("rgb", "mask")}


@dataclass(frozen=True)
class Progress:
    percent: int
    index: int = 0  # which job of the run


@dataclass(frozen=True)
class Done:
    """One job's end: its output is in its block's output region."""

    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """One job's end: the engine failed on it (or it was cancelled), with the error's code."""

    code: str
    message: str


@dataclass(frozen=True)
class Results:
    """child -> parent: the run is over; each job's end, in the run's order."""

    items: list[Done | Failed]


# --- pixels in shared memory ---------------------------------------------------------------


# Byte i: job i's cancel flag, set by the parent, read by the engine's `cancelled()`.
_HEADER = 64
MAX_RUN = _HEADER  # jobs in one run (a flag byte each)


def segment_bytes(height: int, width: int, count: int = 1) -> int:
    return _HEADER + count * height * width * 7  # then per job rgb in (3), mask (1), rgb out (3)


def shared_buffer(segment: SharedMemory) -> memoryview:
    """The segment's bytes; byte i is job i's cancel flag (0: run on, 1: stop)."""
    buf = segment.buf
    if buf is None:  # only after close(), which nothing here calls before it is done
        raise RuntimeError("the shared segment is closed")
    return buf


def views(buf: Any, height: int, width: int, index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Job `index`'s rgb in (HxWx3), mask (HxW) and rgb out (HxWx3) in the segment, as uint8 views."""
    plane = height * width
    start = _HEADER + index * 7 * plane
    rgb = np.ndarray((height, width, 3), np.uint8, buffer=buf, offset=start)
    mask = np.ndarray((height, width), np.uint8, buffer=buf, offset=start + 3 * plane)
    out = np.ndarray((height, width, 3), np.uint8, buffer=buf, offset=start + 4 * plane)
    return rgb, mask, out


def shape_problem(expected: tuple[int, ...], rgb: np.ndarray) -> str | None:
    """The sentence for an engine output of the wrong shape or type, or None when it fits."""
    if rgb.shape != expected or rgb.dtype != np.uint8:
        return f"The engine returned an image of shape {rgb.shape}, expected {expected}."
    return None


# --- the child ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: the kernel kills the child when the worker dies, so no engine outlives its worker."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def child_main(settings: Settings, conn: multiprocessing.connection.Connection) -> None:
    """The child's whole life: load the engine, then fill one `Run` at a time until the pipe closes."""
    from fillframe import logs
    from fillframe.engines.base import create_engine

    _die_with_parent()
    # Ctrl-C and SIGTERM reach the whole process group; the worker decides when its engine stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.setup(settings.log_level, settings.log_format)
    try:
        engine = create_engine(settings)
        engine.load()
    except Exception as exc:  # every failure to load is the operator's to read, in one sentence
        conn.send(LoadFailed(str(exc) or type(exc).__name__))
        return
    conn.send(Ready(engine.name, os.getpid(), max(1, min(MAX_RUN, engine.max_batch()))))
    segment: SharedMemory | None = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if segment is None or segment.name != msg.shm:
            if segment is not None:
                with contextlib.suppress(BufferError):  # a failed job's traceback still holds a view
                    segment.close()
            segment = SharedMemory(msg.shm)
        token = logs.job_id.set(",".join(msg.job_ids))
        try:
            conn.send(_fill_in_child(engine, msg, segment, conn))
        finally:
            logs.job_id.reset(token)


def _fill_in_child(
    engine: Engine, msg: Run, segment: SharedMemory, conn: multiprocessing.connection.Connection
) -> Results:
    """Fill the run's jobs: `fill` for one, `fill_batch` for several; each job's end its own."""
    blocks = [views(segment.buf, msg.height, msg.width, i) for i in range(len(msg.job_ids))]
    jobs = [
        FillJob(rgb=rgb, mask=mask, **params)
        for (rgb, mask, _), params in zip(blocks, msg.params, strict=True)
    ]
    flags = shared_buffer(segment)
    progress = [_progress_sender(conn, i) for i in range(len(jobs))]
    cancelled = [_cancel_flag(flags, i) for i in range(len(jobs))]
    try:
        if len(jobs) == 1:
            results = [fill_one(engine, jobs[0], progress[0], cancelled[0])]
        else:
            results = _batch_results(engine, jobs, progress, cancelled)
        return Results([_end(engine, msg.job_ids[i], r, blocks[i]) for i, r in enumerate(results)])
    finally:
        del jobs, blocks  # the segment cannot be closed while views of it live


def _batch_results(
    engine: Engine, jobs: list[FillJob], progress: list[ProgressFn], cancelled: list[CancelledFn]
) -> list[FillOutput | BaseException]:
    """`engine.fill_batch`, one result per job whatever it returns or raises."""
    try:
        results = engine.fill_batch(jobs, progress, cancelled)
    except Exception as exc:
        return [exc] * len(jobs)
    if len(results) != len(jobs):
        count = f"{len(results)} results for {len(jobs)} jobs"
        wrong = EngineFailed(f"The {engine.name} engine returned {count}.")
        return [wrong] * len(jobs)
    return results


def _progress_sender(conn: multiprocessing.connection.Connection, index: int) -> ProgressFn:
    sent = [-1]

    def progress(percent: int) -> None:
        if int(percent) != sent[0]:  # one message per change, however often the engine reports
            sent[0] = int(percent)
            conn.send(Progress(int(percent), index))

    return progress


def _cancel_flag(flags: memoryview, index: int) -> CancelledFn:
    return lambda: flags[index] != 0


def _end(
    engine: Engine,
    job_id: str,
    result: FillOutput | BaseException,
    block: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> Done | Failed:
    """One job's message: its output copied into its block, or the failure it ended with."""
    if isinstance(result, FillError):
        return Failed(result.code, result.message)
    if isinstance(result, BaseException):
        log.error("engine %s failed on job %s", engine.name, job_id, exc_info=result)
        return Failed("engine_error", f"The {engine.name} engine failed on this job.")
    rgb, _, out = block
    problem = shape_problem(rgb.shape, result.rgb)
    if problem is not None:
        return Failed("engine_error", problem)
    np.copyto(out, result.rgb)
    return Done(dict(result.notes))


# --- the parent -----------------------------------------------------------------------------


_LIVE: weakref.WeakSet[EngineHost] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """A worker that exits without closing its hosts must not wait on children that ignore SIGTERM
    (multiprocessing's own exit hook would), so they are killed first (atexit runs this earlier)."""
    for host in list(_LIVE):
        proc = host._proc
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)


class EngineCrashed(EngineFailed):
    """The engine's process died (or was killed for its memory) during the job: worth a retry."""


class EngineLoadFailed(RuntimeError):
    """The engine could not load in its host process; the message is the engine's own."""


def rss_bytes(pid: int) -> int:
    """Resident memory of a live process (Linux), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-exitcode).name}"
    return f"exit status {exitcode}"


def _drop(segment: SharedMemory) -> None:
    """Unlink a segment; unmapping waits for the garbage collector when views of it still live
    (a traceback that holds a failed fill's frame)."""
    segment.unlink()
    with contextlib.suppress(BufferError):
        segment.close()


class EngineHost:
    """One child process with the configured engine, used by one run (one job, or a batch of up
    to `max_batch` of one canvas size) at a time.

    `fill` raises `EngineCrashed` when the child dies or outgrows `memory_limit_bytes`,
    `TimedOut` past the deadline and `Cancelled` when `stopped()` turns true and the engine does not
    stop within the grace; in each case the child is killed (if still alive) and a new one is
    started in the background, and the next `fill` waits for it. `fill_batch` raises the same for
    the whole run (a crash fails every job of it), and otherwise returns each job's own end.
    `on_restart(reason)` lets the worker count restarts.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        memory_limit_bytes: int | None = None,
        cancel_grace: float = CANCEL_GRACE_SECONDS,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.memory_limit_bytes = memory_limit_bytes
        self.cancel_grace = cancel_grace
        self.on_restart = on_restart
        self.name = settings.engine
        self.max_batch = 1  # the loaded engine's, once it is ready
        self.pid: int | None = None
        self.ready_at = 0.0  # time.time() the current child became ready
        self.restarts = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._inbox: asyncio.Queue[object] = asyncio.Queue()
        self._segment: SharedMemory | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        _LIVE.add(self)

    # lifecycle

    async def start(self) -> None:
        """Spawn the child and wait until its engine is loaded; raises `EngineLoadFailed`."""
        self._starting = asyncio.ensure_future(self._spawn())
        await self._starting

    async def _spawn(self) -> None:
        parent_end, child_end = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=child_main,
            args=(self.settings, child_end),
            name="fillframe-engine",
            daemon=True,
        )
        await asyncio.to_thread(proc.start)  # spawning copies nothing, but starting takes a moment
        child_end.close()
        self._proc, self._conn = proc, parent_end
        self._inbox = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.add_reader(parent_end.fileno(), self._on_readable, parent_end, self._inbox)
        first = await self._inbox.get()
        if isinstance(first, Ready):
            self.name, self.pid, self.ready_at = first.engine, first.pid, time.time()
            self.max_batch = first.max_batch
            log.info("engine %s loaded in process %d", self.name, first.pid)
            return
        await self._reap()
        if isinstance(first, LoadFailed):
            raise EngineLoadFailed(first.message)
        raise EngineLoadFailed(
            f"The {self.name} engine's process stopped while loading ({_death(proc.exitcode)})."
        )

    @staticmethod
    def _on_readable(conn: multiprocessing.connection.Connection, inbox: asyncio.Queue[object]) -> None:
        """Move every whole message the child sent into the inbox; EOF (the child died) as None."""
        loop = asyncio.get_running_loop()
        try:
            while conn.poll():
                inbox.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(None)

    async def _reap(self) -> None:
        """Kill the child if it lives, and forget it."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        self.pid = None
        if conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            conn.close()
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            await asyncio.to_thread(proc.join, 10)

    def _restart(self, reason: str) -> None:
        """Replace the child in the background; the next `fill` waits for the new one."""
        self.restarts += 1
        if self.on_restart is not None:
            self.on_restart(reason)
        self._starting = asyncio.ensure_future(self._replace(reason))

    async def _replace(self, reason: str) -> None:
        await self._reap()
        delay = 0.5
        while not self._closed:
            try:
                await self._spawn()
                log.warning("engine process restarted (%s)", reason)
                return
            except EngineLoadFailed as exc:
                log.error("the engine could not load again: %s; retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    async def close(self) -> None:
        self._closed = True
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        await self._reap()
        if self._segment is not None:
            _drop(self._segment)
            self._segment = None

    # jobs

    async def ready(self, stopped: CancelledFn) -> None:
        """Wait for a child being (re)started; a stop while waiting ends the wait (`Cancelled`)."""
        while self._starting is not None and not self._starting.done():
            if stopped():
                raise Cancelled()
            await asyncio.wait([self._starting], timeout=_SLICE_SECONDS)
        if self._closed or self._proc is None or self._conn is None:
            raise EngineFailed(f"The {self.name} engine is not running.")

    def _set_cancel(self, index: int) -> None:
        if self._segment is not None:
            shared_buffer(self._segment)[index] = 1

    def _segment_for(self, height: int, width: int, count: int) -> SharedMemory:
        need = segment_bytes(height, width, count)
        if self._segment is None or self._segment.size < need:
            if self._segment is not None:
                _drop(self._segment)  # the child still maps it until its next `Run` names another
            self._segment = SharedMemory(create=True, size=max(need, 1 << 20))
        return self._segment

    async def fill(
        self, job: FillJob, progress: ProgressFn, stopped: CancelledFn, timeout: float, job_id: str = ""
    ) -> FillOutput:
        """Fill `job` in the child; raises as the class says. Returns the output in this process."""
        (result,) = await self.fill_batch([job], [progress], [stopped], timeout, [job_id])
        if isinstance(result, BaseException):
            raise result
        return result

    async def fill_batch(
        self,
        jobs: list[FillJob],
        progress: list[ProgressFn],
        stopped: list[CancelledFn],
        timeout: float,
        job_ids: list[str],
    ) -> list[FillOutput | BaseException]:
        """Fill jobs of one canvas size in one run of the child (`fill_batch` there when more
        than one). Each job's stop sets its own flag; the run is killed only when every job is
        stopped and the engine ignores it for the grace. Returns each job's output or error."""
        if not 1 <= len(jobs) <= max(1, self.max_batch):
            raise ValueError(f"a run holds 1 to {self.max_batch} jobs, not {len(jobs)}")
        await self.ready(lambda: all(s() for s in stopped))
        assert self._conn is not None and self._proc is not None
        if not self._proc.is_alive():  # it died between jobs (the OOM killer picks idle ones too)
            self._restart("crash")
            await self.ready(lambda: all(s() for s in stopped))
            assert self._conn is not None
        height, width = jobs[0].mask.shape
        segment = self._segment_for(height, width, len(jobs))
        for index, job in enumerate(jobs):
            rgb, mask, _ = views(segment.buf, height, width, index)
            np.copyto(rgb, job.rgb)
            np.copyto(mask, job.mask)
            shared_buffer(segment)[index] = 0  # not cancelled
        del rgb, mask
        run = Run(job_ids, segment.name, height, width, [job_params(job) for job in jobs])
        # If it died since, its end of the pipe is closed and `_await_reply` reads the EOF.
        with contextlib.suppress(OSError):
            self._conn.send(run)
        try:
            reply = await self._await_reply(progress, stopped, timeout)
        except asyncio.CancelledError:
            self._restart("abandoned")  # its late reply must not be taken for the next job's
            raise
        return [_output(item, segment, height, width, i) for i, item in enumerate(reply.items)]

    async def _await_reply(
        self, progress: list[ProgressFn], stopped: list[CancelledFn], timeout: float
    ) -> Results:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        flagged = [False] * len(stopped)
        all_stopped_at: float | None = None
        next_memory = loop.time()
        inbox = self._inbox
        while True:
            try:
                msg = await asyncio.wait_for(inbox.get(), _SLICE_SECONDS)
            except TimeoutError:
                msg = False
            if isinstance(msg, Progress):
                progress[msg.index](msg.percent)
                continue
            if isinstance(msg, Results):
                return msg
            if msg is None:  # the pipe closed: the child is gone
                proc = self._proc
                if proc is not None:
                    await asyncio.to_thread(proc.join, 5)
                how = _death(proc.exitcode if proc is not None else None)
                log.error("the engine process died (%s) during a job; restarting it", how)
                self._restart("crash")
                raise EngineCrashed(f"The {self.name} engine's process stopped ({how}) on this job.")
            now = loop.time()
            if now >= deadline:
                self._restart("timeout")
                raise TimedOut(f"The engine did not finish within {timeout:g} seconds.")
            for index, stop in enumerate(stopped):
                if not flagged[index] and stop():
                    self._set_cancel(index)
                    flagged[index] = True
            if all(flagged):
                if all_stopped_at is None:
                    all_stopped_at = now
                elif now - all_stopped_at >= self.cancel_grace:
                    ignored = now - all_stopped_at
                    log.warning("the engine ignored a stop for %.1f s; killing its process", ignored)
                    self._restart("cancel")
                    raise Cancelled()
            if self.memory_limit_bytes and now >= next_memory and self.pid is not None:
                next_memory = now + _MEMORY_EVERY_SECONDS
                used = rss_bytes(self.pid)
                if used > self.memory_limit_bytes:
                    self._restart("memory")
                    limit_mb = self.memory_limit_bytes / 2**20
                    raise EngineCrashed(
                        f"The {self.name} engine's process used {used / 2**20:.0f} MB, over the "
                        f"{limit_mb:.0f} MB limit, on this job."
                    )


def _output(
    item: Done | Failed, segment: SharedMemory, height: int, width: int, index: int
) -> FillOutput | BaseException:
    """One job's end in this process: its output copied out of its block (the segment is the
    next run's), or its error."""
    if isinstance(item, Failed):
        return _ERRORS.get(item.code, EngineFailed)(item.message)
    out = views(segment.buf, height, width, index)[2]
    return FillOutput(out.copy(), item.notes)
