"""`fillframe_client.verify_webhook` on real deliveries: a live `fillframe serve` signs them, a
real receiver on loopback records the bytes and headers as they arrived."""

from __future__ import annotations

import pytest
from fillframe_client import Fillframe, InvalidWebhookError, verify_webhook

from tests.utils.servers import LiveServer, create_key
from tests.webhooks.helpers import BAD_MASK, IMAGE, MASK
from tests.webhooks.receiver import Receiver

LIVE_SETTINGS = {"engine": "tests.utils.engines:SleepEngine", "test_sleep": "0.3", "poll_seconds": "0.1"}


@pytest.fixture(scope="module")
def backend() -> str:
    """Signing does not touch the database's dialect: one backend is enough."""
    return "sqlite"


def test_the_client_verifies_what_the_server_signed(live: LiveServer, api_key: str) -> None:
    with Receiver() as rx, Fillframe(live.url, api_key) as ff:
        done = ff.edit_and_wait(IMAGE, mask=MASK, prompt="grey", webhook_url=rx.url("/done"), timeout=60)
        failed = ff.edit(IMAGE, mask=BAD_MASK, prompt="grey", webhook_url=rx.url("/failed"))
        hits = {hit.path: hit for hit in rx.wait_for(2)}

    completed = verify_webhook(api_key, hits["/done"].body, hits["/done"].headers)
    assert (completed.event, completed.job_id, completed.status) == ("completed", done.id, "COMPLETED")
    assert completed.images == done.images and completed.credit_cost == 9
    failure = verify_webhook(api_key, hits["/failed"].body, hits["/failed"].headers)
    assert (failure.event, failure.job_id, failure.error_code) == ("failed", failed.job_id, "invalid_input")

    hit = hits["/done"]
    apiframe_only = {"x-webhook-signature": hit.headers["x-webhook-signature"]}
    standard_only = {k: v for k, v in hit.headers.items() if k.startswith("webhook-")}
    assert verify_webhook(api_key, hit.body, apiframe_only).job_id == done.id
    assert verify_webhook(api_key, hit.body, standard_only).job_id == done.id

    with pytest.raises(InvalidWebhookError, match="does not match"):
        verify_webhook(api_key, hit.body.replace(b"COMPLETED", b"COMPLETEd"), hit.headers)
    with pytest.raises(InvalidWebhookError, match="does not match"):
        verify_webhook(create_key(live.env, "someone-else"), hit.body, hit.headers)
    timestamp = int(hit.headers["webhook-timestamp"])
    with pytest.raises(InvalidWebhookError, match="older than 300"):
        verify_webhook(api_key, hit.body, hit.headers, now=timestamp + 301)
