"""The `bfl` engine: Black Forest Labs' hosted FLUX.1 Fill [pro], with the operator's key.

Protocol (docs.bfl.ai): `POST {base}/v1/flux-pro-1.0-fill` with header `x-key` and a JSON body
(base64 `image` and `mask`, `prompt`, `steps` 15-50, `guidance` 1.5-100, `seed`,
`safety_tolerance`, `prompt_upsampling`, `output_format`) answers `{id, polling_url}`; polling
that URL answers `{status, result, progress, details}` until the status is final. "Ready"
carries `result.sample`, a URL that expires about ten minutes later, so it is downloaded at
once and the worker stores (re-hosts) the pixels like any engine's output.

Sizes: a canvas over FILLFRAME_BFL_MAX_PIXELS is sent crop by crop (`imaging/crops.py`, as
the flux engine does): each hole's box plus context, scaled within the cap, one upstream task
per crop, pasted back inside the mask.

Retries: a submit answered 429 (too many active tasks) or 503 (busy) was not accepted, so it is
retried with exponential backoff (BFL sends no `Retry-After`; one is honoured if it comes). A
submit that got another 5xx or no answer is never re-posted, because the first one may have
been accepted and billed. Polls are plain GETs and are retried on 5xx, 429 and network errors
until the engine's deadline. The result download is retried while its URL is valid. At most
FILLFRAME_BFL_MAX_ACTIVE_TASKS tasks per key are in flight from one process (BFL's default
account cap is 24); more wait for a slot.

The key goes only to hosts of the base URL's registrable domain, read with the public-suffix
list (api.us1.bfl.ai and api.bfl.ai share bfl.ai; a.github.io and b.github.io share nothing).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.utils
import hashlib
import io
import ipaddress
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httpx
import numpy as np
from PIL import Image

from fillframe.engines.base import CancelledFn, Engine, FillJob, FillOutput, ProgressFn, slice_progress
from fillframe.errors import (
    Cancelled,
    ContentModerated,
    EngineFailed,
    InvalidInput,
    RequestModerated,
    TimedOut,
)
from fillframe.imaging.crops import Crop, crop_inputs, fits, paste, plan_crops
from fillframe.imaging.decode import decode_image
from fillframe.imaging.fetch import check_url, fetch_url

if TYPE_CHECKING:
    from fillframe.settings import BflSettings

FILL_PATH = "/v1/flux-pro-1.0-fill"
MIN_STEPS = 15  # BFL refuses fewer
MAX_STEPS = 50
GUIDANCE_MIN = 1.5
GUIDANCE_MAX = 100.0
OUTPUT_FORMATS = {"jpg": "jpeg", "png": "png"}
# "Task not found" can be seen briefly while a new task propagates between BFL's regions.
NOT_FOUND_TOLERANCE = 3
DEFAULT_RETRY_AFTER = 5.0
CONNECT_RETRIES = 2
# Submits answered 429/503: 2, 4, 8, ... seconds, at most a minute apart, until the deadline.
BACKOFF_BASE, BACKOFF_MAX = 2.0, 60.0
BUSY = frozenset({429, 503})
# The result URL is valid about 10 minutes; downloads are retried inside that window.
SAMPLE_VALIDITY_SECONDS = 600.0
DOWNLOAD_ATTEMPTS = 4
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


@cache
def _suffix_list() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()  # the package's bundled snapshot: read once, never fetched


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def registrable_domain(host: str) -> str | None:
    """The public-suffix list's registrable domain of `host` (api.eu.bfl.ai -> bfl.ai), or None
    for an IP address, a bare name or a public suffix itself."""
    host = host.lower().rstrip(".")
    if _is_ip(host):
        return None
    domain = _suffix_list().privatesuffix(host)
    return str(domain) if domain else None


def same_site(url: str, base_url: str) -> bool:
    """Whether `url` may be sent the key: the base URL's host, or a host of its registrable domain.

    Without a registrable domain (an IP address, `localhost`) only the very same host qualifies.
    """
    host, base = httpx.URL(url).host.lower(), httpx.URL(base_url).host.lower()
    if host == base:
        return True
    domain = registrable_domain(base)
    return domain is not None and registrable_domain(host) == domain


def backoff_seconds(attempt: int, retry_after: float | None) -> float:
    """Wait before retry `attempt` (1, 2, ...) of a busy submit: its Retry-After, else 2^n s."""
    if retry_after is not None:
        return retry_after
    return min(BACKOFF_MAX, BACKOFF_BASE**attempt)


_SLOTS: dict[str, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def task_slots(key: str, limit: int) -> threading.BoundedSemaphore:
    """The process-wide cap of in-flight upstream tasks for one key (by the key's hash)."""
    name = hashlib.sha256(key.encode()).hexdigest() + f":{limit}"
    with _SLOTS_LOCK:
        return _SLOTS.setdefault(name, threading.BoundedSemaphore(limit))


def usage_notes(body: dict[str, Any]) -> dict[str, Any]:
    """BFL's `cost` (credits) and `input_mp` / `output_mp` (megapixels) from a submit answer."""
    names = {"cost": "cost", "input_mp": "inputMp", "output_mp": "outputMp"}
    return {ours: body[theirs] for theirs, ours in names.items() if isinstance(body.get(theirs), int | float)}


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
    usage: dict[str, Any] = dataclasses.field(default_factory=dict)


class BflEngine(Engine):
    """FLUX.1 Fill [pro] at Black Forest Labs; the upstream's moderation statuses become job codes."""

    name: ClassVar[str] = "bfl"
    uses_prompt: ClassVar[bool] = True
    settings_part: ClassVar[str] = "bfl"

    def __init__(self, settings: BflSettings, clock: Clock | None = None) -> None:
        super().__init__(settings)
        self.settings: BflSettings = settings
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
        rgb = np.ascontiguousarray(job.rgb[:, :, :3])
        fill = job.mask >= 128
        steps = upstream_steps(job.steps)
        notes: dict[str, Any] = {
            "pipelineGuidance": upstream_guidance(job.guidance, self.settings.bfl_guidance_factor),
            "guidanceFactor": self.settings.bfl_guidance_factor,
            "stepsUsed": steps,
            "stepsRaised": steps > job.steps,
        }
        deadline = self.clock.monotonic() + self.settings.bfl_timeout_seconds
        if cancelled():
            raise Cancelled()
        height, width = fill.shape
        s = self.settings
        crops: list[Crop] = []
        if fill.any() and not fits(width, height, s.bfl_max_pixels):
            crops = plan_crops(fill, s.bfl_max_pixels, s.crop_context, s.crop_min_context)
            notes["maxPixels"] = s.bfl_max_pixels
            notes["crops"] = [crop.note() for crop in crops]
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=False) as client:
            if not crops:
                generated, facts = self._generate(client, job, progress, cancelled, deadline)
                notes.update(upstreamId=facts.pop("id"), **facts)
                return FillOutput(self._whole(rgb, fill, generated, notes), notes)
            out = rgb.copy()
            upstream = []
            for index, crop in enumerate(crops):
                rgb_c, fill_c = crop_inputs(rgb, fill, crop)
                part = dataclasses.replace(job, rgb=rgb_c, mask=np.where(fill_c, 255, 0).astype(np.uint8))
                share = slice_progress(progress, index, len(crops))
                generated, facts = self._generate(client, part, share, cancelled, deadline)
                paste(out, fill, crop, generated)
                upstream.append(facts)
        notes["upstream"] = upstream
        costs = [f["cost"] for f in upstream if "cost" in f]
        if len(costs) == len(upstream):
            notes["cost"] = sum(costs)
        return FillOutput(out, notes)

    def _whole(
        self, rgb: np.ndarray, fill: np.ndarray, generated: np.ndarray, notes: dict[str, Any]
    ) -> np.ndarray:
        """The upstream's image for the whole canvas, resized back if BFL changed the size."""
        height, width = fill.shape
        if generated.shape[:2] != (height, width):
            notes["upstreamSize"] = [int(generated.shape[1]), int(generated.shape[0])]
            resized = Image.fromarray(generated).resize((width, height), Image.Resampling.LANCZOS)
            generated = np.asarray(resized)
        # BFL re-encodes the whole image (JPEG by default): put the kept pixels back exactly.
        return np.ascontiguousarray(np.where(fill[:, :, None], generated, rgb), dtype=np.uint8)

    def _generate(
        self,
        client: httpx.Client,
        job: FillJob,
        progress: ProgressFn,
        cancelled: CancelledFn,
        deadline: float,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """One upstream task for `job`'s canvas: (the image as BFL sent it, the task's facts)."""
        payload = build_payload(job, self.settings.bfl_guidance_factor)
        slots = task_slots(self._key(), self.settings.bfl_max_active_tasks)
        self._take(slots, cancelled, deadline)
        try:
            task = self._submit(client, payload, cancelled, deadline)
            progress(SUBMITTED_PCT)
            result = self._poll(client, task, progress, cancelled, deadline)
        finally:
            slots.release()  # the task is final (or abandoned): it no longer counts upstream
        sample = result.get("sample") if isinstance(result, dict) else None
        if not isinstance(sample, str) or not sample:
            raise EngineFailed("Black Forest Labs reported the image ready but sent no result URL.")
        generated = self._download(sample, cancelled, deadline)
        progress(DOWNLOADED_PCT)
        return generated, {"id": task.id, **task.usage}

    def _take(self, slots: threading.BoundedSemaphore, cancelled: CancelledFn, deadline: float) -> None:
        """Wait for a free upstream task slot, noticing a cancel or the deadline."""
        while not slots.acquire(timeout=0.2):
            if cancelled():
                raise Cancelled()
            self._check_deadline(deadline, "take the job (all task slots of the key were busy)")

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
        busy = 0
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
            if status in BUSY:
                # Refused before it was accepted (too many active tasks, or busy): nothing billed.
                busy += 1
                after = retry_after_seconds(response.headers.get("retry-after"))
                self._wait(backoff_seconds(busy, after), cancelled, deadline)
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
                return Submitted(str(body["id"]), str(body["polling_url"]), usage_notes(body))
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

    def _download(self, sample_url: str, cancelled: CancelledFn, deadline: float) -> np.ndarray:
        """Fetch `result.sample` through the SSRF guard and decode it to HxWx3 uint8 RGB.

        Retried (1, 2, 4 s apart) while the URL is valid: a failed download would otherwise
        throw away a generation that was made and billed.
        """
        s = self.settings
        valid_until = min(deadline, self.clock.monotonic() + SAMPLE_VALIDITY_SECONDS)
        attempt = 0
        while True:
            attempt += 1
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
                wait = 2.0 ** (attempt - 1)
                if attempt >= DOWNLOAD_ATTEMPTS or self.clock.monotonic() + wait >= valid_until:
                    # Not the user's input at fault: the upstream's result could not be had.
                    raise EngineFailed(
                        f"{exc.message.rstrip('.')} after {attempt} attempt(s) ({EXPIRY_HINT})."
                    ) from None
                self._wait(wait, cancelled, valid_until)
