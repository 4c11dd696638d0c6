"""Credits, idempotency, limits, cancel, sync wait and uploads, proven under concurrency."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

from fillframe.db import files, idempotency_keys, jobs
from tests.utils.backends import query, sync_url
from tests.utils.images import encode, photo
from tests.utils.jobs import data_uri, edit_body, wait_job
from tests.utils.poll import until
from tests.utils.servers import LiveServer, cli, create_key, own_server

LIVE_SETTINGS = {
    "engine": "tests.utils.engines:SleepEngine",
    "test_sleep": "1.0",
    "worker_concurrency": "4",
    "max_upload_bytes": str(2 * 1024 * 1024),
    "poll_seconds": "0.2",
}
IMAGE = data_uri(np.full((32, 32, 3), 70, np.uint8))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), 12))
BAD_MASK = data_uri(np.full((10, 10), 255, np.uint8))  # the wrong size (the image is 32x32)


def key_id(live: LiveServer, key: str) -> str:
    rows = cli(live.env, "keys", "list").stdout.splitlines()
    return next(line.split()[0] for line in rows if key[:10] in line)


def account_ledger(live: LiveServer, client: httpx.Client) -> tuple[int, int]:
    account = client.get("/v2/me").json()["team"]["id"]
    [(total,)] = query(live.env, "SELECT sum(amount) FROM credit_ledger WHERE account_id = :a", a=account)
    [(balance,)] = query(live.env, "SELECT credits FROM accounts WHERE id = :a", a=account)
    return int(total), int(balance)


async def submit_many(
    url: str, key: str, n: int, headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, limits=limits, timeout=60) as c:
        return await asyncio.gather(
            *(c.post("/v2/images/edit", json=edit_body(IMAGE, MASK), headers=headers) for _ in range(n))
        )


def test_100_concurrent_submits_against_a_balance_for_10(live: LiveServer) -> None:
    key = create_key(live.env, "ten-jobs", credits=90)
    responses = asyncio.run(submit_many(live.url, key, 100))
    codes = [r.status_code for r in responses]
    assert codes.count(202) == 10 and codes.count(402) == 90
    refused = next(r for r in responses if r.status_code == 402).json()
    assert refused == {"error": "Insufficient credits", "creditsRequired": 9, "creditsAvailable": 0}
    with httpx.Client(base_url=live.url, headers={"X-API-Key": key}) as client:
        assert client.get("/v2/me").json()["team"]["credits"] == 0
        assert account_ledger(live, client) == (0, 0)
        jobs = client.get("/v2/jobs", params={"limit": 100}).json()["jobs"]
        assert len(jobs) == 10
        for job in jobs:
            assert wait_job(client, job["id"])["status"] == "COMPLETED"
        assert client.get("/v2/me").json()["team"]["credits"] == 0


def test_failed_and_cancelled_jobs_refund(live: LiveServer) -> None:
    key = create_key(live.env, "refunds", credits=18)
    with httpx.Client(base_url=live.url, headers={"X-API-Key": key}) as client:
        failing = client.post("/v2/images/edit", json=edit_body(IMAGE, BAD_MASK)).json()["jobId"]
        assert wait_job(client, failing)["errorCode"] == "invalid_input"
        assert client.get("/v2/me").json()["team"]["credits"] == 18
        running = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).json()["jobId"]
        assert client.get("/v2/me").json()["team"]["credits"] == 9
        assert client.post(f"/v2/jobs/{running}/cancel").status_code == 200
        assert wait_job(client, running)["status"] == "CANCELLED"
        assert client.get("/v2/me").json()["team"]["credits"] == 18
        assert account_ledger(live, client) == (18, 18)
        rows = query(
            live.env,
            "SELECT job_id, kind, amount FROM credit_ledger WHERE job_id IN (:f, :r) ORDER BY id",
            f=failing,
            r=running,
        )
        assert sorted(rows) == sorted(
            [(failing, "hold", -9), (failing, "refund", 9), (running, "hold", -9), (running, "refund", 9)]
        )


def test_50_concurrent_submits_with_one_idempotency_key(live: LiveServer) -> None:
    key = create_key(live.env, "idem", credits=900)
    responses = asyncio.run(submit_many(live.url, key, 50, headers={"Idempotency-Key": "order-42"}))
    accepted = [r for r in responses if r.status_code == 202]
    assert all(r.status_code in (202, 409) for r in responses)
    assert len(accepted) >= 1
    assert len({r.json()["jobId"] for r in accepted}) == 1
    with httpx.Client(base_url=live.url, headers={"X-API-Key": key}) as client:
        assert len(client.get("/v2/jobs").json()["jobs"]) == 1
        assert client.get("/v2/me").json()["team"]["credits"] == 891
        job_id = accepted[0].json()["jobId"]
        wait_job(client, job_id)
        again = client.post(
            "/v2/images/edit", json=edit_body(IMAGE, MASK), headers={"Idempotency-Key": "order-42"}
        )
        assert again.status_code == 202 and again.json() == {"jobId": job_id, "status": "COMPLETED"}
        other = client.post(
            "/v2/images/edit",
            json=edit_body(IMAGE, MASK, prompt="else"),
            headers={"Idempotency-Key": "order-42"},
        )
        assert other.status_code == 409 and "different request body" in other.json()["error"]
        too_long = client.post(
            "/v2/images/edit", json=edit_body(IMAGE, MASK), headers={"Idempotency-Key": "k" * 256}
        )
        assert too_long.status_code == 400 and "255" in too_long.json()["error"]
    # Keys are scoped to the account: another account may use the same key for its own job.
    stranger = create_key(live.env, "idem-2")
    with httpx.Client(base_url=live.url, headers={"X-API-Key": stranger}) as client:
        mine = client.post(
            "/v2/images/edit", json=edit_body(IMAGE, MASK), headers={"Idempotency-Key": "order-42"}
        )
        assert mine.status_code == 202 and mine.json()["jobId"] != job_id


def test_rate_limit_headers_and_429(live: LiveServer) -> None:
    key = create_key(live.env, "rate")
    cli(live.env, "keys", "limits", key_id(live, key), "--rate", "3")
    with httpx.Client(base_url=live.url, headers={"X-API-Key": key}) as client:
        remaining = []
        for _ in range(3):
            response = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK))
            assert response.status_code == 202
            assert response.headers["X-RateLimit-Limit"] == "3"
            assert 1 <= int(response.headers["X-RateLimit-Reset"]) <= 60
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert remaining == [2, 1, 0]
        refused = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK))
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert "Rate limit" in refused.json()["error"]


def test_concurrency_limit_holds_while_jobs_run(live: LiveServer) -> None:
    key = create_key(live.env, "concurrency")
    cli(live.env, "keys", "limits", key_id(live, key), "--concurrency", "2")
    with httpx.Client(base_url=live.url, headers={"X-API-Key": key}) as client:
        ids = [client.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).json()["jobId"] for _ in range(6)]
        peak = 0

        def all_completed() -> bool:
            """Sample how many run at once; true once every job has completed."""
            nonlocal peak
            statuses = [j["status"] for j in client.get("/v2/jobs").json()["jobs"]]
            assert statuses.count("PROCESSING") <= 2
            peak = max(peak, statuses.count("PROCESSING"))
            return all(s == "COMPLETED" for s in statuses)

        until(all_completed, "all six jobs completed", 60)
        assert peak == 2
        assert {wait_job(client, i)["status"] for i in ids} == {"COMPLETED"}


def test_cancel_in_each_state(live: LiveServer) -> None:
    key = create_key(live.env, "cancel", credits=27)
    cli(live.env, "keys", "limits", key_id(live, key), "--concurrency", "1")
    with httpx.Client(base_url=live.url, headers={"X-API-Key": key}) as client:
        first = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).json()["jobId"]
        queued = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).json()["jobId"]
        wait_job(client, first, until={"PROCESSING"})
        response = client.post(f"/v2/jobs/{queued}/cancel")
        assert response.status_code == 200
        job = response.json()
        assert job["status"] == "CANCELLED" and job["errorCode"] == "cancelled"
        response = client.post(f"/v2/jobs/{first}/cancel")
        assert response.status_code == 200 and response.json()["status"] == "PROCESSING"
        job = wait_job(client, first, timeout=5)
        assert job["status"] == "CANCELLED" and job["errorCode"] == "cancelled" and job["result"] is None
        assert client.get("/v2/me").json()["team"]["credits"] == 27
        done = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).json()["jobId"]
        assert wait_job(client, done)["status"] == "COMPLETED"
        conflict = client.post(f"/v2/jobs/{done}/cancel")
        assert conflict.status_code == 409 and conflict.json()["status"] == "COMPLETED"
        again = client.post(f"/v2/jobs/{queued}/cancel")
        assert again.status_code == 409 and again.json()["status"] == "CANCELLED"
        assert client.get("/v2/me").json()["team"]["credits"] == 18


def test_prefer_wait(live: LiveServer, client: httpx.Client) -> None:
    slow = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK), headers={"Prefer": "wait=0"})
    assert slow.status_code == 202 and slow.headers["Preference-Applied"] == "wait=0"
    fast = client.post(
        "/v2/images/edit", json=edit_body(IMAGE, MASK), headers={"Prefer": "respond-async, wait=30"}
    )
    assert fast.status_code == 200, fast.text
    assert fast.headers["Preference-Applied"] == "wait=30"
    job = fast.json()
    assert job["status"] == "COMPLETED" and job["result"]["images"]
    capped = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK), headers={"Prefer": "wait=600"})
    assert capped.headers["Preference-Applied"] == "wait=60"
    plain = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK))
    assert plain.status_code == 202 and "Preference-Applied" not in plain.headers


def upload(client: httpx.Client, data: bytes, name: str = "photo.png") -> httpx.Response:
    return client.post("/v2/uploads", files={"file": (name, data, "image/png")})


def test_uploads_as_image_and_mask(live: LiveServer, client: httpx.Client) -> None:
    rgb = photo("coffee", (96, 64))
    mask = np.zeros((64, 96), np.uint8)
    mask[20:40, 30:60] = 255
    image = upload(client, encode(rgb, "JPEG"), "cup.jpg")
    assert image.status_code == 201, image.text
    body = image.json()
    assert set(body) == {"id", "url", "kind", "contentType", "byteSize", "expiresAt"}
    assert body["kind"] == "image" and body["contentType"] == "image/jpeg"
    assert body["url"] == f"{live.url}/v2/uploads/{body['id']}"
    assert client.get(body["url"]).content == encode(rgb, "JPEG")
    mask_up = upload(client, encode(mask)).json()
    assert mask_up["contentType"] == "image/png"
    job = client.post(
        "/v2/images/edit", json=edit_body(body["url"], mask_up["url"]), headers={"Prefer": "wait=30"}
    ).json()
    assert job["status"] == "COMPLETED", job
    assert job["input"]["fluxFillParams"]["image"] == body["url"]


def test_upload_limits_and_sniffing(live: LiveServer, client: httpx.Client) -> None:
    big = upload(client, b"\x89PNG\r\n\x1a\n" + bytes(3 * 1024 * 1024))
    assert big.status_code == 413 and "2 MB" in big.json()["error"]
    text = upload(client, b"just some text, honestly\n" * 10, "evil.png")
    assert text.status_code == 400 and "not a JPEG, PNG or WebP" in text.json()["error"]
    gif = upload(client, b"GIF89a" + bytes(100), "x.png")
    assert gif.status_code == 400 and "GIF" in gif.json()["error"]
    assert upload(client, b"").status_code == 400
    assert client.post("/v2/uploads").status_code == 400
    assert httpx.post(f"{live.url}/v2/uploads", files={"file": ("a.png", b"x")}).status_code == 401


def test_another_accounts_upload_is_refused(live: LiveServer, client: httpx.Client) -> None:
    url = upload(client, encode(np.zeros((8, 8, 3), np.uint8))).json()["url"]
    other = create_key(live.env, "thief")
    with httpx.Client(base_url=live.url, headers={"X-API-Key": other}) as them:
        assert them.get(url).status_code == 404
        response = them.post("/v2/images/edit", json=edit_body(url, mask=MASK))
        assert response.status_code == 400
        assert "does not exist for this account" in response.json()["details"]["fluxFillParams.image"][0]


def stored_lifetime(
    env: dict[str, str], table: sa.Table, start: sa.ColumnElement[Any], **key: str
) -> timedelta:
    """`expires_at - start` of the one row of `table` matching `key`, as the server wrote it."""
    engine = sa.create_engine(sync_url(env))
    try:
        with engine.connect() as conn:
            where = [table.c[name] == value for name, value in key.items()]
            row = conn.execute(sa.select(table.c.expires_at, start).where(*where)).one()
    finally:
        engine.dispose()
    return row[0] - row[1]


def test_upload_and_idempotency_ttls_come_from_the_settings(tmp_path: Path, backend: str) -> None:
    """The server writes each expiry its setting's hours after the row's own time (the TTLs
    themselves, to the second, are in tests/jobs/test_clock.py on a fake clock). Then the test
    moves both expiries to that time, as the hours passing would: no sleep."""
    settings = {
        "engine": "tests.utils.engines:SleepEngine",
        "upload_ttl_hours": "5",
        "idempotency_ttl_hours": "3",
    }
    with own_server(tmp_path / "data", backend, **settings) as server:
        key = create_key(server.env, "ttl")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}) as client:
            uploaded = upload(client, encode(np.zeros((8, 8, 3), np.uint8))).json()
            url, file_id = uploaded["url"], uploaded["id"]
            assert stored_lifetime(server.env, files, files.c.created_at, id=file_id) == timedelta(hours=5)
            headers = {"Idempotency-Key": "nightly-run"}
            first = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK), headers=headers).json()
            created = sa.select(jobs.c.created_at).where(jobs.c.id == idempotency_keys.c.job_id)
            lifetime = stored_lifetime(
                server.env, idempotency_keys, created.scalar_subquery(), key="nightly-run"
            )
            assert lifetime == timedelta(hours=3)
            other_body = edit_body(IMAGE, MASK, prompt="another")
            assert client.post("/v2/images/edit", json=other_body, headers=headers).status_code == 409
            assert client.get(url).status_code == 200

            query(server.env, "UPDATE files SET expires_at = created_at WHERE id = :f", f=file_id)
            query(
                server.env,
                "UPDATE idempotency_keys SET expires_at = "
                "(SELECT created_at FROM jobs WHERE jobs.id = idempotency_keys.job_id)",
            )
            assert client.get(url).status_code == 404
            response = client.post("/v2/images/edit", json=edit_body(url, mask=MASK))
            assert response.status_code == 400 and "expired" in response.text
            again = client.post("/v2/images/edit", json=other_body, headers=headers)
            assert again.status_code == 202 and again.json()["jobId"] != first["jobId"]
