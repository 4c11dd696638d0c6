"""Typed dependencies: each handler's signature says what it needs.

All are `async def`, even those that only read `app.state`: FastAPI runs a plain `def` dependency
in its thread pool, and those hand-offs (one per dependency per request) cost more than the
submit's own SQL on this machine."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from fillframe.accounts import AuthError, Caller, authenticate
from fillframe.api.errors import ApiError
from fillframe.db import Database
from fillframe.settings import Settings
from fillframe.storage import BlobStore, Linker


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_store(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.store
    return store


def public_base(request: Request) -> str:
    """Where links in responses point: PUBLIC_URL, else the host the caller used."""
    settings: Settings = request.app.state.settings
    return (settings.links.public_url or str(request.base_url)).rstrip("/")


async def base_url(request: Request) -> str:
    return public_base(request)


async def get_link_secret(request: Request) -> bytes:
    """The link-signing secret, read (or made) once at start-up (fillframe/link_secret.py)."""
    secret: bytes = request.app.state.link_secret
    return secret


async def get_linker(request: Request) -> Linker:
    state = request.app.state
    return Linker(state.store, state.link_secret, public_base(request))


async def require_caller(
    request: Request,
    x_api_key: Annotated[str | None, Header(description="Your afk_ key.")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Caller:
    # Whitespace around a pasted key is trimmed on both sides, in either header.
    key = x_api_key.strip() if x_api_key else None
    if not key and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    try:
        return await authenticate(request.app.state.db, key)
    except AuthError as exc:
        raise ApiError(exc.status, exc.message) from None


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
StoreDep = Annotated[BlobStore, Depends(get_store)]
BaseUrlDep = Annotated[str, Depends(base_url)]
LinkerDep = Annotated[Linker, Depends(get_linker)]
LinkSecretDep = Annotated[bytes, Depends(get_link_secret)]
CallerDep = Annotated[Caller, Depends(require_caller)]
