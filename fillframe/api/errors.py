"""Error responses: `{"error": "<sentence>", "details": {...}}`, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raise from a handler to answer `status` with the contract's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        details: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = headers
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message, **self.extra}
        if self.details:
            body["details"] = self.details
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    simple = {
        "missing": "is required",
        "extra_forbidden": "is not a known field",
        "int_type": "must be an integer",
        "float_type": "must be a number",
        "string_type": "must be a string",
        "bool_type": "must be true or false",
        "list_type": "must be a list",
        "model_type": "must be an object",
        "dict_type": "must be an object",
        "json_invalid": "the request body is not valid JSON",
        "finite_number": "must be a finite number",
    }
    if kind == "model_attributes_type" and tuple(err.get("loc", ())) == ("body",):
        # A `null` body, or one sent as text/plain or form data: FastAPI saw no JSON object.
        return "the request body must be a JSON object, sent with Content-Type: application/json"
    if kind == "model_attributes_type":
        return "must be an object"
    if kind in simple:
        return simple[kind]
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} character(s)"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "literal_error":
        return f"must be one of: {ctx.get('expected')}"
    msg = str(err.get("msg", "is invalid"))
    return msg.removeprefix("Value error, ")


def validation_details(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    details: dict[str, list[str]] = {}
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            loc = ("body",)
        details.setdefault(_path(loc), []).append(_message(err))
    return details


def summary(details: dict[str, list[str]]) -> str:
    path, messages = next(iter(details.items()))
    more = len(details) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''}; see details)" if more else ""
    # Rules that span fields (reported on the enclosing object) read as whole sentences.
    subject = "" if path in ("body", "fluxFillParams") else f"{path} "
    return f"Invalid request: {subject}{messages[0]}{tail}."


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(list(exc.errors()))
        return ApiError(400, summary(details), details=details).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {404: "Not found.", 405: "Method not allowed on this path."}
        message = exc.detail if isinstance(exc.detail, str) and exc.status_code not in messages else None
        return JSONResponse(
            {"error": message or messages.get(exc.status_code, "Request failed.")},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(DBAPIError)
    async def _db_down(request: Request, exc: DBAPIError) -> JSONResponse:
        # Unreachable, locked, or a pooled connection that died (a server restart): the pool
        # has been discarded by now, so a retry gets a fresh connection.
        if not isinstance(exc, OperationalError) and not exc.connection_invalidated:
            return await _unexpected(request, exc)
        log.warning("database unavailable: %s", exc.orig)
        return JSONResponse(
            {"error": "The database is unavailable; retry with backoff."},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"error": "Internal error; it has been logged."}, status_code=500)
