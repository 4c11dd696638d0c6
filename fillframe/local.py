"""`fillframe edit` without a server: the configured engine in this process, on the worker's own
pipeline (`prepare` -> `engine.fill` -> `check_output` -> `encode_image`), so a local result is
the one a server with the same engine, inputs and seed would store.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fillframe.contract import MAX_SEED, EditRequest
from fillframe.engines.base import CancelledFn, Engine, ProgressFn
from fillframe.jobs.worker import SourceLoader, network_loader, prepare, render
from fillframe.settings import LimitSettings

# Stands in for local paths while the request is validated: the contract only knows URLs.
_PLACEHOLDER = "data:image/png;base64,AA=="


@dataclass(frozen=True)
class LocalResult:
    """An encoded result: `data` in `content_type`, `width`x`height` pixels, made with `seed`."""

    data: bytes
    content_type: str
    width: int
    height: int
    seed: int
    notes: dict[str, Any]


def is_remote(value: str) -> bool:
    """True for what the API itself would fetch: http(s) URLs and data URIs."""
    return value[:7].lower() == "http://" or value[:8].lower() == "https://" or value[:5].lower() == "data:"


def build_request(
    image: str, *, prompt: str, mask: str | None, outpaint: str | None, params: dict[str, Any]
) -> dict[str, Any]:
    """The `POST /v2/images/edit` body for a local run, validated by the API's own rules.

    image/mask: local paths, http(s) URLs or data URIs. Raises ValueError with the sentence the
    API would answer with a 400.
    """
    fill: dict[str, Any] = {"image": image, "prompt": prompt, **params}
    if outpaint is not None:
        fill.update(mode="outpaint", outpaint=outpaint)
    elif params.get("expand"):
        fill.update(mode="outpaint")  # free expansion instead of a preset
    else:
        fill.update(mode="inpaint", mask=mask)
    body = {"model": "flux-fill-pro", "fluxFillParams": fill}
    checked = {
        **fill,
        **{k: _PLACEHOLDER for k in ("image", "mask") if fill.get(k) and not is_remote(fill[k])},
    }
    try:
        EditRequest.model_validate({**body, "fluxFillParams": checked})
    except ValidationError as exc:
        raise ValueError(validation_message(exc)) from None
    return body


def validation_message(exc: ValidationError) -> str:
    """One sentence for the first problem, named by its request path: `fluxFillParams.steps: ...`."""
    first = exc.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"Invalid request: {path + ': ' if path else ''}{message}."


def file_loader(settings: LimitSettings) -> SourceLoader:
    """Reads local paths from disk; URLs and data URIs go through the worker's guarded loader."""
    network = network_loader(settings)

    async def load(value: str, what: str) -> bytes:
        if is_remote(value):
            return await network(value, what)
        return await asyncio.to_thread(Path(value).read_bytes)

    return load


def run_local(
    request: dict[str, Any],
    engine: Engine,
    settings: LimitSettings,
    *,
    seed: int | None = None,
    progress: ProgressFn = lambda _percent: None,
    cancelled: CancelledFn = lambda: False,
) -> LocalResult:
    """Fill one request (from `build_request`) with a loaded `engine`, in this thread.

    Raises fillframe.errors.FillError subclasses (InvalidInput for unreadable inputs or a mask of
    the wrong size) with the sentence a job's `error` would carry. Runs the engine in the calling
    thread, so Ctrl-C stops it.
    """
    seed = secrets.randbelow(MAX_SEED + 1) if seed is None else seed
    job = asyncio.run(prepare({"request": request, "seed": seed}, settings, file_loader(settings)))
    done = render(engine, job, progress, cancelled)
    progress(100)
    height, width = job.rgb.shape[:2]
    return LocalResult(done.data, done.content_type, width, height, seed, done.notes or {})
