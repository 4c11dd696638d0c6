"""The worker in-process on a real database: the output is stored once, a job that runs past its
deadline fails, is refunded and leaves no file behind (in-thread engines), and the pipeline
around the engine host prepares the next jobs while the engine runs, so a slow image host delays
only its own job."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from fillframe.accounts import authenticate, create_key
from fillframe.contract import EditRequest
from fillframe.db import Database, accounts, files, jobs
from fillframe.engines import Engine
from fillframe.engines.base import CancelledFn, FillJob, FillOutput, ProgressFn
from fillframe.errors import InvalidInput
from fillframe.jobs import queue, service
from fillframe.jobs.worker import Worker, _both
from fillframe.migrations import upgrade
from fillframe.settings import Settings
from fillframe.storage import BlobStore
from tests.utils.engines import SleepEngine, StubbornEngine
from tests.utils.images import encode
from tests.utils.jobs import data_uri, edit_body
from tests.utils.poll import until_async

IMAGE = data_uri(np.full((16, 16, 3), 90, np.uint8))
MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), 4))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path, job_timeout_seconds=0.3, poll_seconds=0.05, webhook_concurrency=0)
    upgrade(s.database.url)
    return s


class _Watched(Engine):
    """`engine`, with an event set when its fill returns, in whichever thread it ran."""

    name = "watched"

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine.settings)
        self.engine = engine
        self.ended = threading.Event()

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        try:
            return self.engine.fill(job, progress, cancelled)
        finally:
            self.ended.set()


async def _run_one(
    settings: Settings, engine: Engine, sleep: float, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict, int, bool]:
    """Submit one job, let a worker with `engine` take it, wait for the engine's thread to end;
    returns the job row, the account's credits and whether the engine had ended when the worker
    was done with the job."""
    monkeypatch.setenv("FILLFRAME_TEST_SLEEP", str(sleep))
    watched = _Watched(engine)
    db = Database(settings.database.url)
    store = BlobStore(settings.storage)
    try:
        key, _ = await create_key(db, "t", credits=9)
        caller = await authenticate(db, key)
        req = EditRequest.model_validate(edit_body(IMAGE, MASK, output_format="png"))
        job_id = (await service.submit(db, caller, req, cost=9, max_attempts=1)).job_id
        worker = Worker(settings, db, store, watched)
        claimed = await queue.claim(db, worker.id, settings.worker.lease_seconds)
        assert claimed is not None and claimed["id"] == job_id
        await worker.run_job(claimed)
        ended_in_time = watched.ended.is_set()
        assert await asyncio.to_thread(watched.ended.wait, 30), "the engine's thread never ended"
        async with db.read() as conn:
            row = dict((await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).mappings().one())
            credits = await conn.scalar(
                sa.select(accounts.c.credits).where(accounts.c.id == caller.account_id)
            )
        return row, credits, ended_in_time
    finally:
        await db.close()


def _stored(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.storage.files_dir.rglob("*") if p.is_file())


def test_a_job_past_its_deadline_fails_refunded_and_leaves_no_output(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    row, credits, ended_in_time = asyncio.run(_run_one(settings, StubbornEngine(settings), 1.0, monkeypatch))
    assert row["status"] == "FAILED" and row["error_code"] == "timeout"
    assert "0.3 seconds" in row["error"]
    assert credits == 9
    # The job ended while the engine still ran; the output it made after the deadline was dropped.
    assert not ended_in_time
    assert _stored(settings) == []


def test_a_job_in_time_is_stored_once_and_recorded(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    row, credits, ended_in_time = asyncio.run(_run_one(settings, SleepEngine(settings), 0.05, monkeypatch))
    assert row["status"] == "COMPLETED" and credits == 0 and ended_in_time
    [stored] = _stored(settings)
    file_id = row["result"]["files"][0]["id"]
    assert stored.name == f"{file_id}.png"

    async def file_row() -> dict:
        db = Database(settings.database.url)
        try:
            async with db.read() as conn:
                return dict(
                    (await conn.execute(sa.select(files).where(files.c.id == file_id))).mappings().one()
                )
        finally:
            await db.close()

    recorded = asyncio.run(file_row())
    assert recorded["byte_size"] == stored.stat().st_size and recorded["content_type"] == "image/png"


def test_image_and_mask_are_fetched_at_once_and_the_image_failure_wins() -> None:
    asyncio.run(_fetch_both())


async def _fetch_both() -> None:
    mask_started = asyncio.Event()

    async def image_waits_for_mask() -> bytes:
        await mask_started.wait()  # would never return if the mask were fetched after the image
        return b"image"

    async def mask() -> bytes:
        mask_started.set()
        return b"mask"

    assert await asyncio.wait_for(_both(image_waits_for_mask(), mask()), 5) == (b"image", b"mask")

    async def fails(what: str, delay: float = 0.0) -> bytes:
        await asyncio.sleep(delay)
        raise InvalidInput(f"Could not fetch {what}.")

    never_done = asyncio.Event()

    async def slow_mask() -> bytes:
        try:
            await asyncio.sleep(30)
        finally:
            never_done.set()
        return b"mask"

    with pytest.raises(InvalidInput, match="image"):
        await _both(fails("image"), slow_mask())
    assert never_done.is_set()  # the other fetch was stopped, not left running
    with pytest.raises(InvalidInput, match="mask"):
        await _both(asyncio.sleep(0.05, b"image"), fails("mask"))
    with pytest.raises(InvalidInput, match="image"):  # both fail: as if fetched in turn
        await _both(fails("image", 0.05), fails("mask"))


JOBS = ("slow", "fast1", "fast2")


class _SlowHost(http.server.SimpleHTTPRequestHandler):
    """An image host where paths under /slow/ answer after `delay` seconds; records when each
    request arrived and when it was answered."""

    delay = 0.0
    seen: dict[str, tuple[datetime, datetime]]

    def do_GET(self) -> None:
        arrived = datetime.now(UTC)
        if self.path.startswith("/slow/"):
            time.sleep(self.delay)
        super().do_GET()
        self.seen[self.path] = (arrived, datetime.now(UTC))

    def log_message(self, format: str, *args: object) -> None:
        pass


async def _rows_once_ended(db: Database, ids: list[str]) -> list[dict]:
    """The jobs' rows once every one has ended, else an empty list."""
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(jobs).where(jobs.c.id.in_(ids)))).mappings().all()
    return [dict(r) for r in rows] if all(r["status"] in ("COMPLETED", "FAILED") for r in rows) else []


@contextlib.contextmanager
def _image_host(root: Path, delay: float) -> Iterator[tuple[str, dict[str, tuple[datetime, datetime]]]]:
    """A `_SlowHost` on loopback serving an image and mask per job name in JOBS (a folder each, so
    its log tells the jobs apart); yields its base URL and that log."""
    image = encode(np.full((32, 32, 3), 90, np.uint8))
    mask = encode(np.pad(np.full((16, 16), 255, np.uint8), 8))
    for name in JOBS:
        (root / name).mkdir(parents=True)
        (root / name / "image.png").write_bytes(image)
        (root / name / "mask.png").write_bytes(mask)
    handler = type("Host", (_SlowHost,), {"delay": delay, "seen": {}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_slow_image_host_delays_only_its_own_job(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FILLFRAME_TEST_SLEEP", "0.4")  # the engine's run; its child inherits this
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, engine="tests.utils.engines:SleepEngine",
        allow_private_urls=True, poll_seconds=0.05, webhook_concurrency=0,
    )  # fmt: skip
    with _image_host(tmp_path / "images", delay=3.0) as (base, seen):
        rows = asyncio.run(_slow_and_fast(settings, base))
    _, fast1, fast2 = rows
    assert all(r["status"] == "COMPLETED" for r in rows), [r["error"] for r in rows]
    slow_answered = seen["/slow/image.png"][1]
    # Both fast jobs, queued after the slow one, ran while its image host was still silent.
    assert fast2["completed_at"] < slow_answered
    # The second fast job's inputs were fetched while the engine was filling the first one.
    assert seen["/fast2/image.png"][0] < fast1["completed_at"]


async def _slow_and_fast(settings: Settings, base: str) -> list[dict]:
    db = Database(settings.database.url)
    try:
        key, _ = await create_key(db, "t")
        caller = await authenticate(db, key)
        ids = []
        for name in JOBS:  # in this order: the slow one first
            body = edit_body(f"{base}/{name}/image.png", f"{base}/{name}/mask.png", output_format="png")
            req = EditRequest.model_validate(body)
            ids.append((await service.submit(db, caller, req, cost=0, max_attempts=1)).job_id)

        worker = Worker(settings, db, BlobStore(settings.storage))
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            rows = await until_async(lambda: _rows_once_ended(db, ids), "every job ended", 30, every=0.05)
        finally:
            stop.set()
            await running
        by_id = {r["id"]: r for r in rows}
        return [by_id[i] for i in ids]
    finally:
        await db.close()


def test_a_ready_job_takes_the_free_engine_while_another_tenants_job_is_still_fetching(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenant A's job, claimed first, waits on a slow image host and still counts as soon ready
    (SLOW_PREPARE_SECONDS raised past the host's delay); tenant B's job, claimed next beside it,
    is ready at once. The free engine takes B's job then: it does not idle until A's inputs come
    (B's job used to complete only after A's). Within one account claim order holds
    (`test_a_batched_call_gives_each_job_its_unbatched_image`)."""
    monkeypatch.setenv("FILLFRAME_TEST_SLEEP", "0.2")
    monkeypatch.setattr("fillframe.jobs.worker.SLOW_PREPARE_SECONDS", 60.0)
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, allow_private_urls=True,
        poll_seconds=0.05, webhook_concurrency=0,
    )  # fmt: skip
    with _image_host(tmp_path / "images", delay=3.0) as (base, seen):
        slow, fast = asyncio.run(_two_tenants(settings, base))
    assert slow["status"] == fast["status"] == "COMPLETED", [slow["error"], fast["error"]]
    assert fast["completed_at"] < seen["/slow/image.png"][1] < slow["completed_at"]


async def _two_tenants(settings: Settings, base: str) -> tuple[dict, dict]:
    """A's job from /slow/, claimed; then B's from /fast1/; both rows once both have ended."""
    db = Database(settings.database.url)
    worker = Worker(settings, db, BlobStore(settings.storage), SleepEngine(settings))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        ids = []
        for tenant, name in (("a", "slow"), ("b", "fast1")):
            caller = await authenticate(db, (await create_key(db, tenant))[0])
            body = edit_body(f"{base}/{name}/image.png", f"{base}/{name}/mask.png", output_format="png")
            req = EditRequest.model_validate(body)
            ids.append((await service.submit(db, caller, req, cost=0, max_attempts=1)).job_id)

            async def claimed() -> bool:
                return ids[-1] in worker.running

            await until_async(claimed, "the job claimed", 30, every=0.01)
        rows = await until_async(lambda: _rows_once_ended(db, ids), "both jobs ended", 30, every=0.05)
        by_id = {r["id"]: r for r in rows}
        return by_id[ids[0]], by_id[ids[1]]
    finally:
        stop.set()
        await running
        await db.close()


def test_a_worker_holds_no_more_jobs_than_its_pipeline_has_room_for(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a backlog, a worker claims only what it can prepare: the rest stay QUEUED for other
    workers and for the fair claim. (A SQLite claim never yields to the event loop, so a job must
    count as held from its claim on, not from when its task first runs.)"""
    monkeypatch.setenv("FILLFRAME_TEST_SLEEP", "0.3")
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, poll_seconds=0.05, webhook_concurrency=0
    )
    held = asyncio.run(_most_held(settings, backlog=30))
    assert 1 <= held <= 2  # the job filling and the one prepared beside it (one engine slot)


def test_a_finish_claims_the_next_job_unless_the_line_is_full(settings: Settings) -> None:
    """With a fast engine several jobs are stored at once. Each one's finish statement claims the
    job that replaces it: it counts neither the other jobs being stored (their own finishes
    replace them) nor a job still being prepared that the free engine slot will take at once;
    it does count a job prepared with the slot taken, and a claim another finish has in flight.
    The claim loop counts the jobs being stored: their finishes claim instead of it."""

    async def room() -> list[bool]:
        db = Database(settings.database.url)
        worker = Worker(settings, db, BlobStore(settings.storage), SleepEngine(settings))
        try:
            await worker.start()
            ending = worker._hold("ending", "acct")
            ending.enter("storing")
            worker._hold("stored-too", "acct").enter("storing")
            worker._hold("next", "acct")  # claimed, being prepared
            seen = [worker.has_room(), worker.has_room(excluding=ending)]
            worker._claiming += 1  # another finish claims meanwhile
            seen.append(worker.has_room(excluding=ending))
            worker._claiming -= 1
            worker._free.clear()  # the slot is taken: "next" is the job held ahead
            seen.append(worker.has_room(excluding=ending))
            return seen
        finally:
            await worker.close()
            await db.close()

    assert asyncio.run(room()) == [False, True, False, False]


def test_jobs_prepared_ahead_count_against_the_accounts_concurrency_limit(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claimed job is PROCESSING (as the API shows it) whether it is filling or prepared
    beside the engine, and maxConcurrentJobs counts jobs in PROCESSING: an account at its limit
    gets no job prepared ahead, so it never has more PROCESSING than its limit."""
    monkeypatch.setenv("FILLFRAME_TEST_SLEEP", "0.3")
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, poll_seconds=0.05, webhook_concurrency=0
    )
    assert asyncio.run(_most_held(settings, backlog=10, limit=1)) == 1


async def _most_held(settings: Settings, backlog: int, limit: int | None = None) -> int:
    """The most jobs PROCESSING at once while one worker drains part of `backlog` jobs (of an
    account whose maxConcurrentJobs is `limit`, when given)."""
    db = Database(settings.database.url)
    try:
        key, _ = await create_key(db, "backlog")
        caller = await authenticate(db, key)
        if limit is not None:
            async with db.write() as conn:
                await conn.execute(accounts.update().values(max_concurrent_jobs=limit))
        req = EditRequest.model_validate(edit_body(IMAGE, MASK))
        for _ in range(backlog):
            await service.submit(db, caller, req, cost=0, max_attempts=1)
        worker = Worker(settings, db, BlobStore(settings.storage), SleepEngine(settings))
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        most = 0

        async def three_ran() -> bool:
            """Sample the jobs PROCESSING; true once three engine runs have ended."""
            nonlocal most
            counts = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
            async with db.read() as conn:
                by_status = dict((await conn.execute(counts)).all())
            most = max(most, int(by_status.get("PROCESSING", 0)))
            return int(by_status.get("COMPLETED", 0)) >= 3

        try:
            await until_async(three_ran, "three jobs completed", 60, every=0.025)
        finally:
            stop.set()
            await running
        return most
    finally:
        await db.close()
