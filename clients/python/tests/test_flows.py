"""The client's pure parts, offline: retry decisions, error mapping, request bodies, input forms,
and the typed models built from the contract's JSON shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fillframe_client import (
    FLUX_FILL_PARAMS,
    APIError,
    AuthenticationError,
    InsufficientCreditsError,
    InternalServerError,
    Job,
    JobList,
    Me,
    Model,
    RateLimitError,
    RetryPolicy,
    Submission,
)
from fillframe_client.errors import error_from_reply
from fillframe_client.inputs import edit_body, file_part, infer_mode
from fillframe_client.retry import can_retry, parse_retry_after, retry_delay
from fillframe_client.steps import Reply, Send, TransportFailure


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
    every_extra = {
        name: 1 for name in FLUX_FILL_PARAMS if name not in ("image", "mask", "prompt", "mode", "outpaint")
    }
    assert set(edit_body("i", prompt="p", mode="inpaint", params=every_extra)["fluxFillParams"]) >= set(
        every_extra
    )


def test_infer_mode() -> None:
    assert infer_mode(None, None, "Zoom out 2x") == "outpaint"
    assert infer_mode(None, "m.png", None) == "inpaint"
    assert infer_mode("inpaint", "m.png", "Zoom out 2x") == "inpaint"


def test_file_part_forms(tmp_path: Path) -> None:
    path = tmp_path / "c.png"
    path.write_bytes(b"\x89PNG not really")
    assert file_part("https://example.com/a.png", "image") == "https://example.com/a.png"
    assert file_part("data:image/png;base64,AAAA", "image") == "data:image/png;base64,AAAA"
    assert file_part(path, "image") == ("c.png", path.read_bytes(), "image/png")
    assert file_part(str(path), "image")[1] == path.read_bytes()
    assert file_part(b"raw", "mask") == ("mask.bin", b"raw", "application/octet-stream")
    with pytest.raises(FileNotFoundError):
        file_part(tmp_path / "nope.png", "image")
    with pytest.raises(TypeError, match="int"):
        file_part(3, "image")  # type: ignore[arg-type]


JOB = {
    "id": "j1",
    "status": "COMPLETED",
    "model": "flux-fill-pro",
    "progress": 100,
    "result": {"images": ["https://h/r.png"]},
    "error": None,
    "errorCode": None,
    "creditCost": 9,
    "webhookStatus": "delivered",
    "createdAt": "2026-01-01T00:00:00Z",
    "startedAt": "2026-01-01T00:00:01Z",
    "completedAt": "2026-01-01T00:00:02Z",
    "expired": False,
    "seed": 5,
    "input": {"model": "flux-fill-pro"},
}


def test_models_parse_the_contract_shapes() -> None:
    job = Job.from_json(JOB)
    assert (job.done, job.images, job.credit_cost, job.webhook_status, job.seed) == (
        True,
        ["https://h/r.png"],
        9,
        "delivered",
        5,
    )
    assert not Job.from_json({"id": "j2", "status": "QUEUED", "result": None}).done
    page = JobList.from_json({"jobs": [JOB], "nextCursor": None, "hasMore": False})
    assert [j.id for j in page.jobs] == ["j1"] and not page.has_more
    assert Submission.from_json({"jobId": "j1", "status": "QUEUED"}, "k").job_id == "j1"
    assert Submission.from_json(JOB, "k").job_id == "j1"  # a `Prefer: wait` answer is the job
    me = Me.from_json(
        {
            "user": {"id": "u", "email": None, "role": "OWNER"},
            "team": {"id": "t", "name": "T", "credits": 42, "plan": "free", "customerId": None},
            "apiKey": None,
        }
    )
    assert (me.user.role, me.team.credits, me.team.unlimited, me.api_key) == ("OWNER", 42, False, None)
    unlimited = Me.from_json(
        {
            "user": {"id": "u", "name": "Ops"},
            "team": {"id": "u", "name": "Ops", "credits": None, "unlimited": True, "plan": "self-hosted"},
            "apiKey": {"id": "k", "name": "ci", "prefix": "afk_abcd"},
        }
    )
    assert (unlimited.user.name, unlimited.team.credits, unlimited.team.unlimited) == ("Ops", None, True)
    assert unlimited.api_key is not None and unlimited.api_key.prefix == "afk_abcd"
    model = Model.from_json(
        {
            "id": "flux-fill-pro",
            "label": "Flux Fill Pro",
            "modality": "image",
            "description": "d",
            "costMin": 9,
            "costMax": 9,
            "pricingMode": "flat",
        }
    )
    assert (model.name, model.credit_cost, model.pricing_mode) == ("Flux Fill Pro", 9, "flat")
    ours = Model.from_json(
        {"id": "flux-fill-pro", "name": "Flux Fill Pro", "modality": "image", "creditCost": 7}
    )
    assert (ours.name, ours.credit_cost, ours.pricing_mode) == ("Flux Fill Pro", 7, None)
