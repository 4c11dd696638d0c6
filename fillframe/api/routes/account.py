"""GET /v2/me and the public GET /v2/models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fillframe import billing
from fillframe.api.deps import CallerDep, DbDep, SettingsDep
from fillframe.contract import MODELS, MeView, Modality, ModelCatalog

router = APIRouter(tags=["account"])


@router.get("/v2/me", response_model=MeView, summary="Who this key belongs to: user, team and key")
async def me(caller: CallerDep, db: DbDep) -> dict[str, Any]:
    async with db.read() as conn:
        credits = await billing.balance(conn, caller.account_id)
    return {
        "user": {"id": caller.user_id, "email": caller.user_email, "role": caller.role},
        "team": {
            "id": caller.account_id,
            "name": caller.account_name,
            "credits": max(credits, 0),
            "plan": caller.plan,
            "customerId": caller.customer_id,
            "unlimited": caller.unlimited,
            "maxConcurrentJobs": caller.max_concurrent_jobs,
        },
        "apiKey": {"id": caller.key_id, "name": caller.key_name, "prefix": caller.key_prefix},
    }


@router.get(
    "/v2/models",
    response_model=ModelCatalog,
    summary="The model catalog with each model's credit cost (public)",
)
async def models(settings: SettingsDep, modality: Modality | None = None) -> dict[str, Any]:
    catalog = []
    for model_id, info in MODELS.items():
        if modality is not None and info["modality"] != modality:
            continue
        cost = settings.api.model_costs.get(model_id, 0)
        # One job, one output, one price: flux-fill-pro is priced flat.
        pricing = {"costMin": cost, "costMax": cost, "pricingMode": "flat", "creditCost": cost}
        catalog.append({"id": model_id, **info, **pricing, "engine": settings.worker.engine})
    return {"models": catalog}
