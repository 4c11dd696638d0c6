"""GET /v2/files/{id}.{ext}: signed, expiring links to outputs (no API key needed)."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Response

from fillframe.api.deps import DbDep, LinkSecretDep, StoreDep
from fillframe.api.errors import ApiError
from fillframe.api.openapi import DB_DOWN, IMAGE_CONTENT
from fillframe.contract import ErrorBody
from fillframe.db import files
from fillframe.storage import check_signature

router = APIRouter(tags=["files"])


@router.get(
    "/v2/files/{name}",
    summary="Download a result through its signed URL",
    response_class=Response,
    responses={
        200: {"content": IMAGE_CONTENT, "description": "The result image."},
        403: {"model": ErrorBody, "description": "The signature does not match."},
        404: {"model": ErrorBody, "description": "No such file."},
        410: {"model": ErrorBody, "description": "The link expired, or the file was purged."},
        503: DB_DOWN,
    },
)
async def download(
    name: str, expires: int, sig: str, db: DbDep, store: StoreDep, secret: LinkSecretDep
) -> Response:
    file_id = name.rsplit(".", 1)[0]
    # Our signatures are hex; anything else cannot match (and compare_digest refuses non-ASCII text).
    problem = "invalid"
    if sig.isascii():
        problem = check_signature(secret, file_id, expires, sig)
    if problem == "invalid":
        raise ApiError(403, "This file link is not valid; take the URL from the job again.")
    if problem == "expired":
        raise ApiError(410, "This file link has expired.")
    async with db.read() as conn:
        row = (await conn.execute(sa.select(files).where(files.c.id == file_id))).mappings().first()
    if row is None:
        raise ApiError(404, "File not found.")
    if row["deleted"]:
        raise ApiError(410, "This file was deleted after the retention period.")
    data = await store.get(row["storage_key"])
    return Response(
        data,
        media_type=row["content_type"],
        headers={"Cache-Control": "private, max-age=3600"},
    )
