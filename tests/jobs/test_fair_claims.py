"""Claims are fair across accounts, on a real database: one tenant's backlog of 1000 jobs delays
another tenant's new job by one engine run (counted in claims, not seconds), accounts take
turns, and each account's `max_concurrent_jobs` still holds. Time is a FakeClock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from fillframe.clock import FakeClock
from fillframe.db import Database
from fillframe.jobs import queue, service
from fillframe.jobs.service import Outcome
from tests.jobs.tenants import opened, submit, tenant

DAY = timedelta(days=1)
LEASE = 60.0


async def _next(
    db: Database, worker: str, clock: FakeClock, ending: str | None, combined: bool
) -> str | None:
    """The worker ends `ending` (COMPLETED) and takes its next job: in the finish statement itself
    when `combined` (PostgreSQL's one round trip), else by a claim of its own."""
    if ending is not None:
        finished = await service.finish(
            db, ending, Outcome.completed([]), worker_id=worker, retention=DAY,
            has_webhook=False, claim_lease=LEASE if combined else None, clock=clock,
        )  # fmt: skip
        assert finished.ended
        if finished.next_job is not None:
            return finished.next_job["id"]
    claimed = await queue.claim(db, worker, LEASE, clock=clock)
    return None if claimed is None else claimed["id"]


@pytest.mark.parametrize("combined", [False, True], ids=["claim", "finish_and_claim"])
def test_a_backlog_of_1000_delays_a_new_tenant_by_one_engine_run(
    database_url: str, backend: str, combined: bool
) -> None:
    if combined and backend == "sqlite":
        pytest.skip("SQLite ends and claims in two statements: the `claim` case covers it")
    asyncio.run(_backlog(database_url, combined))


async def _backlog(url: str, combined: bool) -> None:
    clock = FakeClock()
    async with opened(url) as db:
        a, b = await tenant(db, "a"), await tenant(db, "b")
        backlog = set(await submit(db, a, 1000, clock=clock))
        running = await _next(db, "w", clock, None, combined)
        assert running in backlog
        clock.advance(1)
        (newcomer,) = await submit(db, b, clock=clock)
        # The one engine run in flight ends; the very next claim is the newcomer's.
        clock.advance(1)
        taken = await _next(db, "w", clock, running, combined)
        assert taken == newcomer
        # Then the backlog again, oldest first, as if nothing had happened.
        clock.advance(1)
        after = await _next(db, "w", clock, taken, combined)
        assert after in backlog


def test_several_workers_busy_with_a_backlog_take_a_new_tenant_next(database_url: str) -> None:
    asyncio.run(_busy_workers(database_url))


async def _busy_workers(url: str) -> None:
    clock = FakeClock()
    async with opened(url) as db:
        a, b = await tenant(db, "a", concurrency=4), await tenant(db, "b")
        backlog = set(await submit(db, a, 50, clock=clock))
        held = {w: await _next(db, w, clock, None, False) for w in ("w1", "w2", "w3", "w4")}
        assert set(held.values()) <= backlog and len(set(held.values())) == 4
        (newcomer,) = await submit(db, b, clock=clock)
        assert await _next(db, "w3", clock, held["w3"], False) == newcomer
        assert await _next(db, "w1", clock, held["w1"], False) in backlog


def test_an_account_at_its_limit_leaves_the_free_worker_to_others(database_url: str) -> None:
    asyncio.run(_limit(database_url))


async def _limit(url: str) -> None:
    clock = FakeClock()
    async with opened(url) as db:
        a, b = await tenant(db, "a", concurrency=2), await tenant(db, "b")
        backlog = set(await submit(db, a, 10, clock=clock))
        first, second = await _next(db, "w1", clock, None, False), await _next(db, "w2", clock, None, False)
        assert {first, second} <= backlog
        assert await _next(db, "w3", clock, None, False) is None  # a's limit of 2 is reached
        (newcomer,) = await submit(db, b, clock=clock)
        assert await _next(db, "w3", clock, None, False) == newcomer
        assert await _next(db, "w4", clock, None, False) is None
        assert await _next(db, "w1", clock, first, False) in backlog  # a slot of a's own freed


def test_two_backlogs_take_turns(database_url: str) -> None:
    asyncio.run(_turns(database_url))


async def _turns(url: str) -> None:
    clock = FakeClock()
    async with opened(url) as db:
        a, b = await tenant(db, "a"), await tenant(db, "b")
        owner = {job: "a" for job in await submit(db, a, 6, clock=clock)}
        clock.advance(1)
        owner |= {job: "b" for job in await submit(db, b, 6, clock=clock)}
        order = []
        running = None
        for _ in range(12):
            clock.advance(1)
            running = await _next(db, "w", clock, running, False)
            assert running is not None
            order.append(owner[running])
        # a's jobs are older, so a starts; then each account in turn, never two in a row.
        assert order == ["a", "b"] * 6
