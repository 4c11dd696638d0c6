"""Tiny engines, one per behaviour, for queue and API tests (selected by `FILLFRAME_ENGINE`)."""

from __future__ import annotations

import os
import signal
import time
from typing import ClassVar

import numpy as np

from fillframe.engines.base import CancelledFn, Engine, FillJob, FillOutput, ProgressFn
from fillframe.errors import Cancelled


class SleepEngine(Engine):
    """Takes FILLFRAME_TEST_SLEEP seconds (default 1), in steps that report progress and check cancel.

    Fills the hole with mid-grey so results are recognisable. Each run appends a line to
    FILLFRAME_TEST_RUNLOG (when set) so tests can count how often a job really ran.
    """

    name = "sleep"

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        seconds = float(os.environ.get("FILLFRAME_TEST_SLEEP", "1"))
        runlog = os.environ.get("FILLFRAME_TEST_RUNLOG")
        if runlog:
            with open(runlog, "a") as fh:
                fh.write(f"start {job.seed} {os.getpid()}\n")
        steps = 20
        for i in range(steps):
            if cancelled():
                raise Cancelled()
            time.sleep(seconds / steps)
            progress(int(100 * (i + 1) / steps))
        rgb = job.rgb.copy()
        rgb[job.mask >= 128] = 128
        if runlog:
            with open(runlog, "a") as fh:
                fh.write(f"end {job.seed} {os.getpid()}\n")
        return FillOutput(rgb, notes={"engine": "sleep"})


class StubbornEngine(Engine):
    """Sleeps FILLFRAME_TEST_SLEEP seconds without ever looking at `cancelled()`, then fills."""

    name = "stubborn"

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        time.sleep(float(os.environ.get("FILLFRAME_TEST_SLEEP", "1")))
        rgb = job.rgb.copy()
        rgb[job.mask >= 128] = 128
        return FillOutput(rgb)


class NoopEngine(Engine):
    """Returns the canvas at once (queue throughput benchmarks)."""

    name = "noop"

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        return FillOutput(job.rgb)


class BrokenEngine(Engine):
    """Raises an unexpected exception: the job must fail with engine_error, the worker live on."""

    name = "broken"

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        raise RuntimeError("boom: a bug inside the engine")


def _filled(job: FillJob) -> FillOutput:
    rgb = job.rgb.copy()
    rgb[job.mask >= 128] = 128
    return FillOutput(rgb)


class Misbehaving(Engine):
    """Fills like SleepEngine with FILLFRAME_TEST_SLEEP, except for a job whose prompt is "misbehave":
    that one runs `misbehave` (each subclass: one way an engine goes wrong in production)."""

    name = "misbehaving"

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        if job.prompt == "misbehave":
            progress(10)
            self.misbehave(cancelled)
        time.sleep(float(os.environ.get("FILLFRAME_TEST_SLEEP", "0")))
        return _filled(job)

    def misbehave(self, cancelled: CancelledFn) -> None:
        raise NotImplementedError


class AbortEngine(Misbehaving):
    """`os.abort()`: what a segfault in native code or a CUDA fault looks like from outside."""

    def misbehave(self, cancelled: CancelledFn) -> None:
        os.abort()


class KillSelfEngine(Misbehaving):
    """SIGKILL of its own process: what the OOM killer does."""

    def misbehave(self, cancelled: CancelledFn) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class HangEngine(Misbehaving):
    """Never returns and never looks at `cancelled()`: past any deadline, deaf to cancel."""

    def misbehave(self, cancelled: CancelledFn) -> None:
        while True:
            time.sleep(0.05)


class LeakEngine(Misbehaving):
    """Grows by 32 MB of touched memory every 20 ms and keeps it (stops at 4 GB, a safety net)."""

    leaked: ClassVar[list[bytearray]] = []

    def misbehave(self, cancelled: CancelledFn) -> None:
        while len(self.leaked) < 128:
            self.leaked.append(bytearray(b"x" * (32 << 20)))
            time.sleep(0.02)


class BatchingEngine(Engine):
    """Fills the hole with noise drawn from the job's seed alone, so a job's image is the same in
    any batch; batches of up to FILLFRAME_TEST_MAX_BATCH jobs (default 1). Each call takes
    FILLFRAME_TEST_SLEEP seconds in steps that report each job's progress and look at each job's
    cancel; it appends `call <n> <seeds>` to FILLFRAME_TEST_RUNLOG. A job whose prompt is
    "crash" takes the engine's process down (`os.abort()`) with every job in its call."""

    name = "batching"

    def max_batch(self) -> int:
        return int(os.environ.get("FILLFRAME_TEST_MAX_BATCH", "1"))

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        (result,) = self.fill_batch([job], [progress], [cancelled])
        if isinstance(result, BaseException):
            raise result
        return result

    def fill_batch(
        self, jobs: list[FillJob], progress: list[ProgressFn], cancelled: list[CancelledFn]
    ) -> list[FillOutput | BaseException]:
        runlog = os.environ.get("FILLFRAME_TEST_RUNLOG")
        if runlog:
            with open(runlog, "a") as fh:
                fh.write(f"call {len(jobs)} {' '.join(str(job.seed) for job in jobs)}\n")
        if any(job.prompt == "crash" for job in jobs):
            os.abort()
        steps = 10
        for step in range(steps):
            time.sleep(float(os.environ.get("FILLFRAME_TEST_SLEEP", "0")) / steps)
            for report in progress:
                report((step + 1) * 100 // steps)
        return [
            Cancelled() if stop() else _noise(job, len(jobs))
            for job, stop in zip(jobs, cancelled, strict=True)
        ]


def _noise(job: FillJob, batch: int) -> FillOutput:
    rgb = job.rgb.copy()
    hole = job.mask >= 128
    rng = np.random.default_rng(job.seed)
    rgb[hole] = rng.integers(0, 256, (int(hole.sum()), 3), dtype=np.uint8)
    return FillOutput(rgb, notes={"batch": batch, "seed": job.seed})
