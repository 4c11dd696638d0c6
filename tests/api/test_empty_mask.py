"""An all-black mask repaints nothing, so nobody is charged for the image coming back unchanged:
refused at submit when the mask is inline or an upload (the server has its bytes), and a FAILED
`invalid_input` job with its credits refunded when the mask is a URL fetched later."""

from __future__ import annotations

import httpx
import numpy as np

from tests.utils.images import encode
from tests.utils.jobs import data_uri, edit_body, submit_and_wait
from tests.utils.servers import ImageServer, LiveServer, create_key

LIVE_SETTINGS = {"engine": "tests.utils.engines:SleepEngine", "test_sleep": "0.05"}

RGB = np.full((40, 40, 3), 120, np.uint8)
BLACK = np.zeros((40, 40), np.uint8)
ALL_BLACK = "all black, so nothing would be repainted"


def metered(live: LiveServer, credits: int) -> httpx.Client:
    key = create_key(live.env, "empty-mask", credits=credits)
    return httpx.Client(base_url=live.url, headers={"X-API-Key": key}, timeout=30)


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    [message] = response.json()["details"]["fluxFillParams.mask"]
    assert ALL_BLACK in message


def test_an_inline_all_black_mask_is_refused_at_submit(live: LiveServer) -> None:
    with metered(live, 9) as client:
        assert_refused(client.post("/v2/images/edit", json=edit_body(data_uri(RGB), data_uri(BLACK))))
        assert client.get("/v2/me").json()["team"]["credits"] == 9
        assert client.get("/v2/jobs").json()["jobs"] == []


def test_an_uploaded_all_black_mask_is_refused_at_submit(live: LiveServer) -> None:
    with metered(live, 9) as client:
        mask_url = client.post("/v2/uploads", files={"file": ("m.png", encode(BLACK))}).json()["url"]
        assert_refused(client.post("/v2/images/edit", json=edit_body(data_uri(RGB), mask_url)))
        assert client.get("/v2/me").json()["team"]["credits"] == 9


def test_an_all_black_mask_at_a_url_fails_the_job_and_refunds(
    live: LiveServer, image_server: ImageServer
) -> None:
    mask_url = image_server.add("black-mask.png", encode(BLACK))
    with metered(live, 9) as client:
        job = submit_and_wait(client, edit_body(data_uri(RGB), mask_url))
        assert (job["status"], job["errorCode"]) == ("FAILED", "invalid_input")
        assert ALL_BLACK in job["error"]
        assert client.get("/v2/me").json()["team"]["credits"] == 9


def test_one_white_pixel_is_something_to_fill(live: LiveServer) -> None:
    mask = BLACK.copy()
    mask[20, 20] = 255
    with metered(live, 9) as client:
        job = submit_and_wait(client, edit_body(data_uri(RGB), data_uri(mask)))
        assert job["status"] == "COMPLETED"
        assert client.get("/v2/me").json()["team"]["credits"] == 0
