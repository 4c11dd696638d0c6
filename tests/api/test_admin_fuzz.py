"""Schemathesis against the admin section of the server's own document: with the operator token
no input answers 5xx or anything undeclared; without it (or with an API key) everything is 401."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import schemathesis

from fillframe.api.app import create_app
from fillframe.settings import Settings
from tests.api.test_schemathesis import CHECKS
from tests.utils.servers import LiveServer
from tests.utils.teams import ADMIN_SERVER, ADMIN_TOKEN

LIVE_SETTINGS = ADMIN_SERVER


def admin_document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data_dir:
        doc = create_app(Settings(data_dir=data_dir, admin_token=ADMIN_TOKEN)).openapi()
    doc["paths"] = {p: item for p, item in doc["paths"].items() if p.startswith("/admin/v1")}
    return doc


schema = schemathesis.openapi.from_dict(
    admin_document(),
    config=schemathesis.Config.from_dict(
        {
            "seed": int(os.environ.get("FILLFRAME_TEST_FUZZ_SEED", "20261201")),
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            "generation": {
                "mode": "all",
                "max-examples": int(os.environ.get("FILLFRAME_TEST_FUZZ_EXAMPLES", "30")),
                "database": "none",
                "with-security-parameters": False,
            },
        }
    ),
)


@schema.parametrize()
def test_with_the_operator_token(case: schemathesis.Case, live: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    case.call_and_validate(base_url=live.url, headers=headers, checks=CHECKS, timeout=30)


@schema.parametrize()
def test_without_it(case: schemathesis.Case, live: LiveServer, api_key: str) -> None:
    response = case.call_and_validate(
        base_url=live.url, headers={"X-API-Key": api_key}, checks=CHECKS, timeout=30
    )
    if case.method.lower() == case.operation.method.lower():
        allowed = {401, 400, 413} if "requestBody" in case.operation.definition.raw else {401}
        assert response.status_code in allowed, (response.status_code, response.text)
