"""Pure ASGI middleware (no per-request task overhead): request context and the body-size limit."""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fillframe import logs, metrics

log = logging.getLogger("fillframe.http")


class RequestContext:
    """Per request: echo a sane `X-Request-Id` (or make one) and bind it for logs; time the request
    into the latency histogram by route template; write one access log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"")
        ok = 0 < len(given) <= 128 and all(32 < c < 127 for c in given)
        rid = given if ok else uuid.uuid4().hex.encode()
        token = logs.request_id.set(rid.decode())
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.HTTP_LATENCY.labels(scope["method"], template, str(status)).observe(elapsed)
            log.info(
                "%s %s %s",
                scope["method"],
                template,
                status,
                extra={"fields": {"status": status, "ms": round(elapsed * 1000, 2)}},
            )
            logs.request_id.reset(token)


class BodyLimit:
    """Answer 413 before reading more than the limit of a request body: `max_bytes`, or the
    limit in `per_path` for that exact path (uploads get theirs here, so an oversized upload is
    refused from its Content-Length before a byte of it is spooled)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: dict[str, tuple[int, str]] | None = None
    ) -> None:
        self.app = app
        mb = max_bytes / (1024 * 1024)
        self.default = (max_bytes, f"The request body is larger than the {mb:g} MB limit.")
        self.per_path = per_path or {}

    async def _refuse(self, send: Send, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, message = self.per_path.get(scope["path"], self.default)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._refuse(send, message)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, message)


class _TooLarge(Exception):
    pass
