"""POST /v2/images/edit: validate, guard the URLs, hold credits, queue the job."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fillframe.api.deps import CallerDep, DbDep, SettingsDep
from fillframe.api.errors import ApiError
from fillframe.billing import InsufficientCredits
from fillframe.contract import EditRequest, ErrorBody, SubmitResponse, source_kind
from fillframe.imaging.fetch import check_url
from fillframe.jobs import service

router = APIRouter(tags=["jobs"])


def guard_urls(req: EditRequest, allow_private: bool) -> None:
    """Refuse at submit what the fetch guard would refuse later, when the URL alone shows it."""
    params = req.fluxFillParams
    candidates = {"fluxFillParams.image": params.image, "webhookUrl": req.effective_webhook_url}
    if params.mode == "inpaint":
        candidates["fluxFillParams.mask"] = params.mask
    details: dict[str, list[str]] = {}
    for path, value in candidates.items():
        if not value or source_kind(value) != "url":
            continue
        try:
            check_url(value, allow_private)
        except ValueError as exc:
            details[path] = [str(exc)]
    if details:
        path, messages = next(iter(details.items()))
        raise ApiError(400, f"Invalid request: {path} {messages[0]}", details=details)


@router.post(
    "/v2/images/edit",
    status_code=202,
    response_model=SubmitResponse,
    responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 402: {"model": ErrorBody}},
    summary="Submit an inpaint or outpaint job",
)
async def submit_edit(
    req: EditRequest, request: Request, caller: CallerDep, db: DbDep, settings: SettingsDep
) -> JSONResponse:
    guard_urls(req, settings.allow_private_urls)
    cost = settings.model_costs.get(req.model, 0)
    try:
        row = await service.submit(db, caller, req, cost=cost, max_attempts=settings.max_attempts)
    except InsufficientCredits as exc:
        raise ApiError(
            402,
            "Insufficient credits",
            extra={"creditsRequired": exc.required, "creditsAvailable": exc.available},
        ) from None
    request.app.state.notifier.notify()
    return JSONResponse({"jobId": row["id"], "status": row["status"]}, status_code=202)
