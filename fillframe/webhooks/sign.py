"""Webhook signatures, two schemes over the same key and the same raw body.

The key is the raw 32-byte SHA-256 digest of the API key that created the job (not its hex
form). The server stores only the hex digest (`api_keys.key_hash`), so it signs with
`bytes.fromhex(key_hash)`; a receiver derives the same bytes from the key it holds.

- Apiframe: `X-Webhook-Signature: sha256=<hex HMAC-SHA256(key, body)>`, `X-Webhook-Event`.
- Standard Webhooks (standardwebhooks.com): `webhook-id` (the same on every retry of one event),
  `webhook-timestamp` (unix seconds of this attempt), `webhook-signature: v1,<base64
  HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`; computed by the `standardwebhooks` package.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fillframe_client import InvalidWebhookError, signing_key, verify_webhook
from fillframe_client.webhooks import DEFAULT_TOLERANCE_SECONDS
from standardwebhooks.webhooks import Webhook

EVENT_HEADER = "X-Webhook-Event"
SIGNATURE_HEADER = "X-Webhook-Signature"


# One verifier for receivers and the server's own tests: the client package's (stdlib only).
InvalidWebhook = InvalidWebhookError


def key_from_api_key(api_key: str) -> bytes:
    """The 32-byte signing key a receiver derives from its API key."""
    return signing_key(api_key)


def key_from_hash(key_hash: str) -> bytes:
    """The same 32 bytes from the stored hex digest (`api_keys.key_hash`)."""
    return bytes.fromhex(key_hash)


def apiframe_signature(key: bytes, body: bytes) -> str:
    """`sha256=<hex>` for the X-Webhook-Signature header."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def standard_signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64>` for the webhook-signature header; `body` must be UTF-8 (JSON is)."""
    when = datetime.fromtimestamp(timestamp, UTC)
    return Webhook(key).sign(msg_id=webhook_id, timestamp=when, data=body.decode())


def signed_headers(key: bytes, event: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header one delivery attempt carries besides Host and User-Agent."""
    return {
        "Content-Type": "application/json",
        EVENT_HEADER: event,
        SIGNATURE_HEADER: apiframe_signature(key, body),
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(key, webhook_id, timestamp, body),
    }


def verify(
    api_key: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The JSON payload of a webhook request signed with `api_key`; InvalidWebhook otherwise.

    `fillframe_client.verify_webhook` does the checking (every signature header present must
    match, at least one must be there, `webhook-timestamp` within `tolerance` seconds of `now`).
    """
    return verify_webhook(api_key, body, headers, tolerance=tolerance, now=now).raw
