"""Batching claimed jobs (issue 16), through the real worker, engine host process and database:
ready jobs of one canvas size, steps and guidance go to the engine in one `fill_batch` call of up
to its `max_batch`, and each keeps its own seed (the same image as alone), progress, cancel,
failure and refund. The engine is `BatchingEngine` (tests/utils/engines.py), whose image depends
on the job's seed alone and which logs each call it receives.

Each scenario starts with a job of another canvas size (32x32) that runs alone: the batch's jobs
are claimed and prepared while it runs, so they are all ready when the engine frees."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from fillframe.accounts import Caller, authenticate, create_key
from fillframe.contract import EditRequest
from fillframe.db import Database, accounts, jobs
from fillframe.jobs import service
from fillframe.jobs.worker import Worker
from fillframe.settings import Settings
from fillframe.storage import BlobStore
from tests.utils.jobs import data_uri, edit_body
from tests.utils.poll import until_async

BIG = edit_body(
    data_uri(np.full((32, 32, 3), 60, np.uint8)), data_uri(np.pad(np.full((16, 16), 255, np.uint8), 8))
)
SMALL_IMAGE = data_uri(np.full((16, 16, 3), 90, np.uint8))
SMALL_MASK = data_uri(np.pad(np.full((8, 8), 255, np.uint8), 4))
COST = 9

During = Callable[[Database, Caller, list[str]], Awaitable[None]]


def small(seed: int, prompt: str = "fill it") -> dict[str, Any]:
    return edit_body(SMALL_IMAGE, SMALL_MASK, prompt, seed=seed, output_format="png")


def sized(side: int, seed: int) -> dict[str, Any]:
    hole = np.pad(np.full((side // 2, side // 2), 255, np.uint8), side // 4)
    return edit_body(
        data_uri(np.full((side, side, 3), 70, np.uint8)), data_uri(hole), seed=seed, output_format="png"
    )


def big(seed: int = 1) -> dict[str, Any]:
    return {**BIG, "fluxFillParams": {**BIG["fluxFillParams"], "seed": seed, "output_format": "png"}}


@pytest.fixture
def runlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runlog"
    monkeypatch.setenv("FILLFRAME_TEST_RUNLOG", str(path))
    return path


def _settings(database_url: str, data: Path, **extra: Any) -> Settings:
    return Settings(
        data_dir=data, database_url=database_url, engine="tests.utils.engines:BatchingEngine",
        poll_seconds=0.05, webhook_concurrency=0, **extra,
    )  # fmt: skip


def _calls(runlog: Path) -> list[str]:
    return runlog.read_text().splitlines() if runlog.exists() else []


async def _drain(
    settings: Settings, bodies: list[dict[str, Any]], during: During | None = None, max_attempts: int = 1
) -> tuple[list[dict[str, Any]], int]:
    """Submit `bodies` in order, run one worker until every job has ended (calling `during` at
    each look); returns the job rows in order and the account's credits left."""
    db = Database(settings.db_url)
    try:
        key, _ = await create_key(db, "batch", credits=100)
        caller = await authenticate(db, key)
        # Prepared jobs are PROCESSING and count against the limit: room for the whole batch.
        async with db.write() as conn:
            await conn.execute(accounts.update().values(max_concurrent_jobs=100))
        ids = []
        for body in bodies:
            req = EditRequest.model_validate(body)
            ids.append((await service.submit(db, caller, req, cost=COST, max_attempts=max_attempts)).job_id)
        worker = Worker(settings, db, BlobStore(settings))
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))

        async def all_ended() -> list[Any] | None:
            if during is not None:
                await during(db, caller, ids)
            async with db.read() as conn:
                rows = (await conn.execute(sa.select(jobs).where(jobs.c.id.in_(ids)))).mappings().all()
            return (
                list(rows) if all(r["status"] in ("COMPLETED", "FAILED", "CANCELLED") for r in rows) else None
            )

        try:
            rows = await until_async(all_ended, "ended, every batched job", every=0.05)
        finally:
            stop.set()
            await running
        async with db.read() as conn:
            credits = await conn.scalar(
                sa.select(accounts.c.credits).where(accounts.c.id == caller.account_id)
            )
        by_id = {r["id"]: dict(r) for r in rows}
        return [by_id[i] for i in ids], int(credits or 0)
    finally:
        await db.close()


def _output(settings: Settings, row: dict[str, Any]) -> bytes:
    [file] = row["result"]["files"]
    [path] = settings.files_dir.rglob(f"{file['id']}.{file['ext']}")
    return path.read_bytes()


def test_a_batched_call_gives_each_job_its_unbatched_image(
    database_url: str, tmp_path: Path, runlog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FILLFRAME_TEST_SLEEP", "0.5")
    bodies = [big(), *(small(seed) for seed in (11, 12, 13, 14))]
    monkeypatch.setenv("FILLFRAME_TEST_MAX_BATCH", "4")
    batched_settings = _settings(database_url, tmp_path / "batched")
    batched, _ = asyncio.run(_drain(batched_settings, bodies))
    # One call for the first job, then one call of four, in claim order.
    assert _calls(runlog) == ["call 1 1", "call 4 11 12 13 14"]
    runlog.unlink()
    monkeypatch.setenv("FILLFRAME_TEST_MAX_BATCH", "1")
    alone_settings = _settings(database_url, tmp_path / "alone")
    alone, _ = asyncio.run(_drain(alone_settings, bodies))
    assert _calls(runlog) == ["call 1 1", "call 1 11", "call 1 12", "call 1 13", "call 1 14"]
    for together, single in zip(batched[1:], alone[1:], strict=True):
        assert together["status"] == single["status"] == "COMPLETED"
        assert together["progress"] == 100
        assert (together["notes"]["batch"], single["notes"]["batch"]) == (4, 1)
        assert together["notes"]["seed"] == together["seed"]
        assert _output(batched_settings, together) == _output(alone_settings, single)
    # Each job its own seed: no two images of the batch alike.
    assert len({_output(batched_settings, row) for row in batched[1:]}) == 4


def test_a_job_cancelled_in_a_batch_ends_cancelled_while_the_others_complete(
    database_url: str, tmp_path: Path, runlog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FILLFRAME_TEST_SLEEP", "1.0")
    monkeypatch.setenv("FILLFRAME_TEST_MAX_BATCH", "3")
    asked: list[str] = []

    async def cancel_the_middle_one(db: Database, caller: Caller, ids: list[str]) -> None:
        if not asked and any(line.startswith("call 3") for line in _calls(runlog)):
            asked.append(str(await service.cancel(db, ids[2], caller.account_id)))

    bodies = [big(), small(21), small(22), small(23)]
    rows, credits = asyncio.run(
        _drain(_settings(database_url, tmp_path / "data"), bodies, cancel_the_middle_one)
    )
    assert asked == ["PROCESSING"]  # flagged while its call ran
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED", "CANCELLED", "COMPLETED"]
    assert rows[2]["error_code"] == "cancelled" and rows[2]["result"] is None
    assert credits == 100 - 3 * COST  # the cancelled job refunded
    assert _calls(runlog) == ["call 1 1", "call 3 21 22 23"]  # nothing ran twice


def test_a_crash_in_a_batch_costs_every_job_of_the_call_an_attempt(
    database_url: str, tmp_path: Path, runlog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each job of the crashed call is queued again (MAX_ATTEMPTS 2); the engine restarts, the
    three run together again and crash again: each ends FAILED engine_error, refunded."""
    monkeypatch.setenv("FILLFRAME_TEST_SLEEP", "0.5")
    monkeypatch.setenv("FILLFRAME_TEST_MAX_BATCH", "3")
    bodies = [big(), small(31), small(32, "crash"), small(33)]
    rows, credits = asyncio.run(_drain(_settings(database_url, tmp_path / "data"), bodies, max_attempts=2))
    assert rows[0]["status"] == "COMPLETED"
    for row in rows[1:]:
        assert (row["status"], row["error_code"], row["attempts"]) == ("FAILED", "engine_error", 2)
        assert "process stopped" in row["error"]
    assert credits == 100 - COST
    # The first job to be ready again waited for the new engine process and took the others along.
    first, *again = _calls(runlog)
    assert first == "call 1 1" and len(again) == 2
    for line in again:  # queued again, they are claimed in their new order
        count, *seeds = line.removeprefix("call ").split()
        assert (count, sorted(seeds)) == ("3", ["31", "32", "33"])


def test_a_job_waiting_behind_a_long_one_is_not_timed_out(
    database_url: str, tmp_path: Path, runlog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline runs from when the engine starts on a job, not from its claim: the second
    job, claimed and prepared at once, waits a whole run before its own."""
    monkeypatch.setenv("FILLFRAME_TEST_SLEEP", "0.8")
    settings = _settings(database_url, tmp_path / "data", job_timeout_seconds=1.2)
    rows, _ = asyncio.run(_drain(settings, [small(41), small(42)]))
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"], [r["error"] for r in rows]
    waited = rows[1]["completed_at"] - rows[1]["started_at"]  # from its claim to its end
    assert waited.total_seconds() > settings.job_timeout_seconds
    assert _calls(runlog) == ["call 1 41", "call 1 42"]


def test_a_ready_job_of_a_team_not_served_overtakes_a_backlog_prepared_before_it(
    database_url: str, tmp_path: Path, runlog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: A's second job is prepared beside A's first; B's job is claimed and prepared
    while A's first fills. When the engine frees, B's job goes first (A was served, B not),
    though it was claimed after A's. (The engine batches 2, so the worker prepares 2 ahead;
    three canvas sizes, so no two jobs share a call.)"""
    monkeypatch.setenv("FILLFRAME_TEST_SLEEP", "0.5")
    monkeypatch.setenv("FILLFRAME_TEST_MAX_BATCH", "2")
    submitted: list[str] = []

    async def b_arrives_while_a_fills(db: Database, caller: Caller, ids: list[str]) -> None:
        if not submitted and _calls(runlog) == ["call 1 1"]:
            key, _ = await create_key(db, "tenant-b", credits=100)
            req = EditRequest.model_validate(sized(24, seed=3))
            b = await service.submit(db, await authenticate(db, key), req, cost=COST, max_attempts=1)
            submitted.append(b.job_id)
            ids.append(b.job_id)

    rows, _ = asyncio.run(
        _drain(_settings(database_url, tmp_path / "data"), [big(1), small(2)], b_arrives_while_a_fills)
    )
    assert len(rows) == 3 and all(r["status"] == "COMPLETED" for r in rows)
    a_second, b_first = rows[1], rows[2]
    assert a_second["started_at"] < b_first["started_at"]  # A's job was claimed first ...
    assert _calls(runlog) == ["call 1 1", "call 1 3", "call 1 2"]  # ... and B's filled first
