"""GET /v2/me and the public GET /v2/models."""

from __future__ import annotations

from fastapi import APIRouter

from fillframe import billing
from fillframe.api.deps import CallerDep, DbDep, SettingsDep
from fillframe.contract import MODELS, MeView, ModelCatalog

router = APIRouter(tags=["account"])


@router.get("/v2/me", response_model=MeView, summary="Who this key belongs to, and the account's credits")
async def me(caller: CallerDep, db: DbDep) -> dict:
    async with db.read() as conn:
        credits = None if caller.unlimited else await billing.balance(conn, caller.account_id)
    return {
        "user": {"id": caller.account_id, "name": caller.account_name},
        "team": {
            "id": caller.account_id,
            "name": caller.account_name,
            "credits": credits,
            "unlimited": caller.unlimited,
            "plan": caller.plan,
            "maxConcurrentJobs": caller.max_concurrent_jobs,
        },
        "apiKey": {"id": caller.key_id, "name": caller.key_name, "prefix": caller.key_prefix},
    }


@router.get(
    "/v2/models",
    response_model=ModelCatalog,
    summary="The model catalog with each model's credit cost (public)",
)
async def models(settings: SettingsDep) -> dict:
    return {
        "models": [
            {
                "id": model_id,
                **info,
                "creditCost": settings.model_costs.get(model_id, 0),
                "engine": settings.engine,
            }
            for model_id, info in MODELS.items()
        ]
    }
