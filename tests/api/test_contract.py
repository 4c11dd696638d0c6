"""The wire contract, field by field, against a live server (CONTRACT.md)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.utils.jobs import data_uri, edit_body, wait_job
from tests.utils.servers import LiveServer, create_key

LIVE_SETTINGS = {"engine": "tests.utils.engines:SleepEngine", "test_sleep": "0.05"}

IMAGE = data_uri(np.full((32, 48, 3), 90, np.uint8))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), ((12, 12), (20, 20))))


def submit(client: httpx.Client, body: dict) -> httpx.Response:
    return client.post("/v2/images/edit", json=body)


def assert_400(response: httpx.Response, path: str, fragment: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"].startswith("Invalid request")
    assert path in body["details"], body
    assert any(fragment in m for m in body["details"][path]), body
    assert "x-request-id" in response.headers


def test_seed_shaped_request_is_accepted_with_defaults(client: httpx.Client) -> None:
    response = submit(client, edit_body(IMAGE, MASK, outpaint="Zoom out 1.5x", mode="inpaint"))
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"jobId", "status"} and body["status"] == "QUEUED"
    job = client.get(f"/v2/jobs/{body['jobId']}").json()
    params = job["input"]["fluxFillParams"]
    assert params["steps"] == 50
    assert params["guidance"] == 3.0
    assert params["safety_tolerance"] == 2
    assert params["output_format"] == "jpg"
    assert params["prompt_upsampling"] is False
    assert params["mode"] == "inpaint"
    assert job["input"]["prompt"] == "fill it"
    assert job["creditCost"] == 9
    assert job["model"] == "flux-fill-pro"
    assert set(job) >= {
        "id", "status", "model", "progress", "result", "error", "errorCode", "creditCost",
        "webhookStatus", "createdAt", "startedAt", "completedAt", "expired", "input",
    }  # fmt: skip
    assert job["createdAt"].endswith("Z")
    done = wait_job(client, job["id"])
    assert done["status"] == "COMPLETED" and done["progress"] == 100
    assert done["result"]["images"][0].startswith(str(client.base_url))


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("steps", 0, ">= 1"),
        ("steps", 51, "<= 50"),
        ("steps", 2.5, "integer"),
        ("steps", "20", "integer"),
        ("guidance", 1.9, ">= 2"),
        ("guidance", 5.1, "<= 5"),
        ("guidance", "3", "number"),
        ("safety_tolerance", 0, ">= 1"),
        ("safety_tolerance", 7, "<= 6"),
        ("output_format", "webp", "one of"),
        ("mode", "erase", "one of"),
        ("outpaint", "Zoom out 3x", "one of"),
        ("seed", -1, ">= 0"),
        ("seed", 2**32, "<="),
        ("seed", 1.5, "integer"),
        ("prompt_upsampling", "yes", "true or false"),
        ("prompt", "", "at least 1"),
        ("prompt", "x" * 2001, "at most 2000"),
        ("image", "ftp://example.com/a.png", "http(s) URL"),
        ("image", "data:text/plain;base64,aGk=", "http(s) URL"),
        ("mask", "not a url", "http(s) URL"),
        ("colour", "red", "not a known field"),
    ],
)
def test_param_rules(client: httpx.Client, field: str, value: object, fragment: str) -> None:
    body = edit_body(IMAGE, MASK)
    body["fluxFillParams"][field] = value
    assert_400(submit(client, body), f"fluxFillParams.{field}", fragment)


@pytest.mark.parametrize(
    ("field", "value"),
    [("steps", 1), ("steps", 50), ("guidance", 2), ("guidance", 5.0), ("guidance", 3.7),
     ("safety_tolerance", 1), ("safety_tolerance", 6), ("seed", 0), ("seed", 2**32 - 1),
     ("output_format", "png"), ("prompt_upsampling", True)],
)  # fmt: skip
def test_param_bounds_accepted(client: httpx.Client, field: str, value: object) -> None:
    body = edit_body(IMAGE, MASK)
    body["fluxFillParams"][field] = value
    response = submit(client, body)
    assert response.status_code == 202, response.text
    job = client.get(f"/v2/jobs/{response.json()['jobId']}").json()
    assert job["input"]["fluxFillParams"][field] == value


def test_unknown_top_level_key(client: httpx.Client) -> None:
    body = edit_body(IMAGE, MASK)
    body["callback"] = "https://example.com"
    assert_400(submit(client, body), "callback", "not a known field")


def test_model_is_required_and_known(client: httpx.Client) -> None:
    body = edit_body(IMAGE, MASK)
    del body["model"]
    assert_400(submit(client, body), "model", "required")
    body["model"] = "flux-pro"
    response = submit(client, body)
    assert_400(response, "model", "flux-fill-pro")
    assert "flux-fill-pro" in response.json()["error"]


def test_params_object_and_image_required(client: httpx.Client) -> None:
    assert_400(submit(client, {"model": "flux-fill-pro", "prompt": "x"}), "fluxFillParams", "required")
    body = edit_body(IMAGE, MASK)
    del body["fluxFillParams"]["image"]
    assert_400(submit(client, body), "fluxFillParams.image", "required")
    assert_400(submit(client, {**edit_body(IMAGE, MASK), "fluxFillParams": []}), "fluxFillParams", "object")


def test_prompt_top_level_or_in_params(client: httpx.Client) -> None:
    body = edit_body(IMAGE, MASK)
    del body["prompt"]
    response = submit(client, body)
    assert response.status_code == 400
    assert "prompt is required" in response.json()["error"]
    body["fluxFillParams"]["prompt"] = "a cat"
    assert submit(client, body).status_code == 202
    body = edit_body(IMAGE, MASK, prompt="   ")
    assert_400(submit(client, body), "prompt", "blank")


def test_mask_required_for_inpaint_ignored_for_outpaint(client: httpx.Client) -> None:
    response = submit(client, edit_body(IMAGE))
    assert response.status_code == 400
    assert "mask is required" in response.json()["error"]
    assert submit(client, edit_body(IMAGE, mode="outpaint")).status_code == 202
    response = submit(client, edit_body(IMAGE, mode="outpaint", outpaint="Make square"))
    job = client.get(f"/v2/jobs/{response.json()['jobId']}").json()
    assert job["input"]["fluxFillParams"]["outpaint"] == "Make square"


def test_every_outpaint_preset_accepted(client: httpx.Client) -> None:
    for preset in ("Zoom out 1.5x", "Zoom out 2x", "Make square", "Left outpaint",
                   "Right outpaint", "Top outpaint", "Bottom outpaint"):  # fmt: skip
        assert submit(client, edit_body(IMAGE, mode="outpaint", outpaint=preset)).status_code == 202


def test_webhook_fields_stored(client: httpx.Client) -> None:
    for key in ("webhookUrl", "webhook_url"):
        body = {**edit_body(IMAGE, MASK), key: "https://example.com/hook", "webhookEvents": ["progress"]}
        response = submit(client, body)
        assert response.status_code == 202, response.text
        job = client.get(f"/v2/jobs/{response.json()['jobId']}").json()
        assert job["input"][key] == "https://example.com/hook"
        assert job["input"]["webhookEvents"] == ["progress"]
    body = {**edit_body(IMAGE, MASK), "webhookUrl": "ftp://x.example/h"}
    assert_400(submit(client, body), "webhookUrl", "http(s)")
    assert_400(submit(client, {**edit_body(IMAGE, MASK), "webhookEvents": []}), "webhookEvents", "at least 1")
    body = {**edit_body(IMAGE, MASK), "webhookEvents": ["done"]}
    assert_400(submit(client, body), "webhookEvents.0", "one of")
    body = {**edit_body(IMAGE, MASK), "webhookUrl": "https://a.example/", "webhook_url": "https://b.example/"}
    assert "differ" in submit(client, body).json()["error"]


def test_not_json_and_wrong_types(client: httpx.Client) -> None:
    response = client.post(
        "/v2/images/edit", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
    assert submit(client, [1, 2]).status_code == 400  # type: ignore[arg-type]


def test_body_too_large(live: LiveServer, client: httpx.Client) -> None:
    big = "data:image/png;base64," + "A" * (41 * 1024 * 1024)
    response = submit(client, edit_body(big, MASK))
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_auth_errors(live: LiveServer, api_key: str) -> None:
    with httpx.Client(base_url=live.url) as anon:
        response = anon.get("/v2/me")
        assert (response.status_code, response.json()) == (401, {"error": "API key is required"})
        response = anon.get("/v2/me", headers={"X-API-Key": "afk_nope"})
        assert (response.status_code, response.json()) == (401, {"error": "Invalid API key"})
        assert anon.get("/v2/me", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200
        assert anon.get("/v2/models").status_code == 200
        assert anon.get("/healthz").status_code == 200
        assert anon.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).status_code == 401


def test_revoked_and_inactive_keys(live: LiveServer) -> None:
    from tests.utils.servers import cli

    key = create_key(live.env, "short-lived")
    rows = cli(live.env, "keys", "list").stdout
    key_id = next(line.split()[0] for line in rows.splitlines() if key[:10] in line)
    headers = {"X-API-Key": key}
    assert httpx.get(f"{live.url}/v2/me", headers=headers).status_code == 200
    cli(live.env, "keys", "disable", key_id)
    response = httpx.get(f"{live.url}/v2/me", headers=headers)
    assert (response.status_code, response.json()) == (403, {"error": "API key is inactive"})
    cli(live.env, "keys", "enable", key_id)
    assert httpx.get(f"{live.url}/v2/me", headers=headers).status_code == 200
    cli(live.env, "keys", "revoke", key_id)
    response = httpx.get(f"{live.url}/v2/me", headers=headers)
    assert (response.status_code, response.json()) == (401, {"error": "Invalid API key"})
    assert cli(live.env, "keys", "revoke", key_id, check=False).returncode != 0


def test_other_accounts_job_is_404(live: LiveServer, client: httpx.Client) -> None:
    job_id = submit(client, edit_body(IMAGE, MASK)).json()["jobId"]
    other = create_key(live.env, "someone-else")
    with httpx.Client(base_url=live.url, headers={"X-API-Key": other}) as them:
        response = them.get(f"/v2/jobs/{job_id}")
        assert (response.status_code, response.json()) == (404, {"error": "Job not found."})
        assert them.post(f"/v2/jobs/{job_id}/cancel").status_code == 404
        assert job_id not in {j["id"] for j in them.get("/v2/jobs").json()["jobs"]}
    missing = client.get("/v2/jobs/00000000-0000-4000-8000-000000000000")
    assert missing.json() == response.json() and missing.status_code == 404
    bad = client.get("/v2/jobs/not-a-uuid")
    assert bad.status_code == 400 and "UUID" in bad.json()["error"]


def test_list_jobs_cursor_and_filters(live: LiveServer) -> None:
    key = create_key(live.env, "lister")
    with httpx.Client(base_url=live.url, headers={"X-API-Key": key}) as c:
        ids = [submit(c, edit_body(IMAGE, MASK)).json()["jobId"] for _ in range(5)]
        seen: list[str] = []
        cursor = None
        while True:
            page = c.get("/v2/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [j["id"] for j in page["jobs"]]
            assert page["hasMore"] == (page["nextCursor"] is not None)
            if not page["hasMore"]:
                break
            cursor = page["nextCursor"]
        assert seen == ids[::-1]
        for job_id in ids:
            wait_job(c, job_id)
        done = c.get("/v2/jobs", params={"status": "COMPLETED", "limit": 100}).json()["jobs"]
        assert {j["id"] for j in done} == set(ids)
        assert c.get("/v2/jobs", params={"status": "QUEUED"}).json()["jobs"] == []
        assert c.get("/v2/jobs", params={"model": "other"}).json()["jobs"] == []
        assert c.get("/v2/jobs", params={"limit": 0}).status_code == 400
        assert c.get("/v2/jobs", params={"limit": 101}).status_code == 400
        assert c.get("/v2/jobs", params={"status": "DONE"}).status_code == 400
        assert c.get("/v2/jobs", params={"cursor": "garbage!"}).status_code == 400


def test_me_models_health_docs(live: LiveServer, client: httpx.Client) -> None:
    me = client.get("/v2/me").json()
    assert set(me) == {"user", "team", "apiKey"}
    assert {"id", "name", "credits", "plan", "maxConcurrentJobs"} <= set(me["team"])
    assert me["apiKey"]["prefix"].startswith("afk_")
    models = httpx.get(f"{live.url}/v2/models").json()["models"]
    assert [(m["id"], m["creditCost"]) for m in models] == [("flux-fill-pro", 9)]
    assert httpx.get(f"{live.url}/readyz").json()["database"] == "up"
    spec = httpx.get(f"{live.url}/openapi.json").json()
    assert "/v2/images/edit" in spec["paths"] and "/v2/jobs/{job_id}" in spec["paths"]
    assert httpx.get(f"{live.url}/docs").status_code == 200


def test_request_id_echoed(client: httpx.Client) -> None:
    response = client.get("/v2/me", headers={"X-Request-Id": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    assert len(client.get("/v2/me").headers["x-request-id"]) == 32
