"""Blob storage over obstore (a local folder by default, any object store by URL) and signed file URLs.

Signed URLs are capabilities: `/v2/files/{id}.{ext}?expires=<unix>&sig=<hmac>`, so a result can
be opened by a browser or an `<img>` tag without the API key, and stops working when it expires.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from urllib.parse import urlencode

import obstore
from obstore.store import LocalStore, from_url

from fillframe.settings import Settings

EXTENSION_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class BlobStore:
    """Bytes by key. One code path for every backend obstore supports."""

    def __init__(self, settings: Settings) -> None:
        url = getattr(settings, "storage_url", None)
        if url:
            self._store = from_url(url)
        else:
            settings.files_dir.mkdir(parents=True, exist_ok=True)
            self._store = LocalStore(prefix=settings.files_dir.resolve(), mkdir=True)

    async def put(self, key: str, data: bytes) -> None:
        await obstore.put_async(self._store, key, data)

    async def get(self, key: str) -> bytes:
        result = await obstore.get_async(self._store, key)
        return bytes(await result.bytes_async())

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await obstore.delete_async(self._store, key)


def _signature(secret: bytes, file_id: str, expires: int) -> str:
    message = f"{file_id}:{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def signed_path(secret: bytes, file_id: str, ext: str, expires: int) -> str:
    query = urlencode({"expires": expires, "sig": _signature(secret, file_id, expires)})
    return f"/v2/files/{file_id}.{ext}?{query}"


def check_signature(secret: bytes, file_id: str, expires: int, sig: str, now: float | None = None) -> str:
    """Return "" when valid, else the reason ("invalid" or "expired")."""
    if not hmac.compare_digest(_signature(secret, file_id, expires), sig):
        return "invalid"
    if expires < (time.time() if now is None else now):
        return "expired"
    return ""
