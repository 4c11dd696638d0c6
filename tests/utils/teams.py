"""Building teams through the admin API, as an operator's backend would."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import numpy as np

from tests.utils.jobs import data_uri

ADMIN_TOKEN = "operator-token-for-tests-0123456789"
# A live server with the admin API on, and a quick engine.
ADMIN_SERVER = {"engine": "tests.utils.engines:SleepEngine", "test_sleep": "0.02", "admin_token": ADMIN_TOKEN}
# A small inpaint job's inputs.
IMAGE = data_uri(np.full((32, 48, 3), 90, np.uint8))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), ((12, 12), (20, 20))))


def admin_client(url: str, token: str = ADMIN_TOKEN) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def key_client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30)


@dataclass
class Team:
    id: str
    owner_id: str
    keys: dict[str, str] = field(default_factory=dict)  # role -> afk_ key
    users: dict[str, str] = field(default_factory=dict)  # role -> user id


def make_team(admin: httpx.Client, name: str, *, credits: int = 0, unlimited: bool = False) -> Team:
    """A team with one OWNER, one ADMIN and one MEMBER, each holding a key."""
    body = {"name": name, "ownerEmail": f"owner@{name}.test", "credits": credits, "unlimited": unlimited}
    created = admin.post("/admin/v1/teams", json={**body, "customerId": f"cus_{name}"})
    assert created.status_code == 201, created.text
    team = Team(created.json()["id"], created.json()["users"][0]["id"])
    team.users["OWNER"] = team.owner_id
    for role in ("ADMIN", "MEMBER"):
        user = admin.post(
            f"/admin/v1/teams/{team.id}/users", json={"email": f"{role.lower()}@{name}.test", "role": role}
        )
        assert user.status_code == 201, user.text
        team.users[role] = user.json()["id"]
    for role, user_id in team.users.items():
        made = admin.post(
            f"/admin/v1/teams/{team.id}/keys", json={"name": f"{name}-{role}", "userId": user_id}
        )
        assert made.status_code == 201, made.text
        team.keys[role] = made.json()["key"]
    return team
