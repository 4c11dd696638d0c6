"""What an operator relies on: metrics that move, JSON logs with request and job ids, retention
that deletes and answers 410, and a SIGTERM that loses no job."""

from __future__ import annotations

import contextlib
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.utils.backends import query
from tests.utils.jobs import data_uri, edit_body, submit_and_wait, wait_job
from tests.utils.poll import until
from tests.utils.servers import FillframeProcess, LiveServer, WorkerProcess, create_key, own_server

LIVE_SETTINGS = {"engine": "tests.utils.engines:SleepEngine", "test_sleep": "0.1"}
IMAGE = data_uri(np.full((32, 32, 3), 70, np.uint8))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), 12))


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_move(live: LiveServer) -> None:
    key = create_key(live.env, "metrics", credits=90)
    before = httpx.get(f"{live.url}/metrics").text
    with httpx.Client(base_url=live.url, headers={"X-API-Key": key}) as client:
        ok = submit_and_wait(client, edit_body(IMAGE, MASK))
        bad = submit_and_wait(client, edit_body(IMAGE, data_uri(np.full((5, 5), 255, np.uint8))))
    assert (ok["status"], bad["status"]) == ("COMPLETED", "FAILED")
    response = httpx.get(f"{live.url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = response.text
    edit = {"route": "/v2/images/edit", "status": "202", "method": "POST"}
    assert sample(after, "fillframe_http_request_duration_seconds_count", **edit) == (
        sample(before, "fillframe_http_request_duration_seconds_count", **edit) + 2
    )
    assert (
        sample(after, "fillframe_jobs", status="COMPLETED")
        >= sample(before, "fillframe_jobs", status="COMPLETED") + 1
    )
    assert (
        sample(after, "fillframe_jobs", status="FAILED")
        >= sample(before, "fillframe_jobs", status="FAILED") + 1
    )
    assert sample(after, "fillframe_job_duration_seconds_count", engine="sleep", status="COMPLETED") >= 1
    assert (
        sample(after, "fillframe_credits_captured_total")
        == sample(before, "fillframe_credits_captured_total") + 9
    )
    assert (
        sample(after, "fillframe_credits_refunded_total")
        == sample(before, "fillframe_credits_refunded_total") + 9
    )
    assert "fillframe_queue_depth" in after and "fillframe_queue_oldest_age_seconds" in after


def test_json_logs_carry_request_and_job_ids(live: LiveServer, client: httpx.Client) -> None:
    response = client.post(
        "/v2/images/edit", json=edit_body(IMAGE, MASK), headers={"X-Request-Id": "req-abc-123"}
    )
    job_id = response.json()["jobId"]
    wait_job(client, job_id)
    # The job's log line may be written just after its status is: read the log until it is there.

    def logged() -> list[dict]:
        lines = [json.loads(line) for line in live.logs().splitlines() if line.startswith("{")]
        return lines if any(e.get("job_id") == job_id and "ran: COMPLETED" in e["msg"] for e in lines) else []

    lines = until(logged, f"a 'ran: COMPLETED' line with job_id {job_id}", 10)
    access = [e for e in lines if e.get("request_id") == "req-abc-123"]
    assert access and access[0]["msg"] == "POST /v2/images/edit 202" and access[0]["status"] == 202


def test_retention_deletes_outputs_and_links_answer_410(tmp_path: Path, backend: str) -> None:
    with own_server(
        tmp_path / "data",
        backend,
        engine="tests.utils.engines:SleepEngine",
        test_sleep="0.05",
        retention_days=str(3 / 86400),  # three seconds
        lease_seconds="2",
    ) as server:
        key = create_key(server.env, "retention")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}) as client:
            job = submit_and_wait(client, edit_body(IMAGE, MASK, output_format="png"))
            url = job["result"]["images"][0]
            assert httpx.get(url).status_code == 200
            files = list((tmp_path / "data" / "files" / "outputs").iterdir())
            assert len(files) == 1
            until(lambda: client.get(f"/v2/jobs/{job['id']}").json()["expired"], "the output purged", 30, 0.2)
            expired = client.get(f"/v2/jobs/{job['id']}").json()
            assert expired["result"] is None and expired["status"] == "COMPLETED"
            gone = httpx.get(url)
            assert gone.status_code == 410 and "expired" in gone.json()["error"]
            assert not files[0].exists()
            rows = query(server.env, "SELECT deleted FROM files WHERE job_id = :j", j=job["id"])
            assert rows == [(True,)]


@contextlib.contextmanager
def api_and_worker(
    tmp_path: Path, backend: str, role: str, **settings: str
) -> Iterator[tuple[LiveServer, FillframeProcess]]:
    """`fillframe serve` with its in-process worker, or `serve --no-worker` beside a `fillframe
    worker`: the API to submit through, and the process whose worker a signal stops. Both start
    and stop their worker through the same code (`fillframe/jobs/runner.py`)."""
    if role == "serve":
        with own_server(tmp_path / "data", backend, **settings) as server:
            yield server, server
        return
    with own_server(tmp_path / "data", backend, "--no-worker", **settings) as api:
        worker = WorkerProcess(api.env, tmp_path / "worker.log")
        try:
            yield api, worker
        finally:
            worker.stop()


def wait_filling(client: httpx.Client, job_id: str, timeout: float = 30.0) -> None:
    """Until an engine is on the job: a PROCESSING job may still be fetching its inputs, and a
    stop hands back (does not finish) a job that no engine has started."""
    until(lambda: client.get(f"/v2/jobs/{job_id}").json()["progress"] > 0, "an engine on the job", timeout)


def next_worker(role: str, env: dict[str, str], log_path: Path) -> FillframeProcess:
    return LiveServer(env) if role == "serve" else WorkerProcess(env, log_path)


@pytest.mark.parametrize("role", ["serve", "worker"])
def test_sigterm_finishes_the_running_job_within_the_grace_period(
    tmp_path: Path, backend: str, role: str
) -> None:
    with api_and_worker(
        tmp_path, backend, role, engine="tests.utils.engines:SleepEngine", test_sleep="2",
        shutdown_grace_seconds="15",
    ) as (api, worker):  # fmt: skip
        key = create_key(api.env, "graceful")
        with httpx.Client(base_url=api.url, headers={"X-API-Key": key}) as client:
            job_id = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).json()["jobId"]
            wait_filling(client, job_id)
        # uvicorn re-raises the signal once shut down, so the exit status is -SIGTERM, not a crash.
        assert worker.stop(signal.SIGTERM, timeout=25) in (0, -signal.SIGTERM)
        assert query(api.env, "SELECT status FROM jobs WHERE id = :j", j=job_id) == [("COMPLETED",)]


@pytest.mark.parametrize("role", ["serve", "worker"])
def test_sigterm_hands_a_long_job_back_to_the_queue(tmp_path: Path, backend: str, role: str) -> None:
    with api_and_worker(
        tmp_path, backend, role, engine="tests.utils.engines:SleepEngine", test_sleep="60",
        shutdown_grace_seconds="1",
    ) as (api, worker):  # fmt: skip
        key = create_key(api.env, "impatient")
        with httpx.Client(base_url=api.url, headers={"X-API-Key": key}) as client:
            job_id = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).json()["jobId"]
            wait_job(client, job_id, until={"PROCESSING"})
        assert worker.stop(signal.SIGTERM, timeout=20) in (0, -signal.SIGTERM)
        rows = query(api.env, "SELECT status, attempts, worker_id FROM jobs WHERE id = :j", j=job_id)
        assert rows == [("QUEUED", 0, None)]
        # The next worker picks it up again.
        second = next_worker(role, {**api.env, "FILLFRAME_TEST_SLEEP": "0.1"}, tmp_path / "second.log")
        url = second.url if isinstance(second, LiveServer) else api.url
        try:
            with httpx.Client(base_url=url, headers={"X-API-Key": key}) as client:
                assert wait_job(client, job_id)["status"] == "COMPLETED"
        finally:
            second.stop()


def test_connections_cut_by_the_database_cost_at_most_a_503(tmp_path: Path) -> None:
    """PostgreSQL ends every session (a restart or failover): no request gets a 500, the one that
    meets a dead connection gets a 503 with Retry-After, and service resumes on fresh ones."""
    with own_server(
        tmp_path / "data", "postgresql", engine="tests.utils.engines:SleepEngine", test_sleep="0.05"
    ) as server:
        key = create_key(server.env, "failover")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}) as client:
            for _ in range(3):  # fill the pool with connections that are about to die
                assert client.get("/v2/me").status_code == 200
            cut = query(
                server.env,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            assert cut[0][0] >= 1
            statuses = []
            for _ in range(6):
                reply = client.get("/v2/me")
                statuses.append(reply.status_code)
                if reply.status_code == 503:
                    assert reply.headers["Retry-After"] == "1"
            assert set(statuses) <= {200, 503} and statuses.count(503) <= 1, statuses
            assert statuses[-1] == 200
            # The worker's connections died too; it claims and finishes new jobs all the same.
            job = submit_and_wait(client, edit_body(IMAGE, MASK))
            assert job["status"] == "COMPLETED"
