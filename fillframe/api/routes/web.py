"""The playground page at `/` and its static files under `/web/` (no build step, no API key here:
the page calls the public API from the browser with the key the user enters)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

from fillframe.api.errors import ApiError
from fillframe.contract import ErrorBody

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
# The page holds an API key: only our own scripts run, and nothing may frame it. Images may come
# from anywhere (result links carry the PUBLIC_URL host); fetches too ("use result as input").
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
    "connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(tags=["playground"])
# What StaticFiles answers for the files in fillframe/web/ (.js maps to either name by platform).
STATIC_CONTENT = {
    kind: {"schema": {"type": "string"}}
    for kind in ("text/html", "text/css", "text/javascript", "application/javascript")
}
_static = StaticFiles(directory=WEB_DIR, check_dir=False)


# HEAD is registered apart, outside the document: listed there, it would be a second operation
# with the same id as GET.
@router.head("/", include_in_schema=False)
@router.get(
    "/",
    response_class=Response,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The playground page."}
    },
    summary="The playground page (no build step; the key is entered in the browser)",
)
async def index() -> FileResponse:
    # no-cache: a new release's page must not run against old modules from the browser's cache.
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=headers)


@router.head("/web/{path:path}", include_in_schema=False)
@router.get(
    "/web/{path:path}",
    response_class=Response,
    responses={
        200: {"content": STATIC_CONTENT, "description": "A playground script, style sheet or page."},
        404: {"model": ErrorBody, "description": "No such file."},
    },
    summary="The playground's static files",
)
async def static(path: str, request: Request) -> Response:
    response = await _static.get_response(path, request.scope)
    if response.status_code == 404:
        raise ApiError(404, "Not found.")
    response.headers.update({**SECURITY_HEADERS, "Cache-Control": "no-cache"})
    return response
