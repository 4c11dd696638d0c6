"""Webhook targets pass the same address guard as image URLs, checked again at delivery time."""

from __future__ import annotations

import httpx
import pytest

from tests.utils.servers import LiveServer
from tests.webhooks.helpers import outbox, submit, wait_webhook_status
from tests.webhooks.receiver import Receiver, private_name

LIVE_SETTINGS = {
    "engine": "tests.utils.engines:SleepEngine",
    "test_sleep": "1.5",
    "poll_seconds": "0.1",
    "allow_private_urls": "false",
    "webhook_schedule_scale": "0.0001",
}


def test_a_name_resolving_to_loopback_is_refused_at_delivery(live: LiveServer, client: httpx.Client) -> None:
    name = private_name()
    if name is None:
        pytest.skip("this machine's host name resolves to a public address")
    # Listening on every interface: only the guard stands between the server and this receiver.
    with Receiver(host="0.0.0.0") as rx:
        url = rx.url(host=name)
        job_id = submit(client, url, webhookEvents=["progress", "completed"])  # accepted at submit
        job = wait_webhook_status(client, job_id, "failed")
        assert rx.hits == []  # neither the progress events nor the completed one
    assert job["status"] == "COMPLETED"
    [row] = outbox(live.env, job_id)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 1, None)
    assert f"{name} resolves to" in (row.last_error or "") and "is not allowed" in (row.last_error or "")


def test_a_literal_loopback_target_is_refused_at_submit(live: LiveServer, client: httpx.Client) -> None:
    body = {
        "model": "flux-fill-pro",
        "prompt": "fill it",
        "fluxFillParams": {"image": "https://example.com/a.png", "mask": "https://example.com/m.png"},
        "webhookUrl": "http://127.0.0.1:9/hook",
    }
    response = client.post("/v2/images/edit", json=body)
    assert response.status_code == 400 and "webhookUrl" in response.json()["details"]
