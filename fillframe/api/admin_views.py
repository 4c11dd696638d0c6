"""What the admin API takes and answers: request models (unknown fields refused, every number
bounded) and the views of teams, users and keys."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fillframe.accounts import key_status
from fillframe.contract import JobStatus, JobView, Role
from fillframe.jobs.store import iso


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeamIn(_In):
    name: str = Field(min_length=1, max_length=200)
    ownerEmail: str | None = Field(default=None, max_length=320, description="Default: a placeholder.")
    plan: str = Field(default="self-hosted", min_length=1, max_length=40)
    customerId: str | None = Field(default=None, max_length=200)
    unlimited: bool = False
    credits: int = Field(default=0, ge=0, le=10**12, description="A first grant.")
    maxConcurrentJobs: int = Field(default=4, ge=1, le=10_000)
    rateLimitPerMinute: int | None = Field(default=None, ge=0, le=1_000_000)


class TeamPatch(_In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    plan: str | None = Field(default=None, min_length=1, max_length=40)
    customerId: str | None = Field(default=None, max_length=200)
    unlimited: bool | None = None
    maxConcurrentJobs: int | None = Field(default=None, ge=1, le=10_000)
    rateLimitPerMinute: int | None = Field(default=None, ge=0, le=1_000_000, description="0: unlimited.")


class TeamOut(BaseModel):
    id: str
    name: str
    credits: int
    unlimited: bool
    plan: str
    customerId: str | None
    maxConcurrentJobs: int
    rateLimitPerMinute: int | None
    createdAt: str


class UserIn(_In):
    email: str = Field(min_length=3, max_length=320)
    role: Role = "MEMBER"


class RolePatch(_In):
    role: Role


class UserOut(BaseModel):
    id: str
    teamId: str
    email: str
    role: Role
    createdAt: str


class KeyIn(_In):
    name: str = Field(min_length=1, max_length=200)
    userId: str | None = Field(default=None, description="Default: the team's first OWNER.")
    rateLimitPerMinute: int | None = Field(default=None, ge=0, le=1_000_000)


class KeyPatch(_In):
    active: bool | None = Field(default=None, description="false: the key answers 403 until enabled.")
    rateLimitPerMinute: int | None = Field(default=None, ge=0, le=1_000_000, description="0: unlimited.")


class KeyOut(BaseModel):
    id: str
    teamId: str
    userId: str | None
    name: str
    prefix: str
    status: str = Field(description="active | inactive | revoked")
    rateLimitPerMinute: int | None
    createdAt: str


class KeyCreated(BaseModel):
    key: str = Field(description="The API key itself: shown this once, stored only as a hash.")
    apiKey: KeyOut


class TeamDetail(TeamOut):
    users: list[UserOut]
    keys: list[KeyOut]


class TeamList(BaseModel):
    teams: list[TeamOut]


class CreditsIn(_In):
    amount: int = Field(description="> 0 grants, < 0 deducts (never below a zero balance); not 0.")
    reason: str = Field(min_length=1, max_length=200, description="Kept on the ledger row.")


class Balance(BaseModel):
    teamId: str
    credits: int


class UsageDay(BaseModel):
    date: str
    jobs: dict[JobStatus, int]
    creditsCaptured: int
    creditsRefunded: int
    engineSeconds: float


class Usage(BaseModel):
    teamId: str
    days: list[UsageDay]


class AdminJob(JobView):
    teamId: str
    userId: str | None
    apiKeyId: str


class AdminJobList(BaseModel):
    jobs: list[AdminJob]
    nextCursor: str | None
    hasMore: bool


class AuditEntry(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    teamId: str | None
    targetId: str | None
    detail: dict[str, Any] | None


class AuditList(BaseModel):
    entries: list[AuditEntry]


def team_view(row: dict[str, Any]) -> dict[str, Any]:
    """A team as the admin API and the console show it."""
    return {
        "id": row["id"],
        "name": row["name"],
        "credits": int(row["credits"]),
        "unlimited": row["unlimited"],
        "plan": row["plan"],
        "customerId": row["customer_id"],
        "maxConcurrentJobs": row["max_concurrent_jobs"],
        "rateLimitPerMinute": row["rate_limit_per_minute"],
        "createdAt": iso(row["created_at"]),
    }


def user_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "teamId": row["account_id"],
        "email": row["email"],
        "role": row["role"],
        "createdAt": iso(row["created_at"]),
    }


def key_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "teamId": row["account_id"],
        "userId": row["user_id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "status": key_status(row),
        "rateLimitPerMinute": row["rate_limit_per_minute"],
        "createdAt": iso(row["created_at"]),
    }
