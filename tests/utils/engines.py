"""Tiny engines, one per behaviour, for queue and API tests (selected by `FILLFRAME_ENGINE`)."""

from __future__ import annotations

import os
import time

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
