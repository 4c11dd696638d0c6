"""Requests the HTTP server refuses before the app sees them (a NUL or other control character in
a header, a request line or URL past the parser's limits) are answered in the API's own form: a
JSON error body with an `X-Request-Id`, not uvicorn's plain-text "Invalid HTTP request received."."""

from __future__ import annotations

import json
import uuid

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MALFORMED = (
    "The HTTP request could not be parsed: its request line or a header is malformed "
    "(control characters such as NUL are not allowed, and the URL and headers must stay under 60 KB)."
)


def malformed_response(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete `400` response, closing the connection (the parser cannot go on after it)."""
    body = json.dumps({"error": MALFORMED}).encode()
    lines = [b"HTTP/1.1 400 Bad Request"]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"x-request-id: " + uuid.uuid4().hex.encode(),
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class JsonErrorsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with its own 400 answers in the API's error form."""

    def send_400_response(self, msg: str) -> None:
        self.transport.write(malformed_response(self.server_state.default_headers))
        self.transport.close()
