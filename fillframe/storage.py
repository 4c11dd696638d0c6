"""Blob storage over obstore (a local folder by default, any object store by URL) and file links.

Links to results are either capabilities served by the API, `/v2/files/{id}.{ext}?expires=&sig=`
(HMAC with the instance secret, valid for the retention period), or URLs presigned by the object
store itself (`FILE_URLS=presigned`), so downloads never touch the API.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import obstore
from obstore.store import LocalStore, from_url

if TYPE_CHECKING:
    from obstore.store import S3Config

from fillframe.settings import StorageSettings

EXTENSION_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
# SigV4 presigned URLs live at most seven days.
MAX_PRESIGN = timedelta(days=7)


def _object_store(settings: StorageSettings) -> Any:
    if not settings.storage_url:
        settings.files_dir.mkdir(parents=True, exist_ok=True)
        return LocalStore(prefix=settings.files_dir.resolve(), mkdir=True)
    config: S3Config = {}
    if settings.s3_endpoint:
        config["endpoint"] = settings.s3_endpoint
    if settings.s3_region:
        config["region"] = settings.s3_region
    if settings.s3_access_key_id:
        config["access_key_id"] = settings.s3_access_key_id
    if settings.s3_secret_access_key:
        config["secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
    allow_http = bool(settings.s3_endpoint and settings.s3_endpoint.startswith("http://"))
    return from_url(settings.storage_url, config=config or None, client_options={"allow_http": allow_http})


class BlobStore:
    """Bytes by key. One code path for every backend obstore supports."""

    def __init__(self, settings: StorageSettings) -> None:
        self._store = _object_store(settings)
        self.presigns = settings.file_urls == "presigned"

    async def put(self, key: str, data: bytes) -> None:
        await obstore.put_async(self._store, key, data)

    def put_blocking(self, key: str, data: bytes) -> None:
        """For a worker thread that is off the event loop already: a third of `put`'s CPU here,
        which pays for a hand-off to obstore's runtime and another back to the loop."""
        obstore.put(self._store, key, data)

    async def get(self, key: str) -> bytes:
        result = await obstore.get_async(self._store, key)
        return bytes(await result.bytes_async())

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await obstore.delete_async(self._store, key)

    async def presign(self, key: str, valid_for: timedelta) -> str:
        return str(await obstore.sign_async(self._store, "GET", key, min(valid_for, MAX_PRESIGN)))


def output_key(file_id: str, ext: str) -> str:
    return f"outputs/{file_id}.{ext}"


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


class Linker:
    """Turns a stored output ({"id", "ext", "expires"}) into the URL a client downloads."""

    def __init__(self, store: BlobStore, secret: bytes, base_url: str) -> None:
        self.store = store
        self.secret = secret
        self.base_url = base_url.rstrip("/")

    async def link(self, file: dict[str, Any]) -> str:
        if self.store.presigns:
            valid_for = timedelta(seconds=max(1, file["expires"] - time.time()))
            return await self.store.presign(output_key(file["id"], file["ext"]), valid_for)
        return self.base_url + signed_path(self.secret, file["id"], file["ext"], file["expires"])

    async def result(self, row: dict[str, Any]) -> dict[str, list[str]] | None:
        """The job's `result` field: links while the outputs exist, else None."""
        if not row["result"] or row["expired"]:
            return None
        return {"images": [await self.link(f) for f in row["result"]["files"]]}
