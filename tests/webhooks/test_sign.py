"""Signatures, `verify`, payload shapes, the retry schedule and the progress throttle."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook

from fillframe.accounts import hash_key
from fillframe.webhooks import InvalidWebhook, verify
from fillframe.webhooks.deliver import MAX_ATTEMPTS, SCHEDULE, judge, post, retry_delay
from fillframe.webhooks.events import ProgressThrottle, completed_payload, encode, failed_payload
from fillframe.webhooks.sign import key_from_api_key, key_from_hash, signed_headers
from tests.webhooks.receiver import Receiver, private_name

API_KEY = "afk_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
NOW = 1_760_000_000
BODY = encode(
    completed_payload("7d5c1c52-0000-4000-8000-000000000001", "flux-fill-pro", 9, ["https://x/a.jpg"], "Z")
)


def headers_for(body: bytes = BODY, *, api_key: str = API_KEY, at: int = NOW) -> dict[str, str]:
    return signed_headers(key_from_api_key(api_key), "completed", "msg_abc", at, body)


def test_the_key_is_the_raw_digest_whether_from_the_key_or_its_stored_hash() -> None:
    assert key_from_api_key(API_KEY) == hashlib.sha256(API_KEY.encode()).digest()
    assert key_from_hash(hash_key(API_KEY)) == key_from_api_key(API_KEY)
    assert len(key_from_api_key(API_KEY)) == 32


def test_headers_match_independent_implementations_of_both_schemes() -> None:
    headers = headers_for()
    key = hashlib.sha256(API_KEY.encode()).digest()
    assert headers["X-Webhook-Signature"] == "sha256=" + hmac.new(key, BODY, hashlib.sha256).hexdigest()
    signed = f"msg_abc.{NOW}.".encode() + BODY
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert headers["X-Webhook-Event"] == "completed" and headers["webhook-timestamp"] == str(NOW)


def test_the_reference_standard_webhooks_verifier_accepts_a_fresh_delivery() -> None:
    key = key_from_api_key(API_KEY)
    headers = signed_headers(key, "completed", "msg_ref", int(time.time()), BODY)
    assert Webhook(base64.b64encode(key).decode()).verify(BODY, headers) == json.loads(BODY)


def test_verify_returns_the_payload() -> None:
    assert verify(API_KEY, BODY, headers_for(), now=NOW + 10) == json.loads(BODY)
    lower = {k.lower(): v for k, v in headers_for().items()}
    assert verify(API_KEY, BODY, lower, now=NOW)["event"] == "completed"


def test_verify_accepts_either_scheme_alone() -> None:
    headers = headers_for()
    apiframe_only = {"X-Webhook-Signature": headers["X-Webhook-Signature"]}
    standard_only = {k: v for k, v in headers.items() if k.startswith("webhook-")}
    assert verify(API_KEY, BODY, apiframe_only, now=NOW)["jobId"]
    assert verify(API_KEY, BODY, standard_only, now=NOW)["jobId"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, b: (h, b.replace(b"flux", b"flax")), "does not match"),
        (lambda h, b: ({**h, "X-Webhook-Signature": "sha256=" + "0" * 64}, b), "X-Webhook-Signature"),
        (lambda h, b: ({**h, "webhook-signature": "v1,AAAA"}, b), "webhook-signature does not match"),
        (lambda h, b: ({**h, "webhook-id": "msg_other"}, b), "webhook-signature does not match"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW - 301)}, b), "older than 300"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW + 301)}, b), "ahead"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "unix time"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "needs webhook-id"),
        (lambda h, b: ({}, b), "No signature header"),
    ],
)
def test_verify_refuses(change, message: str) -> None:  # type: ignore[no-untyped-def]
    headers, body = change(headers_for(), BODY)
    with pytest.raises(InvalidWebhook, match=message):
        verify(API_KEY, body, headers, now=NOW)


def test_verify_refuses_another_key_and_a_replay_past_a_custom_tolerance() -> None:
    with pytest.raises(InvalidWebhook):
        verify("afk_someone-else", BODY, headers_for(), now=NOW)
    assert verify(API_KEY, BODY, headers_for(), now=NOW + 50, tolerance=60)
    with pytest.raises(InvalidWebhook, match="older than 30"):
        verify(API_KEY, BODY, headers_for(), now=NOW + 50, tolerance=30)


def test_verify_refuses_a_signed_body_that_is_not_a_json_object() -> None:
    with pytest.raises(InvalidWebhook, match="not a JSON object"):
        verify(API_KEY, b"[1]", headers_for(b"[1]"), now=NOW)


def test_payloads_keep_the_contract_key_order() -> None:
    assert list(json.loads(BODY)) == [
        "event",
        "jobId",
        "status",
        "progress",
        "result",
        "model",
        "creditCost",
        "completedAt",
    ]
    failed = failed_payload("j", "CANCELLED", "flux-fill-pro", "The job was cancelled.", "cancelled")
    assert list(failed) == ["event", "jobId", "status", "error", "errorCode", "model"]
    assert failed["event"] == "failed"


def test_schedule_spans_a_day_with_bounded_jitter() -> None:
    gaps = [retry_delay(n) for n in range(1, MAX_ATTEMPTS)]
    assert gaps[:3] == [5, 295, 1500]
    assert sum(g for g in gaps if g is not None) == SCHEDULE[-1] == 24 * 3600
    assert retry_delay(MAX_ATTEMPTS) is None
    assert retry_delay(1, rand=0.0) == pytest.approx(4.5)
    assert retry_delay(1, rand=0.999999) == pytest.approx(5.5, abs=1e-4)
    assert retry_delay(2, scale=0.001) == pytest.approx(0.295)


def test_verdicts() -> None:
    assert [judge(c).outcome for c in (200, 201, 204, 299)] == ["delivered"] * 4
    assert judge(410).outcome == "failed"
    assert [judge(c).outcome for c in (301, 302, 307, 400, 404, 429, 500, 503)] == ["retry"] * 8
    assert "not followed" in (judge(302).error or "")


def test_progress_throttle_sends_changes_at_most_once_a_second() -> None:
    throttle = ProgressThrottle()
    sent = []
    for now, value in [(0.0, 0), (0.1, 5), (0.5, 10), (1.05, 10), (1.1, 15), (1.2, 20), (2.2, 20), (5.0, 20)]:
        if throttle.due(value, now):
            throttle.sent(value, now)
            sent.append((now, value))
    assert sent == [(0.1, 5), (1.1, 15), (2.2, 20)]


def test_post_refuses_loopback_names_without_sending_when_private_addresses_are_off() -> None:
    with Receiver(host="0.0.0.0") as rx:
        name = private_name()
        for host in ["127.0.0.1"] if name is None else ["127.0.0.1", name]:
            verdict = asyncio.run(
                post(rx.url(host=host), BODY, headers_for(), allow_private=False, timeout=5)
            )
            assert verdict.outcome == "failed", (host, verdict)
        verdict = asyncio.run(post(rx.url(), BODY, headers_for(), allow_private=True, timeout=5))
        assert verdict.outcome == "delivered" and verdict.status_code == 200
        assert len(rx.hits) == 1 and rx.hits[0].body == BODY
