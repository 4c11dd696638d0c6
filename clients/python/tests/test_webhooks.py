"""`verify_webhook` against headers Fillframe's signer produced (the standardwebhooks package for
one scheme), written down here so the client is checked against something it did not compute."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fillframe_client import InvalidWebhookError, signing_key, verify_webhook

API_KEY = "afk_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
NOW = 1_760_000_000
BODY = (
    b'{"event":"completed","jobId":"7d5c1c52-0000-4000-8000-000000000001","status":"COMPLETED",'
    b'"progress":100,"result":{"images":["https://x/a.jpg"]},"model":"flux-fill-pro","creditCost":9,'
    b'"completedAt":"2026-01-01T00:00:00Z"}'
)
# As the server sent them for BODY, API_KEY, webhook id msg_abc at NOW.
HEADERS = {
    "Content-Type": "application/json",
    "X-Webhook-Event": "completed",
    "X-Webhook-Signature": "sha256=94e8658eafc48f3ceccee54434033e203d6e82c8fda0daaaf8afffc83544f87d",
    "webhook-id": "msg_abc",
    "webhook-timestamp": str(NOW),
    "webhook-signature": "v1,zKOKot2e63qFnnD8mRdWztuTGLgDrWkHgf/zxd0zyyk=",
}
APIFRAME_ONLY = {"X-Webhook-Signature": HEADERS["X-Webhook-Signature"]}
STANDARD_ONLY = {k: v for k, v in HEADERS.items() if k.startswith("webhook-")}


def test_signing_key_is_the_raw_sha256_of_the_api_key() -> None:
    assert signing_key(API_KEY).hex() == "11d68a6cfb31cd8273dba01dd2675d7be74635d5c01702fd46d1a2d50d2346fa"


def test_a_signed_delivery_verifies_into_a_typed_event() -> None:
    event = verify_webhook(API_KEY, BODY, HEADERS, now=NOW + 10)
    assert (event.event, event.job_id, event.status, event.progress) == (
        "completed",
        "7d5c1c52-0000-4000-8000-000000000001",
        "COMPLETED",
        100,
    )
    assert event.images == ["https://x/a.jpg"] and event.credit_cost == 9 and event.model == "flux-fill-pro"
    assert event.raw["completedAt"] == event.completed_at == "2026-01-01T00:00:00Z"


def test_either_scheme_alone_and_any_header_case() -> None:
    assert verify_webhook(API_KEY, BODY, APIFRAME_ONLY).job_id  # no timestamp: no clock check
    assert verify_webhook(API_KEY, BODY, STANDARD_ONLY, now=NOW).job_id
    upper = {k.upper(): v for k, v in HEADERS.items()}
    assert verify_webhook(API_KEY, BODY, upper, now=NOW).event == "completed"
    several = {**STANDARD_ONLY, "webhook-signature": "v1,AAAA v2,xyz " + HEADERS["webhook-signature"]}
    assert verify_webhook(API_KEY, BODY, several, now=NOW).job_id


Change = Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, b: (h, b.replace(b"flux", b"flax")), "does not match"),
        (lambda h, b: (APIFRAME_ONLY, b.replace(b"100", b"101")), "X-Webhook-Signature does not match"),
        (lambda h, b: ({**h, "X-Webhook-Signature": "sha256=" + "0" * 64}, b), "X-Webhook-Signature"),
        (lambda h, b: ({**h, "X-Webhook-Signature": "md5=abc"}, b), "X-Webhook-Signature"),
        (lambda h, b: ({**h, "webhook-signature": "v1,AAAA"}, b), "webhook-signature does not match"),
        (lambda h, b: ({**h, "webhook-signature": "v1,not base64!"}, b), "webhook-signature does not match"),
        (lambda h, b: ({**h, "webhook-id": "msg_other"}, b), "webhook-signature does not match"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW - 301)}, b), "older than 300"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW + 301)}, b), "ahead"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "unix time"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "needs webhook-id"),
        (lambda h, b: ({"Content-Type": "application/json"}, b), "No signature header"),
    ],
)
def test_refused(change: Change, message: str) -> None:
    headers, body = change(dict(HEADERS), BODY)
    with pytest.raises(InvalidWebhookError, match=message):
        verify_webhook(API_KEY, body, headers, now=NOW)


def test_another_key_and_a_custom_tolerance() -> None:
    with pytest.raises(InvalidWebhookError):
        verify_webhook("afk_someone-else", BODY, HEADERS, now=NOW)
    assert verify_webhook(API_KEY, BODY, HEADERS, now=NOW + 50, tolerance=60)
    with pytest.raises(InvalidWebhookError, match="older than 30"):
        verify_webhook(API_KEY, BODY, HEADERS, now=NOW + 50, tolerance=30)
    assert isinstance(InvalidWebhookError("x"), ValueError)  # a web framework's 400 handler catches it
