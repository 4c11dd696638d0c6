"""Data URIs are stored as the account's uploads at submit: the job row keeps the upload URL and
no image bytes, `input` shows that URL, refusals are 400s naming the field, and no account can
read another's. Against a live `fillframe serve`, reading the rows from its real database."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import numpy as np
import pytest

from fillframe.api.data_uris import cut_data_uris
from tests.utils.backends import query
from tests.utils.images import encode
from tests.utils.jobs import edit_body, wait_job
from tests.utils.servers import LiveServer, create_key

LIVE_SETTINGS = {"max_image_bytes": str(1024 * 1024)}

RGB = np.full((32, 32, 3), 90, np.uint8)
MASK = np.pad(np.full((8, 8), 255, np.uint8), 12)
# Noise compresses badly: a PNG past the 64 KB from which a data URI is cut out of the body.
NOISE = np.random.default_rng(7).integers(0, 255, (200, 200, 3), dtype=np.uint8)


def uri(data: bytes, mime: str = "png") -> str:
    return f"data:image/{mime};base64," + base64.b64encode(data).decode()


def post(client: httpx.Client, body: dict, **kwargs: object) -> httpx.Response:
    return client.post("/v2/images/edit", json=body, **kwargs)  # type: ignore[arg-type]


def job_row(live: LiveServer, job_id: str) -> str:
    """The job's stored request as the database holds it (text on SQLite, JSON on PostgreSQL)."""
    [(request,)] = query(live.env, "SELECT request FROM jobs WHERE id = :j", j=job_id)
    return request if isinstance(request, str) else json.dumps(request)


def upload_rows(live: LiveServer, api_key: str) -> list[tuple[str, int]]:
    """(id, byte size) of the live uploads of the account that owns `api_key`."""
    key_hash = hashlib.sha256(api_key.encode()).hexdigest()
    return query(
        live.env,
        "SELECT f.id, f.byte_size FROM files f JOIN api_keys k ON k.account_id = f.account_id "
        "WHERE k.key_hash = :h AND f.kind = 'upload' AND f.deleted = :no ORDER BY f.created_at",
        h=key_hash,
        no=False,
    )


@pytest.fixture
def other(live: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=live.url, headers={"X-API-Key": create_key(live.env, "other")}, timeout=30)


def test_data_uris_become_uploads_and_the_row_holds_no_bytes(
    live: LiveServer, client: httpx.Client, api_key: str
) -> None:
    image, mask = encode(RGB), encode(MASK)
    before = len(upload_rows(live, api_key))
    response = post(client, edit_body(uri(image), uri(mask)))
    assert response.status_code == 202, response.text
    job_id = response.json()["jobId"]
    stored = job_row(live, job_id)
    assert "base64" not in stored and len(stored) < 1000
    params = client.get(f"/v2/jobs/{job_id}").json()["input"]["fluxFillParams"]
    assert params["image"].startswith(f"{live.url}/v2/uploads/")
    assert params["image"] in stored and params["mask"] in stored
    # The uploads are the account's own, byte for byte what was sent.
    assert client.get(params["image"]).content == image
    assert client.get(params["mask"]).content == mask
    assert [size for _, size in upload_rows(live, api_key)[before:]] == [len(image), len(mask)]
    # The worker reads them as it reads any upload.
    assert wait_job(client, job_id)["status"] == "COMPLETED"


def test_a_long_data_uri_with_json_escapes_is_cut_out_and_stored(
    live: LiveServer, client: httpx.Client
) -> None:
    """Past 64 KB the URI is cut out of the raw body; escaped slashes and wrapped lines (as some
    JSON encoders and base64 tools write them) still give the exact bytes."""
    image = encode(NOISE)
    assert 64 * 1024 < len(image) < 1024 * 1024
    text = base64.b64encode(image).decode()
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    body = json.dumps(edit_body("data:image/png;base64," + wrapped, mode="outpaint")).replace("/", "\\/")
    response = client.post("/v2/images/edit", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    job = client.get(f"/v2/jobs/{response.json()['jobId']}").json()
    assert client.get(job["input"]["fluxFillParams"]["image"]).content == image
    listed = client.get("/v2/jobs", params={"limit": 100}).json()["jobs"]
    sources = [j["input"]["fluxFillParams"]["image"] for j in listed]
    assert job["input"]["fluxFillParams"]["image"] in sources
    assert not [s for s in sources if s.startswith("data:")]


@pytest.mark.parametrize("long", [False, True], ids=["parsed", "cut-out"])
@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (lambda n: "@" * n, "not valid base64"),
        (lambda n: base64.b64encode(b"hello, world\n" * (n // 13)).decode(), "not a JPEG, PNG or WebP"),
        (lambda n: base64.b64encode(b"GIF89a" + bytes(n)).decode(), "looks like GIF"),
    ],
    ids=["base64", "text", "gif"],
)
def test_bad_data_uris_are_refused_at_submit(
    live: LiveServer, client: httpx.Client, api_key: str, payload, fragment: str, long: bool
) -> None:
    before = upload_rows(live, api_key)
    body = edit_body("data:image/png;base64," + payload(100_000 if long else 100), uri(encode(MASK)))
    response = post(client, body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["details"]["fluxFillParams.image"][0]
    assert upload_rows(live, api_key) == before  # the mask, stored first, was discarded


def test_too_large_a_data_uri(live: LiveServer, client: httpx.Client) -> None:
    response = post(client, edit_body(uri(b"\x89PNG\r\n\x1a\n" + bytes(1024 * 1024)), uri(encode(MASK))))
    assert response.status_code == 400
    assert "exceeds 1 MB" in response.json()["error"]


def test_refused_and_replayed_submits_keep_no_upload(live: LiveServer, client: httpx.Client) -> None:
    broke = create_key(live.env, "broke", credits=0)
    with httpx.Client(base_url=live.url, headers={"X-API-Key": broke}, timeout=30) as poor:
        assert post(poor, edit_body(uri(encode(RGB)), uri(encode(MASK)))).status_code == 402
        assert upload_rows(live, broke) == []
    rich = create_key(live.env, "idempotent")
    with httpx.Client(base_url=live.url, headers={"X-API-Key": rich}, timeout=30) as repeat:
        body = edit_body(uri(encode(NOISE)), uri(encode(MASK)))
        first, again = (post(repeat, body, headers={"Idempotency-Key": "k1"}) for _ in range(2))
        assert first.json()["jobId"] == again.json()["jobId"]
        assert len(upload_rows(live, rich)) == 2  # the first submit's image and mask only


def test_another_accounts_data_uri_cannot_be_read(
    live: LiveServer, client: httpx.Client, other: httpx.Client
) -> None:
    response = post(client, edit_body(uri(encode(NOISE)), uri(encode(MASK))))
    job_id = response.json()["jobId"]
    image_url = client.get(f"/v2/jobs/{job_id}").json()["input"]["fluxFillParams"]["image"]
    assert other.get(image_url).status_code == 404
    assert other.get(f"/v2/jobs/{job_id}").status_code == 404
    refused = post(other, edit_body(image_url, uri(encode(MASK))))
    assert refused.status_code == 400
    assert "does not exist for this account" in refused.json()["error"]
    # Nor by naming the placeholder the body is parsed with: it is read as the text it is.
    literal = "data:image/png;base64," + base64.b64encode(encode(NOISE)).decode()
    placeholder = "data:image/png;base64,#" + hashlib.sha256(literal.encode()).hexdigest()
    forged = post(other, edit_body(placeholder, uri(encode(MASK))))
    assert forged.status_code == 400
    assert "not valid base64" in forged.json()["error"]


def test_an_expired_data_uri_upload_is_gone(live: LiveServer, client: httpx.Client) -> None:
    response = post(client, edit_body(uri(encode(RGB)), uri(encode(MASK))))
    image_url = client.get(f"/v2/jobs/{response.json()['jobId']}").json()["input"]["fluxFillParams"]["image"]
    wait_job(client, response.json()["jobId"])
    upload_id = image_url.rsplit("/", 1)[1]
    query(live.env, "UPDATE files SET expires_at = created_at WHERE id = :i", i=upload_id)
    gone = client.get(image_url)
    assert gone.status_code == 404 and "expired" in gone.json()["error"]
    again = post(client, edit_body(image_url, uri(encode(MASK))))
    assert again.status_code == 400
    assert "expired" in again.json()["details"]["fluxFillParams.image"][0]


def test_cut_data_uris_finds_string_values_only() -> None:
    long = "data:image/png;base64," + "QUJD" * 20_000
    body = json.dumps(
        {"prompt": 'say \\"data:image/png;base64,AAAA', "fluxFillParams": {"image": long, "mask": long}},
    ).encode()
    small, cuts = cut_data_uris(body)
    [(placeholder, cut)] = cuts.items()
    assert placeholder == "data:image/png;base64,#" + hashlib.sha256(long.encode()).hexdigest()
    parsed = json.loads(small)
    assert parsed["fluxFillParams"] == {"image": placeholder, "mask": placeholder}
    assert parsed["prompt"] == 'say \\"data:image/png;base64,AAAA'  # inside a string: untouched
    assert bytes(cut.value()) == long.encode()
    assert cut_data_uris(b'{"image": "data:image/png;base64,QUJD"}') == (
        b'{"image": "data:image/png;base64,QUJD"}',
        {},
    )  # short: parsed as usual
    escaped = json.dumps({"image": long}).replace("/", "\\/").encode()
    [cut] = cut_data_uris(escaped)[1].values()
    assert cut.value() == long


def test_long_data_uris_in_the_wrong_place_or_badly_escaped(client: httpx.Client) -> None:
    long = "data:image/png;base64," + base64.b64encode(encode(NOISE)).decode()
    misplaced = {**edit_body(uri(encode(RGB)), uri(encode(MASK))), "prompt": long}
    response = post(client, misplaced)
    assert response.status_code == 400
    assert "may only be fluxFillParams.image or .mask" in response.json()["error"]
    body = json.dumps(edit_body(long, mode="outpaint")).replace("base64,", "base64,\\x", 1)
    response = client.post("/v2/images/edit", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "not a valid JSON string" in response.json()["details"]["fluxFillParams.image"][0]
