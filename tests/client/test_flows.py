"""The client's pure parts: retry decisions, error mapping, request bodies, input forms."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fillframe.client import (
    APIError,
    AuthenticationError,
    InsufficientCreditsError,
    InternalServerError,
    RateLimitError,
    Reply,
    RetryPolicy,
    Send,
    TransportFailure,
    can_retry,
    edit_body,
    error_from_reply,
    file_part,
    infer_mode,
    parse_retry_after,
    retry_delay,
)
from tests.utils.images import encode, photo


def reply(status: int, body: object = None, **headers: str) -> Reply:
    content = json.dumps(body).encode() if body is not None else b""
    return Reply(status, {k.replace("_", "-").lower(): v for k, v in headers.items()}, content)


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # already past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_only_safe_requests_are_retried() -> None:
    assert can_retry(Send("GET", "/v2/me"))
    assert can_retry(Send("POST", "/v2/images/edit", headers={"idempotency-key": "k"}))
    assert not can_retry(Send("POST", "/v2/uploads"))
    assert not can_retry(Send("POST", "/v2/jobs/x/cancel"))


def test_retry_delay() -> None:
    policy = RetryPolicy(max_retries=3, max_retry_wait=10)
    assert retry_delay(reply(429, retry_after="4"), 0, policy) == 4.0
    assert retry_delay(reply(503), 0, policy) == 0.5  # no advice: exponential backoff
    assert retry_delay(reply(503), 2, policy) == 2.0
    assert retry_delay(reply(429, retry_after="11"), 0, policy) is None  # longer than we wait
    assert retry_delay(reply(429, retry_after="1"), 3, policy) is None  # retries spent
    assert retry_delay(reply(400), 0, policy) is None
    assert retry_delay(reply(500), 0, policy) is None
    assert retry_delay(TransportFailure(OSError("refused")), 1, policy) == 1.0


def test_errors_are_typed_by_status() -> None:
    err = error_from_reply(reply(401, {"error": "Invalid API key"}, x_request_id="r1"))
    assert isinstance(err, AuthenticationError)
    assert (err.status_code, err.message, err.request_id, str(err)) == (
        401,
        "Invalid API key",
        "r1",
        "401 Invalid API key",
    )
    credits = error_from_reply(
        reply(402, {"error": "Insufficient credits", "creditsRequired": 9, "creditsAvailable": 2})
    )
    assert isinstance(credits, InsufficientCreditsError)
    assert (credits.credits_required, credits.credits_available) == (9, 2)
    limited = error_from_reply(reply(429, {"error": "Slow down."}, retry_after="12"))
    assert isinstance(limited, RateLimitError) and limited.retry_after == 12.0
    bad = error_from_reply(
        reply(400, {"error": "Invalid request", "details": {"fluxFillParams.steps": ["must be <= 50"]}})
    )
    assert bad.details == {"fluxFillParams.steps": ["must be <= 50"]}
    html = error_from_reply(Reply(502, {}, b"<html>Bad Gateway</html>"))
    assert isinstance(html, InternalServerError) and html.message == "<html>Bad Gateway</html>"
    teapot = error_from_reply(reply(418))
    assert type(teapot) is APIError and teapot.message == "HTTP 418"


def test_edit_body() -> None:
    body = edit_body(
        "https://x/i.png", prompt="p", mode="inpaint", mask="https://x/m.png", params={"seed": 3}
    )
    assert body == {
        "model": "flux-fill-pro",
        "fluxFillParams": {
            "image": "https://x/i.png",
            "prompt": "p",
            "mode": "inpaint",
            "mask": "https://x/m.png",
            "seed": 3,
        },
    }
    out = edit_body(
        "https://x/i.png", prompt="p", mode="outpaint", outpaint="Make square", webhook_url="https://h/"
    )
    assert out["fluxFillParams"]["outpaint"] == "Make square" and out["webhookUrl"] == "https://h/"
    with pytest.raises(TypeError, match="guidence"):
        edit_body("https://x/i.png", prompt="p", mode="inpaint", params={"guidence": 3})


def test_infer_mode() -> None:
    assert infer_mode(None, None, "Zoom out 2x") == "outpaint"
    assert infer_mode(None, "m.png", None) == "inpaint"
    assert infer_mode("inpaint", "m.png", "Zoom out 2x") == "inpaint"


def test_file_part_forms(tmp_path: Path) -> None:
    rgb = photo("coffee", (64, 48))
    path = tmp_path / "c.png"
    path.write_bytes(encode(rgb))
    assert file_part("https://example.com/a.png", "image") == "https://example.com/a.png"
    assert file_part("data:image/png;base64,AAAA", "image") == "data:image/png;base64,AAAA"
    assert file_part(path, "image") == ("c.png", path.read_bytes(), "image/png")
    assert file_part(str(path), "image")[1] == path.read_bytes()
    assert file_part(b"raw", "mask") == ("mask.bin", b"raw", "application/octet-stream")
    name, data, mime = file_part(Image.fromarray(rgb), "image")
    assert (name, mime) == ("image.png", "image/png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)
    with pytest.raises(FileNotFoundError):
        file_part(tmp_path / "nope.png", "image")
    with pytest.raises(TypeError, match="int"):
        file_part(3, "image")  # type: ignore[arg-type]
