"""Queue throughput and dispatch latency, on SQLite and PostgreSQL, with a no-op engine.

For 1, 2 and 4 `fillframe worker` processes: N jobs are queued at once and the time until the
last one is COMPLETED gives jobs/s. Dispatch latency is submit -> PROCESSING (started_at -
created_at) for jobs submitted one at a time through the API while workers idle.

Baseline, measured in the same run on the same database: a bare SQL queue (insert, claim with
UPDATE ... RETURNING, mark done; no service code, no images) driven from one process, so the
ratio shows what our whole pipeline costs over raw round trips. Each row also gives the CPU the
worker processes and the PostgreSQL server spent per job (from /proc), which says where a
2-core machine's capacity goes.

Then the process hop's cost per job: the bench's 8x8 job filled by the no-op engine through an
engine host (the worker's child process) against the same engine in a thread, median of
`--hop-runs` (`bench/e2e.py` measures it at larger sizes too).

2000 jobs by default: 400 drained in about 1.3 s, short enough for one slow moment of the shared
machine to move the figure by a fifth. `--tenants N` spreads the jobs over N accounts (the claim
is fair across accounts, and its cost grows with the accounts that have jobs queued).

Usage: .venv/bin/python -m bench.queue [--jobs 2000] [--backends sqlite,postgresql]
       [--workers 1,2,4] [--tenants 1] [--no-latency] [--hop-runs 300]
"""

from __future__ import annotations

import os
import sys

# This file is named queue.py: keep its folder off sys.path so the stdlib `queue` still imports.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.e2e import fill_ms
from fillframe.accounts import authenticate, set_limits
from fillframe.accounts import create_key as create_account
from fillframe.contract import EditRequest
from fillframe.db import Database
from fillframe.engines.base import create_engine
from fillframe.engines.host import EngineHost
from fillframe.jobs import service
from fillframe.jobs.worker import InThread
from fillframe.settings import Settings
from tests.utils.backends import create_pg_database, drop_pg_database, query, sync_url
from tests.utils.jobs import data_uri, edit_body
from tests.utils.servers import LiveServer, WorkerProcess, create_key, fillframe_env

IMAGE = data_uri(np.full((8, 8, 3), 50, np.uint8))
MASK = data_uri(np.pad(np.full((4, 4), 255, np.uint8), 2))


def as_time(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value.replace(tzinfo=None)


def env_for(backend: str, data_dir: Path) -> dict[str, str]:
    return fillframe_env(
        data_dir,
        backend,
        engine="tests.utils.engines:NoopEngine",
        poll_seconds="0.05",
        rate_limit_per_minute="0",
    )


async def queue_jobs(env: dict[str, str], key: str, n: int, tenants: int = 1) -> None:
    """`n` jobs, dealt in turn to `key`'s account and `tenants - 1` more (shut, like it)."""
    db = Database(env.get("FILLFRAME_DATABASE_URL") or f"sqlite:///{env['FILLFRAME_DATA_DIR']}/fillframe.db")
    callers = [await authenticate(db, key)]
    for i in range(tenants - 1):
        key_i, row = await create_account(db, f"tenant-{i}")
        await set_limits(db, row["id"], rate=None, concurrency=0)
        callers.append(await authenticate(db, key_i))
    req = EditRequest.model_validate(edit_body(IMAGE, MASK, output_format="png"))
    for i in range(n):
        await service.submit(db, callers[i % tenants], req, cost=0, max_attempts=3)
    await db.close()


def wait_all_done(env: dict[str, str], n: int, timeout: float = 600) -> float:
    """Poll one connection every 10 ms until none of the `n` queued jobs is left unfinished (a new
    connection per poll would load PostgreSQL itself). The poll asks whether any job is still
    QUEUED or PROCESSING, one index probe: counting the COMPLETED ones grew with the run and,
    every 10 ms, cost the server about as much CPU as the queue it measured."""
    engine = sa.create_engine(sync_url(env))
    unfinished = sa.text("SELECT EXISTS (SELECT 1 FROM jobs WHERE status IN ('QUEUED', 'PROCESSING'))")
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                left = conn.execute(unfinished).scalar()
                conn.commit()
                if not left:
                    done = conn.execute(
                        sa.text("SELECT count(*) FROM jobs WHERE status = 'COMPLETED'")
                    ).scalar()
                    if done < n:
                        raise RuntimeError(f"only {done} of {n} jobs completed")
                    return time.monotonic()
                time.sleep(0.01)
    finally:
        engine.dispose()
    raise TimeoutError("jobs did not finish")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU used so far by every PostgreSQL process on this machine (the bench's own included)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                total += cpu_seconds(int(entry.name))
        except OSError:
            continue  # it ended meanwhile
    return total


@dataclass(frozen=True)
class Throughput:
    jobs_per_second: float
    worker_cpu_ms: float  # per job, all worker processes together
    postgres_cpu_ms: float  # per job (0 on SQLite)


def throughput(backend: str, workers: int, n: int, tenants: int = 1) -> Throughput:
    with tempfile.TemporaryDirectory() as tmp:
        env = env_for(backend, Path(tmp))
        key = create_key(env, "bench")
        procs = [WorkerProcess(env, Path(tmp) / f"w{i}.log") for i in range(workers)]
        try:
            # Hold the queue shut (a concurrency limit of 0) while it fills, then open it at once.
            query(env, "UPDATE accounts SET max_concurrent_jobs = 0")
            asyncio.run(queue_jobs(env, key, n, tenants))
            time.sleep(2.0)  # let workers import and load their engine
            cpu_before = sum(cpu_seconds(p.proc.pid) for p in procs)
            pg_before = postgres_cpu_seconds() if backend == "postgresql" else 0.0
            start = time.monotonic()
            query(env, "UPDATE accounts SET max_concurrent_jobs = 100000")
            end = wait_all_done(env, n)
            worker_cpu = sum(cpu_seconds(p.proc.pid) for p in procs) - cpu_before
            pg_cpu = postgres_cpu_seconds() - pg_before if backend == "postgresql" else 0.0
            return Throughput(n / (end - start), worker_cpu / n * 1000, pg_cpu / n * 1000)
        finally:
            for p in procs:
                p.stop()
            if "FILLFRAME_DATABASE_URL" in env:
                drop_pg_database(env["FILLFRAME_DATABASE_URL"])


def dispatch_latency(backend: str, samples: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = env_for(backend, Path(tmp))
        api = LiveServer(env, "--no-worker")
        worker = WorkerProcess(env, Path(tmp) / "w.log")
        try:
            key = create_key(env, "bench")
            time.sleep(2.0)
            with httpx.Client(base_url=api.url, headers={"X-API-Key": key}) as client:
                for _ in range(samples):
                    client.post("/v2/images/edit", json=edit_body(IMAGE, MASK))
                    time.sleep(0.05)
            wait_all_done(env, samples)
            rows = query(env, "SELECT created_at, started_at FROM jobs")
            gaps = sorted((as_time(s) - as_time(c)).total_seconds() * 1000 for c, s in rows)
            return statistics.median(gaps), gaps[int(0.99 * (len(gaps) - 1))]
        finally:
            worker.stop()
            api.stop()
            if "FILLFRAME_DATABASE_URL" in env:
                drop_pg_database(env["FILLFRAME_DATABASE_URL"])


def bare_sql_queue(backend: str, n: int) -> float:
    """Jobs/s of a minimal SQL queue on the same backend: the floor our pipeline sits on."""
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "postgresql":
            url = create_pg_database()
            engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        else:
            url = ""
            engine = sa.create_engine(f"sqlite:///{tmp}/bare.db")
        table = sa.Table(
            "q",
            sa.MetaData(),
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("status", sa.String(16), index=True),
            sa.Column("created", sa.Float, index=True),
        )
        table.metadata.create_all(engine)
        with engine.begin() as conn:
            rows = [{"id": str(uuid.uuid4()), "status": "Q", "created": i} for i in range(n)]
            conn.execute(table.insert(), rows)
        sub = sa.select(table.c.id).where(table.c.status == "Q").order_by(table.c.created).limit(1)
        if backend == "postgresql":
            sub = sub.with_for_update(skip_locked=True)
        claim = (
            table.update().where(table.c.id == sub.scalar_subquery()).values(status="P").returning(table.c.id)
        )
        start = time.monotonic()
        for _ in range(n):
            with engine.begin() as conn:
                job_id = conn.execute(claim).scalar_one()
            with engine.begin() as conn:
                conn.execute(table.update().where(table.c.id == job_id).values(status="D"))
        rate = n / (time.monotonic() - start)
        engine.dispose()
        if url:
            drop_pg_database(url)
        return rate


async def hop_cost(runs: int) -> tuple[float, float]:
    """Median ms of one fill of the bench's 8x8 job: through an engine host, and in a thread."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), engine="tests.utils.engines:NoopEngine")
        host = EngineHost(settings)
        await host.start()
        try:
            return await fill_ms(host, 8, runs), await fill_ms(InThread(create_engine(settings)), 8, runs)
        finally:
            await host.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts, comma-separated")
    parser.add_argument("--tenants", type=int, default=1, help="accounts the jobs are spread over")
    parser.add_argument("--no-latency", action="store_true", help="skip the dispatch latency runs")
    parser.add_argument("--hop-runs", type=int, default=300, help="fills timed for the hop's cost (0: skip)")
    args = parser.parse_args()
    print(f"{args.jobs} jobs over {args.tenants} account(s)")
    print(
        f"{'backend':11} {'workers':>7} {'jobs/s':>8} {'bare SQL jobs/s':>16} {'ratio':>6}"
        f" {'worker CPU/job':>15} {'PG CPU/job':>11}"
    )
    for backend in args.backends.split(","):
        bare = bare_sql_queue(backend, args.jobs)
        for workers in (int(w) for w in args.workers.split(",")):
            r = throughput(backend, workers, args.jobs, args.tenants)
            print(
                f"{backend:11} {workers:7d} {r.jobs_per_second:8.1f} {bare:16.1f} "
                f"{r.jobs_per_second / bare:6.2f} {r.worker_cpu_ms:12.2f} ms {r.postgres_cpu_ms:8.2f} ms",
                flush=True,
            )
        if args.no_latency:
            continue
        p50, p99 = dispatch_latency(backend, args.latency_samples)
        print(f"{backend:11} dispatch (submit -> PROCESSING): p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
    if args.hop_runs:
        hosted, threaded = asyncio.run(hop_cost(args.hop_runs))
        print(
            f"process hop (8x8 no-op fill, median of {args.hop_runs}): engine host {hosted:.3f} ms,"
            f" in a thread {threaded:.3f} ms: {hosted - threaded:+.3f} ms per job"
        )


if __name__ == "__main__":
    main()
