"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from fillframe import metrics
from fillframe.api.deps import DbDep
from fillframe.contract import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/metrics",
    summary="Prometheus metrics (no key needed)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics_endpoint(db: DbDep) -> Response:
    return Response(await metrics.exposition(db), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "The database does not answer."}},
    summary="The database answers",
)
async def readyz(request: Request, db: DbDep) -> JSONResponse:
    try:
        async with db.read() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception:
        return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
    if not hasattr(request.app.state, "worker"):
        worker = "none"
    else:
        worker = "ready" if request.app.state.worker.ready else "loading"
    return JSONResponse({"status": "ok", "database": "up", "worker": worker})
