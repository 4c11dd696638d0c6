"""When to retry and how long to wait: pure functions of a request, its reply and a policy.

A GET, or a POST that carries an `Idempotency-Key`, is retried on 429, 502, 503, 504 and on
connection errors, waiting `Retry-After` when the server sends it (up to `max_retry_wait` seconds;
a longer wait is final) and an exponential backoff otherwise. Other POSTs are never retried.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import UTC, datetime

from fillframe_client.steps import Reply, Send, TransportFailure

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    max_retry_wait: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 8.0


@dataclass(frozen=True)
class PollPolicy:
    """Job polling: start at `first` seconds, grow by `factor` up to `most`."""

    first: float = 0.25
    factor: float = 1.5
    most: float = 2.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def can_retry(send: Send) -> bool:
    """Only requests that cannot run twice by accident: GETs, and POSTs with an idempotency key."""
    if send.method.upper() in ("GET", "HEAD"):
        return True
    return any(name.lower() == "idempotency-key" for name in send.headers)


def retry_delay(reply: Reply | TransportFailure, attempt: int, policy: RetryPolicy) -> float | None:
    """How long to wait before retry number `attempt + 1`, or None when the reply is final.

    `attempt` counts retries already made. Assumes the request may be retried (`can_retry`).
    """
    if attempt >= policy.max_retries:
        return None
    backoff = min(policy.backoff_max, policy.backoff_base * 2.0**attempt)
    if isinstance(reply, TransportFailure):
        return backoff
    if reply.status not in RETRY_STATUSES:
        return None
    advised = parse_retry_after(reply.headers.get("retry-after"))
    if advised is None:
        return backoff
    return advised if advised <= policy.max_retry_wait else None
