"""Webhook payloads (CONTRACT.md, "Webhooks") and the progress throttle.

Keys appear in the order the contract lists them. A job that ends FAILED or CANCELLED sends the
`failed` event; its `status` is the job's own (a cancelled job says CANCELLED, errorCode cancelled).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_EVENTS = ("completed", "failed")
PROGRESS_INTERVAL_SECONDS = 1.0


def terminal_event(status: str) -> str:
    """The event a job that ended with `status` (COMPLETED, FAILED, CANCELLED) sends."""
    return "completed" if status == "COMPLETED" else "failed"


def wants(events: Sequence[str] | None, event: str) -> bool:
    """Whether a job whose `webhookEvents` are `events` (None: the default) asks for `event`."""
    return event in (events if events is not None else DEFAULT_EVENTS)


def completed_payload(
    job_id: str, model: str, credit_cost: int, images: list[str], completed_at: str
) -> dict[str, Any]:
    return {
        "event": "completed",
        "jobId": job_id,
        "status": "COMPLETED",
        "progress": 100,
        "result": {"images": images},
        "model": model,
        "creditCost": credit_cost,
        "completedAt": completed_at,
    }


def failed_payload(
    job_id: str, status: str, model: str, error: str | None, error_code: str | None
) -> dict[str, Any]:
    return {
        "event": "failed",
        "jobId": job_id,
        "status": status,
        "error": error,
        "errorCode": error_code,
        "model": model,
    }


def progress_payload(job_id: str, model: str, progress: int) -> dict[str, Any]:
    return {
        "event": "progress",
        "jobId": job_id,
        "status": "PROCESSING",
        "progress": progress,
        "model": model,
    }


def encode(payload: dict[str, Any]) -> bytes:
    """The body as sent and signed: compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class ProgressThrottle:
    """At most one progress event per `interval` seconds, and only when the value changed.

    Times are a monotonic clock's seconds; the job starts at progress 0, which is never sent.
    """

    interval: float = PROGRESS_INTERVAL_SECONDS
    last_value: int = 0
    last_at: float | None = None

    def due(self, value: int, now: float) -> bool:
        if value == self.last_value:
            return False
        return self.last_at is None or now - self.last_at >= self.interval

    def sent(self, value: int, now: float) -> None:
        self.last_value = value
        self.last_at = now
