"""POST /v2/uploads and GET /v2/uploads/{id}: host your inputs here instead of somewhere public."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, File, Path, Response, UploadFile
from fastapi.responses import JSONResponse

from fillframe import uploads
from fillframe.api.deps import BaseUrlDep, CallerDep, DbDep, SettingsDep, StoreDep
from fillframe.api.errors import ApiError
from fillframe.api.openapi import IMAGE_CONTENT
from fillframe.contract import ErrorBody, UploadView
from fillframe.jobs.store import iso

router = APIRouter(tags=["uploads"])


NOT_FOUND = "Upload not found (or expired)."


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


@router.post(
    "/v2/uploads",
    status_code=201,
    response_model=UploadView,
    responses={413: {"model": ErrorBody, "description": "The file is larger than the upload limit."}},
    summary="Upload an image (JPEG, PNG or WebP) to use as `image` or `mask`",
)
async def create_upload(
    file: Annotated[UploadFile, File(description="The image; its content decides its type.")],
    caller: CallerDep,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseUrlDep,
) -> JSONResponse:
    limit = settings.limits.max_upload_bytes
    # The form parser has spooled the file (to disk past 1 MB): refuse by its size before reading
    # up to `limit` bytes of it into memory for nothing.
    if file.size is not None and file.size > limit:
        raise ApiError(413, f"The upload is larger than the {_mb(limit)} limit.")
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"The upload is larger than the {_mb(limit)} limit.")
    if not data:
        raise ApiError(400, "The upload is empty.")
    try:
        row = await uploads.save(
            db, store, caller.account_id, data, timedelta(hours=settings.api.upload_ttl_hours)
        )
    except uploads.NotAnImage as exc:
        raise ApiError(400, str(exc), details={"file": [str(exc)]}) from None
    return JSONResponse(
        {
            "id": row["id"],
            "url": f"{base}/v2/uploads/{row['id']}",
            "kind": "image",
            "contentType": row["content_type"],
            "byteSize": row["byte_size"],
            "expiresAt": iso(row["expires_at"]),
        },
        status_code=201,
    )


@router.get(
    "/v2/uploads/{upload_id}",
    response_class=Response,
    responses={
        200: {"content": IMAGE_CONTENT, "description": "The uploaded bytes, as sniffed at upload."},
        404: {"model": ErrorBody, "description": "No such live upload for this account."},
    },
    summary="Download one of your uploads",
)
async def get_upload(
    upload_id: Annotated[str, Path(json_schema_extra={"format": "uuid"})],
    caller: CallerDep,
    db: DbDep,
    store: StoreDep,
) -> Response:
    # Upload ids are UUIDs: anything else is no upload, and never reaches the database (PostgreSQL
    # refuses a NUL in text with an error, not an empty result).
    try:
        upload_id = str(uuid.UUID(upload_id))
    except ValueError:
        raise ApiError(404, NOT_FOUND) from None
    row = await uploads.find(db, caller.account_id, upload_id)
    if row is None:
        raise ApiError(404, NOT_FOUND)
    return Response(await store.get(row["storage_key"]), media_type=row["content_type"])
