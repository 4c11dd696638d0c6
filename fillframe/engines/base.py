"""The engine contract and the registry that picks an engine by name.

Engines only ever fill a masked canvas: outpainting is geometry done before the engine
(`imaging/canvas.py`). Pixels outside the mask must come back bit-identical.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from fillframe.settings import Settings

ProgressFn = Callable[[int], None]
CancelledFn = Callable[[], bool]


def slice_progress(progress: ProgressFn, index: int, count: int) -> ProgressFn:
    """Progress of part `index` of `count` equal parts (crops of one job), as the job's share."""
    return lambda percent: progress((index * 100 + percent) // count)


@dataclass(frozen=True)
class FillJob:
    """One fill request as an engine sees it.

    rgb:  HxWx3 uint8 RGB canvas (already the output size).
    mask: HxW uint8, 255 = repaint, 0 = keep (binary).
    """

    rgb: np.ndarray
    mask: np.ndarray
    prompt: str
    seed: int
    steps: int = 50
    guidance: float = 3.0
    safety_tolerance: int = 2
    prompt_upsampling: bool = False
    output_format: str = "jpg"


@dataclass
class FillOutput:
    """rgb: HxWx3 uint8 RGB, same size as the job's canvas. `notes` are engine facts kept on the job."""

    rgb: np.ndarray
    notes: dict[str, Any] = field(default_factory=dict)


class Engine:
    """Base class: `load` once per worker process, then `fill` per job (from a worker thread).

    `progress(percent)` may be called from the filling thread; `cancelled()` should be polled
    between steps, and the engine raises `fillframe.errors.Cancelled` when it turns true.
    """

    name: ClassVar[str] = "base"
    uses_prompt: ClassVar[bool] = False
    # What the engine is built with: a part of `Settings` (`"flux"`: `settings.flux`), "none", or
    # "all" (the default): every setting by its flat name (`settings.job_timeout_seconds`), the one
    # object earlier versions passed, so a custom engine that read it keeps working unchanged.
    settings_part: ClassVar[str] = "all"

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings

    def load(self) -> None:
        """Load weights or check libraries; raise a clear RuntimeError when the engine cannot run."""

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        raise NotImplementedError

    def max_batch(self) -> int:
        """How many jobs of one `batch_key` the worker may hand to one `fill_batch` call (after
        `load`). 1, the default: jobs come one at a time, and `fill_batch` is never called with
        more than one."""
        return 1

    def fill_batch(
        self, jobs: list[FillJob], progress: list[ProgressFn], cancelled: list[CancelledFn]
    ) -> list[FillOutput | BaseException]:
        """Fill jobs of one `batch_key` together; returns, in order, each job's output or the
        exception it ended with, so one job's failure or cancel never fails the others. This
        default fills them one by one; an engine that can share work (one pipeline call)
        overrides it and `max_batch`."""
        return [fill_one(self, job, p, c) for job, p, c in zip(jobs, progress, cancelled, strict=True)]


def batch_key(job: FillJob) -> tuple[Any, ...]:
    """What jobs filled in one call share: the canvas size, steps and guidance (one pipeline call
    runs one size, one step count and one guidance; prompts and seeds are per image)."""
    return (job.rgb.shape, job.steps, job.guidance)


def fill_one(
    engine: Engine, job: FillJob, progress: ProgressFn, cancelled: CancelledFn
) -> FillOutput | BaseException:
    """`engine.fill`, its exception returned instead of raised (a member of a batch)."""
    try:
        return engine.fill(job, progress, cancelled)
    except Exception as exc:
        return exc


# Lazy: importing an engine module may import heavy libraries (torch), so only the chosen one is.
ENGINES: dict[str, str] = {
    "classic": "fillframe.engines.classic:ClassicEngine",
    "telea": "fillframe.engines.telea:TeleaEngine",
    "flux": "fillframe.engines.flux:FluxEngine",
    "bfl": "fillframe.engines.bfl:BflEngine",
}


def engine_class(name: str) -> type[Engine]:
    """Resolve a registry name, or a `package.module:Class` path for custom engines."""
    target = ENGINES.get(name, name)
    module_name, sep, class_name = target.partition(":")
    if not sep:
        known = ", ".join(sorted(ENGINES))
        raise ValueError(f"Unknown engine {name!r}: use one of {known} or 'package.module:Class'.")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise ValueError(f"{target} is not a fillframe Engine subclass.")
    return cls


def create_engine(settings: Settings) -> Engine:
    """The configured engine, given only the part of the settings its class names."""
    from fillframe.settings import flat_view

    cls = engine_class(settings.worker.engine)
    part = cls.settings_part
    if part == "none":
        return cls(None)
    return cls(flat_view(settings) if part == "all" else getattr(settings, part))
