"""Teams, users and roles on the wire: /v2/me, /v2/models and /v2/jobs field by field for OWNER,
ADMIN and MEMBER keys and an unlimited team; and nothing of one team visible to another."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.utils.images import encode
from tests.utils.jobs import edit_body, submit_and_wait, wait_job
from tests.utils.servers import LiveServer, own_server
from tests.utils.teams import (
    ADMIN_SERVER,
    ADMIN_TOKEN,
    IMAGE,
    MASK,
    Team,
    admin_client,
    key_client,
    make_team,
)

LIVE_SETTINGS = ADMIN_SERVER
ROLES = ("OWNER", "ADMIN", "MEMBER")


@pytest.fixture(scope="module")
def admin(live: LiveServer) -> Iterator[httpx.Client]:
    with admin_client(live.url) as client:
        yield client


@pytest.fixture(scope="module")
def team_x(admin: httpx.Client) -> Team:
    return make_team(admin, "xteam", credits=100)


@pytest.fixture(scope="module")
def team_y(admin: httpx.Client) -> Team:
    return make_team(admin, "yteam", credits=100)


@pytest.fixture(scope="module")
def unlimited(admin: httpx.Client) -> Team:
    return make_team(admin, "uteam", unlimited=True)


@pytest.fixture(scope="module")
def x_jobs(live: LiveServer, team_x: Team) -> dict[str, str]:
    """One finished job per role of team X: role -> job id."""
    out = {}
    for role in ROLES:
        with key_client(live.url, team_x.keys[role]) as client:
            out[role] = submit_and_wait(client, edit_body(IMAGE, MASK))["id"]
    return out


def check_me(body: dict) -> None:
    """Apiframe's field list: user {id, email, role}, team {id, name, credits, plan, customerId},
    apiKey {id, name, prefix} or null."""
    assert set(body) == {"user", "team", "apiKey"}
    user, team, key = body["user"], body["team"], body["apiKey"]
    assert {"id", "email", "role"} <= set(user)
    assert isinstance(user["id"], str) and isinstance(user["email"], str) and "@" in user["email"]
    assert user["role"] in ROLES
    assert {"id", "name", "credits", "plan", "customerId"} <= set(team)
    assert type(team["credits"]) is int and team["credits"] >= 0
    assert isinstance(team["name"], str) and isinstance(team["plan"], str)
    assert team["customerId"] is None or isinstance(team["customerId"], str)
    assert key is None or ({"id", "name", "prefix"} <= set(key) and key["prefix"].startswith("afk_"))


@pytest.mark.parametrize("role", ROLES)
def test_me_answers_user_team_and_key_for_each_role(live: LiveServer, team_x: Team, role: str) -> None:
    with key_client(live.url, team_x.keys[role]) as client:
        body = client.get("/v2/me").json()
    check_me(body)
    assert body["user"] == {"id": team_x.users[role], "email": f"{role.lower()}@xteam.test", "role": role}
    assert body["team"]["id"] == team_x.id and body["team"]["customerId"] == "cus_xteam"
    assert body["team"]["unlimited"] is False
    assert team_x.keys[role].startswith(body["apiKey"]["prefix"])


def test_an_unlimited_team_answers_an_integer_and_says_unlimited(live: LiveServer, unlimited: Team) -> None:
    with key_client(live.url, unlimited.keys["MEMBER"]) as client:
        body = client.get("/v2/me").json()
        check_me(body)
        assert body["team"]["credits"] == 0 and body["team"]["unlimited"] is True
        job = submit_and_wait(client, edit_body(IMAGE, MASK))
        assert job["status"] == "COMPLETED"
        assert client.get("/v2/me").json()["team"]["credits"] == 0  # not metered


def test_models_carry_apiframes_fields_and_filter_by_modality(live: LiveServer) -> None:
    models = httpx.get(f"{live.url}/v2/models").json()["models"]
    assert [m["id"] for m in models] == ["flux-fill-pro"]
    model = models[0]
    for name, kind in {"id": str, "label": str, "modality": str, "description": str}.items():
        assert isinstance(model[name], kind), name
    assert model["modality"] in ("image", "video", "music")
    assert model["pricingMode"] in ("flat", "per-second", "per-output")
    assert type(model["costMin"]) is int and type(model["costMax"]) is int
    assert model["costMin"] == model["costMax"] == model["creditCost"] == 9
    assert "name" not in model
    image = httpx.get(f"{live.url}/v2/models", params={"modality": "image"}).json()["models"]
    assert [m["id"] for m in image] == ["flux-fill-pro"]
    for other in ("video", "music"):
        assert httpx.get(f"{live.url}/v2/models", params={"modality": other}).json() == {"models": []}
    bad = httpx.get(f"{live.url}/v2/models", params={"modality": "text"})
    assert bad.status_code == 400 and "query.modality" in bad.json()["details"]


def list_ids(client: httpx.Client, **params: str) -> list[str]:
    response = client.get("/v2/jobs", params=params)
    assert response.status_code == 200, response.text
    return [j["id"] for j in response.json()["jobs"]]


@pytest.mark.parametrize("role", ROLES)
def test_scope_user_is_the_callers_own_jobs(live: LiveServer, team_x: Team, x_jobs: dict, role: str) -> None:
    with key_client(live.url, team_x.keys[role]) as client:
        assert list_ids(client) == [x_jobs[role]]
        assert list_ids(client, scope="user") == [x_jobs[role]]


@pytest.mark.parametrize("role", ["OWNER", "ADMIN"])
def test_scope_team_shows_the_teams_jobs_to_owner_and_admin(
    live: LiveServer, team_x: Team, x_jobs: dict, role: str
) -> None:
    with key_client(live.url, team_x.keys[role]) as client:
        assert sorted(list_ids(client, scope="team")) == sorted(x_jobs.values())
        assert list_ids(client, scope="team", search=x_jobs["MEMBER"]) == [x_jobs["MEMBER"]]
        assert client.get(f"/v2/jobs/{x_jobs['MEMBER']}").json()["id"] == x_jobs["MEMBER"]
        ended = client.post(f"/v2/jobs/{x_jobs['MEMBER']}/cancel")
        assert ended.status_code == 409  # found (it has ended), not hidden


def test_scope_team_is_403_for_a_member(live: LiveServer, team_x: Team, x_jobs: dict) -> None:
    with key_client(live.url, team_x.keys["MEMBER"]) as client:
        refused = client.get("/v2/jobs", params={"scope": "team"})
        assert refused.status_code == 403 and "MEMBER" in refused.json()["error"]
        # A teammate's job is not a MEMBER's to see or cancel, by list or by id.
        assert list_ids(client, search=x_jobs["OWNER"]) == []
        assert client.get(f"/v2/jobs/{x_jobs['OWNER']}").status_code == 404
        assert client.post(f"/v2/jobs/{x_jobs['OWNER']}/cancel").status_code == 404
        assert client.get(f"/v2/jobs/{x_jobs['MEMBER']}").status_code == 200
        bad = client.get("/v2/jobs", params={"scope": "everyone"})
        assert bad.status_code == 400 and "query.scope" in bad.json()["details"]


def test_search_and_include_models(live: LiveServer, team_x: Team, x_jobs: dict) -> None:
    with key_client(live.url, team_x.keys["OWNER"]) as client:
        assert list_ids(client, search=x_jobs["OWNER"]) == [x_jobs["OWNER"]]
        assert list_ids(client, search=str(uuid.uuid4())) == []
        bad = client.get("/v2/jobs", params={"search": "not-a-uuid"})
        assert bad.status_code == 400 and "query.search" in bad.json()["details"]
        page = client.get("/v2/jobs", params={"include_models": "true", "scope": "team"}).json()
        assert page["models"] == ["flux-fill-pro"] and set(page) == {
            "jobs",
            "nextCursor",
            "hasMore",
            "models",
        }
        plain = client.get("/v2/jobs", params={"include_models": "false"}).json()
        assert set(plain) == {"jobs", "nextCursor", "hasMore"}
        assert isinstance(plain["hasMore"], bool) and plain["nextCursor"] is None
        assert client.get("/v2/jobs", params={"include_models": "yes"}).status_code == 400


def test_credits_move_on_the_team_whoever_submits(
    live: LiveServer, admin: httpx.Client, team_x: Team, x_jobs: dict
) -> None:
    team = admin.get(f"/admin/v1/teams/{team_x.id}").json()
    assert team["credits"] == 100 - 9 * len(ROLES)
    with key_client(live.url, team_x.keys["MEMBER"]) as client:
        assert client.get("/v2/me").json()["team"]["credits"] == team["credits"]


# --- isolation -----------------------------------------------------------------------------------


def upload(client: httpx.Client) -> dict:
    png = encode(np.full((32, 48, 3), 200, np.uint8), "PNG")
    response = client.post("/v2/uploads", files={"file": ("a.png", png, "image/png")})
    assert response.status_code == 201, response.text
    return response.json()


def test_nothing_of_team_x_is_visible_to_team_y(
    live: LiveServer, team_x: Team, team_y: Team, x_jobs: dict
) -> None:
    x_ids = set(x_jobs.values())
    with key_client(live.url, team_x.keys["OWNER"]) as x, key_client(live.url, team_y.keys["OWNER"]) as y:
        x_upload = upload(x)
        x_job = x.get(f"/v2/jobs/{x_jobs['OWNER']}").json()
        link = x_job["result"]["images"][0]
        for job_id in x_ids:
            assert y.get(f"/v2/jobs/{job_id}").status_code == 404
            assert y.post(f"/v2/jobs/{job_id}/cancel").status_code == 404
            assert list_ids(y, scope="team", search=job_id) == []
        assert not x_ids & set(list_ids(y, scope="team", limit="100"))
        assert y.get("/v2/jobs", params={"include_models": "true", "scope": "team"}).json()["models"] == []
        assert y.get(f"/v2/uploads/{x_upload['id']}").status_code == 404
        stolen = y.post("/v2/images/edit", json=edit_body(x_upload["url"], MASK))
        assert stolen.status_code == 400, stolen.text
        # A result link is a signed capability; altering it in any part refuses it.
        assert httpx.get(link).status_code == 200
        forged = re.sub(r"sig=([0-9a-f])", lambda m: "sig=" + ("0" if m.group(1) != "0" else "1"), link)
        assert httpx.get(forged).status_code == 403
        other_file = re.sub(r"/files/[^.?]+", f"/files/{uuid.uuid4()}", link)
        assert httpx.get(other_file).status_code == 403
        # The same Idempotency-Key in two teams makes two jobs.
        headers = {"Idempotency-Key": f"same-{uuid.uuid4()}"}
        first = x.post("/v2/images/edit", json=edit_body(IMAGE, MASK), headers=headers).json()["jobId"]
        second = y.post("/v2/images/edit", json=edit_body(IMAGE, MASK), headers=headers).json()["jobId"]
        assert first != second and y.get(f"/v2/jobs/{first}").status_code == 404
        wait_job(x, first)
        wait_job(y, second)
        assert y.get("/v2/me").json()["team"]["id"] == team_y.id


# --- the admin API -------------------------------------------------------------------------------


def test_the_admin_api_refuses_api_keys_and_wrong_tokens(live: LiveServer, team_x: Team) -> None:
    url = f"{live.url}/admin/v1/teams"
    owner_key = team_x.keys["OWNER"]
    attempts = [
        {},
        {"X-API-Key": owner_key},
        {"Authorization": f"Bearer {owner_key}"},
        {"Authorization": "Bearer wrong-token-but-long-enough-000"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
    ]
    for headers in attempts:
        refused = httpx.get(url, headers=headers)
        assert refused.status_code == 401, (headers, refused.text)
        assert "teams" not in refused.json()
    assert httpx.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


def test_users_roles_and_removal(live: LiveServer, admin: httpx.Client) -> None:
    team = make_team(admin, "rolesteam", credits=10)
    path = f"/admin/v1/teams/{team.id}/users"
    dup = admin.post(path, json={"email": "member@rolesteam.test", "role": "MEMBER"})
    assert dup.status_code == 409
    assert admin.post(path, json={"email": "nope", "role": "MEMBER"}).status_code == 400
    assert admin.post(path, json={"email": "a@b.test", "role": "BOSS"}).status_code == 400
    # The last OWNER can neither leave nor step down.
    assert admin.delete(f"{path}/{team.owner_id}").status_code == 409
    assert admin.patch(f"{path}/{team.owner_id}", json={"role": "ADMIN"}).status_code == 409
    promoted = admin.patch(f"{path}/{team.users['MEMBER']}", json={"role": "ADMIN"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "ADMIN"
    with key_client(live.url, team.keys["MEMBER"]) as client:
        assert client.get("/v2/me").json()["user"]["role"] == "ADMIN"
        assert client.get("/v2/jobs", params={"scope": "team"}).status_code == 200
        assert admin.delete(f"{path}/{team.users['MEMBER']}").status_code == 204
        assert client.get("/v2/me").status_code == 401  # the removed user's key stopped at once
    users = admin.get(f"/admin/v1/teams/{team.id}").json()["users"]
    assert {u["role"] for u in users} == {"OWNER", "ADMIN"}
    assert admin.get(f"/admin/v1/teams/{uuid.uuid4()}").status_code == 404


def test_keys_disable_limit_and_revoke(live: LiveServer, admin: httpx.Client, team_y: Team) -> None:
    made = admin.post(f"/admin/v1/teams/{team_y.id}/keys", json={"name": "temp", "rateLimitPerMinute": 1})
    assert made.status_code == 201
    key, info = made.json()["key"], made.json()["apiKey"]
    assert key.startswith(info["prefix"]) and info["userId"] == team_y.owner_id and info["status"] == "active"
    listed = admin.get(f"/admin/v1/teams/{team_y.id}/keys").json()
    assert info["id"] in {k["id"] for k in listed} and all("key" not in k for k in listed)
    with key_client(live.url, key) as client:
        assert client.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).status_code == 202
        assert client.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).status_code == 429
        assert (
            admin.patch(f"/admin/v1/keys/{info['id']}", json={"active": False}).json()["status"] == "inactive"
        )
        assert client.get("/v2/me").status_code == 403
        assert admin.patch(f"/admin/v1/keys/{info['id']}", json={"active": True}).status_code == 200
        assert client.get("/v2/me").status_code == 200
        assert admin.post(f"/admin/v1/keys/{info['id']}/revoke").json()["status"] == "revoked"
        assert client.get("/v2/me").status_code == 401
    assert admin.post(f"/admin/v1/keys/{info['id']}/revoke").status_code == 404


def test_credits_team_updates_usage_jobs_and_audit(live: LiveServer, admin: httpx.Client) -> None:
    team = make_team(admin, "billteam", credits=9)
    credits = f"/admin/v1/teams/{team.id}/credits"
    assert admin.post(credits, json={"amount": 18, "reason": "top-up"}).json()["credits"] == 27
    assert admin.post(credits, json={"amount": -7, "reason": "correction"}).json()["credits"] == 20
    short = admin.post(credits, json={"amount": -21, "reason": "too much"})
    assert short.status_code == 409 and short.json()["creditsAvailable"] == 20
    assert admin.post(credits, json={"amount": 0, "reason": "x"}).status_code == 400
    assert admin.post(credits, json={"amount": 5}).status_code == 400  # a reason is required
    patched = admin.patch(
        f"/admin/v1/teams/{team.id}", json={"plan": "pro", "customerId": "cus_new", "maxConcurrentJobs": 2}
    ).json()
    assert (patched["plan"], patched["customerId"], patched["maxConcurrentJobs"]) == ("pro", "cus_new", 2)
    refused = admin.patch(f"/admin/v1/teams/{team.id}", json={"name": None, "plan": None})
    assert refused.status_code == 400 and set(refused.json()["details"]) == {"body.name", "body.plan"}
    with key_client(live.url, team.keys["MEMBER"]) as client:
        me = client.get("/v2/me").json()["team"]
        assert (me["plan"], me["customerId"], me["credits"]) == ("pro", "cus_new", 20)
        done = submit_and_wait(client, edit_body(IMAGE, MASK))
        failed = submit_and_wait(client, edit_body("http://127.0.0.1:9/missing.png", MASK))
    assert failed["status"] == "FAILED" and failed["errorCode"] == "invalid_input"
    days = admin.get(f"/admin/v1/teams/{team.id}/usage", params={"days": 7}).json()["days"]
    assert len(days) == 7
    today = days[-1]
    assert today["jobs"]["COMPLETED"] == 1 and today["jobs"]["FAILED"] == 1
    assert today["creditsCaptured"] == 9 and today["creditsRefunded"] == 9
    assert today["engineSeconds"] > 0
    assert sum(d["jobs"]["COMPLETED"] for d in days[:-1]) == 0
    jobs = admin.get("/admin/v1/jobs", params={"teamId": team.id, "status": "FAILED"}).json()["jobs"]
    assert [(j["id"], j["errorCode"], j["teamId"]) for j in jobs] == [
        (failed["id"], "invalid_input", team.id)
    ]
    everyone = admin.get("/admin/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert {done["id"], failed["id"]} <= {j["id"] for j in everyone}
    trail = admin.get("/admin/v1/audit", params={"teamId": team.id}).json()["entries"]
    actions = [e["action"] for e in trail]
    for action in ("team.create", "user.add", "key.create", "credits.grant", "credits.deduct", "team.update"):
        assert action in actions, action
    assert all(e["actor"].startswith("admin-api") and e["at"].endswith("Z") for e in trail)
    assert "too much" not in str(trail)  # a refused change leaves no trace of having happened
    tagged = admin.post(credits, json={"amount": 1, "reason": "x"}, headers={"X-Admin-Actor": "alice"})
    assert tagged.status_code == 200
    assert (
        admin.get("/admin/v1/audit", params={"teamId": team.id}).json()["entries"][0]["actor"]
        == "admin-api: alice"
    )


def test_the_document_has_an_admin_section(live: LiveServer) -> None:
    doc = httpx.get(f"{live.url}/openapi.json").json()
    assert "AdminToken" in doc["components"]["securitySchemes"]
    assert any(t["name"] == "admin" for t in doc["tags"])
    ops = [op for path, item in doc["paths"].items() if path.startswith("/admin/v1") for op in item.values()]
    assert ops and all(op["tags"] == ["admin"] and op["security"] == [{"AdminToken": []}] for op in ops)


def test_without_a_token_there_is_no_admin_api(tmp_path: Path, backend: str) -> None:
    with own_server(tmp_path / "data", backend) as server:
        for path in ("/admin/v1/teams", "/admin"):
            assert httpx.get(f"{server.url}{path}", headers={"Authorization": "Bearer x"}).status_code == 404
        doc = httpx.get(f"{server.url}/openapi.json").json()
        assert not [p for p in doc["paths"] if p.startswith("/admin")]
        assert "AdminToken" not in doc["components"]["securitySchemes"]


def test_a_teams_rate_applies_to_its_keys_without_their_own(live: LiveServer, admin: httpx.Client) -> None:
    team = make_team(admin, "rateteam", unlimited=True)
    assert admin.patch(f"/admin/v1/teams/{team.id}", json={"rateLimitPerMinute": 1}).status_code == 200
    with key_client(live.url, team.keys["MEMBER"]) as client:
        assert client.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).status_code == 202
        limited = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK))
        assert limited.status_code == 429 and limited.headers["X-RateLimit-Limit"] == "1"
    cleared = admin.patch(f"/admin/v1/teams/{team.id}", json={"rateLimitPerMinute": None, "customerId": None})
    assert cleared.json()["rateLimitPerMinute"] is None and cleared.json()["customerId"] is None
