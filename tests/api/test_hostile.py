"""Edges found by hostile probing: each gets the API's JSON error form with a sentence a person can
act on and an `X-Request-Id`, never the HTTP server's plain text or pydantic's raw wording."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.utils.jobs import edit_body
from tests.utils.servers import LiveServer, create_key, own_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Nothing here depends on the database: SQLite alone.
    with own_server(tmp_path_factory.mktemp("hostile"), "sqlite") as live:
        yield live


@pytest.fixture(scope="module")
def key(server: LiveServer) -> str:
    return create_key(server.env, "hostile")


def raw(server: LiveServer, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send bytes no HTTP client would; the status line, headers and body that come back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return status, headers, body


@pytest.mark.parametrize("padded", ["{key} ", "{key}\t", " {key}", "\t{key} "])
def test_whitespace_around_the_api_key_is_trimmed(server: LiveServer, key: str, padded: str) -> None:
    header = f"X-API-Key: {padded.format(key=key)}"
    request = f"GET /v2/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{header}\r\n\r\n"
    status, _, body = raw(server, request.encode())
    assert status.startswith("HTTP/1.1 200"), body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v2/me HTTP/1.1\r\nHost: x\r\nX-API-Key: a\x00b\r\n\r\n",
        b"GET /v2/jobs/" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"NOT A REQUEST\r\n\r\n",
    ],
    ids=["nul-in-header", "over-long-url", "broken-request-line"],
)
def test_requests_the_server_cannot_parse_get_a_json_error(server: LiveServer, request_bytes: bytes) -> None:
    status, headers, body = raw(server, request_bytes)
    assert status.startswith("HTTP/1.1 400")
    assert headers["content-type"] == "application/json"
    assert len(headers["x-request-id"]) == 32
    assert "could not be parsed" in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("content_type", "content"),
    [("text/plain", json.dumps(edit_body("https://x.test/a.png", "https://x.test/m.png"))), (None, "null")],
    ids=["text-plain", "null-object"],
)
def test_a_body_that_is_not_a_json_object_says_to_send_json(
    server: LiveServer, key: str, content_type: str | None, content: str
) -> None:
    headers = {"X-API-Key": key, "Content-Type": content_type or "application/json"}
    response = httpx.post(f"{server.url}/v2/images/edit", headers=headers, content=content)
    assert response.status_code == 400
    assert "Content-Type: application/json" in response.json()["error"]
    assert "Input should be" not in response.text


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_guidance_is_not_a_finite_number(server: LiveServer, key: str, number: str) -> None:
    body = json.dumps(edit_body("https://x.test/a.png", "https://x.test/m.png")).replace(
        '"fluxFillParams": {', f'"fluxFillParams": {{"guidance": {number}, ', 1
    )
    response = httpx.post(
        f"{server.url}/v2/images/edit",
        headers={"X-API-Key": key, "Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code == 400, response.text
    assert response.json()["details"] == {"fluxFillParams.guidance": ["must be a finite number"]}


def test_the_server_keeps_answering_after_a_malformed_request(server: LiveServer) -> None:
    raw(server, b"GET /v2/me HTTP/1.1\r\nHost: x\r\nX-API-Key: a\x00b\r\n\r\n")
    assert httpx.get(f"{server.url}/healthz").status_code == 200
