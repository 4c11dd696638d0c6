"""A faithful fake of Black Forest Labs' API on loopback, for the `bfl` engine's tests.

What it copies from BFL's published API (docs.bfl.ai, OpenAPI of /v1/flux-pro-1.0-fill and
/v1/get_result):
- `POST /v1/flux-pro-1.0-fill` with header `x-key` and a JSON body: `image` (base64, required),
  `mask` (base64, same size as the image), `prompt`, `steps` (15-50, default 50), `guidance`
  (1.5-100, default 60), `seed`, `safety_tolerance` (0-6, default 2), `prompt_upsampling`,
  `output_format` ("jpeg" | "png"), `webhook_url`, `webhook_secret`. Answers
  `{"id", "polling_url"}`; a bad body is a 422 `{"detail": [{"loc", "msg", "type"}]}`, a
  missing or wrong key a 403.
- `GET /v1/get_result?id=` (the `polling_url`) with `x-key`: `{"id", "status", "result",
  "progress", "details", "preview"}`, status one of "Pending", "Ready", "Request Moderated",
  "Content Moderated", "Error", "Task not found". "Pending" for a few polls, then the outcome.
- "Ready" carries `result.sample`, a signed URL on another path that expires (BFL: about
  10 minutes); after that it answers 403, as BFL's delivery host does.
- Submits answer `cost` (credits), `input_mp` and `output_mp` (megapixels) beside the id.
- Polling and delivery can be on other hosts than the base, as BFL's are (a regional host for
  `polling_url`, a delivery host for `result.sample`): `poll_host` / `delivery_host` put them on
  a second loopback address (127.0.0.2 / 127.0.0.3) served by the same fake.
- 429 when more than `active_limit` tasks are unfinished (BFL limits active tasks per account,
  24 by default), and scripted 429s with or without `Retry-After` (BFL sends none).

Stricter than BFL on one point: an unknown body field is a 422, so a misspelt field fails a
test instead of being silently ignored.

The "generation" is deterministic: the masked area painted one colour derived from the seed
and the prompt, the rest re-encoded from the input (so a JPEG result changes unmasked pixels
slightly, as a real model's output does).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.server
import io
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

FILL_PATH = "/v1/flux-pro-1.0-fill"
RESULT_PATH = "/v1/get_result"
OUTCOMES = ("ready", "request_moderated", "content_moderated", "error", "lost")
FIELDS = {
    "image", "mask", "prompt", "steps", "guidance", "seed", "safety_tolerance",
    "prompt_upsampling", "output_format", "webhook_url", "webhook_secret",
}  # fmt: skip


class FakeClock:
    """A monotonic clock whose `sleep` only advances it, and that records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


@dataclass
class Task:
    id: str
    body: dict[str, Any]
    rgb: np.ndarray  # HxWx3 uint8, the submitted image
    fill: np.ndarray  # HxW bool, the submitted mask (white = fill)
    outcome: str
    pending_polls: int
    polls: int = 0
    ready_at: float | None = None


@dataclass
class Scripted:
    """One scripted HTTP answer: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any] = field(default_factory=lambda: {"detail": "scripted"})
    headers: dict[str, str] = field(default_factory=dict)


ACTIVE_DETAIL = "You have exceeded the number of active tasks. Please wait and retry."
COST_PER_TASK = 5.0  # credits; BFL lists FLUX.1 Fill [pro] at 5 cents a megapixel-class image


def rate_limited(retry_after: str | None = "2") -> Scripted:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return Scripted(429, {"detail": ACTIVE_DETAIL}, headers)


def server_error(status: int = 502) -> Scripted:
    return Scripted(status, {"detail": "Internal Server Error"})


def fill_colour(seed: int | None, prompt: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(f"{seed}|{prompt}".encode()).digest()
    return digest[0], digest[1], digest[2]


class FakeBfl:
    """The fake server; `url` is its base URL. Script it through the public attributes.

    outcomes: what the next submits end in (default "ready"), one entry per submit.
    submit_script / poll_script: HTTP answers used before the normal handling, one per request.
    pending_polls: how many polls answer "Pending" before the outcome.
    sample_ttl: seconds a result URL stays valid.
    result_size: (width, height) to resize results to, to play an upstream that changes size.
    """

    def __init__(self, api_key: str = "bfl-test-key", pending_polls: int = 2) -> None:
        self.api_key = api_key
        self.pending_polls = pending_polls
        self.sample_ttl = 600.0
        self.result_size: tuple[int, int] | None = None
        self.outcomes: deque[str] = deque()
        self.submit_script: deque[Scripted] = deque()
        self.poll_script: deque[Scripted] = deque()
        self.submit_attempts = 0
        self.accepted: list[dict[str, Any]] = []  # bodies of accepted submits, images decoded
        self.poll_keys: list[str | None] = []  # the x-key header of every poll
        self.downloads = 0
        self.sample_script: deque[int] = deque()  # statuses answered to downloads before the image
        self.active_limit: int | None = None
        self.most_active = 0  # the most unfinished tasks seen at once
        self.poll_host: str | None = None  # e.g. "127.0.0.2": polling URLs point there
        self.delivery_host: str | None = None  # e.g. "127.0.0.3": result URLs point there
        self.tasks: dict[str, Task] = {}
        self._secret = uuid.uuid4().bytes
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll interval: shutdown() waits for it, once per test.
        self._servers = [self.httpd]
        self._threads = [threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)]
        self._threads[0].start()
        self._handler = handler
        self._hosts: dict[str, str] = {}

    def host_url(self, host: str) -> str:
        """The base URL of this fake on another loopback address (started on first use)."""
        if host not in self._hosts:
            httpd = http.server.ThreadingHTTPServer((host, 0), self._handler)
            thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
            thread.start()
            self._servers.append(httpd)
            self._threads.append(thread)
            self._hosts[host] = f"http://{host}:{httpd.server_address[1]}"
        return self._hosts[host]

    def close(self) -> None:
        for httpd in self._servers:
            httpd.shutdown()
            httpd.server_close()

    def _active(self) -> int:
        return sum(1 for t in self.tasks.values() if t.ready_at is None and t.outcome == "ready")

    # --- the API -------------------------------------------------------------------------

    def submit(self, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.submit_attempts += 1
            scripted = self.submit_script.popleft() if self.submit_script else None
        if headers.get("x-key") != self.api_key:
            return 403, {"detail": "Not authenticated - Invalid Authentication"}, {}
        if scripted is not None:
            return scripted.status, scripted.body, scripted.headers
        try:
            body = json.loads(raw)
        except ValueError:
            return (
                422,
                {"detail": [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]},
                {},
            )
        if not isinstance(body, dict):
            return (
                422,
                {
                    "detail": [
                        {"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}
                    ]
                },
                {},
            )
        errors = validate(body)
        if isinstance(errors, list):
            return 422, {"detail": errors}, {}
        rgb, fill = errors
        task_id = str(uuid.uuid4())
        with self._lock:
            if self.active_limit is not None and self._active() >= self.active_limit:
                return 429, {"detail": ACTIVE_DETAIL}, {}
            outcome = self.outcomes.popleft() if self.outcomes else "ready"
            self.tasks[task_id] = Task(task_id, body, rgb, fill, outcome, self.pending_polls)
            recorded = {k: v for k, v in body.items() if k not in ("image", "mask")}
            recorded["image_size"] = (rgb.shape[1], rgb.shape[0])
            recorded["id"] = task_id
            self.accepted.append(recorded)
            self.most_active = max(self.most_active, self._active())
        base = self.host_url(self.poll_host) if self.poll_host else self.url
        polling_url = f"{base}{RESULT_PATH}?id={task_id}"
        megapixels = round(rgb.shape[0] * rgb.shape[1] / 1e6, 4)
        usage = {"cost": COST_PER_TASK, "input_mp": megapixels, "output_mp": megapixels}
        return 200, {"id": task_id, "polling_url": polling_url, **usage}, {}

    def poll(self, headers: dict[str, str], task_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.poll_keys.append(headers.get("x-key"))
            scripted = self.poll_script.popleft() if self.poll_script else None
            task = self.tasks.get(task_id)
        if headers.get("x-key") != self.api_key:
            return 403, {"detail": "Not authenticated - Invalid Authentication"}, {}
        if scripted is not None:
            return scripted.status, scripted.body, scripted.headers
        answer: dict[str, Any] = {
            "id": task_id,
            "result": None,
            "progress": None,
            "details": None,
            "preview": None,
        }
        if task is None or task.outcome == "lost":
            return 200, {**answer, "status": "Task not found"}, {}
        task.polls += 1
        if task.polls <= task.pending_polls:
            progress = round(task.polls / (task.pending_polls + 1), 3)
            return 200, {**answer, "status": "Pending", "progress": progress}, {}
        if task.outcome == "request_moderated":
            details = {"Moderation Reasons": ["Derivative Works Filter"]}
            return 200, {**answer, "status": "Request Moderated", "details": details}, {}
        if task.outcome == "content_moderated":
            details = {"Moderation Reasons": ["NSFW"]}
            return 200, {**answer, "status": "Content Moderated", "details": details}, {}
        if task.outcome == "error":
            details = {"message": "Generation failed: internal model error (code 17)."}
            return 200, {**answer, "status": "Error", "details": details}, {}
        if task.ready_at is None:
            task.ready_at = time.time()
        result = {
            "sample": self._sample_url(task),
            "prompt": task.body.get("prompt", ""),
            "seed": task.body.get("seed"),
            "start_time": task.ready_at - 3.0,
            "end_time": task.ready_at,
            "duration": 3.0,
        }
        return 200, {**answer, "status": "Ready", "result": result}, {}

    def _sample_url(self, task: Task) -> str:
        assert task.ready_at is not None
        expires = task.ready_at + self.sample_ttl
        ext = "png" if task.body.get("output_format") == "png" else "jpeg"
        path = f"/results/{task.id}/sample.{ext}"
        sig = hmac.new(self._secret, f"{path}|{expires!r}".encode(), "sha256").hexdigest()
        base = self.host_url(self.delivery_host) if self.delivery_host else self.url
        return f"{base}{path}?se={expires!r}&sig={sig}"

    def sample(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        expires_text = query.get("se", [""])[0]
        sig = query.get("sig", [""])[0]
        good = hmac.new(self._secret, f"{path}|{expires_text}".encode(), "sha256").hexdigest()
        parts = path.split("/")
        task = self.tasks.get(parts[2]) if len(parts) == 4 else None
        if task is None or not hmac.compare_digest(sig, good):
            return 403, b"<Error><Code>AuthenticationFailed</Code></Error>", "application/xml"
        if time.time() >= float(expires_text):
            message = b"<Message>Signed expiry time has passed</Message>"
            return 403, b"<Error><Code>AuthenticationFailed</Code>" + message + b"</Error>", "application/xml"
        with self._lock:
            self.downloads += 1
            scripted = self.sample_script.popleft() if self.sample_script else None
        if scripted is not None:
            return scripted, b"<Error><Code>ServerBusy</Code></Error>", "application/xml"
        return 200, *self.render(task)

    def render(self, task: Task) -> tuple[bytes, str]:
        """The "generated" image: the mask area in one colour, encoded as asked."""
        out = task.rgb.copy()
        out[task.fill] = fill_colour(task.body.get("seed"), task.body.get("prompt", ""))
        image = Image.fromarray(out, "RGB")
        if self.result_size is not None:
            image = image.resize(self.result_size, Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        if task.body.get("output_format") == "png":
            image.save(buf, "PNG")
            return buf.getvalue(), "image/png"
        image.save(buf, "JPEG", quality=90)
        return buf.getvalue(), "image/jpeg"


def _error(name: str, msg: str, kind: str) -> dict[str, Any]:
    """One entry of a 422 `detail` list, as FastAPI (BFL's framework) writes it."""
    return {"loc": ["body", name], "msg": msg, "type": kind}


def _decode_b64_image(value: object, name: str) -> tuple[Image.Image | None, dict[str, Any] | None]:
    if not isinstance(value, str):
        return None, _error(name, "Input should be a valid string", "string_type")
    try:
        raw = base64.b64decode(value, validate=True)
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (binascii.Error, ValueError, OSError):
        msg = f"{name} must be a base64-encoded image"
        return None, _error(name, msg, "value_error")
    return image, None


def _number_error(
    body: dict[str, Any], name: str, lo: float, hi: float, integer: bool
) -> dict[str, Any] | None:
    if name not in body or (name == "seed" and body[name] is None):
        return None
    value = body[name]
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "int_type" if integer else "float_type"
        return _error(name, f"Input should be a valid {'integer' if integer else 'number'}", kind)
    if not lo <= value <= hi:
        return _error(name, f"Input should be between {lo} and {hi}", "range")
    return None


def validate(body: dict[str, Any]) -> list[dict[str, Any]] | tuple[np.ndarray, np.ndarray]:
    """BFL's checks of a fill body: a list of 422 errors, or (rgb, fill) when it is valid."""
    errors: list[dict[str, Any]] = []
    for name in sorted(set(body) - FIELDS):
        errors.append(_error(name, "Extra inputs are not permitted", "extra_forbidden"))
    if "image" not in body:
        errors.append(_error("image", "Field required", "missing"))
        return errors
    image, err = _decode_b64_image(body["image"], "image")
    if err:
        errors.append(err)
    mask = None
    if body.get("mask") is not None:
        mask, err = _decode_b64_image(body["mask"], "mask")
        if err:
            errors.append(err)
    if image is not None and mask is not None and mask.size != image.size:
        msg = f"Mask dimensions {mask.size} must match image dimensions {image.size}"
        errors.append(_error("mask", msg, "value_error"))
    checks = [("steps", 15, 50, True), ("guidance", 1.5, 100, False), ("safety_tolerance", 0, 6, True),
              ("seed", -(2**63), 2**63 - 1, True)]  # fmt: skip
    errors += [e for e in (_number_error(body, *c) for c in checks) if e]
    if body.get("output_format", "jpeg") not in ("jpeg", "png", None):
        errors.append(_error("output_format", "Input should be 'jpeg' or 'png'", "enum"))
    if not isinstance(body.get("prompt_upsampling", False), bool):
        errors.append(_error("prompt_upsampling", "Input should be a valid boolean", "bool_type"))
    if not isinstance(body.get("prompt", ""), str):
        errors.append(_error("prompt", "Input should be a valid string", "string_type"))
    if errors or image is None:
        return errors
    rgb = np.asarray(image.convert("RGB"))
    if mask is not None:
        fill = np.asarray(mask.convert("L")) >= 128
    elif image.mode in ("RGBA", "LA"):
        fill = np.asarray(image.getchannel("A")) < 128  # transparent = fill, as BFL documents
    else:
        return [_error("mask", "A mask or an alpha channel is required", "value_error")]
    return np.ascontiguousarray(rgb), fill


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: FakeBfl
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if urlsplit(self.path).path != FILL_PATH:
            self._json(404, {"detail": "Not Found"}, {})
            return
        self._json(*self.fake.submit(self._headers(), raw))

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == RESULT_PATH:
            self._json(*self.fake.poll(self._headers(), query.get("id", [""])[0]))
        elif parts.path.startswith("/results/"):
            status, body, content_type = self.fake.sample(parts.path, query)
            self._send(status, body, content_type)
        else:
            self._json(404, {"detail": "Not Found"}, {})


def running_fake(**kwargs: Any) -> Iterator[FakeBfl]:
    """Generator for a pytest fixture: a fresh fake, closed afterwards."""
    fake = FakeBfl(**kwargs)
    try:
        yield fake
    finally:
        fake.close()
