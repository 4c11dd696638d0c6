"""Webhooks: signatures (sign), payloads (events), the outbox and its delivery (deliver).

Receivers written in Python need only `verify`; importing this package loads no database or
HTTP code (`fillframe.webhooks.deliver` is imported by the server where it is needed).
"""

from fillframe.webhooks.sign import InvalidWebhook, key_from_api_key, verify

__all__ = ["InvalidWebhook", "key_from_api_key", "verify"]
