"""Real worker processes killed mid-job: the lease runs out and the job still finishes exactly once."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import numpy as np

from tests.utils.backends import query
from tests.utils.jobs import data_uri, edit_body, wait_job
from tests.utils.poll import until
from tests.utils.servers import LiveServer, WorkerProcess, create_key, drop_backend, fillframe_env

IMAGE = data_uri(np.full((32, 32, 3), 60, np.uint8))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), 12))


def lease_env(data_dir: Path, backend: str, runlog: Path, **extra: str) -> dict[str, str]:
    return fillframe_env(
        data_dir,
        backend,
        engine="tests.utils.engines:SleepEngine",
        test_sleep="3",
        test_runlog=str(runlog),
        lease_seconds="1.5",
        poll_seconds="0.2",
        **extra,
    )


def wait_for_runs(runlog: Path, starts: int, timeout: float = 20) -> None:
    until(lambda: runlog.exists() and runlog.read_text().count("start") >= starts, "started", timeout)


def test_killed_worker_job_finishes_once_on_another(tmp_path: Path, backend: str) -> None:
    runlog = tmp_path / "runs.log"
    env = lease_env(tmp_path / "data", backend, runlog)
    api = LiveServer(env, "--no-worker")
    first = WorkerProcess(env, tmp_path / "w1.log")
    second = None
    try:
        key = create_key(env, "lease", credits=100)
        with httpx.Client(base_url=api.url, headers={"X-API-Key": key}) as client:
            job_id = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK, output_format="png")).json()[
                "jobId"
            ]
            wait_for_runs(runlog, 1)
            assert client.get(f"/v2/jobs/{job_id}").json()["status"] == "PROCESSING"
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait()
            second = WorkerProcess(env, tmp_path / "w2.log")
            job = wait_job(client, job_id, timeout=60)
            assert job["status"] == "COMPLETED"
            assert client.get("/v2/me").json()["team"]["credits"] == 91
        lines = runlog.read_text().split()
        assert lines.count("start") == 2 and lines.count("end") == 1
        assert query(env, "SELECT attempts FROM jobs WHERE id = :j", j=job_id) == [(2,)]
        assert query(env, "SELECT count(*) FROM files WHERE job_id = :j", j=job_id) == [(1,)]
        ledger = query(env, "SELECT kind, amount FROM credit_ledger WHERE job_id = :j ORDER BY id", j=job_id)
        assert ledger == [("hold", -9), ("capture", 0)]
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.stop()
        api.stop()
        drop_backend(env)


def test_job_fails_and_refunds_once_after_its_last_attempt(tmp_path: Path, backend: str) -> None:
    runlog = tmp_path / "runs.log"
    env = lease_env(tmp_path / "data", backend, runlog, max_attempts="1")
    api = LiveServer(env, "--no-worker")
    first = WorkerProcess(env, tmp_path / "w1.log")
    second = None
    try:
        key = create_key(env, "lease", credits=9)
        with httpx.Client(base_url=api.url, headers={"X-API-Key": key}) as client:
            job_id = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK)).json()["jobId"]
            assert client.get("/v2/me").json()["team"]["credits"] == 0
            wait_for_runs(runlog, 1)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait()
            second = WorkerProcess(env, tmp_path / "w2.log")
            job = wait_job(client, job_id, timeout=60)
            assert job["status"] == "FAILED"
            assert job["errorCode"] == "engine_error"
            assert "stopped before finishing it (1 of 1 attempts)" in job["error"]
            # Later sweeps find nothing to end or refund: tests/jobs/test_clock.py moves a fake
            # clock past them.
            assert client.get("/v2/me").json()["team"]["credits"] == 9
        ledger = query(env, "SELECT kind, amount FROM credit_ledger WHERE job_id = :j ORDER BY id", j=job_id)
        assert ledger == [("hold", -9), ("refund", 9)]
        assert runlog.read_text().count("start") == 1
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.stop()
        api.stop()
        drop_backend(env)
