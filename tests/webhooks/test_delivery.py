"""Webhooks from a live `fillframe serve` to a real receiver on loopback: payloads and both
signatures, cancel, retries on a compressed schedule, 410, redirects, and giving up."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import httpx
from standardwebhooks.webhooks import Webhook

from fillframe.webhooks import verify
from tests.utils.backends import query
from tests.utils.jobs import wait_job
from tests.utils.servers import LiveServer, cli, create_key
from tests.webhooks.helpers import BAD_MASK, outbox, submit, wait_webhook_status
from tests.webhooks.receiver import Answer, Receiver

PUBLIC = "https://frames.example.test"
LIVE_SETTINGS = {
    "engine": "tests.utils.engines:SleepEngine",
    "test_sleep": "1.0",
    "poll_seconds": "0.1",
    # A day of retries in about 9 s: 0.5 ms, 30 ms, 180 ms, 0.7 s ... after the first attempt.
    "webhook_schedule_scale": "0.0001",
    "public_url": PUBLIC,
}


def test_completed_webhook_bytes_verify_with_both_schemes(
    live: LiveServer, client: httpx.Client, api_key: str
) -> None:
    with Receiver() as rx:
        job_id = submit(client, rx.url())
        job = wait_webhook_status(client, job_id, "delivered")
        [hit] = rx.hits  # default events: no progress, one completed
    assert hit.path == "/hook" and hit.headers["content-type"] == "application/json"
    assert hit.headers["x-webhook-event"] == "completed"
    key = hashlib.sha256(api_key.encode()).digest()
    assert hit.headers["x-webhook-signature"] == "sha256=" + hmac.new(key, hit.body, "sha256").hexdigest()
    reference = Webhook(base64.b64encode(key).decode())  # the Standard Webhooks package's verifier
    assert reference.verify(hit.body, hit.headers) == json.loads(hit.body)
    payload = verify(api_key, hit.body, hit.headers)
    assert list(payload) == [
        "event",
        "jobId",
        "status",
        "progress",
        "result",
        "model",
        "creditCost",
        "completedAt",
    ]
    assert payload == {
        "event": "completed",
        "jobId": job_id,
        "status": "COMPLETED",
        "progress": 100,
        "result": {"images": job["result"]["images"]},
        "model": "flux-fill-pro",
        "creditCost": 9,
        "completedAt": job["completedAt"],
    }
    [image] = payload["result"]["images"]
    assert image.startswith(PUBLIC + "/")
    downloaded = httpx.get(live.url + image.removeprefix(PUBLIC))
    assert downloaded.status_code == 200 and downloaded.content[:2] == b"\xff\xd8"
    [row] = outbox(live.env, job_id)
    assert (row.id, row.event, row.status, row.attempts, row.last_status_code) == (
        hit.headers["webhook-id"],
        "completed",
        "delivered",
        1,
        200,
    )


def test_failed_job_sends_failed_with_its_error(live: LiveServer, client: httpx.Client, api_key: str) -> None:
    with Receiver() as rx:
        job_id = submit(client, rx.url(), mask=BAD_MASK)
        job = wait_webhook_status(client, job_id, "delivered")
        [hit] = rx.hits
    assert hit.headers["x-webhook-event"] == "failed"
    assert verify(api_key, hit.body, hit.headers) == {
        "event": "failed",
        "jobId": job_id,
        "status": "FAILED",
        "error": job["error"],
        "errorCode": "invalid_input",
        "model": "flux-fill-pro",
    }


def test_cancelled_jobs_send_failed_with_error_code_cancelled(live: LiveServer) -> None:
    key = create_key(live.env, "cancel-hooks")
    key_id = next(
        line.split()[0] for line in cli(live.env, "keys", "list").stdout.splitlines() if key[:10] in line
    )
    cli(live.env, "keys", "limits", key_id, "--concurrency", "1")
    with Receiver() as rx, httpx.Client(base_url=live.url, headers={"X-API-Key": key}) as client:
        running = submit(client, rx.url("/running"))
        queued = submit(client, rx.url("/queued"))
        wait_job(client, running, until={"PROCESSING"})
        assert client.post(f"/v2/jobs/{queued}/cancel").json()["status"] == "CANCELLED"  # service.cancel
        assert client.post(f"/v2/jobs/{running}/cancel").json()["status"] == "PROCESSING"  # worker ends it
        for job_id in (queued, running):
            wait_webhook_status(client, job_id, "delivered")
        hits = {hit.path: verify(key, hit.body, hit.headers) for hit in rx.wait_for(2)}
    assert len(rx.hits) == 2
    for path, job_id in (("/queued", queued), ("/running", running)):
        assert hits[path] == {
            "event": "failed",
            "jobId": job_id,
            "status": "CANCELLED",
            "error": "The job was cancelled.",
            "errorCode": "cancelled",
            "model": "flux-fill-pro",
        }


def test_a_receiver_that_fails_twice_gets_the_same_webhook_three_times(
    live: LiveServer, client: httpx.Client, api_key: str
) -> None:
    with Receiver([500, 503]) as rx:
        job_id = submit(client, rx.url())
        wait_webhook_status(client, job_id, "delivered")
        hits = rx.hits
    assert [h.answered for h in hits] == [500, 503, 200]
    assert len({h.headers["webhook-id"] for h in hits}) == 1
    assert len({h.body for h in hits}) == 1
    stamps = [int(h.headers["webhook-timestamp"]) for h in hits]
    assert stamps == sorted(stamps)
    for hit in hits:  # every attempt is signed afresh and verifies on its own
        assert verify(api_key, hit.body, hit.headers)["jobId"] == job_id
    [row] = outbox(live.env, job_id)
    assert (row.id, row.status, row.attempts, row.last_status_code) == (
        hits[0].headers["webhook-id"],
        "delivered",
        3,
        200,
    )


def test_410_stops_at_once(live: LiveServer, client: httpx.Client) -> None:
    with Receiver([410]) as rx:
        job_id = submit(client, rx.url())
        wait_webhook_status(client, job_id, "failed")
        [row] = outbox(live.env, job_id)
        assert (row.status, row.attempts, row.last_status_code) == ("failed", 1, 410)
        assert "410" in (row.last_error or "")
        # A failed row is final: no claim takes it again (tests/webhooks/test_isolation.py moves
        # a fake clock a day on and sees nothing go out).
        [(locked_by,)] = query(live.env, "SELECT locked_by FROM webhook_deliveries WHERE id = :i", i=row.id)
        assert locked_by is None and len(rx.hits) == 1


def test_redirects_are_not_followed(live: LiveServer, client: httpx.Client) -> None:
    with Receiver() as rx:
        moved = Answer(302, {"Location": rx.url("/elsewhere")})
        rx.answers = [moved, Answer(410)]
        job_id = submit(client, rx.url())
        wait_webhook_status(client, job_id, "failed")
        assert [(h.path, h.answered) for h in rx.hits] == [("/hook", 302), ("/hook", 410)]
    assert outbox(live.env, job_id)[0].attempts == 2


def test_a_receiver_that_never_answers_2xx_gets_ten_attempts(live: LiveServer, client: httpx.Client) -> None:
    with Receiver([500] * 20) as rx:
        job_id = submit(client, rx.url())
        wait_webhook_status(client, job_id, "failed", timeout=90)
        hits = rx.hits
    assert len(hits) == 10
    assert len({h.headers["webhook-id"] for h in hits}) == 1
    [row] = outbox(live.env, job_id)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 10, 500)
