"""Progress webhooks: only when asked for, only on change, at most one a second, before the end."""

from __future__ import annotations

import httpx

from fillframe.webhooks import verify
from tests.utils.jobs import wait_job
from tests.utils.servers import LiveServer
from tests.webhooks.helpers import outbox, submit, wait_webhook_status
from tests.webhooks.receiver import Receiver

LIVE_SETTINGS = {
    "engine": "tests.utils.engines:SleepEngine",
    "test_sleep": "3.0",  # 20 progress steps over 3 s: 6 changes a second
    "poll_seconds": "0.1",
}


def test_progress_is_throttled_to_one_a_second(live: LiveServer, client: httpx.Client, api_key: str) -> None:
    with Receiver() as rx:
        job_id = submit(client, rx.url(), webhookEvents=["progress", "completed"])
        wait_webhook_status(client, job_id, "delivered")
        hits = rx.hits
    events = [h.headers["x-webhook-event"] for h in hits]
    assert events[-1] == "completed" and set(events[:-1]) == {"progress"}
    progress = [verify(api_key, h.body, h.headers) for h in hits[:-1]]
    # 20 changes in 3 s, at most one a second: the first at once, then one per second.
    assert 2 <= len(progress) <= 4, progress
    values = [p["progress"] for p in progress]
    assert progress == [
        {
            "event": "progress",
            "jobId": job_id,
            "status": "PROCESSING",
            "progress": v,
            "model": "flux-fill-pro",
        }
        for v in values
    ]
    assert [list(p) for p in progress] == [["event", "jobId", "status", "progress", "model"]] * len(values)
    assert values == sorted(set(values)) and values[0] > 0 and values[-1] < 100
    # Whole-second timestamps strictly increase only if sends are at least a second apart.
    stamps = [int(h.headers["webhook-timestamp"]) for h in hits[:-1]]
    assert stamps == sorted(set(stamps))
    assert len({h.headers["webhook-id"] for h in hits}) == len(hits)
    # Progress is best-effort and never stored: the outbox holds the completed event only.
    assert [row.event for row in outbox(live.env, job_id)] == ["completed"]


def test_progress_only_sends_no_final_event(live: LiveServer, client: httpx.Client) -> None:
    with Receiver() as rx:
        job_id = submit(client, rx.url(), webhookEvents=["progress"])
        job = wait_job(client, job_id)
        hits = rx.hits
    assert job["status"] == "COMPLETED" and job["webhookStatus"] is None
    assert hits and {h.headers["x-webhook-event"] for h in hits} == {"progress"}
    assert outbox(live.env, job_id) == []
