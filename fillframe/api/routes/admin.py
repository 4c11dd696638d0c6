"""The operator's admin API under /admin/v1 and its console page at /admin.

Mounted only when FILLFRAME_ADMIN_TOKEN is set (there is no default token). Authorised by
`Authorization: Bearer <token>`; an `afk_` API key never opens it. Every change goes through the
service functions the CLI uses, which write the audit row in the same transaction.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fillframe import accounts, audit, billing, teams, usage
from fillframe.api.admin_views import (
    AdminJobList,
    AuditList,
    Balance,
    CreditsIn,
    KeyCreated,
    KeyIn,
    KeyOut,
    KeyPatch,
    RolePatch,
    TeamDetail,
    TeamIn,
    TeamList,
    TeamOut,
    TeamPatch,
    Usage,
    UserIn,
    UserOut,
    key_view,
    team_view,
    user_view,
)
from fillframe.api.deps import DbDep, LinkerDep
from fillframe.api.errors import ApiError
from fillframe.api.routes.web import SECURITY_HEADERS, WEB_DIR
from fillframe.contract import ErrorBody, JobStatus
from fillframe.jobs.store import decode_cursor, iso, job_view, list_jobs

TAG = {
    "name": "admin",
    "description": "The operator's API (beyond Apiframe): teams, users, keys, credits, usage and "
    "every team's jobs. Send `Authorization: Bearer <FILLFRAME_ADMIN_TOKEN>`; API keys are "
    "refused. Off (404) unless the server has an admin token. Every change is audited.",
}
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The operator token (FILLFRAME_ADMIN_TOKEN), never an `afk_` API key.",
)
_REFUSED = {
    "model": ErrorBody,
    "description": "The operator token is missing or wrong (API keys are refused).",
}
_NOT_FOUND = {"model": ErrorBody, "description": "No such team, user or key."}
_CONFLICT = {
    "model": ErrorBody,
    "description": "The change would break a rule (last OWNER, balance below 0, ...).",
}


async def require_operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    # Not length-checked here: a refusal must not come before the token check; cut below.
    x_admin_actor: Annotated[
        str | None,
        Header(description="Optional: who is acting (recorded in the audit trail, 100 characters)."),
    ] = None,
) -> str:
    """The audit trail's `actor` for this request, once the token matched."""
    expected = request.app.state.settings.admin_token.get_secret_value()
    given = credentials.credentials if credentials else None
    if given is None:
        if request.headers.get("x-api-key"):
            raise ApiError(
                401, "API keys do not open the admin API: send Authorization: Bearer <operator token>."
            )
        raise ApiError(
            401, "The admin API needs the operator token: Authorization: Bearer <FILLFRAME_ADMIN_TOKEN>."
        )
    if given.startswith(accounts.KEY_PREFIX):
        raise ApiError(401, "API keys do not open the admin API: send the operator token instead.")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "Invalid operator token.")
    return "admin-api" + (f": {x_admin_actor[:100]}" if x_admin_actor else "")


ActorDep = Annotated[str, Depends(require_operator)]
TeamId = Annotated[str, Path(description="The team's id.")]
router = APIRouter(
    prefix="/admin/v1", tags=["admin"], responses={401: _REFUSED}, dependencies=[Depends(require_operator)]
)
console = APIRouter(tags=["admin"])


@contextlib.contextmanager
def service_errors() -> Iterator[None]:
    """The service's refusals as the contract's 4xx answers."""
    try:
        yield
    except teams.NotFound as exc:
        raise ApiError(404, str(exc)) from None
    except teams.Conflict as exc:
        raise ApiError(409, str(exc)) from None
    except billing.InsufficientCredits as exc:
        raise ApiError(
            409,
            f"The team has {exc.available} credits: a deduction cannot take the balance below zero.",
            extra={"creditsAvailable": exc.available},
        ) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


_CLEARABLE = {"customerId", "rateLimitPerMinute"}


def _columns(patch: TeamPatch) -> dict[str, Any]:
    """The fields the request named, by column. An explicit null clears customerId or the rate;
    the other fields always have a value."""
    given = patch.model_dump(exclude_unset=True)
    nulls = sorted(k for k, v in given.items() if v is None and k not in _CLEARABLE)
    if nulls:
        details = {f"body.{k}": ["must not be null"] for k in nulls}
        raise ApiError(400, f"Invalid request: {', '.join(nulls)} must not be null.", details=details)
    return {teams.TEAM_FIELDS[k]: v for k, v in given.items()}


# --- teams ---------------------------------------------------------------------------------------


@router.post("/teams", status_code=201, response_model=TeamDetail, summary="Create a team with its OWNER")
async def create_team(body: TeamIn, db: DbDep, actor: ActorDep) -> dict[str, Any]:
    with service_errors():
        row = await teams.create_team(
            db,
            name=body.name,
            owner_email=body.ownerEmail,
            plan=body.plan,
            customer_id=body.customerId,
            unlimited=body.unlimited,
            credits=body.credits,
            max_concurrent_jobs=body.maxConcurrentJobs,
            rate=body.rateLimitPerMinute,
            actor=actor,
        )
    return await _detail(db, row["id"])


@router.get("/teams", response_model=TeamList, summary="List teams with their balances")
async def list_teams(
    db: DbDep,
    customerId: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    rows = await teams.list_teams(db, customer_id=customerId, limit=limit, offset=offset)
    return {"teams": [team_view(r) for r in rows]}


async def _detail(db: DbDep, team_id: str) -> dict[str, Any]:
    with service_errors():
        team = team_view(await teams.get_team(db, team_id))
        team["users"] = [user_view(u) for u in await teams.list_users(db, team_id)]
    team["keys"] = [key_view(k) for k in await accounts.list_keys(db, team_id)]
    return team


@router.get("/teams/{team_id}", response_model=TeamDetail, responses={404: _NOT_FOUND}, summary="Get a team")
async def get_team(team_id: TeamId, db: DbDep) -> dict[str, Any]:
    return await _detail(db, team_id)


@router.patch(
    "/teams/{team_id}",
    response_model=TeamOut,
    responses={404: _NOT_FOUND},
    summary="Change a team's plan, customerId, limits, name or unlimited flag",
)
async def update_team(team_id: TeamId, body: TeamPatch, db: DbDep, actor: ActorDep) -> dict[str, Any]:
    with service_errors():
        return team_view(await teams.update_team(db, team_id, _columns(body), actor=actor))


# --- users ---------------------------------------------------------------------------------------


@router.post(
    "/teams/{team_id}/users",
    status_code=201,
    response_model=UserOut,
    responses={404: _NOT_FOUND, 409: _CONFLICT},
    summary="Add a user to a team",
)
async def add_user(team_id: TeamId, body: UserIn, db: DbDep, actor: ActorDep) -> dict[str, Any]:
    with service_errors():
        return user_view(await teams.add_user(db, team_id, body.email, body.role, actor=actor))


@router.patch(
    "/teams/{team_id}/users/{user_id}",
    response_model=UserOut,
    responses={404: _NOT_FOUND, 409: _CONFLICT},
    summary="Change a user's role",
)
async def set_role(
    team_id: TeamId, user_id: str, body: RolePatch, db: DbDep, actor: ActorDep
) -> dict[str, Any]:
    with service_errors():
        return user_view(await teams.set_role(db, team_id, user_id, body.role, actor=actor))


@router.delete(
    "/teams/{team_id}/users/{user_id}",
    status_code=204,
    response_class=Response,
    responses={404: _NOT_FOUND, 409: _CONFLICT},
    summary="Remove a user (their keys are revoked at once)",
)
async def remove_user(team_id: TeamId, user_id: str, db: DbDep, actor: ActorDep) -> Response:
    with service_errors():
        await teams.remove_user(db, team_id, user_id, actor=actor)
    return Response(status_code=204)


# --- keys ----------------------------------------------------------------------------------------


@router.post(
    "/teams/{team_id}/keys",
    status_code=201,
    response_model=KeyCreated,
    responses={404: _NOT_FOUND},
    summary="Create an API key (the key is in this answer only)",
)
async def create_key(team_id: TeamId, body: KeyIn, db: DbDep, actor: ActorDep) -> dict[str, Any]:
    with service_errors():
        key, row = await accounts.add_key(
            db, team_id, body.name, user_id=body.userId, rate=body.rateLimitPerMinute, actor=actor
        )
    return {"key": key, "apiKey": key_view({**row, "revoked_at": None})}


@router.get(
    "/teams/{team_id}/keys", response_model=list[KeyOut], responses={404: _NOT_FOUND}, summary="List keys"
)
async def list_keys(team_id: TeamId, db: DbDep) -> list[dict[str, Any]]:
    with service_errors():
        await teams.get_team(db, team_id)
    return [key_view(k) for k in await accounts.list_keys(db, team_id)]


@router.patch(
    "/keys/{key_id}",
    response_model=KeyOut,
    responses={404: _NOT_FOUND},
    summary="Disable or enable a key, or set its submit rate",
)
async def update_key(key_id: str, body: KeyPatch, db: DbDep, actor: ActorDep) -> dict[str, Any]:
    row = await accounts.update_key(db, key_id, active=body.active, rate=body.rateLimitPerMinute, actor=actor)
    if row is None:
        raise ApiError(404, f"No unrevoked key with id {key_id[:64]!r}.")
    return key_view(row)


@router.post(
    "/keys/{key_id}/revoke",
    response_model=KeyOut,
    responses={404: _NOT_FOUND},
    summary="Revoke a key: it stops working at once, for good",
)
async def revoke_key(key_id: str, db: DbDep, actor: ActorDep) -> dict[str, Any]:
    row = await accounts.revoke_key(db, key_id, actor=actor)
    if row is None:
        raise ApiError(404, f"No unrevoked key with id {key_id[:64]!r}.")
    return key_view(row)


# --- credits, usage, jobs, audit -----------------------------------------------------------------


@router.post(
    "/teams/{team_id}/credits",
    response_model=Balance,
    responses={404: _NOT_FOUND, 409: _CONFLICT},
    summary="Grant or deduct credits with a reason (one ledger row)",
)
async def adjust_credits(team_id: TeamId, body: CreditsIn, db: DbDep, actor: ActorDep) -> dict[str, Any]:
    with service_errors():
        balance = await teams.adjust_credits(db, team_id, body.amount, body.reason, actor=actor)
    return {"teamId": team_id, "credits": balance}


@router.get(
    "/teams/{team_id}/usage",
    response_model=Usage,
    responses={404: _NOT_FOUND},
    summary="Usage per UTC day: jobs by status, credits captured and refunded, engine seconds",
)
async def team_usage(
    team_id: TeamId, db: DbDep, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> dict[str, Any]:
    with service_errors():
        await teams.get_team(db, team_id)
    return {"teamId": team_id, "days": await usage.per_day(db, team_id, days)}


@router.get("/jobs", response_model=AdminJobList, summary="Jobs of any team (or of one), newest first")
async def admin_jobs(
    db: DbDep,
    linker: LinkerDep,
    teamId: str | None = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        raise ApiError(400, f"Invalid request: {exc}.", details={"cursor": [str(exc)]}) from None
    async with db.read() as conn:
        rows, next_cursor = await list_jobs(conn, teamId, limit=limit, status=status, cursor=after)
    views = [
        {
            **await job_view(r, linker),
            "teamId": r["account_id"],
            "userId": r["user_id"],
            "apiKeyId": r["api_key_id"],
        }
        for r in rows
    ]
    return {"jobs": views, "nextCursor": next_cursor, "hasMore": next_cursor is not None}


@router.get("/audit", response_model=AuditList, summary="The audit trail, newest first")
async def audit_trail(
    db: DbDep, teamId: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    rows = await audit.entries(db, team_id=teamId, limit=limit)
    return {
        "entries": [
            {
                "id": r["id"],
                "at": iso(r["at"]),
                "actor": r["actor"],
                "action": r["action"],
                "teamId": r["team_id"],
                "targetId": r["target_id"],
                "detail": r["detail"],
            }
            for r in rows
        ]
    }


# --- the console page ----------------------------------------------------------------------------


@console.get(
    "/admin",
    response_class=Response,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The console."}
    },
    summary="The operator's console (static; the operator token is entered in the browser)",
)
async def console_page() -> FileResponse:
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return FileResponse(WEB_DIR / "admin.html", media_type="text/html", headers=headers)
