"""Uploads: an account's own images, kept for a while, usable as `image` or `mask` by URL.

An upload's URL is `{base}/v2/uploads/{id}`. When a job names such a URL the worker reads the
upload from storage for the job's own account, never over the network; another account's
upload is refused exactly like a missing one.

A data URI in a submitted job is saved the same way (api/routes/edit.py): the job keeps the
upload URL, so its row holds no image bytes, listing jobs never reads them, and the worker reads
the image as it reads any upload.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from fillframe.clock import SYSTEM, Clock
from fillframe.db import Database, files
from fillframe.errors import InvalidInput
from fillframe.imaging.decode import sniff_format
from fillframe.storage import BlobStore

UPLOAD_PATH = re.compile(
    r"^https?://[^/]+(?:/[^?#]*)?/v2/uploads/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
TYPES = {"JPEG": ("image/jpeg", "jpg"), "PNG": ("image/png", "png"), "WebP": ("image/webp", "webp")}


class NotAnImage(ValueError):
    pass


def upload_id(url: str) -> str | None:
    """The upload id when `url` is an upload URL, else None."""
    match = UPLOAD_PATH.match(url)
    return match.group(1) if match else None


def content_type(data: bytes, subject: str = "The file") -> tuple[str, str]:
    """(content type, extension) sniffed from the bytes; raises NotAnImage with a sentence."""
    kind = sniff_format(data)
    if kind in TYPES:
        return TYPES[kind]
    seen = f"it looks like {kind}" if kind else "its content is not a known image format"
    raise NotAnImage(f"{subject} is not a JPEG, PNG or WebP image ({seen}).")


async def save(
    db: Database,
    store: BlobStore,
    account_id: str,
    data: bytes,
    ttl: timedelta,
    subject: str = "The file",
    *,
    clock: Clock = SYSTEM,
) -> dict[str, Any]:
    mime, ext = content_type(data, subject)
    now = clock.now()
    row = {
        "id": str(uuid.uuid4()),
        "account_id": account_id,
        "job_id": None,
        "kind": "upload",
        "content_type": mime,
        "byte_size": len(data),
        "created_at": now,
        "expires_at": now + ttl,
        "deleted": False,
    }
    key = row["storage_key"] = f"uploads/{row['id']}.{ext}"
    await store.put(key, data)
    async with db.write() as conn:
        await conn.execute(files.insert().values(**row))
    return row


async def discard(db: Database, store: BlobStore, rows: Iterable[dict[str, Any]]) -> None:
    """Remove uploads saved for a submit that then did not queue a job (refused, or replayed)."""
    rows = list(rows)
    if not rows:
        return
    for row in rows:
        await store.delete(row["storage_key"])
    async with db.write() as conn:
        await conn.execute(files.delete().where(files.c.id.in_([row["id"] for row in rows])))


async def find(
    db: Database, account_id: str, file_id: str, *, clock: Clock = SYSTEM
) -> dict[str, Any] | None:
    """This account's live upload with that id, or None (missing, another account's, or expired)."""
    query = sa.select(files).where(
        files.c.id == file_id,
        files.c.account_id == account_id,
        files.c.kind == "upload",
        files.c.deleted.is_(False),
        files.c.expires_at > clock.now(),
    )
    async with db.read() as conn:
        row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


async def read(db: Database, store: BlobStore, account_id: str, file_id: str, what: str) -> bytes:
    row = await find(db, account_id, file_id)
    if row is None:
        raise InvalidInput(f"The {what} upload {file_id} does not exist for this account or has expired.")
    return await store.get(row["storage_key"])
