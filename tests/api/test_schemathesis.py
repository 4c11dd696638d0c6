"""Schemathesis against the server's own OpenAPI document, over real HTTP.

1. Fuzz every operation, once with a valid key and once with none: whatever it generates (valid
   and invalid data), the server must not answer 5xx, and every answer's status code, content type,
   headers and body must be ones the document declares for that operation.
2. Random data rarely reaches the answers that need state (a finished job, an upload, a spent
   balance, a disabled key), so those are provoked on purpose and checked against the document too.
3. The inputs that answered 500 before (found by the fuzzing and by probes beside it) stay fixed.

A deeper run: FILLFRAME_TEST_FUZZ_EXAMPLES=500 FILLFRAME_TEST_FUZZ_SEED=7 pytest this file.
"""

from __future__ import annotations

import base64
import os
import tempfile
import uuid
from typing import Any

import httpx
import schemathesis
from schemathesis.checks import CheckFunction

from fillframe.api.app import create_app
from fillframe.settings import Settings
from tests.utils.images import box_mask, encode, photo
from tests.utils.jobs import data_uri, edit_body
from tests.utils.servers import LiveServer, cli, create_key

MAX_UPLOAD = 256 * 1024
MAX_BODY = 1024 * 1024
LIVE_SETTINGS = {
    "engine": "tests.utils.engines:SleepEngine",
    "test_sleep": "0.05",
    "max_upload_bytes": str(MAX_UPLOAD),
    "max_body_bytes": str(MAX_BODY),
}

CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]


def app_document() -> dict[str, Any]:
    """The document the app factory serves (building it opens no database)."""
    with tempfile.TemporaryDirectory() as data_dir:
        return create_app(Settings(data_dir=data_dir)).openapi()


# Schemathesis makes one test per operation at collection time, before any server runs; the
# first test below proves the live server serves this very document.
DOCUMENT = app_document()
schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {
            # The same cases every run, so that a failure here reproduces.
            "seed": int(os.environ.get("FILLFRAME_TEST_FUZZ_SEED", "20240611")),
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            "generation": {
                "mode": "all",
                "max-examples": int(os.environ.get("FILLFRAME_TEST_FUZZ_EXAMPLES", "50")),
                "database": "none",
                # The key is sent (or not) by each test, never generated.
                "with-security-parameters": False,
            },
        }
    ),
)


def authenticated(case: schemathesis.Case) -> bool:
    return bool(case.operation.definition.raw.get("security"))


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in DOCUMENT["paths"].items() for method, op in item.items()]


def component(op: dict[str, Any], status: str) -> dict[str, Any]:
    ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
    return DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_the_document_declares_what_the_contract_says() -> None:
    assert all("422" not in op["responses"] for _, _, op in operations())
    api_key = DOCUMENT["components"]["securitySchemes"]["ApiKey"]
    assert (api_key["type"], api_key["in"], api_key["name"]) == ("apiKey", "header", "X-API-Key")
    secured = {(method, path) for method, path, op in operations() if op.get("security")}
    assert secured == {
        ("post", "/v2/images/edit"),
        ("get", "/v2/jobs/{job_id}"),
        ("get", "/v2/jobs"),
        ("post", "/v2/jobs/{job_id}/cancel"),
        ("post", "/v2/uploads"),
        ("get", "/v2/uploads/{upload_id}"),
        ("get", "/v2/me"),
    }
    for method, path in secured:
        op = DOCUMENT["paths"][path][method]
        assert {"401", "403", "503"} <= set(op["responses"]), (method, path)
        assert component(op, "401")["required"] == ["error"]

    submit = DOCUMENT["paths"]["/v2/images/edit"]["post"]
    assert {p["name"] for p in submit["parameters"]} == {"idempotency-key", "prefer"}
    assert {"200", "202", "400", "402", "409", "413", "429"} <= set(submit["responses"])
    accepted = DOCUMENT["components"]["schemas"]["SubmitResponse"]
    assert set(accepted["properties"]) == set(accepted["required"]) == {"jobId", "status"}
    assert {"creditsRequired", "creditsAvailable"} <= set(component(submit, "402")["required"])
    assert set(submit["responses"]["429"]["headers"]) >= {"Retry-After", "X-RateLimit-Remaining"}
    job = DOCUMENT["components"]["schemas"]["JobView"]
    assert set(job["required"]) >= {
        "id", "status", "model", "progress", "result", "error", "errorCode", "creditCost",
        "webhookStatus", "createdAt", "startedAt", "completedAt", "expired", "input",
    }  # fmt: skip
    cancel = DOCUMENT["paths"]["/v2/jobs/{job_id}/cancel"]["post"]
    assert "status" in component(cancel, "409")["required"]
    assert "413" in DOCUMENT["paths"]["/v2/uploads"]["post"]["responses"]

    images = {"image/jpeg", "image/png", "image/webp"}
    for path in ("/v2/files/{name}", "/v2/uploads/{upload_id}"):
        assert set(DOCUMENT["paths"][path]["get"]["responses"]["200"]["content"]) == images
    assert set(DOCUMENT["paths"]["/"]["get"]["responses"]["200"]["content"]) == {"text/html"}


def test_the_live_server_serves_the_fuzzed_document(live: LiveServer) -> None:
    assert httpx.get(f"{live.url}/openapi.json").json() == DOCUMENT


@schema.parametrize()
def test_with_a_valid_key(case: schemathesis.Case, live: LiveServer, api_key: str) -> None:
    case.call_and_validate(base_url=live.url, headers={"X-API-Key": api_key}, checks=CHECKS, timeout=30)


@schema.parametrize()
def test_without_a_key(case: schemathesis.Case, live: LiveServer) -> None:
    response = case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=30)
    # The coverage phase also sends other methods to each path (405 expected); skip those here.
    if authenticated(case) and case.method.lower() == case.operation.method.lower():
        # Only a body that cannot be read at all is refused before the key is looked at.
        allowed = {401, 400, 413} if "requestBody" in case.operation.definition.raw else {401}
        assert response.status_code in allowed, (response.status_code, response.text)


class Caller:
    """Sends hand-made cases for one key and checks each answer against the document."""

    def __init__(self, live: LiveServer, key: str | None) -> None:
        self.live = live
        self.headers = {"X-API-Key": key} if key else {}

    def call(
        self, method: str, path: str, expected: int, headers: dict[str, str] | None = None, **case: Any
    ) -> schemathesis.Response:
        made = schema[path][method].Case(headers={**self.headers, **(headers or {})}, **case)
        response = made.call_and_validate(base_url=self.live.url, checks=CHECKS, timeout=60)
        assert response.status_code == expected, (method, path, response.status_code, response.text)
        return response


def key_id(live: LiveServer, key: str) -> str:
    rows = cli(live.env, "keys", "list").stdout.splitlines()
    return next(line.split()[0] for line in rows if key[:10] in line)


def test_a_jobs_life_matches_the_document(live: LiveServer, api_key: str) -> None:
    caller = Caller(live, api_key)
    rgb = photo("chelsea", (96, 64))
    png = encode(rgb, "PNG")
    upload = caller.call("POST", "/v2/uploads", 201, body={"file": png}).json()
    downloaded = caller.call(
        "GET", "/v2/uploads/{upload_id}", 200, path_parameters={"upload_id": upload["id"]}
    )
    assert downloaded.content == png and downloaded.headers["content-type"] == ["image/png"]

    body = edit_body(upload["url"], data_uri(box_mask(64, 96)), output_format="jpg")
    job = caller.call("POST", "/v2/images/edit", 200, body=body, headers={"Prefer": "wait=30"}).json()
    assert job["status"] == "COMPLETED"
    got = caller.call("GET", "/v2/jobs/{job_id}", 200, path_parameters={"job_id": job["id"]}).json()
    assert got["id"] == job["id"]
    listed = caller.call("GET", "/v2/jobs", 200, query={"limit": 1}).json()
    assert listed["jobs"][0]["id"] == job["id"]

    link = httpx.URL(job["result"]["images"][0])
    name = link.path.rsplit("/", 1)[1]
    query = dict(link.params)
    image = caller.call("GET", "/v2/files/{name}", 200, path_parameters={"name": name}, query=query)
    assert image.headers["content-type"] == ["image/jpeg"]
    tampered = {**query, "sig": "0" * len(query["sig"])}
    caller.call("GET", "/v2/files/{name}", 403, path_parameters={"name": name}, query=tampered)

    refused = caller.call("POST", "/v2/jobs/{job_id}/cancel", 409, path_parameters={"job_id": job["id"]})
    assert refused.json()["status"] == "COMPLETED"
    caller.call("GET", "/v2/jobs/{job_id}", 400, path_parameters={"job_id": "not-a-uuid"})


def test_refusals_match_the_document(live: LiveServer, api_key: str) -> None:
    body = edit_body(data_uri(photo("coffee", (48, 32))), data_uri(box_mask(32, 48)))
    caller = Caller(live, api_key)
    caller.call("POST", "/v2/images/edit", 202, body=body, headers={"Idempotency-Key": "schema-409"})
    other = {**body, "prompt": "something else"}
    caller.call("POST", "/v2/images/edit", 409, body=other, headers={"Idempotency-Key": "schema-409"})

    # Past the upload limit (the route refuses) and past the body limit (the middleware does).
    photo_png = encode(photo("astronaut"), "PNG")
    assert MAX_UPLOAD < len(photo_png) < MAX_BODY
    caller.call("POST", "/v2/uploads", 413, body={"file": photo_png})
    huge = data_uri(photo("rocket", (2048, 1024)))
    assert len(huge) > MAX_BODY
    caller.call("POST", "/v2/uploads", 413, body={"file": huge.encode()})
    caller.call("POST", "/v2/images/edit", 413, body=edit_body(huge, huge))

    broke = create_key(live.env, "schema-broke", credits=0)
    short = Caller(live, broke).call("POST", "/v2/images/edit", 402, body=body).json()
    assert short["creditsRequired"] == 9 and short["creditsAvailable"] == 0

    limited = create_key(live.env, "schema-limited")
    cli(live.env, "keys", "limits", key_id(live, limited), "--rate", "1")
    Caller(live, limited).call("POST", "/v2/images/edit", 202, body=body)
    slow_down = Caller(live, limited).call("POST", "/v2/images/edit", 429, body=body)
    assert int(slow_down.headers["retry-after"][0]) >= 1

    disabled = create_key(live.env, "schema-disabled")
    cli(live.env, "keys", "disable", key_id(live, disabled))
    Caller(live, disabled).call("GET", "/v2/me", 403)
    Caller(live, "afk_not-a-key").call("GET", "/v2/me", 401)
    Caller(live, None).call("POST", "/v2/uploads", 401, body={"file": encode(photo("camera"), "PNG")})


def cursor_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def test_inputs_that_answered_500_now_answer_4xx(live: LiveServer, api_key: str) -> None:
    caller = Caller(live, api_key)
    # hmac.compare_digest refuses non-ASCII text: a signature like this was a TypeError.
    link = {"path_parameters": {"name": "x.jpg"}, "query": {"expires": 1, "sig": "\u00f1"}}
    caller.call("GET", "/v2/files/{name}", 403, **link)
    # PostgreSQL refuses a NUL in text with an error: these reached the database before.
    caller.call("GET", "/v2/uploads/{upload_id}", 404, path_parameters={"upload_id": "a\x00b"})
    assert caller.call("GET", "/v2/jobs", 200, query={"model": "a\x00b"}).json()["jobs"] == []
    crafted = [
        "2024-01-01T00:00:00+00:00|a\x00b",
        f"0001-01-01T00:00:00+14:00|{uuid.uuid4()}",  # overflowed on the way to UTC
        f"9999-12-31T23:59:59-14:00|{uuid.uuid4()}",
    ]
    for raw in crafted:
        refused = caller.call("GET", "/v2/jobs", 400, query={"cursor": cursor_of(raw)}).json()
        assert "cursor" in refused["details"]
