"""The team side of the job routes: `scope` (whose jobs a list shows), `search` (one job id),
`include_models` (which models the scope's jobs use) and which jobs a key may open by id, kept
apart from the routes themselves."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import Query

from fillframe.accounts import Caller
from fillframe.api.errors import ApiError
from fillframe.db import Connection, jobs

Scope = Literal["user", "team"]
ScopeQuery = Annotated[
    Scope,
    Query(description="`user`: the caller's own jobs; `team`: every job of the team (OWNER and ADMIN only)."),
]
SearchQuery = Annotated[str | None, Query(description="A job id (UUID): only that job, if it is in scope.")]
IncludeModelsQuery = Annotated[
    Literal["true", "false"],
    Query(description="`true`: the answer also carries `models`, the model ids present."),
]


def scope_user(caller: Caller, scope: Scope) -> str | None:
    """The user whose jobs the list shows, or None for the whole team."""
    if scope == "user":
        return caller.user_id
    if not caller.sees_team:
        raise ApiError(
            403,
            "scope=team lists the whole team's jobs and needs an OWNER or ADMIN key; this key is a MEMBER's.",
        )
    return None


def own_only(caller: Caller) -> str | None:
    """Whose jobs a key may open by id: a MEMBER only its own, OWNER and ADMIN the team's."""
    return None if caller.sees_team else caller.user_id


def search_id(search: str | None) -> str | None:
    if search is None:
        return None
    try:
        return str(uuid.UUID(search))
    except ValueError:
        problem = "must be a job id (a UUID)"
        details = {"query.search": [problem]}
        raise ApiError(400, f"Invalid request: search {problem}.", details=details) from None


async def models_present(conn: Connection, account_id: str, user_id: str | None) -> list[str]:
    """The distinct model ids among the scope's jobs (whatever the other filters), sorted."""
    query = sa.select(jobs.c.model).distinct().where(jobs.c.account_id == account_id)
    if user_id is not None:
        query = query.where(jobs.c.user_id == user_id)
    return sorted((await conn.execute(query)).scalars())
