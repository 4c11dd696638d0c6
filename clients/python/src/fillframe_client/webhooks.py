"""Check that a webhook request came from Fillframe, for both schemes it signs (stdlib only).

The signing key is the raw 32-byte SHA-256 digest of the API key that created the job.

- Apiframe: `X-Webhook-Signature: sha256=<hex HMAC-SHA256(key, body)>`.
- Standard Webhooks: `webhook-id`, `webhook-timestamp` (unix seconds) and
  `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` (space-separated
  when there are several).

    event = verify_webhook(api_key, request.body, request.headers)   # raises InvalidWebhookError
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping

from fillframe_client.errors import InvalidWebhookError
from fillframe_client.models import WebhookEvent

DEFAULT_TOLERANCE_SECONDS = 300.0  # the Standard Webhooks default: five minutes either way


def signing_key(api_key: str) -> bytes:
    """The 32 bytes both signatures are made with."""
    return hashlib.sha256(api_key.encode()).digest()


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _check_apiframe(key: bytes, body: bytes, header: str) -> None:
    scheme, _, value = header.strip().partition("=")
    try:
        given = bytes.fromhex(value)
    except ValueError:
        given = b""
    if scheme != "sha256" or not hmac.compare_digest(given, _hmac(key, body)):
        raise InvalidWebhookError("The X-Webhook-Signature does not match this body and key.")


def _check_timestamp(value: str, tolerance: float, now: float) -> None:
    try:
        timestamp = int(value)
    except ValueError:
        raise InvalidWebhookError("The webhook-timestamp header is not a unix time in seconds.") from None
    if timestamp < now - tolerance:
        raise InvalidWebhookError(f"The webhook is older than {tolerance:g} seconds; it may be a replay.")
    if timestamp > now + tolerance:
        raise InvalidWebhookError(
            f"The webhook is dated more than {tolerance:g} seconds ahead; check clocks."
        )


def _check_standard(key: bytes, body: bytes, headers: Mapping[str, str], signatures: str) -> None:
    webhook_id, timestamp = headers.get("webhook-id"), headers.get("webhook-timestamp")
    if not webhook_id or not timestamp:
        raise InvalidWebhookError("A webhook-signature needs webhook-id and webhook-timestamp headers.")
    expected = _hmac(key, f"{webhook_id}.{timestamp}.".encode() + body)
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if version == "v1" and hmac.compare_digest(given, expected):
            return
    raise InvalidWebhookError("The webhook-signature does not match this body and key.")


def verify_webhook(
    api_key: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> WebhookEvent:
    """The verified payload of a webhook request; InvalidWebhookError when it is not one.

    api_key: the key that created the job. body: the raw request body, exactly as received (not
    re-encoded JSON). headers: any mapping; case is ignored. Every signature header present must
    match and at least one must be there; `webhook-timestamp`, when present, must lie within
    `tolerance` seconds of `now` (default: this machine's clock). The Apiframe header alone
    carries no timestamp, so it gives no replay protection.
    """
    found = {k.lower(): v for k, v in headers.items()}
    apiframe, standard = found.get("x-webhook-signature"), found.get("webhook-signature")
    if not apiframe and not standard:
        raise InvalidWebhookError("No signature header: expected X-Webhook-Signature or webhook-signature.")
    key = signing_key(api_key)
    if "webhook-timestamp" in found:
        _check_timestamp(found["webhook-timestamp"], tolerance, time.time() if now is None else now)
    if standard:
        _check_standard(key, body, found, standard)
    if apiframe:
        _check_apiframe(key, body, apiframe)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidWebhookError("The webhook body is not JSON.") from None
    if not isinstance(payload, dict):
        raise InvalidWebhookError("The webhook body is not a JSON object.")
    if not {"event", "jobId", "status"} <= payload.keys():
        raise InvalidWebhookError("The webhook body is not a Fillframe event (event, jobId, status).")
    return WebhookEvent.from_json(payload)
