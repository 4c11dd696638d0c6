"""The outbox outlives processes: a server restarted while the receiver is down, and a worker
killed with SIGKILL between finishing a job and delivering its webhook."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from fillframe.webhooks import verify
from tests.utils.backends import query
from tests.utils.jobs import wait_job
from tests.utils.servers import LiveServer, WorkerProcess, create_key, drop_backend, fillframe_env, free_port
from tests.webhooks.helpers import outbox, submit, wait_outbox, wait_webhook_status
from tests.webhooks.receiver import Receiver

SETTINGS = {
    "engine": "tests.utils.engines:SleepEngine",
    "test_sleep": "0.2",
    "poll_seconds": "0.1",
    # Attempts at 0, 10 ms, 0.6 s, 3.6 s, 14 s ... 173 s: several fail before the restart.
    "webhook_schedule_scale": "0.002",
}


def test_delivery_survives_a_restart_while_the_receiver_is_down(tmp_path: Path, backend: str) -> None:
    env = fillframe_env(tmp_path / "data", backend, **SETTINGS)
    port = free_port()  # nothing listens here yet: the receiver is down
    server = LiveServer(env)
    try:
        key = create_key(env, "restart")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}) as client:
            job_id = submit(client, f"http://127.0.0.1:{port}/hook")
            assert wait_job(client, job_id)["status"] == "COMPLETED"
        first = wait_outbox(env, job_id, attempts=2)
        assert first.status == "pending" and "could not connect" in (first.last_error or "")
        server.stop()
        [stopped] = outbox(env, job_id)
        assert stopped.status == "pending"
        with Receiver(port=port) as rx:
            server = LiveServer(env)
            with httpx.Client(base_url=server.url, headers={"X-API-Key": key}) as client:
                wait_webhook_status(client, job_id, "delivered")
            [hit] = rx.hits
    finally:
        server.stop()
    try:
        assert hit.headers["webhook-id"] == first.id
        assert verify(key, hit.body, hit.headers)["jobId"] == job_id
        [row] = outbox(env, job_id)
        # One more attempt than before the restart, and it is the one that arrived.
        assert (row.status, row.attempts) == ("delivered", stopped.attempts + 1)
    finally:
        drop_backend(env)


def test_a_worker_killed_after_finishing_leaves_the_webhook_to_another(tmp_path: Path, backend: str) -> None:
    env = fillframe_env(tmp_path / "data", backend, **SETTINGS)
    api = LiveServer(env, "--no-worker")
    # This worker finishes jobs but delivers no webhooks, so SIGKILL lands between the two.
    finisher = WorkerProcess({**env, "FILLFRAME_WEBHOOK_CONCURRENCY": "0"}, tmp_path / "finisher.log")
    deliverer: WorkerProcess | None = None
    try:
        key = create_key(env, "kill")
        with Receiver() as rx, httpx.Client(base_url=api.url, headers={"X-API-Key": key}) as client:
            job_id = submit(client, rx.url())
            job = wait_job(client, job_id)
            # The job's end and its webhook were committed together.
            assert (job["status"], job["webhookStatus"]) == ("COMPLETED", "pending")
            [row] = outbox(env, job_id)
            assert (row.status, row.attempts) == ("pending", 0)
            assert finisher.stop(signal.SIGKILL) == -signal.SIGKILL
            assert rx.hits == []
            deliverer = WorkerProcess(env, tmp_path / "deliverer.log")
            wait_webhook_status(client, job_id, "delivered")
            [hit] = rx.hits
        assert hit.headers["webhook-id"] == row.id
        assert verify(key, hit.body, hit.headers)["status"] == "COMPLETED"
        [(attempts,)] = query(env, "SELECT attempts FROM webhook_deliveries WHERE id = :i", i=row.id)
        assert attempts == 1
    finally:
        if deliverer is not None:
            deliverer.stop()
        finisher.stop()
        api.stop()
        drop_backend(env)
