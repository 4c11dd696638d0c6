"""Submitting jobs with webhooks and reading their outbox rows, as a client and an operator would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from fillframe.contract import EditRequest
from tests.utils.backends import query
from tests.utils.jobs import data_uri, edit_body
from tests.utils.poll import until

IMAGE = data_uri(np.full((32, 32, 3), 70, np.uint8))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), 12))
BAD_MASK = data_uri(np.full((10, 10), 255, np.uint8))  # another size than IMAGE: invalid_input


def edit_request(webhook_url: str) -> EditRequest:
    """The small job's request, validated, for tests that submit in-process."""
    body = {**edit_body(IMAGE, MASK), "webhookUrl": webhook_url}
    return EditRequest.model_validate(body)


def submit(client: httpx.Client, webhook_url: str, mask: str = MASK, **extra: Any) -> str:
    """Submit a small inpaint job with this webhook; returns its id."""
    body = {**edit_body(IMAGE, mask), "webhookUrl": webhook_url, **extra}
    response = client.post("/v2/images/edit", json=body)
    assert response.status_code == 202, response.text
    return response.json()["jobId"]


def wait_webhook_status(client: httpx.Client, job_id: str, status: str, timeout: float = 60.0) -> dict:
    """Poll the job until its webhookStatus is `status`; returns the job."""

    def reached() -> dict | None:
        job = client.get(f"/v2/jobs/{job_id}").json()
        return job if job["webhookStatus"] == status else None

    return until(reached, f"job {job_id}'s webhookStatus {status}", timeout)


@dataclass(frozen=True)
class OutboxRow:
    id: str
    event: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None


def outbox(env: dict[str, str], job_id: str) -> list[OutboxRow]:
    rows = query(
        env,
        "SELECT id, event, status, attempts, last_status_code, last_error "
        "FROM webhook_deliveries WHERE job_id = :j",
        j=job_id,
    )
    return [OutboxRow(*row) for row in rows]


def wait_outbox(env: dict[str, str], job_id: str, attempts: int, timeout: float = 60.0) -> OutboxRow:
    """Poll the job's one outbox row until it has made at least `attempts` attempts."""

    def made() -> OutboxRow | None:
        rows = outbox(env, job_id)
        return rows[0] if rows and rows[0].attempts >= attempts else None

    return until(made, f"{attempts} attempts in job {job_id}'s outbox", timeout)
