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

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

EVENT_HEADER = "X-Webhook-Event"
SIGNATURE_HEADER = "X-Webhook-Signature"
DEFAULT_TOLERANCE_SECONDS = 300.0  # Standard Webhooks' own: five minutes either way


class InvalidWebhook(ValueError):
    """The request is not a webhook signed with this key (or it is too old or too new)."""


def key_from_api_key(api_key: str) -> bytes:
    """The 32-byte signing key a receiver derives from its API key."""
    return hashlib.sha256(api_key.encode()).digest()


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


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _check_timestamp(value: str, tolerance: float, now: float) -> None:
    try:
        timestamp = int(value)
    except ValueError:
        raise InvalidWebhook("The webhook-timestamp header is not a unix time in seconds.") from None
    if timestamp < now - tolerance:
        raise InvalidWebhook(f"The webhook is older than {tolerance:g} seconds; it may be a replay.")
    if timestamp > now + tolerance:
        raise InvalidWebhook(f"The webhook is dated more than {tolerance:g} seconds ahead; check clocks.")


def _check_standard(key: bytes, body: bytes, found: Mapping[str, str], signatures: str) -> None:
    webhook_id = found.get("webhook-id")
    timestamp = found.get("webhook-timestamp")
    if not webhook_id or not timestamp:
        raise InvalidWebhook("A webhook-signature needs webhook-id and webhook-timestamp headers.")
    try:
        expected = standard_signature(key, webhook_id, int(timestamp), body).split(",", 1)[1]
    except (ValueError, UnicodeDecodeError):
        raise InvalidWebhook("The webhook body or timestamp cannot be signed as sent.") from None
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            # Compare decoded bytes: padding or line breaks in the base64 must not matter.
            if hmac.compare_digest(base64.b64decode(value), base64.b64decode(expected)):
                return
        except (binascii.Error, ValueError):
            continue
    raise InvalidWebhook("The webhook-signature does not match this body and key.")


def verify(
    api_key: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook request and return its JSON payload; raise InvalidWebhook otherwise.

    api_key: the key that created the job. body: the raw request body, exactly as received.
    headers: any mapping (case is ignored). Every signature header present must match (the
    Apiframe `X-Webhook-Signature`, the Standard Webhooks `webhook-signature`), at least one must
    be, and `webhook-timestamp`, when present, must lie within `tolerance` seconds of `now`.
    Apiframe's own deliveries carry no timestamp and so no replay protection.
    """
    found = {k.lower(): v for k, v in headers.items()}
    apiframe = found.get(SIGNATURE_HEADER.lower())
    standard = found.get("webhook-signature")
    if not apiframe and not standard:
        raise InvalidWebhook("No signature header: expected X-Webhook-Signature or webhook-signature.")
    key = key_from_api_key(api_key)
    if "webhook-timestamp" in found:
        _check_timestamp(found["webhook-timestamp"], tolerance, time.time() if now is None else now)
    if standard:
        _check_standard(key, body, found, standard)
    if apiframe and not _same(apiframe_signature(key, body), apiframe.strip()):
        raise InvalidWebhook("The X-Webhook-Signature does not match this body and key.")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidWebhook("The webhook body is not JSON.") from None
    if not isinstance(payload, dict):
        raise InvalidWebhook("The webhook body is not a JSON object.")
    return payload
