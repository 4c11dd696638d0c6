"""Chaos on the scale-out topology: 2 API processes and 3 worker processes on PostgreSQL and S3,
200 jobs, one worker SIGKILLed twice mid-run. Nothing is lost, run twice or charged twice."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from tests.test_storage_s3 import s3  # noqa: F401 - the moto server fixture
from tests.utils.backends import query
from tests.utils.jobs import data_uri, edit_body
from tests.utils.poll import until
from tests.utils.s3 import S3
from tests.utils.servers import LiveServer, WorkerProcess, create_key, drop_backend, fillframe_env
from tests.webhooks.receiver import Receiver

JOBS = 200
IMAGE = data_uri(np.full((24, 24, 3), 90, np.uint8))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), 8))


async def submit_all(urls: list[str], key: str, hook: str) -> list[str]:
    clients = [httpx.AsyncClient(base_url=u, headers={"X-API-Key": key}, timeout=60) for u in urls]
    try:
        sem = asyncio.Semaphore(16)

        async def one(client: httpx.AsyncClient, i: int) -> str:
            async with sem:
                body = {**edit_body(IMAGE, MASK, seed=i, output_format="png"), "webhookUrl": hook}
                headers = {"Idempotency-Key": f"job-{i}"}
                response = await client.post("/v2/images/edit", json=body, headers=headers)
                assert response.status_code == 202, response.text
                return response.json()["jobId"]

        pairs = zip(itertools.cycle(clients), range(JOBS), strict=False)
        return await asyncio.gather(*(one(c, i) for c, i in pairs))
    finally:
        for c in clients:
            await c.aclose()


def holding_a_job(env: dict[str, str], workers: list[WorkerProcess]) -> WorkerProcess | None:
    """A worker (not its engine host) that has a job PROCESSING, if any does."""
    owners = [owner for (owner,) in query(env, "SELECT worker_id FROM jobs WHERE status = 'PROCESSING'")]
    return next((w for w in workers if any(f":{w.proc.pid}:" in (o or "") for o in owners)), None)


def wait_for_progress(env: dict[str, str], done_at_least: int, timeout: float = 120) -> None:

    def done() -> bool:
        [(count,)] = query(env, "SELECT count(*) FROM jobs WHERE status = 'COMPLETED'")
        return count >= done_at_least

    until(done, f"{done_at_least} jobs completed", timeout, every=0.1)


def test_two_apis_three_workers_one_killed_twice(tmp_path: Path, s3: S3) -> None:  # noqa: F811
    bucket = s3.new_bucket()
    runlog = tmp_path / "runs.log"
    env = fillframe_env(
        tmp_path / "data",
        "postgresql",
        engine="tests.utils.engines:SleepEngine",
        test_sleep="0.4",
        test_runlog=str(runlog),
        lease_seconds="2",
        poll_seconds="0.5",
        worker_concurrency="2",
        **s3.settings(bucket),
    )
    receiver = Receiver()
    apis = [LiveServer(env, "--no-worker") for _ in range(2)]
    workers = [WorkerProcess(env, tmp_path / f"worker{i}.log") for i in range(3)]
    try:
        key = create_key(env, "chaos", credits=9 * JOBS)
        ids = asyncio.run(submit_all([a.url for a in apis], key, receiver.url()))
        assert len(set(ids)) == JOBS
        orphaned: Counter[str] = Counter()  # jobs a killed worker held: each must run once more
        for kill in range(2):
            wait_for_progress(env, 40 * (kill + 1))
            # The victim is a worker that holds a job now: under the account's concurrency limit a
            # worker can go a while without one, and a kill of an idle worker proves nothing.
            victim = until(lambda: holding_a_job(env, workers), "holding a job, some worker", 30)
            slot = workers.index(victim)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            held = query(
                env,
                "SELECT id FROM jobs WHERE status = 'PROCESSING' AND worker_id LIKE :mine",
                mine=f"%:{victim.proc.pid}:%",
            )
            orphaned.update(job_id for (job_id,) in held)
            workers[slot] = WorkerProcess(env, tmp_path / f"worker{slot}-restart{kill}.log")
        wait_for_progress(env, JOBS, timeout=180)

        statuses = Counter(s for (s,) in query(env, "SELECT status FROM jobs"))
        assert statuses == {"COMPLETED": JOBS}
        ledger = Counter(query(env, "SELECT job_id, kind FROM credit_ledger WHERE job_id IS NOT NULL"))
        assert set(ledger.values()) == {1}
        kinds = Counter(kind for _, kind in ledger)
        assert kinds == {"hold": JOBS, "capture": JOBS}
        [(balance,)] = query(env, "SELECT credits FROM accounts")
        assert balance == 0
        outputs = query(env, "SELECT job_id, storage_key FROM files WHERE kind = 'output'")
        assert len(outputs) == JOBS and {j for j, _ in outputs} == set(ids)
        in_bucket = set(s3.keys(bucket))
        assert all(f"ff/{key_}" in in_bucket for _, key_ in outputs)
        # Webhooks: one `completed` event per job, every delivery of it under one webhook-id, and
        # no more deliveries than the outbox made attempts.
        hits = receiver.wait_for(JOBS, timeout=60)
        events: dict[str, set[str]] = {}
        deliveries: Counter[str] = Counter()
        for hit in hits:
            payload = json.loads(hit.body)
            assert payload["event"] == "completed"
            events.setdefault(payload["jobId"], set()).add(hit.headers["webhook-id"])
            deliveries[payload["jobId"]] += 1
        assert set(events) == set(ids) and all(len(v) == 1 for v in events.values())
        outbox = dict(query(env, "SELECT job_id, attempts FROM webhook_deliveries WHERE event = 'completed'"))
        assert len(outbox) == JOBS and all(deliveries[j] <= outbox[j] for j in ids)
        # Every claim is one attempt: each job was claimed once, plus once more for each time a
        # killed worker held it; and no engine run started without a claim.
        assert sum(orphaned.values()) >= 1, "no kill landed while the worker held a job"
        attempts = dict(query(env, "SELECT id, attempts FROM jobs"))
        assert attempts == {job_id: 1 + orphaned[job_id] for job_id in ids}
        seeds = dict(query(env, "SELECT seed, id FROM jobs"))
        starts = Counter(
            seeds[int(line.split()[1])]
            for line in runlog.read_text().splitlines()
            if line.startswith("start")
        )
        assert set(starts) == set(ids) and all(starts[j] <= attempts[j] for j in ids)
    finally:
        for w in workers:
            w.stop()
        for a in apis:
            a.stop()
        receiver.close()
        drop_backend(env)
