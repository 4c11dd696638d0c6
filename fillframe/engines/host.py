"""The engine host: an engine loaded once in a spawned child process and reused for many jobs.

As cog runs its predictor, the model lives apart from the server: a crash of native code
(`os.abort`, a segfault, a CUDA fault), an OOM kill, a hang past the deadline or an engine that
ignores `cancelled()` costs that job's attempt and a restart of the child, never the worker or
the API beside it.

Parent and child speak in small typed messages over a pipe (job in; progress, done, failed out).
Pixels never go through the pipe: the parent writes the canvas and mask into a shared-memory
segment that the child maps, and the child writes the filled canvas back into the same segment.
Cancel is a flag byte at the head of that segment, so the engine's `cancelled()` costs no
message and the host needs no lock or semaphore of its own.
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

from fillframe.engines.base import CancelledFn, FillJob, FillOutput, ProgressFn
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


@dataclass(frozen=True)
class LoadFailed:
    """child -> parent: the engine could not load; `message` is the sentence for the operator."""

    message: str


@dataclass(frozen=True)
class Run:
    """parent -> child: fill the canvas in segment `shm` (rgb, then mask, then room for the output)."""

    job_id: str
    shm: str
    height: int
    width: int
    params: dict[str, Any]  # the FillJob's other fields (prompt, seed, steps, ...)


def job_params(job: FillJob) -> dict[str, Any]:
    """A FillJob's fields but its pixels: what travels in the message."""
    return {f.name: getattr(job, f.name) for f in fields(job) if f.name not in ("rgb", "mask")}


@dataclass(frozen=True)
class Progress:
    percent: int


@dataclass(frozen=True)
class Done:
    """child -> parent: the output is in the segment's output region."""

    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    code: str
    message: str


# --- pixels in shared memory ---------------------------------------------------------------


_HEADER = 64  # byte 0: the cancel flag, set by the parent, read by the engine's `cancelled()`


def segment_bytes(height: int, width: int) -> int:
    return _HEADER + height * width * 7  # then rgb in (3), mask (1), rgb out (3)


def shared_buffer(segment: SharedMemory) -> memoryview:
    """The segment's bytes; byte 0 is the cancel flag (0: run on, 1: stop)."""
    buf = segment.buf
    if buf is None:  # only after close(), which nothing here calls before it is done
        raise RuntimeError("the shared segment is closed")
    return buf


def views(buf: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The segment's rgb in (HxWx3), mask (HxW) and rgb out (HxWx3), as uint8 views."""
    plane = height * width
    rgb = np.ndarray((height, width, 3), np.uint8, buffer=buf, offset=_HEADER)
    mask = np.ndarray((height, width), np.uint8, buffer=buf, offset=_HEADER + 3 * plane)
    out = np.ndarray((height, width, 3), np.uint8, buffer=buf, offset=_HEADER + 4 * plane)
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
    logs.setup(settings.logging.log_level, settings.logging.log_format)
    try:
        engine = create_engine(settings)
        engine.load()
    except Exception as exc:  # every failure to load is the operator's to read, in one sentence
        conn.send(LoadFailed(str(exc) or type(exc).__name__))
        return
    conn.send(Ready(engine.name, os.getpid()))
    segment: SharedMemory | None = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if segment is None or segment.name != msg.shm:
            if segment is not None:
                segment.close()
            segment = SharedMemory(msg.shm)
        token = logs.job_id.set(msg.job_id)
        try:
            conn.send(_fill_in_child(engine, msg, segment, conn))
        finally:
            logs.job_id.reset(token)


def _fill_in_child(
    engine: Any, msg: Run, segment: SharedMemory, conn: multiprocessing.connection.Connection
) -> Done | Failed:
    rgb, mask, out = views(segment.buf, msg.height, msg.width)
    job = FillJob(rgb=rgb, mask=mask, **msg.params)
    sent = [-1]

    def progress(percent: int) -> None:
        if int(percent) != sent[0]:  # one message per change, however often the engine reports
            sent[0] = int(percent)
            conn.send(Progress(int(percent)))

    try:
        flag = shared_buffer(segment)

        def cancelled() -> bool:
            return flag[0] != 0

        result = engine.fill(job, progress, cancelled)
        problem = shape_problem(rgb.shape, result.rgb)
        if problem is not None:
            return Failed("engine_error", problem)
        np.copyto(out, result.rgb)
        return Done(dict(result.notes))
    except FillError as exc:
        return Failed(exc.code, exc.message)
    except Exception:
        log.exception("engine %s failed on job %s", engine.name, msg.job_id)
        return Failed("engine_error", f"The {engine.name} engine failed on this job.")
    finally:
        del job, rgb, mask, out  # the segment cannot be closed while views of it live


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
    """One child process with the configured engine, used by one job at a time.

    `fill` raises `EngineCrashed` when the child dies or outgrows `memory_limit_bytes`,
    `TimedOut` past the deadline and `Cancelled` when `stopped()` turns true; in each case the child
    is killed (if still alive) and a new one is started in the background, and the next `fill`
    waits for it. `on_restart(reason)` lets the worker count restarts.
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
        self.name = settings.worker.engine
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

    async def _ready(self, stopped: CancelledFn) -> None:
        """Wait for a child being (re)started; a stop while waiting ends the wait."""
        while self._starting is not None and not self._starting.done():
            if stopped():
                raise Cancelled()
            await asyncio.wait([self._starting], timeout=_SLICE_SECONDS)
        if self._closed or self._proc is None or self._conn is None:
            raise EngineFailed(f"The {self.name} engine is not running.")

    def _set_cancel(self) -> None:
        if self._segment is not None:
            shared_buffer(self._segment)[0] = 1

    def _segment_for(self, height: int, width: int) -> SharedMemory:
        need = segment_bytes(height, width)
        if self._segment is None or self._segment.size < need:
            if self._segment is not None:
                _drop(self._segment)  # the child still maps it until its next `Run` names another
            self._segment = SharedMemory(create=True, size=max(need, 1 << 20))
        return self._segment

    async def fill(
        self, job: FillJob, progress: ProgressFn, stopped: CancelledFn, timeout: float, job_id: str = ""
    ) -> FillOutput:
        """Fill `job` in the child; raises as the class says. Returns the output in this process."""
        await self._ready(stopped)
        assert self._conn is not None and self._proc is not None
        if not self._proc.is_alive():  # it died between jobs (the OOM killer picks idle ones too)
            self._restart("crash")
            await self._ready(stopped)
            assert self._conn is not None
        height, width = job.mask.shape
        segment = self._segment_for(height, width)
        rgb, mask, out = views(segment.buf, height, width)
        np.copyto(rgb, job.rgb)
        np.copyto(mask, job.mask)
        del rgb, mask
        shared_buffer(segment)[0] = 0  # not cancelled
        # If it died since, its end of the pipe is closed and `_await_reply` reads the EOF.
        with contextlib.suppress(OSError):
            self._conn.send(Run(job_id, segment.name, height, width, job_params(job)))
        try:
            reply = await self._await_reply(progress, stopped, timeout)
        except asyncio.CancelledError:
            self._restart("abandoned")  # its late reply must not be taken for the next job's
            raise
        if isinstance(reply, Done):
            return FillOutput(out.copy(), reply.notes)  # the segment is the next job's
        raise _ERRORS.get(reply.code, EngineFailed)(reply.message)

    async def _await_reply(self, progress: ProgressFn, stopped: CancelledFn, timeout: float) -> Done | Failed:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        stop_at: float | None = None
        next_memory = loop.time()
        inbox = self._inbox
        while True:
            try:
                msg = await asyncio.wait_for(inbox.get(), _SLICE_SECONDS)
            except TimeoutError:
                msg = False
            if isinstance(msg, Progress):
                progress(msg.percent)
                continue
            if isinstance(msg, Done | Failed):
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
            if stopped():
                if stop_at is None:
                    self._set_cancel()
                    stop_at = now
                elif now - stop_at >= self.cancel_grace:
                    log.warning("the engine ignored a stop for %.1f s; killing its process", now - stop_at)
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
