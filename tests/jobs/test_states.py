"""The one table of a job's status changes, and its guard on a real database: a change from a
state the table does not allow changes nothing and is reported; cancel re-checks the state it
meets instead of reading and then updating by id."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa

from fillframe.clock import FakeClock
from fillframe.db import Database, credit_ledger, jobs, webhook_deliveries
from fillframe.jobs import queue, service, states
from fillframe.jobs.service import NotCancellable, Outcome
from tests.jobs.tenants import opened, submit, tenant

DAY = timedelta(days=1)


def test_the_table_allows_exactly_the_documented_flow() -> None:
    documented = {
        ("QUEUED", "PROCESSING"),  # claim
        ("PROCESSING", "QUEUED"),  # requeue after a lost lease, release
        ("PROCESSING", "COMPLETED"),  # finish
        ("PROCESSING", "FAILED"),  # finish, fail
        ("PROCESSING", "CANCELLED"),  # finish (the worker saw the cancel), fail
        ("QUEUED", "CANCELLED"),  # cancel
        ("PROCESSING", "PROCESSING"),  # a cancel asked for: only the flag
        ("COMPLETED", "COMPLETED"),  # expire: only the flag
        ("FAILED", "FAILED"),
        ("CANCELLED", "CANCELLED"),
    }
    assert documented == states.ALLOWED
    statuses = {states.QUEUED, states.PROCESSING, *states.TERMINAL}
    assert not any(states.allows(end, other) for end in states.TERMINAL for other in statuses - {end})


def test_a_statement_cannot_be_built_for_a_change_the_table_does_not_allow() -> None:
    with pytest.raises(ValueError, match="claim cannot move a job to COMPLETED"):
        states.update(states.CLAIM, to=states.COMPLETED)


async def _row(db: Database, job_id: str) -> dict:
    async with db.read() as conn:
        return dict((await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).mappings().one())


def test_changes_from_states_they_do_not_start_from_change_nothing_and_are_reported(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(_refusals(database_url, caplog))


async def _refusals(url: str, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    async with opened(url) as db:
        caller = await tenant(db, "t", credits=100)
        (job_id,) = await submit(db, caller, clock=clock)
        before = await _row(db, job_id)
        with caplog.at_level(logging.WARNING, logger="fillframe.jobs.states"):
            # A QUEUED job can be neither finished nor released nor failed by the sweeper.
            finished = await service.finish(
                db, job_id, Outcome.completed([]), worker_id=None, retention=DAY, clock=clock
            )
            assert not finished.ended
            assert finished.refused == states.Refused("finish", job_id, "QUEUED")
            assert not await queue.release(db, job_id, "w", clock=clock)
            assert not await service.finish_abandoned(db, job_id, DAY, clock=clock)
        assert await _row(db, job_id) == before
        assert [r.getMessage() for r in caplog.records] == [
            f"finish of job {job_id} refused: it is QUEUED",
            f"release of job {job_id} refused: it is QUEUED",
            f"fail of job {job_id} refused: it is QUEUED",
        ]
        # Claimed by w, it is w's to finish and nobody else's; ended, it stays ended.
        assert (await queue.claim(db, "w", 60, clock=clock))["id"] == job_id
        other = await service.finish(
            db, job_id, Outcome.completed([]), worker_id="x", retention=DAY, clock=clock
        )
        assert other.refused == states.Refused("finish", job_id, "PROCESSING")
        failed = Outcome.failed("engine_error", "The engine failed.")
        assert (await service.finish(db, job_id, failed, worker_id="w", retention=DAY, clock=clock)).ended
        again = await service.finish(
            db, job_id, Outcome.completed([]), worker_id=None, retention=DAY, clock=clock
        )
        assert again.refused == states.Refused("finish", job_id, "FAILED")
        row = await _row(db, job_id)
        assert (row["status"], row["error_code"]) == ("FAILED", "engine_error")
        async with db.read() as conn:
            kinds = (
                await conn.execute(sa.select(credit_ledger.c.kind).where(credit_ledger.c.job_id == job_id))
            ).scalars()
            assert sorted(kinds) == ["hold", "refund"]


def test_the_sweeper_fails_a_job_only_while_its_lease_is_out(database_url: str) -> None:
    asyncio.run(_lapsed_only(database_url))


async def _lapsed_only(url: str) -> None:
    """A worker that renewed its lease after the sweeper listed the job keeps it."""
    clock = FakeClock()
    async with opened(url) as db:
        caller = await tenant(db, "t")
        (job_id,) = await submit(db, caller, clock=clock, max_attempts=1)
        await queue.claim(db, "w", 10, clock=clock)
        clock.advance(11)
        assert await queue.requeue_expired(db, clock=clock) == [job_id]  # no attempt left
        assert await queue.heartbeat(db, job_id, "w", 10, 50, clock=clock) is False  # still w's
        assert not await service.finish_abandoned(db, job_id, DAY, clock=clock)
        assert (await _row(db, job_id))["status"] == "PROCESSING"
        clock.advance(11)
        assert await queue.requeue_expired(db, clock=clock) == [job_id]
        assert await service.finish_abandoned(db, job_id, DAY, clock=clock)
        row = await _row(db, job_id)
        assert (row["status"], row["error_code"]) == ("FAILED", "engine_error")


def test_cancel_meets_the_job_in_the_state_it_is_in(database_url: str) -> None:
    asyncio.run(_cancel(database_url))


async def _cancel(url: str) -> None:
    clock = FakeClock()
    async with opened(url) as db:
        owner, stranger = await tenant(db, "owner", credits=100), await tenant(db, "stranger")
        queued, running = await submit(db, owner, 2, clock=clock, webhook_url="https://example.com/hook")
        assert await service.cancel(db, queued, stranger.account_id, clock=clock) is None  # not theirs
        assert (await _row(db, queued))["status"] == "QUEUED"
        assert await service.cancel(db, queued, owner.account_id, clock=clock) == "CANCELLED"
        with pytest.raises(NotCancellable, match="already CANCELLED"):
            await service.cancel(db, queued, owner.account_id, clock=clock)
        assert (await queue.claim(db, "w", 60, clock=clock))["id"] == running
        assert await service.cancel(db, running, owner.account_id, clock=clock) == "PROCESSING"
        row = await _row(db, running)
        assert (row["status"], row["cancel_requested"]) == ("PROCESSING", True)
        assert await queue.heartbeat(db, running, "w", 60, 10, clock=clock) is True  # the worker hears it
        async with db.read() as conn:
            ledger = (
                await conn.execute(
                    sa.select(credit_ledger.c.job_id, credit_ledger.c.kind).where(
                        credit_ledger.c.job_id.is_not(None)
                    )
                )
            ).all()
            events = (
                await conn.execute(sa.select(webhook_deliveries.c.job_id, webhook_deliveries.c.event))
            ).all()
        assert sorted(ledger) == sorted([(queued, "hold"), (queued, "refund"), (running, "hold")])
        assert events == [(queued, "failed")]  # one final event, for the job that ended
