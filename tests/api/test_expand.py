"""`fluxFillParams.expand` (free expansion) on the wire: ranges, conflicts, the stored input, the
OpenAPI document, and a real outpaint through the classic engine."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from fillframe.imaging.canvas import Expansion, plan_expand
from fillframe.settings import Settings
from tests.utils.images import decode, photo
from tests.utils.jobs import data_uri, edit_body, submit_and_wait

IMAGE = data_uri(photo("chelsea", (120, 80)))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), ((36, 36), (56, 56))))


def expand_body(expand: object, **params: object) -> dict:
    return edit_body(IMAGE, mode="outpaint", expand=expand, **params)


def details(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("Invalid request")
    return response.json()["details"]


@pytest.mark.parametrize(
    ("expand", "path", "fragment"),
    [
        ({"left": -1}, "fluxFillParams.expand.left", ">= 0"),
        ({"right": 2049}, "fluxFillParams.expand.right", "<= 2048"),
        ({"top": 1.5}, "fluxFillParams.expand.top", "integer"),
        ({"bottom": "64"}, "fluxFillParams.expand.bottom", "integer"),
        ({"middle": 64}, "fluxFillParams.expand.middle", "not a known field"),
        ({}, "fluxFillParams.expand", "at least one side"),
        ({"left": 0, "right": 0, "top": 0, "bottom": 0}, "fluxFillParams.expand", "at least one side"),
        ([64, 64], "fluxFillParams.expand", "object"),
    ],
)
def test_expand_ranges(client: httpx.Client, expand: object, path: str, fragment: str) -> None:
    found = details(client.post("/v2/images/edit", json=expand_body(expand)))
    assert path in found, found
    assert any(fragment in m for m in found[path]), found


def test_expand_conflicts_are_named(client: httpx.Client) -> None:
    both = expand_body({"left": 64}, outpaint="Make square")
    found = details(client.post("/v2/images/edit", json=both))
    assert any("either outpaint" in m and "not both" in m for m in found["fluxFillParams"]), found
    inpaint = edit_body(IMAGE, MASK, mode="inpaint", expand={"left": 64})
    found = details(client.post("/v2/images/edit", json=inpaint))
    assert any("expand needs mode 'outpaint'" in m for m in found["fluxFillParams"]), found


@pytest.mark.parametrize("sides", [{"left": 2048}, {"right": 1, "bottom": 2048}, {"top": 100, "left": 7}])
def test_expand_bounds_accepted(client: httpx.Client, sides: dict[str, int]) -> None:
    response = client.post("/v2/images/edit", json=expand_body(sides))
    assert response.status_code == 202, response.text


def test_expand_outpaints_to_the_planned_canvas(client: httpx.Client) -> None:
    sides = {"left": 200, "top": 40}
    job = submit_and_wait(client, expand_body(sides, output_format="png", seed=4))
    assert job["status"] == "COMPLETED", job
    stored = job["input"]["fluxFillParams"]
    assert stored["expand"] == {"left": 200, "right": 0, "top": 40, "bottom": 0}
    assert "outpaint" not in stored  # the unused default preset is not shown as if it applied
    out = decode(client.get(job["result"]["images"][0]).content)
    plan = plan_expand(120, 80, Expansion(left=200, top=40), Settings().limits.max_output_pixels)
    assert out.shape == (plan.height, plan.width, 3)
    assert (plan.width, plan.height) == (320, 128)
    # The round-up to 128 goes to the top, the side that asked: the image stays flush bottom.
    assert (plan.x, plan.y) == (200, 48) and plan.x + 120 == plan.width and plan.y + 80 == plan.height
    placed = out[plan.y : plan.y + 80, plan.x : plan.x + 120]
    assert np.array_equal(placed, photo("chelsea", (120, 80)))


def test_expand_is_in_the_openapi_document(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    params = schemas["FluxFillParams"]["properties"]["expand"]
    assert "outpaint" in params["description"]
    expand = schemas["Expand"]
    assert set(expand["properties"]) == {"left", "right", "top", "bottom"}
    assert expand["properties"]["left"]["maximum"] == 2048 and expand["additionalProperties"] is False
