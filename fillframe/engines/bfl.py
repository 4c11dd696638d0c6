"""The `bfl` engine: Black Forest Labs' hosted FLUX.1 Fill [pro], with the operator's key.

Protocol (docs.bfl.ai): `POST {base}/v1/flux-pro-1.0-fill` with header `x-key` and a JSON body
(base64 `image` and `mask`, `prompt`, `steps` 15-50, `guidance` 1.5-100, `seed`,
`safety_tolerance`, `prompt_upsampling`, `output_format`) answers `{id, polling_url}`; polling
that URL answers `{status, result, progress, details}` until the status is final. "Ready"
carries `result.sample`, a URL that expires about ten minutes later, so it is downloaded at
once and the worker stores (re-hosts) the pixels like any engine's output.

Retries: a 429 is retried after its `Retry-After`; a submit that got a 5xx or no answer is
never re-posted, because the first one may have been accepted and billed. Polls are plain
GETs and are retried on 5xx, 429 and network errors until the engine's deadline.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httpx
import numpy as np
from PIL import Image

from fillframe.engines.base import CancelledFn, Engine, FillJob, FillOutput, ProgressFn
from fillframe.errors import (
    Cancelled,
    ContentModerated,
    EngineFailed,
    InvalidInput,
    RequestModerated,
    TimedOut,
)
from fillframe.imaging.decode import decode_image
from fillframe.imaging.fetch import check_url, fetch_url

if TYPE_CHECKING:
    from fillframe.settings import Settings

FILL_PATH = "/v1/flux-pro-1.0-fill"
MIN_STEPS = 15  # BFL refuses fewer
MAX_STEPS = 50
GUIDANCE_MIN = 1.5
GUIDANCE_MAX = 100.0
OUTPUT_FORMATS = {"jpg": "jpeg", "png": "png"}
PENDING = frozenset({"Pending", "Queued", "Processing", "Reasoning", "Generating"})
# "Task not found" can be seen briefly while a new task propagates between BFL's regions.
NOT_FOUND_TOLERANCE = 3
DEFAULT_RETRY_AFTER = 5.0
CONNECT_RETRIES = 2
EXPIRY_HINT = "Black Forest Labs' result URLs expire about 10 minutes after the result is ready"
# Progress shares: submit, upstream generation, download.
SUBMITTED_PCT, POLL_SPAN_PCT, DOWNLOADED_PCT = 5, 85, 95


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def upstream_guidance(guidance: float, factor: float) -> float:
    """The API's guidance (2-5) as BFL's: clamp(factor x g, 1.5, 100); 3 -> 60, BFL's default."""
    return float(min(GUIDANCE_MAX, max(GUIDANCE_MIN, factor * guidance)))


def upstream_steps(steps: int) -> int:
    """BFL accepts 15-50 steps: fewer are raised to 15 (the job records it)."""
    return max(MIN_STEPS, min(MAX_STEPS, steps))


def png_base64(array: np.ndarray) -> str:
    """HxWx3 RGB or HxW mask (uint8) -> base64 of a lossless PNG, as BFL's `image`/`mask` take."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), "RGB" if array.ndim == 3 else "L").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build_payload(job: FillJob, guidance_factor: float) -> dict[str, Any]:
    """The JSON body for /v1/flux-pro-1.0-fill (rgb: HxWx3 uint8, mask: HxW uint8, 255 = fill)."""
    return {
        "image": png_base64(job.rgb),
        "mask": png_base64(np.where(job.mask >= 128, 255, 0).astype(np.uint8)),
        "prompt": job.prompt,
        "steps": upstream_steps(job.steps),
        "guidance": upstream_guidance(job.guidance, guidance_factor),
        "seed": job.seed,
        "safety_tolerance": job.safety_tolerance,
        "prompt_upsampling": job.prompt_upsampling,
        "output_format": OUTPUT_FORMATS.get(job.output_format, "jpeg"),
    }


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def same_site(url: str, base_url: str) -> bool:
    """Whether `url` is on the base URL's host or its parent domain (api.us1.bfl.ai ~ api.bfl.ai).

    The key is sent only there: a polling URL elsewhere would hand the operator's key away.
    """
    host, base = httpx.URL(url).host, httpx.URL(base_url).host
    if host == base:
        return True
    labels = base.split(".")
    if len(labels) < 2 or base.replace(".", "").isdigit():
        return False
    return host.endswith("." + ".".join(labels[-2:]))


def upstream_detail(body: dict[str, Any]) -> str:
    """The most useful text BFL gave with a failed status (`details`, else a string result)."""
    details = body.get("details")
    parts: list[str] = []
    if isinstance(details, dict):
        for key, value in details.items():
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(text if key.lower() in ("message", "error", "detail") else f"{key}: {text}")
    elif details:
        parts.append(str(details))
    if not parts and isinstance(body.get("result"), str):
        parts.append(body["result"])
    return "; ".join(parts)


def _http_detail(response: httpx.Response) -> str:
    """A short text from an error response (`{"detail": ...}` as BFL's API sends)."""
    try:
        detail: Any = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # 422: [{"loc": [...], "msg": ...}]
        detail = "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
            for d in detail
        )
    text = str(detail).strip()
    return text[:300] or (response.reason_phrase or "no detail")


@dataclass
class Submitted:
    id: str
    polling_url: str


class BflEngine(Engine):
    """FLUX.1 Fill [pro] at Black Forest Labs; the upstream's moderation statuses become job codes."""

    name: ClassVar[str] = "bfl"
    uses_prompt: ClassVar[bool] = True

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        super().__init__(settings)
        self.clock: Clock = clock or RealClock()

    def load(self) -> None:
        """Refuse to start without a key or with a base URL that is not http(s)."""
        key = self.settings.bfl_api_key
        if key is None or not key.get_secret_value().strip():
            raise RuntimeError("The bfl engine needs FILLFRAME_BFL_API_KEY (a key from Black Forest Labs).")
        base = httpx.URL(self.settings.bfl_base_url)
        if base.scheme not in ("http", "https") or not base.host:
            raise RuntimeError(
                f"FILLFRAME_BFL_BASE_URL={self.settings.bfl_base_url} is not an http(s) URL; "
                "use https://api.bfl.ai or a regional one such as https://api.eu.bfl.ai."
            )

    @property
    def base_url(self) -> str:
        return self.settings.bfl_base_url.rstrip("/")

    def _key(self) -> str:
        key = self.settings.bfl_api_key
        if key is None:
            raise EngineFailed("The bfl engine has no API key: set FILLFRAME_BFL_API_KEY.")
        return key.get_secret_value().strip()

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        """rgb: HxWx3 uint8 RGB canvas; mask: HxW uint8, 255 = fill. Returns the same size."""
        if job.mask.shape != job.rgb.shape[:2]:
            raise InvalidInput(f"The mask is {job.mask.shape[::-1]} but the image is {job.rgb.shape[1::-1]}.")
        payload = build_payload(job, self.settings.bfl_guidance_factor)
        notes: dict[str, Any] = {
            "pipelineGuidance": payload["guidance"],
            "guidanceFactor": self.settings.bfl_guidance_factor,
            "stepsUsed": payload["steps"],
            "stepsRaised": payload["steps"] > job.steps,
        }
        deadline = self.clock.monotonic() + self.settings.bfl_timeout_seconds
        if cancelled():
            raise Cancelled()
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=False) as client:
            task = self._submit(client, payload, cancelled, deadline)
            notes["upstreamId"] = task.id
            progress(SUBMITTED_PCT)
            result = self._poll(client, task, progress, cancelled, deadline)
        sample = result.get("sample") if isinstance(result, dict) else None
        if not isinstance(sample, str) or not sample:
            raise EngineFailed("Black Forest Labs reported the image ready but sent no result URL.")
        generated = self._download(sample)
        progress(DOWNLOADED_PCT)
        height, width = job.mask.shape
        if generated.shape[:2] != (height, width):
            notes["upstreamSize"] = [int(generated.shape[1]), int(generated.shape[0])]
            resized = Image.fromarray(generated).resize((width, height), Image.Resampling.LANCZOS)
            generated = np.asarray(resized)
        # BFL re-encodes the whole image (JPEG by default): put the kept pixels back exactly.
        fill = job.mask >= 128
        out = np.where(fill[:, :, None], generated, job.rgb[:, :, :3])
        return FillOutput(np.ascontiguousarray(out, dtype=np.uint8), notes)

    # --- steps ---------------------------------------------------------------------------

    def _wait(self, seconds: float, cancelled: CancelledFn, deadline: float) -> None:
        """Sleep in short slices so a cancel or the deadline is noticed within a second."""
        end = min(self.clock.monotonic() + max(0.0, seconds), deadline)
        while (left := end - self.clock.monotonic()) > 0:
            if cancelled():
                raise Cancelled()
            self.clock.sleep(min(1.0, left))

    def _check_deadline(self, deadline: float, what: str) -> None:
        if self.clock.monotonic() >= deadline:
            raise TimedOut(
                f"Black Forest Labs did not {what} within {self.settings.bfl_timeout_seconds:g} seconds "
                "(FILLFRAME_BFL_TIMEOUT_SECONDS)."
            )

    def _submit(
        self, client: httpx.Client, payload: dict[str, Any], cancelled: CancelledFn, deadline: float
    ) -> Submitted:
        url = self.base_url + FILL_PATH
        connect_failures = 0
        while True:
            self._check_deadline(deadline, "accept the request")
            try:
                response = client.post(url, json=payload, headers={"x-key": self._key()})
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Never reached the server, so nothing was billed: safe to try again.
                connect_failures += 1
                if connect_failures > CONNECT_RETRIES:
                    raise EngineFailed(
                        f"Could not reach Black Forest Labs at {self.base_url}: {exc}."
                    ) from None
                self._wait(2.0**connect_failures, cancelled, deadline)
                continue
            except httpx.TransportError as exc:
                raise EngineFailed(
                    f"The submit to Black Forest Labs got no complete answer ({type(exc).__name__}); "
                    "it was not re-sent because the first may have been accepted and billed."
                ) from None
            status = response.status_code
            if status == 429:
                wait = retry_after_seconds(response.headers.get("retry-after"))
                self._wait(DEFAULT_RETRY_AFTER if wait is None else wait, cancelled, deadline)
                continue
            if status >= 500:
                raise EngineFailed(
                    f"Black Forest Labs answered {status} to the submit ({_http_detail(response)}); "
                    "it was not re-sent because the first may have been accepted and billed."
                )
            if status in (401, 403):
                raise EngineFailed(
                    f"Black Forest Labs refused the API key ({status}): check FILLFRAME_BFL_API_KEY."
                )
            if status == 402:
                raise EngineFailed(
                    "Black Forest Labs reports insufficient credits (402) on the operator's account."
                )
            if status != 200:
                raise EngineFailed(
                    f"Black Forest Labs rejected the request ({status}): {_http_detail(response)}."
                )
            try:
                body = response.json()
                return Submitted(id=str(body["id"]), polling_url=str(body["polling_url"]))
            except (ValueError, KeyError, TypeError):
                raise EngineFailed(
                    "Black Forest Labs answered the submit without an id and polling_url."
                ) from None

    def _poll_url(self, task: Submitted) -> tuple[str, dict[str, str]]:
        """The polling URL, checked by the SSRF guard, and the headers it may be sent."""
        url = task.polling_url
        try:
            check_url(url, self.settings.allow_private_urls)
        except ValueError as exc:
            raise EngineFailed(f"Black Forest Labs returned a polling URL that is refused: {exc}") from None
        if not same_site(url, self.base_url):
            raise EngineFailed(
                f"Black Forest Labs returned a polling URL on {httpx.URL(url).host}, outside "
                f"{httpx.URL(self.base_url).host}; the key is not sent there."
            )
        return url, {"x-key": self._key()}

    def _poll(
        self,
        client: httpx.Client,
        task: Submitted,
        progress: ProgressFn,
        cancelled: CancelledFn,
        deadline: float,
    ) -> Any:
        """Poll until a final status; returns the `result` of a Ready answer."""
        url, headers = self._poll_url(task)
        not_found = 0
        wait = self.settings.bfl_poll_seconds
        while True:
            self._wait(wait, cancelled, deadline)
            if cancelled():
                raise Cancelled()
            self._check_deadline(deadline, "finish")
            wait = self.settings.bfl_poll_seconds
            try:
                response = client.get(url, headers=headers)
            except httpx.TransportError:
                continue  # a GET is safe to repeat; the deadline bounds it
            if response.status_code == 429:
                after = retry_after_seconds(response.headers.get("retry-after"))
                wait = DEFAULT_RETRY_AFTER if after is None else after
                continue
            if response.status_code >= 500:
                continue
            if response.status_code in (401, 403):
                raise EngineFailed(
                    f"Black Forest Labs refused the API key while polling ({response.status_code}): "
                    "check FILLFRAME_BFL_API_KEY."
                )
            if response.status_code != 200:
                raise EngineFailed(
                    f"Black Forest Labs answered {response.status_code} while polling: "
                    f"{_http_detail(response)}."
                )
            try:
                body = response.json()
                status = str(body.get("status"))
            except (ValueError, AttributeError):
                continue
            if status == "Ready":
                return body.get("result")
            detail = upstream_detail(body)
            suffix = f": {detail}" if detail else ""
            if status == "Request Moderated":
                raise RequestModerated(f"Black Forest Labs moderated the request (prompt or image){suffix}.")
            if status == "Content Moderated":
                raise ContentModerated(f"Black Forest Labs moderated the generated image{suffix}.")
            if status in ("Error", "Failed"):
                raise EngineFailed(f"Black Forest Labs failed the generation{suffix or ' without a detail'}.")
            if status == "Task not found":
                not_found += 1
                if not_found >= NOT_FOUND_TOLERANCE:
                    raise EngineFailed(f"Black Forest Labs does not know task {task.id} (Task not found).")
                continue
            not_found = 0
            share = body.get("progress")
            if isinstance(share, int | float) and 0 <= share <= 1:
                progress(SUBMITTED_PCT + int(POLL_SPAN_PCT * share))

    def _download(self, sample_url: str) -> np.ndarray:
        """Fetch `result.sample` through the SSRF guard and decode it to HxWx3 uint8 RGB."""
        s = self.settings
        try:
            data = asyncio.run(
                fetch_url(
                    sample_url,
                    allow_private=s.allow_private_urls,
                    max_bytes=s.max_image_bytes,
                    timeout=s.fetch_timeout_seconds,
                    max_redirects=s.max_redirects,
                    what="the Black Forest Labs result",
                )
            )
            return decode_image(data, max_pixels=s.max_pixels, what="Black Forest Labs result")
        except InvalidInput as exc:
            # Not the user's input at fault: the upstream's result could not be had.
            raise EngineFailed(f"{exc.message.rstrip('.')} ({EXPIRY_HINT}).") from None
