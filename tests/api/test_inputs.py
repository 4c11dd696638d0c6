"""Hostile and broken inputs with private URLs NOT allowed: a clear 400 or a FAILED job with
`invalid_input`, never a 500 and never a hang. (More on data URIs: test_data_uris.py.)"""

from __future__ import annotations

import io
import socket
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.utils.images import encode
from tests.utils.jobs import data_uri, edit_body, submit_and_wait
from tests.utils.servers import ImageServer

LIVE_SETTINGS = {
    "engine": "tests.utils.engines:SleepEngine",
    "test_sleep": "0.05",
    "allow_private_urls": "false",
    "max_pixels": "4000000",
}

RGB = np.full((40, 40, 3), 120, np.uint8)
MASK = np.pad(np.full((10, 10), 255, np.uint8), 15)


def b64(data: bytes, mime: str = "png") -> str:
    import base64

    return f"data:image/{mime};base64," + base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/cat.png",
        "http://127.9.9.9:8080/cat.png",
        "http://[::1]/cat.png",
        "http://[::ffff:127.0.0.1]/cat.png",
        "http://10.0.0.1/cat.png",
        "http://192.168.1.10/cat.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/cat.png",
        "http://localhost/cat.png",
    ],
)
def test_private_literal_addresses_refused_at_submit(client: httpx.Client, url: str) -> None:
    response = client.post("/v2/images/edit", json=edit_body(url, data_uri(MASK)))
    assert response.status_code == 400, response.text
    assert "fluxFillParams.image" in response.json()["details"]
    response = client.post("/v2/images/edit", json=edit_body(data_uri(RGB), url))
    assert response.status_code == 400
    assert "fluxFillParams.mask" in response.json()["details"]


def test_webhook_to_private_address_refused(client: httpx.Client) -> None:
    body = {**edit_body(data_uri(RGB), data_uri(MASK)), "webhookUrl": "http://169.254.169.254/hook"}
    response = client.post("/v2/images/edit", json=body)
    assert response.status_code == 400
    assert "webhookUrl" in response.json()["details"]


def loopback_name() -> str:
    for name in (socket.gethostname(), "vm", "runsc"):
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(name, 80)}
        except OSError:
            continue
        if name != "localhost" and addresses and all(a.startswith("127.") for a in addresses):
            return name
    pytest.skip("no host name other than localhost resolves to loopback here")


def failed_with_invalid_input(client: httpx.Client, body: dict, fragment: str) -> dict:
    job = submit_and_wait(client, body, timeout=30)
    assert job["status"] == "FAILED", job
    assert job["errorCode"] == "invalid_input"
    assert fragment in job["error"], job["error"]
    return job


def test_name_resolving_to_loopback_fails_the_job(client: httpx.Client, image_server: ImageServer) -> None:
    url = image_server.add("private.png", encode(RGB)).replace("127.0.0.1", loopback_name())
    failed_with_invalid_input(client, edit_body(url, data_uri(MASK)), "loopback")


def test_unresolvable_host_fails_cleanly(client: httpx.Client) -> None:
    # Redirects to private addresses are covered in tests/imaging/test_fetch.py.
    failed_with_invalid_input(
        client, edit_body("http://nonexistent.invalid/cat.png", data_uri(MASK)), "Could not fetch image"
    )


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG of a few KB that decodes to width x height grey pixels."""
    row = b"\x00" + bytes(width)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_decompression_bomb(client: httpx.Client) -> None:
    bomb = png_bomb()
    assert len(bomb) < 2_000_000
    failed_with_invalid_input(client, edit_body(b64(bomb), data_uri(MASK)), "pixels")


def test_corrupt_file(client: httpx.Client) -> None:
    failed_with_invalid_input(
        client, edit_body(b64(b"\x89PNG\r\n\x1a\nthis is not a png"), data_uri(MASK)), ""
    )


def test_truncated_png(client: httpx.Client) -> None:
    photo = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    whole = encode(photo)
    failed_with_invalid_input(client, edit_body(b64(whole[: len(whole) // 2]), data_uri(MASK)), "")


def refused_at_submit(client: httpx.Client, body: dict, fragment: str) -> None:
    """A data URI that is no JPEG, PNG or WebP is known bad when it is stored: a 400 names it."""
    response = client.post("/v2/images/edit", json=body)
    assert response.status_code == 400, response.text
    [message] = response.json()["details"]["fluxFillParams.image"]
    assert "not a JPEG, PNG or WebP image" in message and fragment in message, message


def test_text_file_as_image(client: httpx.Client) -> None:
    refused_at_submit(client, edit_body(b64(b"hello, world\n" * 50), data_uri(MASK)), "not a known")


def test_mask_of_the_wrong_size(client: httpx.Client) -> None:
    small = np.zeros((30, 20), np.uint8)
    small[10:20, 5:15] = 255  # something to fill: only the size is wrong
    job = failed_with_invalid_input(client, edit_body(data_uri(RGB), data_uri(small)), "20x30")
    assert "40x40" in job["error"]


def test_gif_refused_clearly(client: httpx.Client) -> None:
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, "GIF")
    refused_at_submit(client, edit_body(b64(buf.getvalue(), "gif"), data_uri(MASK)), "looks like GIF")
