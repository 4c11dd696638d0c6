"""Typed results, one per response shape; each keeps the whole JSON object in `raw`.

Field names are the contract's in snake case; fields the contract marks optional are None when
a server leaves them out, so an older or newer server still parses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fillframe_client.contract import TERMINAL


def _images(result: Any) -> list[str]:
    return list(result.get("images") or []) if isinstance(result, Mapping) else []


@dataclass(frozen=True)
class Job:
    """A job as `GET /v2/jobs/{id}` shows it."""

    id: str
    status: str
    progress: int
    images: list[str]
    error: str | None
    error_code: str | None
    seed: int | None
    created_at: str | None
    completed_at: str | None
    raw: dict[str, Any] = field(repr=False)
    model: str | None = None
    credit_cost: int | None = None
    webhook_status: str | None = None
    started_at: str | None = None
    expired: bool = False

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        return cls(
            id=data["id"],
            status=data["status"],
            progress=int(data.get("progress") or 0),
            images=_images(data.get("result")),
            error=data.get("error"),
            error_code=data.get("errorCode"),
            seed=data.get("seed"),
            created_at=data.get("createdAt"),
            completed_at=data.get("completedAt"),
            raw=dict(data),
            model=data.get("model"),
            credit_cost=data.get("creditCost"),
            webhook_status=data.get("webhookStatus"),
            started_at=data.get("startedAt"),
            expired=bool(data.get("expired")),
        )


@dataclass(frozen=True)
class JobList:
    """One page of `GET /v2/jobs`, newest first; pass `next_cursor` to get the next page."""

    jobs: list[Job]
    next_cursor: str | None
    has_more: bool
    models: list[str] | None = None  # the model ids present, with `include_models=True`

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobList:
        return cls(
            [Job.from_json(j) for j in data["jobs"]],
            data.get("nextCursor"),
            bool(data.get("hasMore")),
            data.get("models"),
        )


@dataclass(frozen=True)
class Submission:
    """The answer to a submit: the job's id and status, and the Idempotency-Key that was sent."""

    job_id: str
    status: str
    idempotency_key: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any], idempotency_key: str) -> Submission:
        # A `Prefer: wait` answer is the job itself, which says `id` where a submit says `jobId`.
        return cls(data.get("jobId") or data["id"], data["status"], idempotency_key)


@dataclass(frozen=True)
class Upload:
    """An uploaded image; `url` can be used as `image` or `mask` by the same account."""

    id: str
    url: str
    content_type: str
    byte_size: int
    expires_at: str | None
    kind: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Upload:
        return cls(
            data["id"],
            data["url"],
            data["contentType"],
            data["byteSize"],
            data.get("expiresAt"),
            data.get("kind"),
        )


@dataclass(frozen=True)
class User:
    id: str
    name: str | None = None
    email: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class Team:
    id: str
    name: str | None
    credits: int | None  # the balance (Fillframe before teams: None for an unlimited account)
    unlimited: bool
    plan: str | None
    max_concurrent_jobs: int | None = None
    customer_id: str | None = None


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str | None
    prefix: str


@dataclass(frozen=True)
class Me:
    """`GET /v2/me`: who the key belongs to, the team's credits and plan, and the key itself."""

    user: User
    team: Team
    api_key: KeyInfo | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Me:
        user, team, key = data["user"], data["team"], data.get("apiKey")
        credits = team.get("credits")
        return cls(
            user=User(user["id"], user.get("name"), user.get("email"), user.get("role")),
            team=Team(
                id=team["id"],
                name=team.get("name"),
                credits=None if credits is None else int(credits),
                unlimited=bool(team.get("unlimited")),
                plan=team.get("plan"),
                max_concurrent_jobs=team.get("maxConcurrentJobs"),
                customer_id=team.get("customerId"),
            ),
            api_key=KeyInfo(key["id"], key.get("name"), key["prefix"]) if key else None,
            raw=dict(data),
        )


@dataclass(frozen=True)
class Model:
    """One entry of `GET /v2/models`: a model, where to send it, and what it costs in credits.

    Apiframe's catalog says `label` and `costMin`/`costMax` (Fillframe before teams said `name`
    and `creditCost`): `name` and `credit_cost` read either.
    """

    id: str
    name: str | None
    modality: str
    description: str | None
    credit_cost: int | None
    raw: dict[str, Any] = field(repr=False)
    provider: str | None = None
    endpoint: str | None = None
    params_key: str | None = None
    engine: str | None = None
    pricing_mode: str | None = None
    label: str | None = None
    cost_min: int | None = None
    cost_max: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Model:
        cost = data.get("creditCost")
        return cls(
            id=data["id"],
            name=data.get("name") or data.get("label"),
            modality=data["modality"],
            description=data.get("description"),
            credit_cost=cost if cost is not None else data.get("costMin"),
            raw=dict(data),
            provider=data.get("provider"),
            endpoint=data.get("endpoint"),
            params_key=data.get("paramsKey"),
            engine=data.get("engine"),
            pricing_mode=data.get("pricingMode"),
            label=data.get("label"),
            cost_min=data.get("costMin"),
            cost_max=data.get("costMax"),
        )


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook's payload (`completed`, `failed` or `progress`)."""

    event: str
    job_id: str
    status: str
    model: str | None
    progress: int | None
    images: list[str]
    error: str | None
    error_code: str | None
    credit_cost: int | None
    completed_at: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WebhookEvent:
        return cls(
            event=data["event"],
            job_id=data["jobId"],
            status=data["status"],
            model=data.get("model"),
            progress=data.get("progress"),
            images=_images(data.get("result")),
            error=data.get("error"),
            error_code=data.get("errorCode"),
            credit_cost=data.get("creditCost"),
            completed_at=data.get("completedAt"),
            raw=dict(data),
        )
