"""Make `/openapi.json` say what the server really answers.

FastAPI's generated document is right about bodies and parameters but wrong about errors: it
declares a 422 our handler never sends (validation answers 400, see api/errors.py), and it knows
nothing of what dependencies and middleware answer (401/403 from the key check, 503 when the
database is down, 413 from the body limit, `X-Request-Id` on every response). `finish` fixes
that for every operation at once; what only one route answers is declared on that route with the
constants below.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from fastapi import FastAPI

from fillframe.contract import ErrorBody

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_INT_HEADER = {"schema": {"type": "integer"}}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", **_INT_HEADER}}
RATE_LIMIT_HEADERS = {
    **RETRY_AFTER,
    "X-RateLimit-Limit": {"description": "Submits allowed per minute for this key.", **_INT_HEADER},
    "X-RateLimit-Remaining": {"description": "Submits left in the current window.", **_INT_HEADER},
    "X-RateLimit-Reset": {"description": "Seconds until the window resets.", **_INT_HEADER},
}
REQUEST_ID_HEADER = {
    "X-Request-Id": {
        "description": "The caller's `X-Request-Id` when sane, else a fresh id; quote it in reports.",
        "schema": {"type": "string"},
    }
}
IMAGE_CONTENT = {
    kind: {"schema": {"type": "string", "format": "binary"}}
    for kind in ("image/jpeg", "image/png", "image/webp")
}
DB_DOWN: dict[str, Any] = {
    "model": ErrorBody,
    "description": "The database is unavailable; retry with backoff.",
    "headers": RETRY_AFTER,
}
SECURITY_SCHEMES = {
    "ApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "Your `afk_` key (shown once by `fillframe keys create`).",
    },
    "Bearer": {"type": "http", "scheme": "bearer", "description": "The same `afk_` key as a bearer token."},
}
_AUTH_HEADER = "x-api-key"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response object whose body is the contract's ErrorBody."""
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if headers:
        response["headers"] = copy.deepcopy(headers)
    return response


def _authenticated(op: dict[str, Any]) -> bool:
    """Whether the operation reads the API key; removes that header parameter (the security
    scheme documents it instead, and lets tools and Swagger UI send it)."""
    params = op.get("parameters", [])
    kept = [p for p in params if not (p.get("in") == "header" and p.get("name", "").lower() == _AUTH_HEADER)]
    if len(kept) == len(params):
        return False
    if kept:
        op["parameters"] = kept
    else:
        op.pop("parameters", None)
    return True


def finish_operation(op: dict[str, Any]) -> None:
    """Declare, on one operation object, the answers that come from outside its handler."""
    responses: dict[str, Any] = op.setdefault("responses", {})
    validated = "422" in responses
    responses.pop("422", None)
    if _authenticated(op):
        op["security"] = [{"ApiKey": []}, {"Bearer": []}]
        responses.setdefault("401", _error("The API key is missing, unknown or revoked."))
        responses.setdefault("403", _error("The API key is inactive."))
        responses.setdefault("503", _error(DB_DOWN["description"], RETRY_AFTER))
    if validated and (op.get("parameters") or op.get("requestBody")):
        responses.setdefault(
            "400",
            _error("The body or a parameter is invalid; `details` maps each field's path to its problems."),
        )
    if "requestBody" in op:
        responses.setdefault("413", _error("The body is larger than the limit."))
    for response in responses.values():
        headers = response.setdefault("headers", {})
        for name, header in REQUEST_ID_HEADER.items():
            headers.setdefault(name, copy.deepcopy(header))


def _referenced(doc: dict[str, Any], name: str) -> bool:
    return json.dumps(f"#/components/schemas/{name}") in json.dumps(doc)


def finish(doc: dict[str, Any]) -> dict[str, Any]:
    """Post-process FastAPI's generated document in place and return it."""
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
    # Kept: schemes FastAPI found itself (the admin API's operator token).
    components["securitySchemes"] = {
        **components.get("securitySchemes", {}),
        **copy.deepcopy(SECURITY_SCHEMES),
    }
    for item in doc.get("paths", {}).values():
        for method in _METHODS:
            if method in item:
                finish_operation(item[method])
    # FastAPI's 422 models are gone from every operation; drop them unless something else uses them.
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas:
            rest = {k: v for k, v in schemas.items() if k != name}
            if not _referenced({"paths": doc.get("paths"), "schemas": rest}, name):
                del schemas[name]
    return doc


def install(app: FastAPI) -> None:
    """Serve `finish(FastAPI's document)` at /openapi.json (built once, on first request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # `generate` caches FastAPI's raw document there; the finished one replaces it.
            app.openapi_schema = finish(copy.deepcopy(generate()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
